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
    /// Idempotent retries answered with the offset of the batch they repeat.
    var duplicateAppends: UInt64 = 0
    var producersInitialized: UInt64 = 0
    /// The Kafka listener (docs/kafka.md).
    var kafkaRequests: UInt64 = 0
    var kafkaRefused: UInt64 = 0
    var kafkaProduceErrors: UInt64 = 0
    var kafkaTopicsCreated: UInt64 = 0
    var kafkaTopicsDeleted: UInt64 = 0
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
    /// Every statistic, in the order `ringlog info` shows them. Each name is what SERVER_STATS
    /// carries and, with `ringlog_` before it, the Prometheus family in `GET /metrics`.
    func statistics() -> [Statistic] {
        var allocator: (inUse: UInt64, mapped: UInt64, free: UInt64) = (0, 0, 0)
        ringlog_allocator_stats(&allocator.inUse, &allocator.mapped, &allocator.free)
        let storage = store.statistics
        func counter(_ name: String, _ value: UInt64, _ help: String) -> Statistic { Statistic(name: name, kind: .counter, help: help, value: value) }
        func gauge(_ name: String, _ value: UInt64, _ help: String) -> Statistic { Statistic(name: name, kind: .gauge, help: help, value: value) }
        return [
            gauge("connections_open", UInt64(connections.count), "Client connections open now."),
            gauge("loop_handles_in_use", UInt64(loop.handlesInUse), "Handles registered with the event loop (connections, listeners, disk requests in flight)."),
            counter("connections_accepted_total", counters.connectionsAccepted, "Client connections accepted."),
            counter("connections_rejected_total", counters.connectionsRejected, "Connections refused because max-connections were open."),
            counter("requests_total", counters.requests, "Requests received."),
            counter("appends_total", counters.appends, "Batches appended (acknowledged or not yet)."),
            counter("appended_records_total", counters.appendedRecords, "Records in the batches appended, as their headers count them."),
            counter("appended_bytes_total", counters.appendedBytes, "Bytes of batches appended, headers included."),
            counter("appends_blocked_total", counters.appendsBlocked, "Appends that had to wait for room (tail cache or next segment)."),
            counter("duplicate_appends_total", counters.duplicateAppends, "Idempotent retries answered with the offset of the batch they repeat, not stored again."),
            counter("producers_initialized_total", counters.producersInitialized, "Producer ids and epochs handed out by INIT_PRODUCER."),
            counter("kafka_requests_total", counters.kafkaRequests, "Requests answered on the Kafka listener."),
            counter("kafka_refused_total", counters.kafkaRefused, "Kafka connections closed over a request that could not be read or is not served."),
            counter("kafka_produce_errors_total", counters.kafkaProduceErrors, "Kafka partitions' batches refused in Produce requests."),
            counter("kafka_topics_created_total", counters.kafkaTopicsCreated, "Kafka topics created (on first use or by CreateTopics)."),
            counter("kafka_topics_deleted_total", counters.kafkaTopicsDeleted, "Kafka topics deleted by DeleteTopics."),
            counter("reads_total", counters.reads, "Read requests answered."),
            counter("read_bytes_total", counters.readBytes, "Bytes of batches returned by reads."),
            gauge("long_polls_waiting", UInt64(waiters.longPollsWaiting), "Reads waiting at the end of a log for new batches."),
            gauge("acks_waiting", UInt64(waiters.acksWaiting), "Appends placed and waiting for their acknowledgement."),
            counter("long_polls_expired_total", counters.longPollsExpired, "Long-polls answered empty when their wait ran out."),
            counter("fdatasyncs_total", UInt64(storage.fdatasyncs), "Segment fdatasyncs completed."),
            counter("segment_writes_total", UInt64(storage.writes), "Writes of batches to segment files."),
            counter("uncached_segment_writes_total", UInt64(storage.uncachedWrites), "Segment writes made uncached (RWF_DONTCACHE)."),
            counter("allocation_steps_total", UInt64(storage.allocationSteps), "Segment allocation steps (fallocate ahead of the appends)."),
            counter("tail_cache_hits_total", UInt64(storage.tailReadHits), "Reads served from the tail cache."),
            counter("tail_cache_misses_total", UInt64(storage.tailReadMisses), "Reads that had to go to a segment file."),
            counter("timeouts_total", counters.timeouts, "Connections closed for a header, payload or send timeout."),
            gauge("buffered_bytes", UInt64(budget.used), "Bytes all connections hold in buffers now (the shared memory budget's use)."),
            gauge("buffered_bytes_limit", UInt64(budget.limit), "The shared memory budget for connection buffers."),
            gauge("reads_waiting", UInt64(budget.parkedReadCount), "Reads waiting for memory in the budget."),
            counter("reads_waited_for_memory_total", counters.readsParked, "Reads that had to wait for memory."),
            gauge("connections_waiting_for_memory", UInt64(budget.waiting.count), "Connections not read from until memory frees up."),
            counter("connections_paused_for_memory_total", counters.budgetPauses, "Times a connection stopped being read for lack of memory."),
            counter("connections_closed_for_memory_total", counters.memoryPressureCloses, "Connections closed for holding memory under pressure."),
            counter("requests_refused_for_memory_total", counters.refusedForMemory, "Requests refused with a memory error."),
            gauge("read_buffer_pool_idle_bytes", UInt64(store.readBuffers.idleByteCount), "Bytes of read buffers kept for reuse."),
            gauge("read_buffers_in_use_bytes", UInt64(store.readBuffers.inUseBytes), "Bytes of read buffers held by reads in progress or unsent responses."),
            gauge("allocator_in_use_bytes", allocator.inUse, "Bytes the C allocator has handed out."),
            gauge("allocator_mapped_bytes", allocator.mapped, "Bytes the C allocator has mapped."),
            gauge("allocator_free_bytes", allocator.free, "Bytes the C allocator holds free."),
            gauge("logs", UInt64(store.logs.count), "Logs in the data directory."),
        ]
    }

    /// Error responses by code, every code included from the start (at zero).
    func errorCounts() -> [(code: ErrorCode, count: UInt64)] {
        ErrorCode.allCases.map { ($0, counters.errorsByCode[$0.rawValue] ?? 0) }
    }

    func serverStats() -> ServerStats {
        var entries = statistics().map { ($0.name, $0.value) }
        for (code, count) in errorCounts() { entries.append(("errors_total{code=\"\(code.description)\"}", count)) }
        return ServerStats(entries: entries)
    }
}
