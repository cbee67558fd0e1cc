import ArgumentParser
import Glibc
import RingLogClient
import RingLogIO

import RingLogWire

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a log.")

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name: 1-128 of letters, digits, '.', '_', '-', starting with a letter or digit.")
    var log: String
    @Option(help: "Segment file size, e.g. 256MiB (default: the server's).")
    var segmentBytes: String?
    @Option(help: "Delete old segments while the log holds more than this, e.g. 10GiB (0: keep all).")
    var retentionBytes: String?
    @Option(help: "Delete segments whose newest record is older than this many seconds (0: keep all).")
    var retentionSeconds: UInt64?

    func validate() throws {
        // Range-checked here, before any arithmetic on them (the server checks again).
        if let segmentBytes {
            try checkRange("--segment-bytes", try parseSize(segmentBytes), CreateLogRequest.segmentBytesRange, shown: segmentBytes)
        }
        if let retentionBytes, try parseSize(retentionBytes) != 0 {
            try checkRange("--retention-bytes", try parseSize(retentionBytes), 1...CreateLogRequest.maxRetentionBytes, shown: retentionBytes, rule: "or 0 to keep everything")
        }
        if let retentionSeconds, retentionSeconds != 0 {
            let range = 1...(CreateLogRequest.retentionMillisRange.upperBound / 1000)
            try checkRange("--retention-seconds", retentionSeconds, range, shown: "\(retentionSeconds)", rule: "or 0 to keep everything")
        }
    }

    func run() async throws {
        let segment = try segmentBytes.map(parseSize)
        let retention = try retentionBytes.map(parseSize)
        let client = try await options.connect()
        defer { client.close() }
        let created = try await reportingErrors {
            try await client.createLog(log, segmentBytes: segment, retentionBytes: retention, retentionMillis: retentionSeconds.map { $0 * 1000 })
        }
        print("created \(created.name) (id \(created.logID))")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a log and all its records.")

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        try await reportingErrors { try await client.deleteLog(log) }
        print("deleted \(log)")
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List logs with their start, end and size.")

    @OptionGroup var options: ServerOptions
    @Flag(help: "One JSON object per line.") var json = false

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        let logs = try await reportingErrors { try await client.listLogs() }
        for log in logs { print(json ? describeJSON(log) : "\(log.name)\tstart=\(log.startOffset)\tend=\(log.committedEnd)\tbytes=\(log.storedBytes)") }
    }
}

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append records to a log.",
        discussion: """
            Records come from the arguments, else from --file, else from standard input, one per line \
            (without the newline). They are sent in batches of up to --batch-bytes. Prints each \
            record's position as OFFSET/INDEX (its batch's offset and its index in the batch).
            """)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Argument(help: "Records to append (one per argument).") var records: [String] = []
    @Option(help: "Read records from this file, one per line.") var file: String?
    @Option(help: "durable (after fdatasync, the default) or written (after the page cache; not crash-safe).")
    var mode: String = "durable"
    @Option(help: "Largest batch to send, e.g. 64KiB.") var batchBytes: String = "64KiB"
    @Flag(help: "Print nothing on success.") var quiet = false

    func run() async throws {
        guard let ack = ["durable": AckMode.durable, "written": AckMode.written][mode] else {
            throw ValidationError("--mode must be durable or written")
        }
        let limit = try parseSize(batchBytes)
        let input: [[UInt8]]
        if !records.isEmpty {
            input = records.map { Array($0.utf8) }
        } else if let file {
            guard let bytes = readFile(file) else { throw ValidationError("cannot read \(file)") }
            input = lines(String(decoding: bytes, as: UTF8.self))
        } else {
            input = lines(readStandardInput())
        }
        let client = try await options.connect()
        defer { client.close() }
        let id = try await logID(client, log)
        var builder = BatchBuilder()
        var positions: [RecordPosition] = []
        func send() async throws {
            guard !builder.isEmpty else { return }
            let count = builder.recordCount
            let batch = builder.finish()
            let acknowledged = try await reportingErrors { try await client.append(to: id, batch: batch, mode: ack) }
            positions += (0..<count).map { RecordPosition(batchOffset: acknowledged.offset, index: $0) }
        }
        for record in input {
            if !builder.isEmpty && builder.sizeAdding(recordBytes: record.count) > limit { try await send() }
            builder.add(record)
        }
        try await send()
        if !quiet { for position in positions { print(position) } }
    }
}

struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print records from a log, from its start or an offset, then stop at the end.")

    @OptionGroup var options: ServerOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "Log name.") var log: String
    @Option(help: "Start at this batch offset (default: the log's start).") var from: LogOffset?
    @Option(help: "Stop after this many records.") var count: Int?
    @Flag(help: "Step over a damaged batch (reported on standard error) instead of stopping with exit code 5.")
    var skipCorrupt = false

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        let info = try await reportingErrors { try await client.info(log) }
        var offset = from ?? info.startOffset
        var printed = 0
        var end = info.committedEnd
        while offset < end && printed < (count ?? Int.max) {
            let fetched: FetchedBatches
            let records: [Record]
            do {
                fetched = try await client.read(from: info.logID, offset: offset)
                records = try fetched.records()
            } catch {
                offset = try skipping(error, enabled: skipCorrupt)
                continue
            }
            for record in records where printed < (count ?? Int.max) {
                output.print(record)
                printed += 1
            }
            offset = fetched.nextOffset
            end = fetched.committedEnd
            if fetched.isEmpty { break }
        }
    }
}

/// With `--skip-corrupt`, where to continue after a damaged batch (said on standard error);
/// otherwise, or when the next batch cannot be located, the error with its exit code.
func skipping(_ error: RingLogError, enabled: Bool) throws -> LogOffset {
    if enabled, case .corruptBatch(let offset, let next?, let reason) = error {
        Console.error("ringlog: skipping the corrupt batch at offset \(offset) (\(reason)); continuing at \(next)")
        return next
    }
    Console.error("ringlog: \(error)")
    if case .corruptBatch(_, .some, _) = error { Console.error("ringlog: --skip-corrupt steps over it") }
    throw ExitCode(exitCode(for: error))
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a log like tail -f: print records as they are committed.",
        discussion: "Starts at the end of the log (new records only) unless --from is given. Stop it with Ctrl-C.")

    @OptionGroup var options: ServerOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "Log name.") var log: String
    @Option(help: "Start at this batch offset instead of the end.") var from: LogOffset?
    @Option(help: "Exit after this many records.") var count: Int?
    @Flag(help: "Step over a damaged batch (reported on standard error) instead of stopping with exit code 5.")
    var skipCorrupt = false

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        let info = try await reportingErrors { try await client.info(log) }
        var printed = 0
        var position = from ?? info.committedEnd
        while true {
            do {
                for try await record in client.records(of: info.logID, from: position, waitMillis: 5_000) {
                    output.print(record)
                    printed += 1
                    if let count, printed >= count { return }
                }
                return
            } catch {
                position = try skipping(error, enabled: skipCorrupt)
            }
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a log's start, end, segments and size; without a log, the server's counters.")

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name (omit for server-wide statistics).") var log: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        guard let log else {
            let stats = try await reportingErrors { try await client.serverStats() }
            if json {
                print("{" + stats.map { "\(jsonString($0.name)):\($0.value)" }.joined(separator: ",") + "}")
            } else {
                print("server \(client.server.serverName) at \(options.server)")
                for entry in stats { print("\(entry.name) \(entry.value)") }
            }
            return
        }
        let description = try await reportingErrors { try await client.info(log) }
        if json {
            print(describeJSON(description))
            return
        }
        print("""
            log             \(description.name) (id \(description.logID))
            start offset    \(description.startOffset)
            committed end   \(description.committedEnd)
            segments        \(description.segmentCount)
            stored bytes    \(description.storedBytes)
            disk bytes      \(description.diskBytes)
            segment bytes   \(description.segmentBytes)
            retention       \(description.retentionBytes == 0 ? "no size limit" : "\(description.retentionBytes) bytes"), \
            \(description.retentionMillis == 0 ? "no age limit" : "\(description.retentionMillis / 1000) s")
            """)
        if !description.failure.isEmpty { print("FAILED          \(description.failure)") }
    }
}

struct Trim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Advance a log's start to OFFSET (a batch offset or the end); whole segments below it are deleted.")

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Argument(help: "New start offset.") var offset: LogOffset

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        let id = try await logID(client, log)
        let start = try await reportingErrors { try await client.trim(id, to: offset) }
        print("start \(start)")
    }
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that the server answers; prints the round trip.")

    @OptionGroup var options: ServerOptions

    func run() async throws {
        let client = try await options.connect()
        defer { client.close() }
        let started = ContinuousClock.now
        try await reportingErrors { try await client.ping() }
        let elapsed = ContinuousClock.now - started
        print("pong from \(client.server.serverName) in \(elapsed.components.attoseconds / 1_000_000_000_000) µs")
    }
}

// MARK: Helpers

/// Refuses `value` outside `range` with a usage error (exit 64) naming the option and the range.
func checkRange(_ option: String, _ value: UInt64, _ range: ClosedRange<UInt64>, shown: String, rule: String? = nil) throws {
    guard !range.contains(value) else { return }
    throw ValidationError("\(option) \(shown) is out of range: it must be from \(range.lowerBound) to \(range.upperBound)" + (rule.map { " (\($0))" } ?? ""))
}

func parseSize(_ text: String) throws -> UInt64 {
    guard let bytes = parseByteSize(text), bytes >= 0 else { throw ValidationError("\(text) is not a size (examples: 4096, 64KiB, 1GiB)") }
    return UInt64(bytes)
}

func lines(_ text: String) -> [[UInt8]] {
    var result = text.split(separator: "\n", omittingEmptySubsequences: false).map { Array($0.utf8) }
    if result.last?.isEmpty == true { result.removeLast() }
    return result
}

func readStandardInput() -> String {
    String(decoding: readAll(fd: 0), as: UTF8.self)
}

/// The whole content of a file, or nil when it cannot be opened.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    return readAll(fd: fd)
}

func readAll(fd: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return bytes
}
