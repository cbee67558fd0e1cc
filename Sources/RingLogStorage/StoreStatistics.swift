/// Counters for metrics and tests.
public struct StoreStatistics: Sendable {
    public var writes = 0
    /// Segment writes that went out uncached (`StoreConfiguration.uncachedBatchBytes`).
    public var uncachedWrites = 0
    /// Zero-ahead chunks written and written back.
    public var zeroChunks = 0
    /// Allocate-ahead steps (fallocate) completed.
    public var allocationSteps = 0
    public var fdatasyncs = 0
    public var tailReadHits = 0
    public var tailReadMisses = 0
    /// How long each fdatasync took, and how many batches each advance of a committed end covered
    /// (group commit), since the last `takeSamples`. Bounded: samples past the cap are dropped.
    public var fdatasyncNanos: [UInt64] = []
    public var batchesPerCommit: [Int] = []
    static let sampleCap = 1 << 16

    public init() {}

    mutating func noteSync(nanos: UInt64) {
        fdatasyncs += 1
        if fdatasyncNanos.count < StoreStatistics.sampleCap { fdatasyncNanos.append(nanos) }
    }

    mutating func noteCommit(batches: Int) {
        if batchesPerCommit.count < StoreStatistics.sampleCap { batchesPerCommit.append(batches) }
    }
}
