import Metrics
import RingLogStorage
import RingLogWire

/// Labels of the histograms, so the exporter can choose their buckets.
public enum ServerMetricsLabels {
    public static let fdatasync = "ringlog_fdatasync_seconds"
    public static let commitBatches = "ringlog_commit_batches"
}

/// The server's metrics, through swift-metrics (the daemon exports them in the Prometheus text
/// format). The data path only bumps plain counters; they are published here once a second and on
/// every scrape, so metrics cost the hot path nothing.
struct ServerMetrics {
    private let appends = Counter(label: "ringlog_appends_total")
    private let appendRecords = Counter(label: "ringlog_append_records_total")
    private let appendBytes = Counter(label: "ringlog_append_bytes_total")
    private let reads = Counter(label: "ringlog_reads_total")
    private let readBytes = Counter(label: "ringlog_read_bytes_total")
    private let fdatasyncs = Counter(label: "ringlog_fdatasyncs_total")
    private let fdatasyncSeconds = Timer(label: ServerMetricsLabels.fdatasync)
    private let commitBatches = Recorder(label: ServerMetricsLabels.commitBatches, aggregate: true)
    private let connections = Gauge(label: "ringlog_connections")
    private let connectionsAccepted = Counter(label: "ringlog_connections_accepted_total")
    private let connectionsRejected = Counter(label: "ringlog_connections_rejected_total")
    private let cacheHits = Counter(label: "ringlog_tail_cache_hits_total")
    private let cacheMisses = Counter(label: "ringlog_tail_cache_misses_total")
    private let longPollWaiters = Gauge(label: "ringlog_long_poll_waiters")
    private let timeouts = Counter(label: "ringlog_timeouts_total")
    private var errors: [ErrorCode: Counter] = [:]
    private var logGauges: [String: (start: Gauge, committed: Gauge, stored: Gauge, segments: Gauge)] = [:]
    /// What was already published, so counters advance by the difference.
    private var published = ServerCounters()
    private var publishedStore = StoreStatistics()


    mutating func publish(counters: ServerCounters, store: LogStore, openConnections: Int, waiting: Int) {
        appends.increment(by: Int64(counters.appends - published.appends))
        appendRecords.increment(by: Int64(counters.appendedRecords - published.appendedRecords))
        appendBytes.increment(by: Int64(counters.appendedBytes - published.appendedBytes))
        reads.increment(by: Int64(counters.reads - published.reads))
        readBytes.increment(by: Int64(counters.readBytes - published.readBytes))
        connectionsAccepted.increment(by: Int64(counters.connectionsAccepted - published.connectionsAccepted))
        connectionsRejected.increment(by: Int64(counters.connectionsRejected - published.connectionsRejected))
        timeouts.increment(by: Int64(counters.timeouts - published.timeouts))
        for (code, count) in counters.errorsByCode {
            guard let errorCode = ErrorCode(rawValue: code) else { continue }
            let counter = errors[errorCode] ?? Counter(label: "ringlog_errors_total", dimensions: [("code", errorCode.description)])
            errors[errorCode] = counter
            counter.increment(by: Int64(count - (published.errorsByCode[code] ?? 0)))
        }
        published = counters

        let statistics = store.statistics
        fdatasyncs.increment(by: Int64(statistics.fdatasyncs - publishedStore.fdatasyncs))
        cacheHits.increment(by: Int64(statistics.tailReadHits - publishedStore.tailReadHits))
        cacheMisses.increment(by: Int64(statistics.tailReadMisses - publishedStore.tailReadMisses))
        publishedStore = statistics
        let samples = store.takeSamples()
        for nanos in samples.fdatasyncNanos { fdatasyncSeconds.recordNanoseconds(Int64(nanos)) }
        for batches in samples.batchesPerCommit { commitBatches.record(batches) }

        connections.record(openConnections)
        longPollWaiters.record(waiting)
        publishLogs(store.logs)
    }

    private mutating func publishLogs(_ logs: [LogInfo]) {
        var seen: Set<String> = []
        for log in logs {
            seen.insert(log.name)
            let gauges =
                logGauges[log.name]
                ?? (
                    Gauge(label: "ringlog_log_start_offset", dimensions: [("log", log.name)]),
                    Gauge(label: "ringlog_log_committed_offset", dimensions: [("log", log.name)]),
                    Gauge(label: "ringlog_log_stored_bytes", dimensions: [("log", log.name)]),
                    Gauge(label: "ringlog_log_segments", dimensions: [("log", log.name)])
                )
            logGauges[log.name] = gauges
            gauges.start.record(Double(log.startOffset.rawValue))
            gauges.committed.record(Double(log.committedEnd.rawValue))
            gauges.stored.record(log.storedBytes)
            gauges.segments.record(log.segmentCount)
        }
        for (name, gauges) in logGauges where !seen.contains(name) {
            for gauge in [gauges.start, gauges.committed, gauges.stored, gauges.segments] { gauge.destroy() }
            logGauges[name] = nil
        }
    }
}
