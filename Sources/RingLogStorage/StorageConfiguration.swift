import RingLogWire

/// Settings that belong to one log, fixed when it is created and kept in its `log.meta` file.
public struct LogSettings: Equatable, Sendable {
    /// A new segment starts when the next batch would not fit in the active one.
    public var segmentBytes: Int
    /// Whole sealed segments are deleted, oldest first, while the log holds more than this.
    /// `nil` keeps everything.
    public var retentionBytes: Int?
    /// Sealed segments whose newest batch is older than this are deleted. `nil` keeps everything.
    public var retentionMicros: UInt64?

    public init(segmentBytes: Int = 1 << 30, retentionBytes: Int? = nil, retentionMicros: UInt64? = nil) {
        self.segmentBytes = segmentBytes
        self.retentionBytes = retentionBytes
        self.retentionMicros = retentionMicros
    }

    /// Smallest and largest segment sizes: a segment must hold the largest batch, and positions
    /// inside a segment are 32-bit in the sparse index.
    public static let segmentBytesRange = CreateLogRequest.segmentBytesRange
    /// Size retention, when set: at least one segment, at most 1 EiB.
    public static let maxRetentionBytes = CreateLogRequest.maxRetentionBytes
    /// Age retention, when set: from 1 ms to 100 years (of 365 days).
    public static let retentionMillisRange = CreateLogRequest.retentionMillisRange
    public static let maxRetentionMillis = retentionMillisRange.upperBound

    /// The valid segment sizes given the largest batch a server takes.
    public static func segmentBytesRange(maxBatchBytes: Int) -> ClosedRange<UInt64> {
        max(segmentBytesRange.lowerBound, UInt64(clamping: maxBatchBytes))...segmentBytesRange.upperBound
    }

    /// The valid size retentions for a log of `segmentBytes`.
    public static func retentionBytesRange(segmentBytes: Int) -> ClosedRange<UInt64> {
        min(UInt64(clamping: segmentBytes), maxRetentionBytes)...maxRetentionBytes
    }
}

/// Settings for a whole data directory and its engine.
public struct StoreConfiguration: Sendable {
    /// Largest batch (header and payload) an append may carry.
    public var maxBatchBytes: Int
    /// The recent-append cache shared by all logs: appended batches stay in memory here until the
    /// space is needed again, and reads of them are served without touching the disk.
    public var tailCacheBytes: Int
    /// Defaults for logs created without explicit settings.
    public var defaultLogSettings: LogSettings
    /// The sparse index records the first batch at or after every this many bytes.
    public var indexIntervalBytes: Int
    /// A checkpoint is written once this many bytes have committed since the last one ...
    public var checkpointIntervalBytes: Int
    /// ... or this long after the last one, if anything committed since.
    public var checkpointIntervalMicros: UInt64
    /// Largest single write the engine issues; larger pending ranges go in several writes.
    public var maxWriteBytes: Int
    /// The next segment is preallocated once the active one is this full (0.0 to 1.0).
    public var preallocateAtFill: Double
    /// Zero-ahead (docs/storage.md): how far past the reservation point the active segment is
    /// kept written with zeros, so that fdatasyncs of small appends need no journal commit for
    /// newly written extents. 0 turns it off.
    public var zeroAheadBytes: Int
    /// Zeros are written in chunks of this size, one at a time.
    public var zeroChunkBytes: Int
    /// Zero-ahead runs while the log's recent fdatasyncs average fewer bytes than this; larger
    /// syncs amortize the journal commit, and zeroing would only double the bytes written.
    public var zeroAheadMaxSyncBytes: Int
    /// Segment files are allocated in steps, not whole (docs/storage.md, "Allocation"): a new
    /// segment starts with half of this allocated, and the active one is kept allocated at least
    /// a quarter of this past its appends, topped up to all of it when it runs short. So disk use
    /// follows the data: at most about this much more per log, plus a spare's half once the
    /// active segment is half full. 0 allocates whole segments up front.
    public var allocateAheadBytes: Int
    /// Cursors one log may hold (CURSOR_COMMIT of a new name beyond it is refused).
    public var maxCursorsPerLog: Int
    /// Idempotent producers (`ProducerTable`): how many of a producer's latest batches a log
    /// remembers (a retry of one is answered with its offset; INIT_PRODUCER tells producers, who
    /// keep at most this many in flight per log), how many producers a log keeps (a new one evicts
    /// the one idle longest), and after how long idle a producer is forgotten (0: never).
    public var producerWindow: Int
    public var maxProducersPerLog: Int
    public var producerExpiryMicros: UInt64
    /// Writes that start inside a batch of at least this many bytes are uncached (RWF_DONTCACHE):
    /// bulk ingest then cycles through a few page-cache pages instead of filling the cache, which
    /// on this kind of machine is the slowest part of a large durable append (docs/storage.md).
    /// Readers of those bytes, once the tail cache has moved on, read them from the disk. 0 turns
    /// it off; it also turns itself off if the kernel refuses the flag.
    public var uncachedBatchBytes: Int
    /// Segment reads are uncached (RWF_DONTCACHE): what the page cache holds is served from it
    /// and stays; what must come from the disk is not kept, so a reader far behind neither pays
    /// for filling the cache nor pushes recent data out of it (docs/storage.md). Off, reads are
    /// ordinary buffered reads.
    public var uncachedColdReads: Bool

    public init(
        maxBatchBytes: Int = 8 << 20,
        tailCacheBytes: Int = 64 << 20,
        defaultLogSettings: LogSettings = LogSettings(),
        indexIntervalBytes: Int = 16 << 10,
        checkpointIntervalBytes: Int = 256 << 20,
        checkpointIntervalMicros: UInt64 = 1_000_000,
        maxWriteBytes: Int = 8 << 20,
        preallocateAtFill: Double = 0.5,
        zeroAheadBytes: Int = 8 << 20,
        zeroChunkBytes: Int = 256 << 10,
        zeroAheadMaxSyncBytes: Int = 256 << 10,
        uncachedBatchBytes: Int = 512 << 10,
        uncachedColdReads: Bool = true,
        allocateAheadBytes: Int = 4 << 20,
        maxCursorsPerLog: Int = 1024,
        producerWindow: Int = 64,
        maxProducersPerLog: Int = 1024,
        producerExpiryMicros: UInt64 = 7 * 86_400_000_000
    ) {
        self.maxBatchBytes = maxBatchBytes
        self.tailCacheBytes = tailCacheBytes
        self.defaultLogSettings = defaultLogSettings
        self.indexIntervalBytes = indexIntervalBytes
        self.checkpointIntervalBytes = checkpointIntervalBytes
        self.checkpointIntervalMicros = checkpointIntervalMicros
        self.maxWriteBytes = maxWriteBytes
        self.preallocateAtFill = preallocateAtFill
        self.zeroAheadBytes = zeroAheadBytes
        self.zeroChunkBytes = zeroChunkBytes
        self.zeroAheadMaxSyncBytes = zeroAheadMaxSyncBytes
        self.uncachedBatchBytes = uncachedBatchBytes
        self.uncachedColdReads = uncachedColdReads
        self.allocateAheadBytes = allocateAheadBytes
        self.maxCursorsPerLog = maxCursorsPerLog
        self.producerWindow = producerWindow
        self.maxProducersPerLog = maxProducersPerLog
        self.producerExpiryMicros = producerExpiryMicros
    }

    func makeProducerTable() -> ProducerTable {
        ProducerTable(window: producerWindow, maxProducers: maxProducersPerLog, expiryMicros: producerExpiryMicros)
    }

    /// Bytes allocated when a segment file is made: half the allocate-ahead distance, or the
    /// whole segment when stepping is off.
    func initialAllocation(segmentBytes: Int) -> Int {
        allocateAheadBytes == 0 ? segmentBytes : min(segmentBytes, allocateAheadBytes / 2)
    }

    /// Every reason this configuration cannot work, each naming the setting (as ringlogd's flag
    /// names it) and its valid range.
    public func problems() -> [SettingProblem] {
        var problems: [SettingProblem] = []
        func check(_ name: String, _ value: Int, _ range: ClosedRange<UInt64>, unit: SettingProblem.Unit = .bytes, rule: String? = nil) {
            if let problem = SettingProblem.check(name, value, range, unit: unit, rule: rule) { problems.append(problem) }
        }
        check("max-batch-bytes", maxBatchBytes, StoreConfiguration.maxBatchBytesRange)
        check("cache-bytes", tailCacheBytes, UInt64(clamping: 2 * max(maxBatchBytes, 0))...(1 << 40), rule: "at least twice max-batch-bytes")
        problems.append(contentsOf: defaultLogSettings.problems(maxBatchBytes: maxBatchBytes))
        check("index-interval-bytes", indexIntervalBytes, 512...(1 << 30))
        check("max-write-bytes", maxWriteBytes, 4096...(1 << 30))
        if !(0.0...1.0).contains(preallocateAtFill) {
            problems.append(SettingProblem(setting: "preallocate-at-fill", value: "\(preallocateAtFill)", minimum: 0, maximum: 1, unit: .count))
        }
        check("zero-ahead-bytes", zeroAheadBytes, 0...(1 << 30))
        if zeroAheadBytes > 0 {
            check("zero-chunk-bytes", zeroChunkBytes, 4096...UInt64(max(zeroAheadBytes, 4096)), rule: "at most zero-ahead-bytes")
        }
        if allocateAheadBytes != 0 {
            check("allocate-ahead-bytes", allocateAheadBytes, 8_192...(1 << 30), rule: "or 0 (whole segments)")
        }
        // A slot holds every cursor (up to 142 bytes each): 100,000 keep it under 16 MiB, well
        // inside what recovery reads.
        check("max-cursors", maxCursorsPerLog, 0...100_000, unit: .count)
        // Each remembered batch takes 20 bytes in a checkpoint: the product bounds it near 10 MiB,
        // inside what recovery reads (Checkpoint.maxBytes).
        check("producer-window", producerWindow, 1...1024, unit: .count)
        check(
            "max-producers", maxProducersPerLog, 1...UInt64(max(1, 524_288 / max(1, producerWindow))), unit: .count,
            rule: "at most 524288 / producer-window")
        if uncachedBatchBytes != 0 {
            // Smaller would make nearly every write uncached, and each append would then find the
            // page it continues dropped and read it back from the disk first.
            check("uncached-batch-bytes", uncachedBatchBytes, 4096...(1 << 40), rule: "or 0 (off)")
        }
        return problems
    }

    /// The largest batch a server can take: at least a header and one byte, at most 1 GiB (each
    /// connection may have to hold one whole batch while it arrives).
    public static let maxBatchBytesRange: ClosedRange<UInt64> = UInt64(Batch.maxHeaderBytes + 1)...(1 << 30)
}

extension LogSettings {
    /// Every reason these settings cannot be used on a server whose largest batch is
    /// `maxBatchBytes`, first problem first.
    public func problems(maxBatchBytes: Int) -> [SettingProblem] {
        var problems: [SettingProblem] = []
        let segmentRange = LogSettings.segmentBytesRange(maxBatchBytes: maxBatchBytes)
        if let problem = SettingProblem.check("segment-bytes", segmentBytes, segmentRange, unit: .bytes, rule: "and at least max-batch-bytes") {
            problems.append(problem)
        }
        if let retentionBytes,
            let problem = SettingProblem.check(
                "retention-bytes", retentionBytes, LogSettings.retentionBytesRange(segmentBytes: segmentBytes), unit: .bytes,
                rule: "at least one segment, or 0 to keep everything")
        {
            problems.append(problem)
        }
        if let retentionMicros {
            let range = (LogSettings.retentionMillisRange.lowerBound * 1000)...(LogSettings.retentionMillisRange.upperBound * 1000)
            if let problem = SettingProblem.check("retention-micros", retentionMicros, range, unit: .microseconds, rule: "or none to keep everything") {
                problems.append(problem)
            }
        }
        return problems
    }
}

/// A setting outside its valid range: which one, the value given, and the range, so the message
/// (and a protocol error's details) tell the user exactly what would be accepted.
public struct SettingProblem: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Unit: Sendable, Equatable {
        case bytes, count, microseconds, milliseconds, seconds
    }

    /// The setting's name as ringlogd's flag names it (or the wire field, for a protocol request).
    public var setting: String
    /// The value as it was given.
    public var value: String
    public var minimum: UInt64
    public var maximum: UInt64
    public var unit: Unit
    /// A constraint the range alone does not say ("a power of two", "or 0 to turn it off").
    public var rule: String?

    public init(setting: String, value: String, minimum: UInt64, maximum: UInt64, unit: Unit, rule: String? = nil) {
        self.setting = setting
        self.value = value
        self.minimum = minimum
        self.maximum = maximum
        self.unit = unit
        self.rule = rule
    }

    /// A problem when `value` is outside `range`, else nil.
    public static func check(
        _ setting: String, _ value: some BinaryInteger, _ range: ClosedRange<UInt64>, unit: Unit, rule: String? = nil
    ) -> SettingProblem? {
        if let exact = UInt64(exactly: value), range.contains(exact) { return nil }
        let problem = SettingProblem(setting: setting, value: "\(value)", minimum: range.lowerBound, maximum: range.upperBound, unit: unit, rule: rule)
        guard unit == .bytes, let exact = UInt64(exactly: value) else { return problem }
        return SettingProblem(setting: setting, value: problem.format(exact), minimum: range.lowerBound, maximum: range.upperBound, unit: unit, rule: rule)
    }

    public var description: String { "\(setting) \(value) \(rangeDescription)" }

    /// "is out of range: it must be from 64KiB to 4294967295 (and at least max-batch-bytes)"
    public var rangeDescription: String {
        "is out of range: it must be from \(format(minimum)) to \(format(maximum))" + (rule.map { " (\($0))" } ?? "")
    }

    public func format(_ number: UInt64) -> String {
        switch unit {
        case .bytes: number <= UInt64(Int.max) ? "\(formatByteSize(Int(number)))" : "\(number)"
        case .count: "\(number)"
        case .microseconds: "\(number) µs"
        case .milliseconds: "\(number) ms"
        case .seconds: "\(number) s"
        }
    }
}
