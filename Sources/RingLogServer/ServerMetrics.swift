import Glibc
import RingLogStorage
import RingLogWire

/// One figure the server reports, under one name everywhere: in SERVER_STATS (`ringlog info`), in
/// `GET /metrics` with the `ringlog_` prefix, and camelCased in `ringlog info --json`
/// (docs/operations.md lists them all).
struct Statistic {
    enum Kind: String {
        case counter, gauge
    }

    let name: String
    let kind: Kind
    let help: String
    let value: UInt64
}

/// The Prometheus text exposition of the server: every family with its `# HELP` and `# TYPE`,
/// in name order, so two scrapes differ only in values. Counters are read from the loop's plain
/// counters at scrape time (the hot path keeps no metrics objects); the two histograms collect
/// the store's samples once a second and at each scrape.
struct ServerMetrics {
    static let fdatasyncBucketsSeconds: [Double] = [0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1]
    static let commitBatchBuckets: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000]

    private var fdatasyncSeconds = HistogramCounts(bounds: ServerMetrics.fdatasyncBucketsSeconds)
    private var commitBatches = HistogramCounts(bounds: ServerMetrics.commitBatchBuckets)

    /// Takes the store's latency and group-commit samples into the histograms.
    mutating func collect(_ store: LogStore) {
        let samples = store.takeSamples()
        for nanos in samples.fdatasyncNanos { fdatasyncSeconds.record(Double(nanos) / 1e9) }
        for batches in samples.batchesPerCommit { commitBatches.record(Double(batches)) }
    }

    func render(
        statistics: [Statistic], errors: [(code: ErrorCode, count: UInt64)], logs: [LogInfo],
        cursors: [(log: String, cursor: String, lagBytes: UInt64)] = []
    ) -> [UInt8] {
        var families: [(name: String, text: String)] = []
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            var text = "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { text += "\(name)\(sample.labels) \(sample.value)\n" }
            families.append((name, text))
        }
        for statistic in statistics where !statistic.name.hasPrefix("errors_total") {
            family("ringlog_\(statistic.name)", statistic.kind.rawValue, statistic.help, [("", "\(statistic.value)")])
        }
        family(
            "ringlog_errors_total", "counter", "Error responses sent, by error code (every code is present from the start).",
            errors.map { ("{code=\"\($0.code.description)\"}", "\($0.count)") })
        let sortedLogs = logs.sorted { $0.name < $1.name }
        func perLog(_ name: String, _ help: String, _ value: (LogInfo) -> UInt64) {
            family(name, "gauge", help, sortedLogs.map { ("{log=\"\(escapeLabel($0.name))\"}", "\(value($0))") })
        }
        perLog("ringlog_log_start_offset_bytes", "Byte offset of the log's first kept batch.") { $0.startOffset.rawValue }
        perLog("ringlog_log_committed_end_bytes", "Byte offset one past the log's last committed (durable) batch.") { $0.committedEnd.rawValue }
        perLog("ringlog_log_stored_bytes", "Bytes of batches the log holds, from its first segment's base to the committed end.") { UInt64($0.storedBytes) }
        perLog("ringlog_log_disk_bytes", "Bytes allocated to the log's segment files, the spare included.") { UInt64($0.diskBytes) }
        perLog("ringlog_log_segments", "Segment files of the log.") { UInt64($0.segmentCount) }
        perLog("ringlog_log_committed_records", "Records numbered up to the committed end (the next batch's first record number).") { $0.committedRecords }
        perLog("ringlog_log_producers", "Idempotent producers the log remembers (at most max-producers).") { UInt64($0.producers) }
        family(
            "ringlog_cursor_lag_bytes", "gauge", "Bytes from each cursor to its log's committed end (0 at or past it).",
            cursors.sorted { ($0.log, $0.cursor) < ($1.log, $1.cursor) }.map {
                ("{log=\"\(escapeLabel($0.log))\",cursor=\"\(escapeLabel($0.cursor))\"}", "\($0.lagBytes)")
            })
        family("ringlog_fdatasync_seconds", "histogram", "Time each segment fdatasync took.", fdatasyncSeconds.samples(name: "ringlog_fdatasync_seconds"))
        family("ringlog_commit_batches", "histogram", "Batches each fdatasync made durable (group commit).", commitBatches.samples(name: "ringlog_commit_batches"))
        family("ringlog_build_info", "gauge", "The running ringlogd's version (always 1).", [("{version=\"\(ringLogVersion)\"}", "1")])
        families += ProcessMetrics.families()
        families.sort { $0.name < $1.name }
        return Array(families.map(\.text).joined().utf8)
    }

    /// A label value with `\`, `"` and newlines escaped.
    private func escapeLabel(_ value: String) -> String {
        var out = ""
        for character in value {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.append(character)
            }
        }
        return out
    }
}

/// Cumulative histogram buckets in the Prometheus sense.
struct HistogramCounts {
    let bounds: [Double]
    private var counts: [UInt64]
    private var sum = 0.0
    private var total: UInt64 = 0

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = Array(repeating: 0, count: bounds.count)
    }

    mutating func record(_ value: Double) {
        for index in bounds.indices where value <= bounds[index] { counts[index] += 1 }
        sum += value
        total += 1
    }

    /// `_bucket`, `_sum` and `_count` lines, as (suffix and labels, value).
    func samples(name: String) -> [(labels: String, value: String)] {
        var samples = zip(bounds, counts).map { bound, count in ("_bucket{le=\"\(formatBound(bound))\"}", "\(count)") }
        samples.append(("_bucket{le=\"+Inf\"}", "\(total)"))
        samples.append(("_sum", "\(sum)"))
        samples.append(("_count", "\(total)"))
        return samples
    }

    private func formatBound(_ bound: Double) -> String {
        bound == bound.rounded() && bound >= 1 ? "\(Int(bound))" : "\(bound)"
    }
}

/// The process metrics Prometheus clients conventionally export (`process_*`), from /proc.
enum ProcessMetrics {
    static func families() -> [(name: String, text: String)] {
        var families: [(String, String)] = []
        func gauge(_ name: String, _ type: String, _ help: String, _ value: String?) {
            guard let value else { return }
            families.append((name, "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n\(name) \(value)\n"))
        }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let stat = readProc("/proc/self/stat").flatMap { text -> [Substring]? in
            // Fields after the command name (which may hold spaces) in parentheses.
            guard let close = text.lastIndex(of: ")") else { return nil }
            return text[text.index(after: close)...].split(separator: " ")
        }
        if let stat, stat.count > 21, let user = Double(stat[11]), let system = Double(stat[12]), let started = Double(stat[19]) {
            gauge("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", "\((user + system) / ticks)")
            if let boot = bootTimeSeconds() {
                gauge("process_start_time_seconds", "gauge", "When the process started, in seconds since the Unix epoch.", "\(Double(boot) + started / ticks)")
            }
            if let virtual = UInt64(stat[20]) { gauge("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "\(virtual)") }
            if let pages = UInt64(stat[21]) {
                gauge("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "\(pages * UInt64(sysconf(Int32(_SC_PAGESIZE))))")
            }
        }
        gauge("process_open_fds", "gauge", "Open file descriptors.", openDescriptorCount().map { "\($0)" })
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            gauge("process_max_fds", "gauge", "The open-file limit.", "\(limit.rlim_cur)")
        }
        return families
    }

    private static func readProc(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: bytes[0..<count], as: UTF8.self)
    }

    private static func bootTimeSeconds() -> UInt64? {
        guard let text = readProc("/proc/stat"), let line = text.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }) else { return nil }
        return UInt64(line.dropFirst("btime ".count))
    }

    private static func openDescriptorCount() -> Int? {
        guard let directory = opendir("/proc/self/fd") else { return nil }
        defer { closedir(directory) }
        var count = 0
        while readdir(directory) != nil { count += 1 }
        // ".", ".." and the directory's own descriptor.
        return max(0, count - 3)
    }
}
