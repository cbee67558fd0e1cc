import ArgumentParser
import DequeModule
import Dispatch
import Glibc
import Histogram
import RingLogClient
import RingLogIO
import RingLogWire

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a RingLog server: produce, consume (catch-up read) or end-to-end.",
        discussion: """
            Prints a progress line each second on standard error and a summary at the end (records/s, \
            MB/s of record payload, latency percentiles, errors, CPU). With --rate the load is open-loop: \
            requests are scheduled at fixed intervals and latency is measured from when each was due, \
            so a stalled server shows up in the percentiles instead of slowing the load down \
            (coordinated omission corrected).
            """,
        subcommands: [BenchProduce.self, BenchConsume.self, BenchEndToEnd.self])
}

struct BenchOptions: ParsableArguments {
    @OptionGroup var server: ServerOptions
    @Option(help: "Log to use (created when missing).") var log = "bench"
    @Option(help: "Payload bytes of each record.") var recordBytes = 100
    @Option(help: "Seconds to measure (after the warm-up).") var duration: Double = 10
    @Option(help: "Seconds of load before measuring starts.") var warmup: Double = 1
    @Option(help: "Process id of ringlogd, to report its CPU use alongside the client's (without it, the server's CPU is n/a).")
    var serverPid: Int32?
    @Flag(help: "Print the summary as JSON.") var json = false
    @Flag(help: "No progress lines.") var quiet = false

    func validate() throws {
        guard recordBytes >= 8 else { throw ValidationError("--record-bytes must be at least 8 (records carry a timestamp)") }
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
    }
}

struct BenchProduce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "produce", abstract: "Append as fast as allowed (or at --rate).")

    @OptionGroup var options: BenchOptions
    @Option(help: "Connections, each with its own pipeline.") var connections = 16
    @Option(help: "Requests in flight per connection.") var pipeline = 16
    @Option(help: "Records in each append (one batch per append).") var recordsPerBatch = 1
    @Option(help: "Fill each batch up to this many bytes instead (overrides --records-per-batch).") var batchBytes: String?
    @Option(help: "durable or written.") var mode = "durable"
    @Option(help: "Target records per second in total (open loop); default: as fast as acknowledgements allow.") var rate: Double?
    @Option(help: "Stop after this many records instead of after --duration.") var count: Int?
    @Option(
        help: """
            Alongside the appends, commit cursors of the log at this many commits per second (open \
            loop, pipelined on a connection of their own, 32 cursors each moved by one record at a \
            time); the summary's cursorCommitsPerSecond says how many were acknowledged.
            """)
    var cursorCommits: Double?
    @Flag(
        help: """
            Idempotent appends: each connection gets a producer id (INIT_PRODUCER) and numbers its             batches, which the server checks and remembers (docs/protocol.md).
            """)
    var idempotent = false
    @Option(help: "Batch format: 2 (the default, as the client library writes) or 1 (48-byte headers, as before format 2).")
    var batchFormat = 2

    func run() async throws {
        guard batchFormat == 1 || batchFormat == 2 else { throw ValidationError("--batch-format must be 1 or 2") }
        if idempotent && batchFormat == 1 { throw ValidationError("--idempotent needs --batch-format 2") }
        guard let ack = ["durable": AckMode.durable, "written": AckMode.written][mode] else { throw ValidationError("--mode must be durable or written") }
        let perBatch = try batchBytes.map { max(1, (Int(try parseSize($0)) - (batchFormat == 1 ? Batch.Format.v1 : Batch.Format.v2).headerBytes) / (options.recordBytes + RecordFraming.overheadBytes)) } ?? recordsPerBatch
        let (log, address) = try await prepareLog(options)
        let plan = ProducePlan(
            log: log, connections: connections, pipeline: pipeline, recordBytes: options.recordBytes, recordsPerBatch: perBatch, mode: ack,
            rate: rate, count: count, stampRecords: false, cursorCommitsPerSecond: cursorCommits, idempotent: idempotent, format: batchFormat == 1 ? .v1 : .v2)
        let summary = try await BenchRunner.run(options: options, workload: "produce") { core, report in
            ProduceRun(core: core, address: address, plan: plan, options: options, report: report)
        }
        try finishBench(summary, options)
    }
}

struct BenchConsume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume", abstract: "Read a log from its start to its end as fast as possible (catch-up read).")

    @OptionGroup var options: BenchOptions
    @Option(help: "First append this many bytes if the log holds less (e.g. 1GiB).") var prefill: String?
    @Option(help: "Bytes asked for in each read.") var readBytes: String = "4MiB"
    @Option(help: "Batch size used for the prefill.") var batchBytes: String = "64KiB"

    func run() async throws {
        let (log, address) = try await prepareLog(options)
        if let prefill {
            let target = try parseSize(prefill)
            let client = try await options.server.connect(options.server.watchdog())
            let info = try await reportingErrors { try await client.info(log) }
            client.close()
            let missing = info.startOffset.distance(to: info.committedEnd) < Int(target) ? Int(target) - info.startOffset.distance(to: info.committedEnd) : 0
            if missing > 0 {
                let perBatch = max(1, (Int(try parseSize(batchBytes)) - Batch.Format.v2.headerBytes) / (options.recordBytes + RecordFraming.overheadBytes))
                let batchSize = RecordFraming.batchBytes(recordBytes: perBatch * options.recordBytes, count: perBatch)
                let plan = ProducePlan(
                    log: log, connections: 4, pipeline: 8, recordBytes: options.recordBytes, recordsPerBatch: perBatch, mode: .durable, rate: nil,
                    count: (missing / batchSize + 1) * perBatch, stampRecords: false)
                if !options.quiet { Console.error("prefilling \(missing) bytes") }
                var prefillOptions = options
                prefillOptions.quiet = true
                prefillOptions.warmup = 0
                prefillOptions.duration = 3_600
                let quiet = prefillOptions
                let prefilled = try await BenchRunner.run(options: quiet, workload: "prefill") { core, report in
                    ProduceRun(core: core, address: address, plan: plan, options: quiet, report: report)
                }
                // Ctrl-C during the prefill ends the command, not just the prefill.
                if prefilled.interrupted { throw ExitCode(130) }
            }
        }
        let readSize = Int(try parseSize(readBytes))
        let summary = try await BenchRunner.run(options: options, workload: "consume") { core, report in
            ConsumeRun(core: core, address: address, log: log, readBytes: readSize, options: options, report: report)
        }
        try finishBench(summary, options)
    }
}

struct BenchEndToEnd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "end-to-end",
        abstract: "Produce at --rate while a tailing consumer measures append-to-delivery latency.")

    @OptionGroup var options: BenchOptions
    @Option(help: "Records per second produced (open loop).") var rate: Double = 10_000
    @Option(help: "Producer connections.") var connections = 1
    @Option(help: "Requests in flight per producer connection.") var pipeline = 64
    @Option(help: "durable or written.") var mode = "durable"

    func run() async throws {
        guard let ack = ["durable": AckMode.durable, "written": AckMode.written][mode] else { throw ValidationError("--mode must be durable or written") }
        let (log, address) = try await prepareLog(options)
        let plan = ProducePlan(
            log: log, connections: connections, pipeline: pipeline, recordBytes: options.recordBytes, recordsPerBatch: 1, mode: ack,
            rate: rate, count: nil, stampRecords: true)
        let summary = try await BenchRunner.run(options: options, workload: "end-to-end") { core, report in
            EndToEndRun(core: core, address: address, plan: plan, options: options, report: report)
        }
        try finishBench(summary, options)
    }
}

/// Creates the bench log when missing; returns its name, and the server's address as resolved
/// (the runs connect their many connections to that one address).
func prepareLog(_ options: BenchOptions) async throws -> (log: String, address: String) {
    let client = try await options.server.connect(options.server.watchdog())
    let found = await lookUpLog(client, options.log)
    if case .failure(let error) = found {
        if error.serverCode == .unknownLog {
            _ = try await reportingErrors { try await client.createLog(options.log) }
        } else {
            client.close()
            _ = try await reportingErrors { throw error }
        }
    }
    client.close()
    return (options.log, client.address.description)
}

func lookUpLog(_ client: RingLogClient, _ name: String) async -> Result<LogDescription, RingLogError> {
    do { return .success(try await client.info(name)) } catch { return .failure(error) }
}

// MARK: Measuring

/// Latencies and counts for one stretch of a run.
struct Measurements {
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var records = 0
    var payloadBytes = 0
    var requests = 0
    var errors = 0

    mutating func add(latencyNanos: UInt64, records: Int, bytes: Int) {
        _ = latency.record(max(1, latencyNanos / 1000))
        self.records += records
        payloadBytes += bytes
        requests += 1
    }

    mutating func add(_ other: Measurements) {
        latency.add(other.latency)
        records += other.records
        payloadBytes += other.payloadBytes
        requests += other.requests
        errors += other.errors
    }

    mutating func reset() { self = Measurements() }
}

/// What a run reports at the end.
struct BenchSummary: Sendable {
    var workload: String
    var seconds: Double
    var records: Int
    var payloadBytes: Int
    var requests: Int
    var errors: Int
    var latencyMicros: [String: UInt64]
    var endToEndMicros: [String: UInt64]?
    var clientCPUPercent: Double
    var serverCPUPercent: Double?
    var firstError: String?
    /// Ended early by Ctrl-C: the figures cover the time until then.
    var interrupted = false
    /// `produce --cursor-commits`: cursor commits acknowledged per second alongside.
    var cursorCommitsPerSecond: Double?

    var recordsPerSecond: Double { Double(records) / seconds }
    var megabytesPerSecond: Double { Double(payloadBytes) / seconds / 1e6 }

    func render(json: Bool) -> String {
        if json {
            var fields = [
                "\"workload\":\"\(workload)\"", "\"seconds\":\(fixed(seconds, 3))", "\"records\":\(records)",
                "\"recordsPerSecond\":\(fixed(recordsPerSecond, 1))", "\"megabytesPerSecond\":\(fixed(megabytesPerSecond, 2))",
                "\"requests\":\(requests)", "\"requestsPerSecond\":\(fixed(Double(requests) / seconds, 1))", "\"errors\":\(errors)",
                "\"latencyMicros\":" + object(latencyMicros), "\"clientCpuPercent\":\(fixed(clientCPUPercent, 1))",
            ]
            fields.append("\"endToEndMicros\":" + (endToEndMicros.map(object) ?? "null"))
            fields.append("\"serverCpuPercent\":" + (serverCPUPercent.map { fixed($0, 1) } ?? "null"))
            fields.append("\"firstError\":" + jsonOptionalString(firstError))
            fields.append("\"interrupted\":\(interrupted)")
            if let cursorCommitsPerSecond { fields.append("\"cursorCommitsPerSecond\":\(fixed(cursorCommitsPerSecond, 1))") }
            return "{" + fields.joined(separator: ",") + "}"
        }
        var lines = [
            "\(workload): \(records) records in \(fixed(seconds, 2)) s" + (interrupted ? " (interrupted)" : ""),
            "  throughput   \(grouped(recordsPerSecond)) records/s, \(fixed(megabytesPerSecond, 1)) MB/s, \(grouped(Double(requests) / seconds)) requests/s",
            "  latency      p50 \(micros(latencyMicros["p50"])) p90 \(micros(latencyMicros["p90"])) p99 \(micros(latencyMicros["p99"])) "
                + "p99.9 \(micros(latencyMicros["p99.9"])) max \(micros(latencyMicros["max"]))",
        ]
        if let endToEndMicros {
            lines.append(
                "  end to end   p50 \(micros(endToEndMicros["p50"])) p90 \(micros(endToEndMicros["p90"])) p99 \(micros(endToEndMicros["p99"])) "
                    + "p99.9 \(micros(endToEndMicros["p99.9"])) max \(micros(endToEndMicros["max"]))")
        }
        lines.append("  errors       \(errors)" + (firstError.map { " (first: \($0))" } ?? ""))
        lines.append("  cpu          client \(fixed(clientCPUPercent, 0))%, server " + (serverCPUPercent.map { "\(fixed($0, 0))%" } ?? "n/a (give --server-pid)"))
        return lines.joined(separator: "\n")
    }

    private func object(_ values: [String: UInt64]) -> String {
        "{" + ["p50", "p90", "p99", "p99.9", "max"].compactMap { key in values[key].map { "\"\(key)\":\($0)" } }.joined(separator: ",") + "}"
    }
}

func percentiles(_ histogram: Histogram<UInt64>) -> [String: UInt64] {
    guard histogram.totalCount > 0 else { return [:] }
    return [
        "p50": histogram.valueAtPercentile(50), "p90": histogram.valueAtPercentile(90), "p99": histogram.valueAtPercentile(99),
        "p99.9": histogram.valueAtPercentile(99.9), "max": histogram.max,
    ]
}

func micros(_ value: UInt64?) -> String {
    guard let value else { return "-" }
    return value >= 10_000 ? "\(fixed(Double(value) / 1000, 1)) ms" : "\(value) µs"
}

func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    if digits == 0 { return "\(scaled)" }
    let sign = scaled < 0 ? "-" : ""
    let magnitude = abs(scaled)
    let fraction = String(magnitude % Int(scale))
    return sign + "\(magnitude / Int(scale))." + String(repeating: "0", count: digits - fraction.count) + fraction
}

func grouped(_ value: Double) -> String {
    let digits = Array(String(Int(value.rounded())))
    var out = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { out += "," }
        out.append(digit)
    }
    return out
}

/// CPU seconds used (user + system) by this process.
func ownCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// CPU seconds used (user + system) by another process, from /proc; nil when unknown.
func cpuSeconds(pid: Int32?) -> Double? {
    guard let pid, let bytes = readFile("/proc/\(pid)/stat") else { return nil }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(String(fields[11])), let system = Double(String(fields[12])) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}

// MARK: Running on the client loop

/// Something measured on the loop thread; calls `report` once with its summary.
protocol BenchRun: AnyObject {
    func start()
    /// Ctrl-C: stop the load now and report what was measured so far.
    func interrupt()
}

/// Prints the summary; the exit code says whether the run was clean (1: errors; 130: Ctrl-C).
func finishBench(_ summary: BenchSummary, _ options: BenchOptions) throws {
    print(summary.render(json: options.json))
    if summary.interrupted { throw ExitCode(130) }
    if summary.errors > 0 { throw ExitCode(1) }
}

enum BenchRunner {
    /// Runs a workload on its own client loop and waits for its summary.
    static func run(
        options: BenchOptions, workload: String,
        make: @escaping @Sendable (LoopCore, @escaping (Result<BenchSummary, RingLogError>) -> Void) -> BenchRun
    ) async throws -> BenchSummary {
        let loop = ClientLoop()
        defer { loop.shutdown() }
        // Ctrl-C ends the load and still prints the summary (of the time until then).
        final class Current: @unchecked Sendable { var run: BenchRun? }
        let current = Current()
        signal(SIGINT, SIG_IGN)
        let interrupts = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        interrupts.setEventHandler { loop.execute { _ in current.run?.interrupt() } }
        interrupts.resume()
        defer {
            interrupts.cancel()
            signal(SIGINT, SIG_DFL)
        }
        let result: Result<BenchSummary, RingLogError> = await withCheckedContinuation { continuation in
            loop.execute { core in
                var reported = false
                let run = make(core) { result in
                    guard !reported else { return }
                    reported = true
                    current.run = nil
                    continuation.resume(returning: result)
                }
                current.run = run
                core.keepAlive(run)
                run.start()
            }
        }
        return try await reportingErrors { try result.get() }
    }
}

/// Timing and reporting shared by the workloads: warm-up, progress lines, the end, CPU.
///
/// A run lives as long as its client loop (`BenchRunner` keeps it there), so the callbacks it
/// registers hold it strongly: a weak reference would give it a side table, and every retain and
/// release of it would then take the runtime's slow path. Everything runs on the loop thread and
/// no access to the figures overlaps another, so the hot ones skip the runtime exclusivity check.
class Measured {
    let core: LoopCore
    let options: BenchOptions
    let report: (Result<BenchSummary, RingLogError>) -> Void
    /// Each response is recorded once, in `recent`, which is folded into the progress line's
    /// `interval` and (while measuring) the run's `total` every second and when measuring starts
    /// or stops.
    @exclusivity(unchecked) var recent = Measurements()
    var interval = Measurements()
    var total = Measurements()
    var endToEnd = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var intervalEndToEnd = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    @exclusivity(unchecked) var measuring = false
    @exclusivity(unchecked) var running = true
    var startedNanos: UInt64 = 0
    var measureStartNanos: UInt64 = 0
    var measureEndNanos: UInt64 = 0
    var clientCPUStart = 0.0
    var serverCPUStart: Double?
    var firstError: String?
    var tracksEndToEnd = false
    /// `produce --cursor-commits`: commits acknowledged while measuring.
    var cursorCommitsCounted: Int?
    let workload: String

    init(core: LoopCore, options: BenchOptions, workload: String, report: @escaping (Result<BenchSummary, RingLogError>) -> Void) {
        self.core = core
        self.options = options
        self.workload = workload
        self.report = report
    }

    /// Starts the clock: warm-up, then `duration` of measurement, progress every second.
    func startClock() {
        startedNanos = core.nowNanos
        let warmup = UInt64(options.warmup * 1e9)
        if warmup == 0 { beginMeasuring() } else { core.schedule(afterNanos: warmup) { [self] in self.beginMeasuring() } }
        scheduleProgress()
    }

    private func beginMeasuring() {
        fold()
        measuring = true
        measureStartNanos = core.nowNanos
        clientCPUStart = ownCPUSeconds()
        serverCPUStart = cpuSeconds(pid: options.serverPid)
        core.schedule(afterNanos: UInt64(options.duration * 1e9)) { [self] in self.stopLoad() }
    }

    private func scheduleProgress() {
        core.schedule(afterNanos: 1_000_000_000) { [self] in
            guard self.running else { return }
            self.fold()
            if !self.options.quiet {
                let seconds = Double(self.core.nowNanos - self.startedNanos) / 1e9
                let latency = percentiles(self.interval.latency)
                let phase = self.measuring ? "" : self.measureStartNanos == 0 ? " warm-up" : " draining"
                var line = "[\(fixed(seconds, 0))s\(phase)] \(grouped(Double(self.interval.records))) records/s  "
                    + "\(fixed(Double(self.interval.payloadBytes) / 1e6, 1)) MB/s  p50 \(micros(latency["p50"]))  p99 \(micros(latency["p99"]))"
                if self.tracksEndToEnd {
                    let delivery = percentiles(self.intervalEndToEnd)
                    line += "  e2e p50 \(micros(delivery["p50"])) p99 \(micros(delivery["p99"]))"
                    self.intervalEndToEnd.reset()
                }
                Console.error(line + (self.interval.errors > 0 ? "  errors \(self.interval.errors)" : ""))
            }
            self.interval.reset()
            self.scheduleProgress()
        }
    }

    func record(latencyNanos: UInt64, records: Int, bytes: Int) {
        recent.add(latencyNanos: latencyNanos, records: records, bytes: bytes)
    }

    private func fold() {
        guard recent.requests > 0 else { return }
        interval.add(recent)
        if measuring { total.add(recent) }
        recent.reset()
    }

    func recordEndToEnd(nanos: UInt64) {
        let value = max(1, nanos / 1000)
        _ = intervalEndToEnd.record(value)
        if measuring { _ = endToEnd.record(value) }
    }

    /// Every error of the run counts, warm-up and draining included, so the summary's count is
    /// the sum of the progress lines'.
    func recordError(_ error: RingLogError) {
        interval.errors += 1
        total.errors += 1
        if firstError == nil { firstError = error.description }
    }

    var interrupted = false

    func interrupt() {
        interrupted = true
        stopLoad()
        // What is still in flight gets a moment to be answered, not the full drain time.
        core.schedule(afterNanos: 500_000_000) { [self] in self.finish() }
    }

    /// Called when the measured period is over; subclasses stop generating load, then call `finish`.
    func stopLoad() {
        fold()
        measuring = false
        measureEndNanos = core.nowNanos
    }

    func finish() {
        guard running else { return }
        fold()
        running = false
        // Errors since the last progress line, so that the lines add up to the summary's count.
        if !options.quiet && interval.errors > 0 { Console.error("[end] errors \(interval.errors)") }
        if measureEndNanos == 0 { measureEndNanos = core.nowNanos }
        if measureStartNanos == 0 { measureStartNanos = startedNanos }
        let seconds = Double(measureEndNanos - measureStartNanos) / 1e9
        let clientCPU = ((ownCPUSeconds()) - clientCPUStart) / seconds * 100
        let serverCPU = serverCPUStart.flatMap { start in cpuSeconds(pid: options.serverPid).map { ($0 - start) / seconds * 100 } }
        report(.success(BenchSummary(
            workload: workload, seconds: seconds, records: total.records, payloadBytes: total.payloadBytes, requests: total.requests,
            errors: total.errors, latencyMicros: percentiles(total.latency), endToEndMicros: tracksEndToEnd ? percentiles(endToEnd) : nil,
            clientCPUPercent: clientCPU, serverCPUPercent: serverCPU, firstError: firstError, interrupted: interrupted,
            cursorCommitsPerSecond: cursorCommitsCounted.map { Double($0) / seconds })))
    }

    /// Opens `count` connections, then calls `ready` with them (or reports the failure).
    func connect(_ address: String, count: Int, ready: @escaping ([ClientSocket]) -> Void) {
        guard let parsed = try? SocketAddress(parsing: address) else {
            report(.failure(.invalidArgument("bad address \(address)")))
            return
        }
        var sockets: [ClientSocket] = []
        var failed = false
        for _ in 0..<count {
            core.connect(to: parsed) { [self] result in
                guard !failed else { return }
                switch result {
                case .failure(let error):
                    failed = true
                    self.report(.failure(error))
                case .success(let socket):
                    sockets.append(socket)
                    if sockets.count == count { ready(sockets) }
                }
            }
        }
    }

    /// Looks a log up by name on `socket`.
    func lookUp(_ log: String, on socket: ClientSocket, _ found: @escaping (LogDescription) -> Void) {
        LogNameRequest(name: log).encoded().withUnsafeBytes { body in
            socket.send(.logInfo, body: body) { [self] result in
                switch decodeResponse(result, as: LogDescription.self) {
                case .failure(let error): self.report(.failure(error))
                case .success(let description): found(description)
                }
            }
        }
    }
}

// MARK: Produce

struct ProducePlan: Sendable {
    var log: String
    var connections: Int
    var pipeline: Int
    var recordBytes: Int
    var recordsPerBatch: Int
    var mode: AckMode
    /// Records per second in total; nil for closed loop.
    var rate: Double?
    var count: Int?
    /// Put the send time (monotonic ns) in each record's first 8 bytes, for end-to-end latency.
    var stampRecords: Bool
    /// Cursor commits per second beside the appends (`--cursor-commits`).
    var cursorCommitsPerSecond: Double? = nil
    /// Each connection an idempotent producer (`--idempotent`).
    var idempotent = false
    var format: Batch.Format = .v2
}

final class ProduceRun: Measured, BenchRun {
    let address: String
    let plan: ProducePlan
    @exclusivity(unchecked) private var workers: [Worker] = []
    private var logID = LogID.none
    @exclusivity(unchecked) private var sentRecords = 0
    private var pacer: UInt64?

    final class Worker {
        let socket: ClientSocket
        /// The batch every request sends (a new one per request when records carry their send time).
        let batch: OwnedBytes
        /// When each request in flight was due (open loop) or sent (closed loop), oldest first.
        @exclusivity(unchecked) var dueTimes: Deque<UInt64> = []
        var nextDueNanos: UInt64 = 0
        /// With --idempotent: this connection's producer, and the sequence of its next batch.
        var producer: ProducerStamp?
        init(socket: ClientSocket, batch: OwnedBytes) {
            self.socket = socket
            self.batch = batch
        }
    }

    init(core: LoopCore, address: String, plan: ProducePlan, options: BenchOptions, report: @escaping (Result<BenchSummary, RingLogError>) -> Void) {
        self.address = address
        self.plan = plan
        super.init(core: core, options: options, workload: "produce", report: report)
    }

    func start() {
        let committing = (plan.cursorCommitsPerSecond ?? 0) > 0
        connect(address, count: plan.connections + (committing ? 1 : 0)) { [self] sockets in
            self.lookUp(self.plan.log, on: sockets[0]) { description in
                self.logID = description.logID
                if committing { self.startCommitting(on: sockets[sockets.count - 1]) }
                self.begin(Array(sockets.prefix(self.plan.connections)))
            }
        }
    }

    // MARK: Cursor commits alongside (--cursor-commits)

    private var commitsSent = 0
    private var commitStartNanos: UInt64 = 0
    private var commitsInFlight = 0

    /// Open loop on the loop core: every millisecond, the commits due by now go out, pipelined
    /// (at most 1,024 unanswered), each moving one of 32 cursors by one record.
    private func startCommitting(on socket: ClientSocket) {
        cursorCommitsCounted = 0
        commitStartNanos = core.nowNanos
        paceCommits(on: socket)
    }

    private func paceCommits(on socket: ClientSocket) {
        guard running, !stopped, let rate = plan.cursorCommitsPerSecond else { return }
        let due = Int(Double(core.nowNanos - commitStartNanos) / 1e9 * rate)
        while commitsSent < due && commitsInFlight < 1_024 {
            commitsSent += 1
            commitsInFlight += 1
            let request = CursorCommitRequest(name: "bench-\(commitsSent % 32)", offset: 0, index: UInt32(truncatingIfNeeded: commitsSent / 32))
            request.encoded().withUnsafeBytes { body in
                socket.send(.cursorCommit, body: body, logID: logID) { [self] result in
                    self.commitsInFlight -= 1
                    switch result.checkingServerError() {
                    case .success: if self.measuring { self.cursorCommitsCounted? += 1 }
                    case .failure(let error): self.recordError(error)
                    }
                }
            }
        }
        core.schedule(afterNanos: 1_000_000) { [self] in self.paceCommits(on: socket) }
    }

    private func makeBatch(stampedAt nanos: UInt64) -> OwnedBytes {
        var builder = BatchBuilder(
            reservingCapacity: RecordFraming.batchBytes(recordBytes: plan.recordBytes * plan.recordsPerBatch, count: plan.recordsPerBatch, format: plan.format),
            format: plan.format)
        var record = [UInt8](repeating: 0x61, count: plan.recordBytes)
        record.withUnsafeMutableBytes { $0.storeLittleEndian(nanos, at: 0) }
        for _ in 0..<plan.recordsPerBatch { builder.add(record) }
        return OwnedBytes(builder.finish())
    }

    private func begin(_ sockets: [ClientSocket]) {
        workers = sockets.map { Worker(socket: $0, batch: makeBatch(stampedAt: 0)) }
        guard plan.idempotent else { return run() }
        var waiting = workers.count
        for worker in workers {
            InitProducerRequest().encoded().withUnsafeBytes { body in
                worker.socket.send(.initProducer, body: body) { [self] result in
                    switch decodeResponse(result, as: InitProducerResponse.self) {
                    case .success(let granted): worker.producer = ProducerStamp(id: granted.producerId, epoch: granted.epoch, baseSequence: 0)
                    case .failure(let error): self.recordError(error)
                    }
                    waiting -= 1
                    if waiting == 0 { self.run() }
                }
            }
        }
    }

    private func run() {
        for worker in workers {
            // One handler per connection, not a closure stored with every request.
            worker.socket.onResponse = { [self, worker] result in self.acknowledged(worker, result) }
        }
        startClock()
        let now = core.nowNanos
        if let rate = plan.rate {
            let perWorker = rate / Double(plan.recordsPerBatch) / Double(workers.count)
            let intervalNanos = UInt64(1e9 / perWorker)
            for (index, worker) in workers.enumerated() { worker.nextDueNanos = now + intervalNanos * UInt64(index) / UInt64(workers.count) }
            pace(intervalNanos: intervalNanos)
        } else {
            for worker in workers { for _ in 0..<plan.pipeline { send(worker, due: now) } }
        }
    }

    /// Open loop: send every request that is due, as the pipeline allows.
    private func pace(intervalNanos: UInt64) {
        guard running, pacer != 0 else { return }
        let now = core.nowNanos
        for worker in workers {
            while worker.nextDueNanos <= now && worker.dueTimes.count < plan.pipeline && !countReached {
                send(worker, due: worker.nextDueNanos)
                worker.nextDueNanos += intervalNanos
            }
        }
        pacer = core.schedule(afterNanos: min(intervalNanos, 200_000)) { [self] in self.pace(intervalNanos: intervalNanos) }
    }

    private var countReached: Bool { plan.count.map { sentRecords >= $0 } ?? false }

    private func send(_ worker: Worker, due: UInt64) {
        guard running, !countReached else { return }
        worker.dueTimes.append(due)
        sentRecords += plan.recordsPerBatch
        var batch = plan.stampRecords ? makeBatch(stampedAt: core.nowNanos) : worker.batch
        if let producer = worker.producer {
            // Each batch its own sequence: a small batch is copied into the send buffer at once,
            // so its header can be rewritten in place; a larger one is sent from where it is.
            if batch.count > ClientSocket.copiedBatchBytes { batch = OwnedBytes(copying: batch.bytes) }
            Batch.fillHeader(
                batch.mutableBytes.baseAddress!, format: .v2, payloadLength: batch.count - Batch.Format.v2.headerBytes,
                recordCount: UInt32(plan.recordsPerBatch), producer: producer)
            worker.producer?.baseSequence = (producer.baseSequence &+ UInt32(plan.recordsPerBatch)) & (Batch.sequenceModulus - 1)
        }
        worker.socket.sendAppend(logID: logID, mode: plan.mode, batch: batch)
    }

    private func acknowledged(_ worker: Worker, _ result: Result<ClientResponse, RingLogError>) {
        let now = if case .success(let response) = result { response.receivedNanos } else { core.nowNanos }
        let due = worker.dueTimes.popFirst() ?? now
        switch result {
        case .success(let response):
            if let error = response.serverError {
                recordError(RingLogError(error))
            } else {
                record(latencyNanos: now - min(now, due), records: plan.recordsPerBatch, bytes: plan.recordsPerBatch * plan.recordBytes)
            }
        case .failure(let error): recordError(error)
        }
        // A lost connection ends the run: the server is gone or going.
        if case .failure(.connectionClosed) = result { stopLoad() }
        if plan.rate == nil && running && !stopped { send(worker, due: now) }
        if (stopped || countReached) && workers.allSatisfy({ $0.dueTimes.isEmpty }) { finish() }
    }

    private var stopped = false

    override func stopLoad() {
        guard !stopped else { return }
        super.stopLoad()
        stopped = true
        pacer = 0
        if workers.allSatisfy({ $0.dueTimes.isEmpty }) { finish() }
        // Requests still unanswered after this are given up on (the server may be gone).
        core.schedule(afterNanos: 2_000_000_000) { [self] in self.finish() }
    }
}

// MARK: Consume

final class ConsumeRun: Measured, BenchRun {
    let address: String
    let log: String
    let readBytes: Int
    private var socket: ClientSocket?
    private var logID = LogID.none
    private var offset = LogOffset.zero
    private var end = LogOffset.zero

    init(core: LoopCore, address: String, log: String, readBytes: Int, options: BenchOptions, report: @escaping (Result<BenchSummary, RingLogError>) -> Void) {
        self.address = address
        self.log = log
        self.readBytes = readBytes
        var catchUp = options
        catchUp.warmup = 0
        super.init(core: core, options: catchUp, workload: "consume", report: report)
    }

    func start() {
        connect(address, count: 1) { [self] sockets in
            self.socket = sockets[0]
            self.lookUp(self.log, on: sockets[0]) { description in
                self.logID = description.logID
                self.offset = description.startOffset
                self.end = description.committedEnd
                self.startClock()
                self.readNext()
            }
        }
    }

    private func readNext() {
        guard running, !stopped, let socket else { return }
        guard offset < end else {
            stopLoad()
            return
        }
        let sentAt = core.nowNanos
        let target = offset
        ReadRequest(offset: target, maxBytes: UInt32(readBytes)).encoded().withUnsafeBytes { body in
            socket.send(.read, body: body, logID: logID) { [self] result in self.received(result, from: target, sentAt: sentAt) }
        }
    }

    private func received(_ result: Result<ClientResponse, RingLogError>, from target: LogOffset, sentAt: UInt64) {
        switch result.checkingServerError() {
        case .failure(let error):
            recordError(error)
            stopLoad()
        case .success(let response):
            let batches = UnsafeRawBufferPointer(rebasing: response.body[ReadResponseHead.encodedBytes...])
            var records = 0
            do {
                try BatchReader.forEachBatch(in: batches, startingAt: target) { offset, header, payload throws(RingLogError) in
                    records += try BatchReader.records(of: payload, header: header, at: offset).count
                }
                record(latencyNanos: core.nowNanos - sentAt, records: records, bytes: batches.count)
                offset = target.advanced(by: batches.count)
                if batches.isEmpty { stopLoad() } else { readNext() }
            } catch {
                recordError(error)
                stopLoad()
            }
        }
    }

    private var stopped = false

    override func stopLoad() {
        guard !stopped else { return }
        super.stopLoad()
        stopped = true
        finish()
    }
}

// MARK: End to end

final class EndToEndRun: Measured, BenchRun {
    let producer: ProduceRun
    let address: String
    let plan: ProducePlan
    private var consumer: ClientSocket?
    private var logID = LogID.none
    private var offset = LogOffset.zero

    init(core: LoopCore, address: String, plan: ProducePlan, options: BenchOptions, report: @escaping (Result<BenchSummary, RingLogError>) -> Void) {
        self.address = address
        self.plan = plan
        var quietProducer = options
        quietProducer.quiet = true
        let sink = Sink()
        producer = ProduceRun(core: core, address: address, plan: plan, options: quietProducer) { sink.result = $0 }
        super.init(core: core, options: options, workload: "end-to-end", report: report)
        tracksEndToEnd = true
        sink.forward = { [self] result in self.producerFinished(result) }
    }

    /// Holds the producer's result until this run ends.
    final class Sink {
        var result: Result<BenchSummary, RingLogError>? {
            didSet { if let result { forward?(result) } }
        }
        var forward: ((Result<BenchSummary, RingLogError>) -> Void)?
    }

    func start() {
        connect(address, count: 1) { [self] sockets in
            self.consumer = sockets[0]
            self.lookUp(self.plan.log, on: sockets[0]) { description in
                self.logID = description.logID
                self.offset = description.committedEnd
                self.startClock()
                self.poll()
                self.producer.start()
            }
        }
    }

    private func poll() {
        guard running, let consumer else { return }
        let target = offset
        ReadRequest(offset: target, maxBytes: 1 << 20, maxWaitMillis: 1_000).encoded().withUnsafeBytes { body in
            consumer.send(.read, body: body, logID: logID) { [self] result in self.delivered(result, from: target) }
        }
    }

    private func delivered(_ result: Result<ClientResponse, RingLogError>, from target: LogOffset) {
        let now = core.nowNanos
        switch result.checkingServerError() {
        case .failure(let error):
            recordError(error)
            return
        case .success(let response):
            let batches = UnsafeRawBufferPointer(rebasing: response.body[ReadResponseHead.encodedBytes...])
            do {
                try BatchReader.forEachBatch(in: batches, startingAt: target) { offset, header, payload throws(RingLogError) in
                    for range in try BatchReader.records(of: payload, header: header, at: offset) where range.count >= 8 {
                        let sent: UInt64 = payload.loadLittleEndian(at: range.lowerBound)
                        recordEndToEnd(nanos: now > sent ? now - sent : 0)
                    }
                }
                offset = target.advanced(by: batches.count)
            } catch {
                recordError(error)
            }
        }
        poll()
    }

    private func producerFinished(_ result: Result<BenchSummary, RingLogError>) {
        switch result {
        case .failure(let error): report(.failure(error))
        case .success(let produced):
            total.records = produced.records
            total.payloadBytes = produced.payloadBytes
            total.requests = produced.requests
            total.errors += produced.errors
            if firstError == nil { firstError = produced.firstError }
            productionLatency = produced.latencyMicros
            finish()
        }
    }

    private var productionLatency: [String: UInt64] = [:]

    override func stopLoad() {
        super.stopLoad()
    }

    override func finish() {
        guard running else { return }
        running = false
        let seconds = Double(max(measureEndNanos, measureStartNanos + 1) - measureStartNanos) / 1e9
        report(.success(BenchSummary(
            workload: workload, seconds: seconds, records: total.records, payloadBytes: total.payloadBytes, requests: total.requests,
            errors: total.errors, latencyMicros: productionLatency, endToEndMicros: percentiles(endToEnd),
            clientCPUPercent: (ownCPUSeconds() - clientCPUStart) / seconds * 100,
            serverCPUPercent: serverCPUStart.flatMap { start in cpuSeconds(pid: options.serverPid).map { ($0 - start) / seconds * 100 } },
            firstError: firstError, interrupted: interrupted)))
    }
}
