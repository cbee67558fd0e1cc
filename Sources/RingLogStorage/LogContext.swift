import DequeModule
import Logging
import RingLogWire

/// What the logs of one store share, and all a log reaches outside itself: the settings, the
/// clocks, the disk-request queue, the tail cache, the read buffers, the events for the driver,
/// the statistics, and which logs have I/O to issue. The store owns it; logs hold it.
final class LogContext {
    let configuration: StoreConfiguration
    let environment: StorageEnvironment
    let requests = DiskRequests()
    let logger: Logger
    /// The recent-append cache every log copies its batches into.
    let tail: TailBuffer
    /// Read buffers, recycled: a catch-up reader's multi-megabyte reads reuse the same pages.
    let readBuffers = BufferPool(maxPooledBytes: 16 << 20)
    /// The zeros zero-ahead writes (one chunk, allocated once; nil when zero-ahead is off).
    let zeroChunk: OwnedBytes?

    var events: Deque<StoreEvent> = []
    var statistics = StoreStatistics()
    /// Cleared the first time the kernel refuses uncached I/O; every write and read is cached after.
    private(set) var uncachedIOWorks = true
    private(set) var shuttingDown = false
    /// An append was refused for lack of room in the tail cache; the next write of any log wakes it.
    var appendsWaitingForCache = false
    /// The oldest tail-cache sequence some log has not written yet; asked only when the cache is
    /// full (the store answers: it knows every log).
    var unwrittenFloor: () -> UInt64 = { 0 }
    private var pinnedFloor: UInt64 = 0
    private(set) var dirtyLogs: [Log] = []

    init(configuration: StoreConfiguration, environment: StorageEnvironment, logger: Logger) {
        self.configuration = configuration
        self.environment = environment
        self.logger = logger
        tail = TailBuffer(capacity: configuration.tailCacheBytes)
        zeroChunk = configuration.zeroAheadBytes > 0 ? OwnedBytes(zeroedCount: configuration.zeroChunkBytes) : nil
    }

    func emit(_ event: StoreEvent) { events.append(event) }

    /// `log` has writes or fdatasyncs to issue at the next `LogStore.flush`.
    func markDirty(_ log: Log) {
        guard !log.isDirty else { return }
        log.isDirty = true
        dirtyLogs.append(log)
    }

    func takeDirtyLogs() -> [Log] {
        defer { dirtyLogs.removeAll(keepingCapacity: true) }
        return dirtyLogs
    }

    /// Room for `count` bytes in the tail cache, or nil while unwritten bytes fill it.
    func allocateTail(_ count: Int) -> UInt64? {
        if let sequence = tail.allocate(count, pinnedFloor: pinnedFloor) { return sequence }
        pinnedFloor = min(tail.head, unwrittenFloor())
        return tail.allocate(count, pinnedFloor: pinnedFloor)
    }

    func beginShutdown() { shuttingDown = true }

    func uncachedIOUnsupported() {
        guard uncachedIOWorks else { return }
        uncachedIOWorks = false
        logger.notice("uncached I/O (RWF_DONTCACHE, Linux 6.14+) is not supported here; large batches and cold reads go through the page cache")
    }
}
