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
    public static let segmentBytesRange = (64 << 10)...Int(UInt32.max)
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
        uncachedColdReads: Bool = true
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
    }

    /// Every reason this configuration cannot work, as sentences naming the setting.
    public func problems() -> [String] {
        var problems: [String] = []
        if maxBatchBytes < 48 + 1 { problems.append("max batch bytes (\(maxBatchBytes)) must be at least 49") }
        if tailCacheBytes < 2 * maxBatchBytes {
            problems.append("tail cache bytes (\(tailCacheBytes)) must be at least twice the max batch bytes (\(maxBatchBytes))")
        }
        problems.append(contentsOf: defaultLogSettings.problems(maxBatchBytes: maxBatchBytes))
        if indexIntervalBytes < 512 { problems.append("index interval bytes (\(indexIntervalBytes)) must be at least 512") }
        if maxWriteBytes < 4096 { problems.append("max write bytes (\(maxWriteBytes)) must be at least 4096") }
        if !(0.0...1.0).contains(preallocateAtFill) { problems.append("preallocate-at-fill must be within 0...1") }
        if zeroAheadBytes < 0 { problems.append("zero-ahead bytes (\(zeroAheadBytes)) must not be negative") }
        if zeroAheadBytes > 0 && (zeroChunkBytes < 4096 || zeroChunkBytes > zeroAheadBytes) {
            problems.append("zero chunk bytes (\(zeroChunkBytes)) must be at least 4096 and at most zero-ahead bytes (\(zeroAheadBytes))")
        }
        if uncachedBatchBytes != 0 && uncachedBatchBytes < 4096 {
            // Smaller would make nearly every write uncached, and each append would then find the
            // page it continues dropped and read it back from the disk first.
            problems.append("uncached batch bytes (\(uncachedBatchBytes)) must be 0 (off) or at least 4096")
        }
        return problems
    }
}

extension LogSettings {
    public func problems(maxBatchBytes: Int) -> [String] {
        var problems: [String] = []
        if !LogSettings.segmentBytesRange.contains(segmentBytes) {
            problems.append("segment bytes (\(segmentBytes)) must be within \(LogSettings.segmentBytesRange)")
        }
        if segmentBytes < maxBatchBytes {
            problems.append("segment bytes (\(segmentBytes)) must be at least the max batch bytes (\(maxBatchBytes))")
        }
        if let retentionBytes, retentionBytes < segmentBytes {
            problems.append("retention bytes (\(retentionBytes)) must be at least one segment (\(segmentBytes))")
        }
        if retentionMicros == 0 { problems.append("retention age must be positive") }
        return problems
    }
}
