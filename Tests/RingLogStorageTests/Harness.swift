import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

extension StoreConfiguration {
    /// Small sizes so tests cross segment, cache and checkpoint boundaries often.
    static func small(
        segmentBytes: Int = 64 << 10, tailCacheBytes: Int = 256 << 10, retentionBytes: Int? = nil, retentionMicros: UInt64? = nil
    ) -> StoreConfiguration {
        StoreConfiguration(
            maxBatchBytes: 16 << 10, tailCacheBytes: tailCacheBytes,
            defaultLogSettings: LogSettings(segmentBytes: segmentBytes, retentionBytes: retentionBytes, retentionMicros: retentionMicros),
            indexIntervalBytes: 1 << 10, checkpointIntervalBytes: 32 << 10, checkpointIntervalMicros: 1_000_000, maxWriteBytes: 8 << 10,
            zeroAheadBytes: 16 << 10, zeroChunkBytes: 4 << 10, zeroAheadMaxSyncBytes: 64 << 10, allocateAheadBytes: 16 << 10)
    }
}

/// A store over a simulated disk with synchronous helpers: each call drives the store until the
/// answer arrives, so tests read as a sequence of operations.
final class Harness {
    let driver: SimulationDriver
    var store: LogStore { driver.store }
    var disk: SimulatedDisk { driver.disk }
    private var nextContext: UInt64 = 1

    init(seed: UInt64 = 1, configuration: StoreConfiguration = .small(), disk: SimulatedDisk = SimulatedDisk()) throws {
        driver = try SimulationDriver(seed: seed, configuration: configuration, disk: disk)
    }

    private func context() -> UInt64 {
        defer { nextContext += 1 }
        return nextContext
    }

    /// Runs the store until an event satisfying `match` appears; returns what `match` extracted.
    func waitFor<T>(_ what: String, _ match: (StoreEvent) -> T?) throws -> T {
        for _ in 0..<10_000 {
            if let index = driver.events.firstIndex(where: { match($0) != nil }) {
                return match(driver.events.remove(at: index))!
            }
            driver.step(completing: 4)
        }
        throw TestFailure("no \(what) event arrived")
    }

    func createLog(_ name: String, settings: LogSettings? = nil) throws -> LogID {
        try createLogResult(name, settings: settings).get().id
    }

    func createLogResult(_ name: String, settings: LogSettings? = nil) throws -> Result<LogInfo, StorageError> {
        let context = context()
        store.createLog(named: name, settings: settings, context: context)
        return try waitFor("created") { if case .created(context, let result) = $0 { result } else { nil } }
    }

    func deleteLog(_ name: String) throws -> Result<LogID, StorageError> {
        let context = context()
        store.deleteLog(named: name, context: context)
        return try waitFor("deleted") { if case .deleted(context, let result) = $0 { result } else { nil } }
    }

    /// Appends and drives the store until the batch is committed; returns its offset.
    @discardableResult
    func append(_ id: LogID, _ payload: [UInt8]) throws -> LogOffset {
        switch try appendAndSettle(id, payload) {
        case .placed(let offset, let end):
            guard let log = store.log(id), log.committedEnd >= end else { throw TestFailure("batch at \(offset) did not commit") }
            return offset
        case let other: throw TestFailure("append was not placed: \(other)")
        }
    }

    /// Appends one batch per seed, each `length` bytes of `payload(length, seed:)`, every one
    /// committed before the next; returns the payloads in order.
    @discardableResult
    func appendPayloads(_ id: LogID, length: Int, seeds: Range<Int>) throws -> [[UInt8]] {
        try seeds.map { seed in
            let data = payload(length, seed: seed)
            try append(id, data)
            return data
        }
    }

    /// Appends and runs the store until quiet, retrying while the store says it would block.
    func appendAndSettle(_ id: LogID, _ payload: [UInt8]) throws -> AppendOutcome {
        try appendAndSettle(id, batch: Batch.make(payload: payload))
    }

    /// The same for a batch built elsewhere (either format).
    func appendAndSettle(_ id: LogID, batch: [UInt8]) throws -> AppendOutcome {
        for _ in 0..<1_000 {
            let outcome = batch.withUnsafeBytes { store.append(to: id, batch: $0) }
            driver.runUntilQuiet()
            if outcome != .wouldBlock { return outcome }
        }
        throw TestFailure("append kept blocking")
    }

    func read(_ id: LogID, from offset: LogOffset, maxBytes: Int = 1 << 20) throws -> Result<ReadResult, StorageError> {
        let context = context()
        switch store.read(from: id, offset: offset, maxBytes: maxBytes, context: context) {
        case .ready(let result): return .success(result)
        case .failed(let error): return .failure(error)
        case .pending: return try waitFor("read") { if case .readCompleted(context, let result) = $0 { result } else { nil } }
        }
    }

    /// The payloads of the batches a read returned, with their offsets; checks each batch as a
    /// client would (header, offset, CRC) on the way.
    func batches(_ result: ReadResult) throws -> [(offset: LogOffset, payload: [UInt8])] {
        try result.withUnsafeBytes { try storedBatches($0, from: result.offset) }
    }

    /// Every batch from the log's start to its committed end, reading as a consumer would.
    func readAll(_ id: LogID) throws -> [(offset: LogOffset, payload: [UInt8])] {
        guard let log = store.log(id) else { throw TestFailure("no log \(id)") }
        var offset = log.startOffset
        var all: [(LogOffset, [UInt8])] = []
        while offset < log.committedEnd {
            let result = try read(id, from: offset, maxBytes: 8 << 10).get()
            let found = try batches(result)
            guard !found.isEmpty else { throw TestFailure("empty read at \(offset) before the end \(log.committedEnd)") }
            all.append(contentsOf: found)
            offset = result.nextOffset
        }
        return all
    }

    func seek(_ id: LogID, atOrAfter timeMicros: UInt64) throws -> Result<LogOffset, StorageError> {
        let context = context()
        switch store.seek(id, atOrAfter: timeMicros, context: context) {
        case .ready(let offset): return .success(offset)
        case .failed(let error): return .failure(error)
        case .pending: return try waitFor("sought") { if case .sought(context, let result) = $0 { result } else { nil } }
        }
    }

    func seek(_ id: LogID, record: UInt64) throws -> Result<LogOffset, StorageError> {
        let context = context()
        switch store.seek(id, record: record, context: context) {
        case .ready(let offset): return .success(offset)
        case .failed(let error): return .failure(error)
        case .pending: return try waitFor("sought") { if case .sought(context, let result) = $0 { result } else { nil } }
        }
    }

    /// Commits (or with `delete`, deletes) a cursor and waits until it is durable.
    func cursor(_ id: LogID, _ name: String, set position: CursorPosition? = nil, expected: CursorPosition?? = nil) throws
        -> Result<CursorPosition?, StorageError>
    {
        let context = context()
        let start =
            if let position { store.commitCursor(id, name: name, position: position, expected: expected, context: context) } else {
                store.deleteCursor(id, name: name, context: context)
            }
        switch start {
        case .failed(let error): return .failure(error)
        case .pending: return try waitFor("cursorUpdated") { if case .cursorUpdated(context, let result) = $0 { result } else { nil } }
        }
    }

    func trim(_ id: LogID, to offset: LogOffset) throws -> Result<LogOffset, StorageError> {
        let context = context()
        store.trim(id, to: offset, context: context)
        return try waitFor("trimmed") { if case .trimmed(context, let result) = $0 { result } else { nil } }
    }

    /// Writes a clean checkpoint for every log (as a graceful shutdown does), then reopens.
    func shutDownCleanlyAndReopen() throws {
        store.beginShutdown()
        let clean = try waitFor("shutdownComplete") { if case .shutdownComplete(let clean) = $0 { clean } else { nil } }
        if !clean { throw TestFailure("the shutdown was not clean") }
        try driver.crashAndRecover()
    }

    /// Advances virtual time and lets time-driven work (checkpoints, retention) run.
    func passTime(micros: UInt64) {
        driver.nowMicros += micros
        driver.maintain()
        driver.runUntilQuiet()
    }

    func segmentFiles(_ name: String) -> [String] {
        disk.names(in: "/data/logs/\(name)").filter { $0.hasSuffix(".seg") }
    }
}
