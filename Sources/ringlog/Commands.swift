import ArgumentParser
import Glibc
import RingLogClient
import RingLogIO
import RingLogWire

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create a log.", discussion: exitCodesHelp)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name: 1-128 of letters, digits, '.', '_', '-', starting with a letter or digit.")
    var log: String
    @Option(help: "Segment file size, e.g. 256MiB (default: the server's).")
    var segmentBytes: String?
    @Option(help: "Delete old segments while the log holds more than this, e.g. 10GiB (0: keep all).")
    var retentionBytes: String?
    @Option(help: "Delete segments whose newest record is older than this: 90s, 15m, 12h, 7d, 2w, or seconds (0: keep all).")
    var retention: String?
    @Option(help: ArgumentHelp("Same as --retention, in seconds.", visibility: .hidden))
    var retentionSeconds: UInt64?
    @Flag(help: "Print the new log's description as JSON.") var json = false

    func validate() throws {
        // Range-checked here, before any arithmetic on them (the server checks again).
        if let segmentBytes {
            try checkRange("--segment-bytes", try parseSize(segmentBytes), CreateLogRequest.segmentBytesRange, shown: segmentBytes)
        }
        if let retentionBytes, try parseSize(retentionBytes) != 0 {
            try checkRange("--retention-bytes", try parseSize(retentionBytes), 1...CreateLogRequest.maxRetentionBytes, shown: retentionBytes, rule: "or 0 to keep everything")
        }
        if retention != nil && retentionSeconds != nil { throw ValidationError("give --retention or --retention-seconds, not both") }
        if let seconds = try retentionAge(), seconds != 0 {
            let range = 1...(CreateLogRequest.retentionMillisRange.upperBound / 1000)
            try checkRange(retention == nil ? "--retention-seconds" : "--retention", seconds, range, shown: retention ?? "\(seconds)", rule: "or 0 to keep everything")
        }
    }

    private func retentionAge() throws -> UInt64? {
        guard let retention else { return retentionSeconds }
        guard let seconds = parseDuration(retention) else { throw ValidationError("--retention \(retention) is not a duration (examples: 3600, 90s, 15m, 12h, 7d, 2w)") }
        return seconds
    }

    func run() async throws {
        let segment = try segmentBytes.map(parseSize)
        let retainedBytes = try retentionBytes.map(parseSize)
        let age = try retentionAge()
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let created = try await reportingErrors {
            try await watchdog.run {
                try await client.createLog(log, segmentBytes: segment, retentionBytes: retainedBytes, retentionMillis: age.map { $0 * 1000 })
            }
        }
        say(json ? describeJSON(created) : "created \(created.name) (id \(created.logID))")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a log and all its records.", discussion: exitCodesHelp)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        try await reportingErrors { try await watchdog.run { try await client.deleteLog(log) } }
        say(json ? "{\"deleted\":\(jsonString(log))}" : "deleted \(log)")
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List logs with their start, end and size.",
        discussion: "With --json, one JSON object per log per line (JSON Lines).\n\n\(exitCodesHelp)")

    @OptionGroup var options: ServerOptions
    @Flag(help: "One JSON object per line.") var json = false

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let logs = try await reportingErrors { try await watchdog.run { try await client.listLogs() } }
        for log in logs { say(json ? describeJSON(log) : "\(log.name)\tstart=\(log.startOffset)\tend=\(log.committedEnd)\tbytes=\(log.storedBytes)") }
    }
}

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append records to a log.",
        discussion: """
            Records come from the arguments, else from --file, else from standard input. Input is \
            cut into records at --delimiter (by default a newline, with one carriage return before \
            it dropped); the bytes are stored exactly as given, never re-encoded. Records stream: \
            they go out in batches of up to --batch-bytes, each sent when full or --linger-ms after \
            its first record, so `tail -F app.log | ringlog append logs` appends as lines arrive. \
            Prints each record's position as OFFSET/INDEX (its batch's offset and its index in the \
            batch) as its batch is acknowledged. Appends are idempotent: if the connection drops or \
            ringlogd restarts, append reconnects (for up to --timeout) and sends again what was not \
            acknowledged, and each record is stored once.

            \(exitCodesHelp)
            """)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Argument(help: "Records to append (one per argument).") var records: [String] = []
    @Option(help: "Read records from this file ('-' for standard input).") var file: String?
    @Option(
        help: ArgumentHelp(
            "Record separator: line (the default: LF, one CR before it dropped), nul, none (all the input is one record), or any string (\\n \\t \\r \\0 \\xHH escapes).",
            valueName: "separator"))
    var delimiter: Delimiter?
    @Option(help: "durable (after fdatasync, the default) or written (after the page cache; not crash-safe).")
    var mode: String = "durable"
    @Option(help: "Largest batch to send, e.g. 64KiB (at most the server's largest batch).") var batchBytes: String = "64KiB"
    @Option(help: "Milliseconds a batch waits for more records after its first.") var lingerMs: Int = 5
    @Flag(help: "Print nothing on success.") var quiet = false
    @Option(
        help: """
            Append only if the log ends at this offset now (and each further batch only if it ends \
            where the one before left it); otherwise write nothing more and exit 8 (see docs/cli.md).
            """)
    var ifEnd: LogOffset?
    @Flag(help: "Print positions as JSON Lines: {\"offset\":N,\"index\":I}.") var json = false

    func validate() throws {
        guard ["durable", "written"].contains(mode) else { throw ValidationError("--mode must be durable or written") }
        guard (0...60_000).contains(lingerMs) else { throw ValidationError("--linger-ms must be from 0 to 60000") }
        _ = try parseSize(batchBytes)
    }

    func run() async throws {
        guard let ack = ["durable": AckMode.durable, "written": AckMode.written][mode] else {
            throw ValidationError("--mode must be durable or written")
        }
        let source: StreamingAppend.Source
        if !records.isEmpty {
            source = .records(records.map { Array($0.utf8) })
        } else if let file, file != "-" {
            let fd = open(file, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                Console.error("ringlog: cannot read \(file): \(String(cString: strerror(errno)))")
                throw ExitCode(64)
            }
            source = .descriptor(fd)
        } else {
            if isatty(0) == 1 { Console.error("ringlog: reading records from the terminal, one per line; end with Ctrl-D") }
            source = .descriptor(0)
        }
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let id = try await logID(client, log, watchdog)
        var settings = StreamingAppend.Settings(
            log: id, mode: ack, batchBytes: min(Int(try parseSize(batchBytes)), Int(client.server.maxBatchBytes)), lingerMillis: lingerMs,
            delimiter: delimiter ?? .line, window: max(1, min(16, Int(client.server.maxInFlight))), printPositions: !quiet, json: json,
            expectedEnd: ifEnd)
        // An append reconnects for as long as it would wait for an answer (--timeout).
        let seconds = options.timeout ?? 10
        settings.retryTimeoutMillis = seconds == 0 ? Int(Int32.max) : Int(seconds * 1000)
        try await reportingErrors { try await StreamingAppend(client: client, settings: settings, watchdog: watchdog).run(source) }
    }
}

struct Read: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print records from a log, from its start or an offset, then stop at the end.",
        discussion: """
            Output is written as each response arrives, to a terminal, a pipe or a file alike. \
            --from past the end, below the start or inside a batch is an error (exit 4); --from \
            exactly at the end prints nothing.

            \(exitCodesHelp)
            """)

    @OptionGroup var options: ServerOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "Log name.") var log: String
    @Option(help: "Start at this batch offset (default: the log's start).") var from: LogOffset?
    @Option(help: "Start at the first batch appended at or after this time: 10m (ago), 2h, 7d, 2026-11-29T09:00:00Z, or @UNIX-SECONDS.")
    var since: String?
    @Option(help: "Stop after this many records.") var count: Int?
    @Flag(help: "Step over a damaged batch (reported on standard error) instead of stopping with exit code 5.")
    var skipCorrupt = false

    func validate() throws {
        if from != nil && since != nil { throw ValidationError("give --from or --since, not both") }
        if let since { _ = try sinceMicros(since) }
    }

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let info = try await reportingErrors { try await watchdog.run { try await client.info(log) } }
        let out = StandardOutput()
        var offset = from ?? info.startOffset
        if let since {
            let time = try sinceMicros(since)
            offset = try await reportingErrors { try await watchdog.run { try await client.seek(info.logID, atOrAfterMicros: time) } }
        }
        var printed = 0
        let limit = count ?? Int.max
        var end = info.committedEnd
        // Anything but the end itself goes to the server, which says what is wrong with it.
        while offset != end && printed < limit {
            let fetched: FetchedBatches
            do {
                fetched = try await watchdog.run { try await client.read(from: info.logID, offset: offset) }
            } catch let error as RingLogError {
                out.flush()
                offset = try skipping(error, enabled: skipCorrupt)
                continue
            }
            // The batches before a damaged one are printed before the damage is dealt with.
            let (records, damage) = fetched.recordsBeforeDamage()
            for record in records.prefix(limit - printed) { output.write(record, to: out) }
            printed += min(records.count, limit - printed)
            out.flush()
            end = fetched.committedEnd
            if let damage {
                guard printed < limit else { break }
                offset = try skipping(damage, enabled: skipCorrupt)
                continue
            }
            offset = fetched.nextOffset
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
    throw ExitCode(exitStatus(for: error))
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a log like tail -f: print records as they are committed.",
        discussion: """
            Starts at the end of the log (new records only) unless --from, --last, --since or --cursor \
            says otherwise, and \
            writes each response's records as they arrive, to a terminal, a pipe or a file alike. \
            When the server stops or the connection drops, tail reconnects with backoff and goes \
            on from the first record it had not printed (--no-reconnect exits with code 6 \
            instead). Stop it with Ctrl-C.

            \(exitCodesHelp)
            """)

    @OptionGroup var options: ServerOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "Log name.") var log: String
    @Option(help: "Start at this batch offset instead of the end.") var from: LogOffset?
    @Option(
        help: """
            Start this many records before the end. Finding them reads the log from its start \
            (batch headers and payloads travel; time grows with the log's size, not with N).
            """)
    var last: Int?
    @Option(help: "Start at the first batch appended at or after this time: 10m (ago), 2h, 7d, 2026-11-29T09:00:00Z, or @UNIX-SECONDS.")
    var since: String?
    @Option(help: "Exit after this many records.") var count: Int?
    @Flag(help: "Step over a damaged batch (reported on standard error) instead of stopping with exit code 5.")
    var skipCorrupt = false
    @Flag(help: "Exit (code 6) when the server stops or the connection drops, instead of reconnecting.")
    var noReconnect = false
    @Option(
        help: """
            Resume from this cursor (a position the server keeps for this consumer; see `ringlog \
            cursors`) and move it past each record once it is printed and flushed. --from, --last or \
            --since override where this run starts. A new cursor starts at the end.
            """)
    var cursor: String?

    func validate() throws {
        if [from != nil, last != nil, since != nil].filter({ $0 }).count > 1 { throw ValidationError("give one of --from, --last and --since") }
        if let since { _ = try sinceMicros(since) }
        if let last, last < 0 { throw ValidationError("--last must be 0 or more") }
    }

    func run() async throws {
        let watchdog = options.watchdog(defaultSeconds: nil)
        var client = try await options.connect(watchdog)
        var info = try await reportingErrors { try await watchdog.run { try await client.info(log) } }
        var position = from ?? info.committedEnd
        /// Records of the first batch already accounted for (`--last`).
        var skip = 0
        if let last { (position, skip) = try await reportingErrors { try await startOfLast(last, client: client, info: info) } }
        if let since {
            let time = try sinceMicros(since)
            position = try await reportingErrors { try await watchdog.run { try await client.seek(info.logID, atOrAfterMicros: time) } }
        }
        if let cursor, from == nil, last == nil, since == nil {
            do {
                let saved = try await client.cursor(cursor, in: info.logID)
                (position, skip) = (saved.batchOffset, saved.index)
            } catch {
                guard error.serverCode == .unknownCursor else {
                    Console.error("ringlog: \(error)")
                    throw ExitCode(exitStatus(for: error))
                }
                // A new cursor is saved where this run starts, so what is appended from now on is
                // read by the next run even if this one prints nothing.
                _ = try await reportingErrors {
                    try await client.commitCursor(cursor, in: info.logID, at: RecordPosition(batchOffset: position, index: 0), expecting: .absent)
                }
            }
        }
        let out = StandardOutput()
        /// Moves the cursor to `next` once what comes before it is printed and flushed.
        func commit(_ next: RecordPosition) async throws(RingLogError) {
            guard let cursor else { return }
            out.flush()
            _ = try await client.commitCursor(cursor, in: info.logID, at: next)
        }
        var printed = 0
        let limit = count ?? Int.max
        guard limit > 0 else { return }
        while true {
            do throws(RingLogError) {
                let wait = client.server.maxWaitMillis > 0 ? min(Int(client.server.maxWaitMillis), 5_000) : 0
                let fetched = try await readWithin(client, log: info.logID, from: position, waitMillis: wait)
                let (records, damage) = fetched.recordsBeforeDamage()
                // Records of the cursor's batch before its index were handled by an earlier run.
                let skipBatch = position
                for record in records where !(record.position.batchOffset == skipBatch && record.position.index < skip) {
                    output.write(record, to: out)
                    printed += 1
                    if printed >= limit {
                        try await commit(RecordPosition(batchOffset: record.position.batchOffset, index: record.position.index + 1))
                        return
                    }
                }
                skip = 0
                out.flush()
                if let damage { throw damage }
                let moved = fetched.nextOffset != position
                position = fetched.nextOffset
                if moved { try await commit(RecordPosition(batchOffset: position, index: 0)) }
                // A server that does not long-poll is asked again a moment later, not at once.
                if fetched.isEmpty && wait == 0 { try? await Task.sleep(for: .milliseconds(100)) }
            } catch {
                out.flush()
                let stopping = error.serverCode == .shuttingDown
                if case .connectionClosed = error {} else if !stopping {
                    if case .corruptBatch = error {
                        position = try skipping(error, enabled: skipCorrupt)
                        skip = 0
                        continue
                    }
                    Console.error("ringlog: \(error)")
                    throw ExitCode(exitStatus(for: error))
                }
                let why = stopping ? "the server is stopping" : "\(error)"
                if noReconnect {
                    Console.error("ringlog: \(why)")
                    throw ExitCode(6)
                }
                Console.error("ringlog: \(why); reconnecting, to resume at offset \(position)")
                client.close()
                (client, info) = try await reconnect()
                Console.error("ringlog: reconnected to \(client.address)")
            }
        }
    }

    /// Connects again with backoff (0.1 s doubling to 5 s) until the server answers.
    private func reconnect() async throws -> (RingLogClient, LogDescription) {
        var delay = 0.1
        while true {
            try await Task.sleep(for: .seconds(delay))
            delay = min(delay * 2, 5)
            do {
                let client = try await RingLogClient.connect(to: options.server)
                do {
                    return (client, try await client.info(log))
                } catch {
                    client.close()
                    throw error
                }
            } catch let error as RingLogError {
                switch error {
                // Down, stopping, or starting again (full, or closing before its hello).
                case .connectFailed, .connectionClosed, .notRingLog: continue
                case .server(_) where error.serverCode == .shuttingDown || error.serverCode == .tooManyConnections: continue
                default:
                    Console.error("ringlog: \(error)")
                    throw ExitCode(exitStatus(for: error))
                }
            }
        }
    }
}

/// A long-poll read that gives up on a server gone silent: when no answer comes within the wait
/// plus 10 s (a peer that vanished without a reset), the connection is closed, which fails the
/// read with `connectionClosed` and sends `tail` to reconnect.
func readWithin(_ client: RingLogClient, log: LogID, from offset: LogOffset, waitMillis: Int) async throws(RingLogError) -> FetchedBatches {
    let guardTask = Task {
        try await Task.sleep(for: .milliseconds(waitMillis + 10_000))
        client.close()
    }
    defer { guardTask.cancel() }
    return try await client.read(from: log, offset: offset, maxWaitMillis: waitMillis)
}

/// `--since`: a duration ago (`90s`, `10m`, `2h`, `7d`), a UTC time (`2026-11-29T09:00:00Z`,
/// fractions of a second allowed), or `@` and Unix seconds; µs since the Unix epoch.
func sinceMicros(_ text: String, nowMicros: UInt64 = WallClock.micros()) throws -> UInt64 {
    if let seconds = parseDuration(text) {
        let (micros, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        return overflow ? 0 : nowMicros - min(nowMicros, micros)
    }
    if text.hasPrefix("@"), let seconds = Double(text.dropFirst()), seconds >= 0, seconds < 1e11 { return UInt64(seconds * 1e6) }
    // 2026-11-29T09:00:00Z, 2026-11-29T09:00:00.250Z
    let characters = Array(text.utf8)
    func number(_ range: Range<Int>) -> Int32? { Int32(String(decoding: characters[range], as: UTF8.self)) }
    if characters.count >= 20, characters.last == UInt8(ascii: "Z"), characters[4] == UInt8(ascii: "-"), characters[7] == UInt8(ascii: "-"),
        characters[10] == UInt8(ascii: "T"), characters[13] == UInt8(ascii: ":"), characters[16] == UInt8(ascii: ":"),
        let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
        let minute = number(14..<16), let second = number(17..<19), (1...12).contains(month), (1...31).contains(day),
        (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
    {
        var fraction = 0.0
        if characters.count > 20 {
            let digits = characters[20..<(characters.count - 1)]
            guard characters[19] == UInt8(ascii: "."), (1...9).contains(digits.count),
                digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                let value = Double("0." + String(decoding: digits, as: UTF8.self))
            else { throw ValidationError("--since \(text): the fraction of a second must be 1 to 9 digits") }
            fraction = value
        } else if characters[19] != UInt8(ascii: "Z") {
            throw ValidationError("--since \(text) is not a UTC time like 2026-11-29T09:00:00Z")
        }
        var parts = tm()
        parts.tm_year = year - 1900
        parts.tm_mon = month - 1
        parts.tm_mday = day
        parts.tm_hour = hour
        parts.tm_min = minute
        parts.tm_sec = second
        let seconds = timegm(&parts)
        if seconds >= 0 { return UInt64(seconds) * 1_000_000 + UInt64(fraction * 1e6) }
    }
    throw ValidationError("--since \(text) is not a time: give 10m, 2h, 7d (ago), 2026-11-29T09:00:00Z, or @1764406800")
}

/// Where the last `count` records of a log begin: a batch offset and how many of that batch's
/// records come before them. Reads the log from its start, keeping only batch offsets and
/// record counts.
func startOfLast(_ count: Int, client: RingLogClient, info: LogDescription) async throws -> (LogOffset, Int) {
    var batches: [(offset: LogOffset, records: Int)] = []
    var first = 0
    var total = 0
    var offset = info.startOffset
    var end = info.committedEnd
    while offset < end {
        let fetched = try await client.read(from: info.logID, offset: offset, maxBytes: Int(client.server.maxReadBytes))
        let found: Result<Void, RingLogError> = fetched.withUnsafeBytes { bytes in
            Result { () throws(RingLogError) in
                try BatchReader.forEachBatch(in: bytes, startingAt: offset) { batchOffset, header, _ in
                    batches.append((batchOffset, Int(header.recordCount)))
                    total += Int(header.recordCount)
                    // Drop whole batches that the last `count` records do not reach into.
                    while first < batches.count && total - batches[first].records >= count {
                        total -= batches[first].records
                        first += 1
                    }
                }
            }
        }
        try found.get()
        if first > 4096 {
            batches.removeFirst(first)
            first = 0
        }
        offset = fetched.nextOffset
        end = fetched.committedEnd
        if fetched.isEmpty { break }
    }
    guard first < batches.count, count > 0 else { return (offset, 0) }
    return (batches[first].offset, max(0, total - count))
}

struct Cursors: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a log's cursors (positions the server keeps for consumers); set or delete one.",
        discussion: """
            A cursor is a named position in a log: the next record a consumer will read, as \
            OFFSET/INDEX (a batch offset and the index of a record in it). `tail --cursor NAME` \
            resumes from one and moves it as it prints. Changes are acknowledged once durable. \
            Listing shows each cursor's lag: the bytes from it to the committed end.

            \(exitCodesHelp)
            """)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Option(help: "Set this cursor (to --to).") var set: String?
    @Option(help: "Where --set puts the cursor: OFFSET, OFFSET/INDEX, start or end.") var to: String?
    @Option(help: "Delete this cursor.") var delete: String?
    @Flag(help: "Print JSON (JSON Lines for the list).") var json = false

    func validate() throws {
        if set != nil && delete != nil { throw ValidationError("give --set or --delete, not both") }
        if (set == nil) != (to == nil) { throw ValidationError("--set NAME goes with --to POSITION") }
    }

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let info = try await reportingErrors { try await watchdog.run { try await client.info(log) } }
        if let name = delete {
            try await reportingErrors { try await watchdog.run { try await client.deleteCursor(name, in: info.logID) } }
            say(json ? "{\"deleted\":\(jsonString(name))}" : "deleted cursor \(name)")
            return
        }
        if let name = set, let to {
            let target: RecordPosition
            switch to {
            case "start": target = RecordPosition(batchOffset: info.startOffset, index: 0)
            case "end": target = RecordPosition(batchOffset: info.committedEnd, index: 0)
            default:
                let parts = to.split(separator: "/", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), let offset = UInt64(parts[0]), let index = parts.count == 2 ? Int(parts[1]) : 0,
                    (0...Int(UInt32.max)).contains(index)
                else {
                    throw ValidationError("--to \(to) is not a position: OFFSET, OFFSET/INDEX, start or end")
                }
                target = RecordPosition(batchOffset: LogOffset(offset), index: index)
                // A batch start holding at least `index` records (or the end, index 0): read it.
                if target.batchOffset != info.committedEnd || index != 0 {
                    let fetched = try await reportingErrors {
                        try await watchdog.run { try await client.read(from: info.logID, offset: target.batchOffset, maxBytes: 1) }
                    }
                    let records = try await reportingErrors { try fetched.records() }
                    guard let first = records.first, first.position.batchOffset == target.batchOffset, index <= first.batchRecordCount else {
                        Console.error("ringlog: --to \(to): the batch at \(offset) holds fewer than \(index) records")
                throw ExitCode(4)
                    }
                }
            }
            let saved = try await reportingErrors { try await watchdog.run { try await client.commitCursor(name, in: info.logID, at: target) } }
            say(json ? "{\"name\":\(jsonString(name)),\"offset\":\(saved.batchOffset),\"index\":\(saved.index)}" : "cursor \(name) at \(saved)")
            return
        }
        let cursors = try await reportingErrors { try await watchdog.run { try await client.cursors(in: info.logID) } }
        for cursor in cursors {
            say(
                json
                    ? "{\"name\":\(jsonString(cursor.name)),\"offset\":\(cursor.offset),\"index\":\(cursor.index),\"lagBytes\":\(cursor.lagBytes)}"
                    : "\(cursor.name)\t\(cursor.offset)/\(cursor.index)\tlag=\(cursor.lagBytes)")
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a log's start, end, segments and size; without a log, the server's counters.",
        discussion: """
            The server's counters are named as in /metrics without the ringlog_ prefix; with \
            --json their keys are camelCase (appends_total becomes appendsTotal). \
            docs/operations.md lists them all.

            \(exitCodesHelp)
            """)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name (omit for server-wide statistics).") var log: String?
    @Flag(help: "Print one JSON document.") var json = false

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        guard let log else {
            let stats = try await reportingErrors { try await watchdog.run { try await client.serverStats() } }
            if json {
                say("{\"server\":\(jsonString(client.server.serverName)),\"address\":\(jsonString(client.address.description)),"
                    + statsJSON(stats) + "}")
            } else {
                say("server \(client.server.serverName) at \(client.address)")
                for entry in stats { say("\(entry.name) \(entry.value)") }
            }
            return
        }
        let description = try await reportingErrors { try await watchdog.run { try await client.info(log) } }
        if json {
            say(describeJSON(description))
            return
        }
        let size = { (bytes: UInt64) in "\(describeByteSize(bytes)) (\(bytes) B)" }
        say("""
            log             \(description.name) (id \(description.logID))
            start offset    \(description.startOffset)
            committed end   \(description.committedEnd)
            segments        \(description.segmentCount)
            stored          \(size(description.storedBytes))
            on disk         \(size(description.diskBytes))
            segment size    \(describeByteSize(description.segmentBytes))
            retention       \(description.retentionBytes == 0 ? "no size limit" : describeByteSize(description.retentionBytes)), \
            \(description.retentionMillis == 0 ? "no age limit" : describeDuration(seconds: description.retentionMillis / 1000))
            """)
        if !description.failure.isEmpty { say("FAILED          \(description.failure)") }
    }
}

/// The server's statistics as JSON members: `"appendsTotal":N`, and the per-code error counters
/// (`errors_total{code="UNKNOWN_LOG"}`) as one object, `"errorsTotal":{"UNKNOWN_LOG":N,...}`.
func statsJSON(_ stats: [(name: String, value: UInt64)]) -> String {
    var members: [String] = []
    var errors: [String] = []
    for entry in stats {
        if let open = entry.name.firstIndex(of: "{") {
            guard entry.name[..<open] == "errors_total", let quote = entry.name.firstIndex(of: "\""),
                let end = entry.name[entry.name.index(after: quote)...].firstIndex(of: "\"")
            else { continue }
            errors.append("\(jsonString(String(entry.name[entry.name.index(after: quote)..<end]))):\(entry.value)")
        } else {
            members.append("\(jsonString(camelCase(entry.name))):\(entry.value)")
        }
    }
    members.append("\"errorsTotal\":{" + errors.joined(separator: ",") + "}")
    return members.joined(separator: ",")
}

struct Trim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Advance a log's start to OFFSET (a batch offset or the end); whole segments below it are deleted.",
        discussion: exitCodesHelp)

    @OptionGroup var options: ServerOptions
    @Argument(help: "Log name.") var log: String
    @Argument(help: "New start offset.") var offset: LogOffset
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let id = try await logID(client, log, watchdog)
        let start = try await reportingErrors { try await watchdog.run { try await client.trim(id, to: offset) } }
        say(json ? "{\"startOffset\":\(start)}" : "start \(start)")
    }
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check that the server answers; prints the round trip.", discussion: exitCodesHelp)

    @OptionGroup var options: ServerOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let watchdog = options.watchdog()
        let client = try await options.connect(watchdog)
        defer { client.close() }
        let started = MonotonicClock.nanos()
        try await reportingErrors { try await watchdog.run { try await client.ping() } }
        let micros = (MonotonicClock.nanos() - started) / 1_000
        if json {
            say("{\"server\":\(jsonString(client.server.serverName)),\"address\":\(jsonString(client.address.description)),\"roundTripSeconds\":\(Double(micros) / 1e6)}")
        } else {
            say("pong from \(client.server.serverName) at \(client.address) in \(micros) µs")
        }
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
