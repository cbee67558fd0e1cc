import CRingLogSupport
import RingLogWire
import Synchronization

/// The version ringlogd reports in hello responses and `--version`.
public let ringLogVersion = "0.1.0"

/// State shared between the loop thread and the threads that start and stop it.
final class ServerControl: Sendable {
    private let state = Mutex(State())

    struct State {
        var stopRequested = false
        var cleanShutdown = false
        var stopped = false
        var waiting: [@Sendable (Bool) -> Void] = []
    }

    var stopRequested: Bool {
        get { state.withLock { $0.stopRequested } }
        set { state.withLock { $0.stopRequested = newValue } }
    }

    var cleanShutdown: Bool {
        get { state.withLock { $0.cleanShutdown } }
        set { state.withLock { $0.cleanShutdown = newValue } }
    }

    var stopped: Bool { state.withLock { $0.stopped } }

    /// Records that the loop has finished and tells everyone waiting.
    func markStopped() {
        let (waiting, clean) = state.withLock { state in
            state.stopped = true
            defer { state.waiting.removeAll() }
            return (state.waiting, state.cleanShutdown)
        }
        for waiter in waiting { waiter(clean) }
    }

    /// Calls `body` with the clean flag once the loop has finished (at once if it has).
    func whenStopped(_ body: @escaping @Sendable (Bool) -> Void) {
        let done: Bool? = state.withLock { state in
            if state.stopped { return state.cleanShutdown }
            state.waiting.append(body)
            return nil
        }
        if let done { body(done) }
    }
}

/// Counters the loop keeps for stats and metrics. Touched only on the loop thread.
struct ServerCounters {
    var connectionsAccepted: UInt64 = 0
    var connectionsRejected: UInt64 = 0
    var requests: UInt64 = 0
    var appends: UInt64 = 0
    var appendedBytes: UInt64 = 0
    var appendedRecords: UInt64 = 0
    var appendsBlocked: UInt64 = 0
    var reads: UInt64 = 0
    var readBytes: UInt64 = 0
    var longPollsStarted: UInt64 = 0
    var longPollsExpired: UInt64 = 0
    var bytesReceived: UInt64 = 0
    var bytesSent: UInt64 = 0
    var receiveBufferShortages: UInt64 = 0
    var timeouts: UInt64 = 0
    /// Reads that waited for room in the memory budget, and connections paused for it.
    var readsParked: UInt64 = 0
    var budgetPauses: UInt64 = 0
    var memoryPressureCloses: UInt64 = 0
    var refusedForMemory: UInt64 = 0
    var errorsByCode: [UInt16: UInt64] = [:]

    mutating func countError(_ code: ErrorCode) { errorsByCode[code.rawValue, default: 0] += 1 }
}

extension ServerLoop {
    func serverStats() -> ServerStats {
        var allocator: (inUse: UInt64, mapped: UInt64, free: UInt64) = (0, 0, 0)
        ringlog_allocator_stats(&allocator.inUse, &allocator.mapped, &allocator.free)
        var entries: [(String, UInt64)] = [
            ("connections_open", UInt64(connections.count)),
            ("loop_handles_in_use", UInt64(loop.handlesInUse)),
            ("connections_accepted_total", counters.connectionsAccepted),
            ("connections_rejected_total", counters.connectionsRejected),
            ("requests_total", counters.requests),
            ("appends_total", counters.appends),
            ("appended_bytes_total", counters.appendedBytes),
            ("appends_blocked_total", counters.appendsBlocked),
            ("reads_total", counters.reads),
            ("read_bytes_total", counters.readBytes),
            ("long_polls_waiting", UInt64(waiters.longPollsWaiting)),
            ("acks_waiting", UInt64(waiters.acksWaiting)),
            ("long_polls_expired_total", counters.longPollsExpired),
            ("fdatasyncs_total", UInt64(store.statistics.fdatasyncs)),
            ("segment_writes_total", UInt64(store.statistics.writes)),
            ("uncached_segment_writes_total", UInt64(store.statistics.uncachedWrites)),
            ("tail_cache_hits_total", UInt64(store.statistics.tailReadHits)),
            ("tail_cache_misses_total", UInt64(store.statistics.tailReadMisses)),
            ("timeouts_total", counters.timeouts),
            ("buffered_bytes", UInt64(budget.used)),
            ("buffered_bytes_limit", UInt64(budget.limit)),
            ("reads_waiting", UInt64(budget.parkedReadCount)),
            ("reads_waited_for_memory_total", counters.readsParked),
            ("connections_waiting_for_memory", UInt64(budget.waiting.count)),
            ("connections_paused_for_memory_total", counters.budgetPauses),
            ("connections_closed_for_memory_total", counters.memoryPressureCloses),
            ("requests_refused_for_memory_total", counters.refusedForMemory),
            ("read_buffer_pool_idle_bytes", UInt64(store.readBuffers.idleByteCount)),
            ("read_buffers_in_use_bytes", UInt64(store.readBuffers.inUseBytes)),
            ("allocator_in_use_bytes", allocator.inUse),
            ("allocator_mapped_bytes", allocator.mapped),
            ("allocator_free_bytes", allocator.free),
            ("logs", UInt64(store.logs.count)),
        ]
        for (code, count) in counters.errorsByCode.sorted(by: { $0.key < $1.key }) {
            entries.append(("errors_total{code=\"\(ErrorCode(rawValue: code)?.description ?? String(code))\"}", count))
        }
        return ServerStats(entries: entries)
    }
}
