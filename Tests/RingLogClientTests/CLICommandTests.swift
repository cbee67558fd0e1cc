import Foundation
import Glibc
import RingLogIO
import RingLogTestKit
import Testing

/// The ringlog command line used as people use Unix tools: pipes, files, binary data, slow
/// producers, servers that stop, hang or are something else. Each test runs the real binaries
/// against a real ringlogd.
@Suite(.serialized) struct CLICommandTests {
    /// A daemon on a fixed loopback port (so it can come back on the same one) and a data
    /// directory of its own.
    final class Server {
        let directory = makeTemporaryDirectory()
        let port: UInt16
        var daemon: Daemon
        let extra: [String]
        var address: String { "127.0.0.1:\(port)" }

        init(_ extra: [String] = []) throws {
            port = try freeLoopbackPort()
            self.extra = extra
            daemon = try Daemon(directory: directory, arguments: ["--listen", "127.0.0.1:\(port)"] + extra)
        }

        func restart() throws {
            daemon = try Daemon(directory: directory, arguments: ["--listen", "127.0.0.1:\(port)"] + extra)
        }

        func ringlog(_ arguments: String..., input: [UInt8]? = nil) throws -> (status: Int32, output: String, error: String) {
            try runTool("ringlog", ["-s", address] + arguments, bytes: input)
        }

        func tool(_ arguments: String...) throws -> ToolProcess { try ToolProcess("ringlog", ["-s", address] + arguments) }

        deinit {
            daemon.kill(SIGKILL)
            removeDirectory(directory)
        }
    }

    private func json(_ text: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { throw TestFailure("not a JSON object: \(text)") }
        return object
    }

    private func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { try json(String($0)) }
    }

    @Test func appendStoresTheBytesGivenAndSplitsOnlyWhereTold() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "bytes").status == 0)
        // Not UTF-8, with a NUL: stored as is, not as replacement characters.
        #expect(try server.ringlog("append", "bytes", input: [0x6f, 0x6b, 0xff, 0xfe, 0x00, 0x65, 0x6e, 0x64, 0x0a]).status == 0)
        // CRLF lines: one record per line, the CR dropped.
        #expect(try server.ringlog("append", "bytes", input: Array("a\r\nb\r\n".utf8)).output == "76/0\n76/1\n")
        // NUL-separated records may hold newlines.
        #expect(try server.ringlog("append", "bytes", "--delimiter", "nul", input: Array("x\ny\0z\0".utf8)).status == 0)
        // The whole input as one record.
        #expect(try server.ringlog("append", "bytes", "--delimiter", "none", input: Array("p\nq\n".utf8)).status == 0)
        // A separator typed with an escape.
        #expect(try server.ringlog("append", "bytes", "--delimiter", "\\t", input: Array("t1\tt2".utf8)).status == 0)
        let hex = try server.ringlog("read", "bytes", "--format", "hex").output
        #expect(hex == "6f6bfffe00656e64\n61\n62\n780a79\n7a\n700a710a\n7431\n7432\n")
        // Text output writes the bytes as they are, like cat.
        let raw = try server.ringlog("read", "bytes", "--count", "1").output
        #expect(Array(raw.utf8) == Array(String(decoding: [0x6f, 0x6b, 0xff, 0xfe, 0x00, 0x65, 0x6e, 0x64, 0x0a], as: UTF8.self).utf8))
        // JSON: a string for UTF-8, base64 (marked) otherwise.
        let records = try jsonLines(try server.ringlog("read", "bytes", "--json", "--count", "2").output)
        #expect(records[0]["encoding"] as? String == "base64")
        #expect(records[0]["value"] as? String == "b2v//gBlbmQ=")
        #expect(records[1]["encoding"] as? String == "utf8")
        #expect(records[1]["value"] as? String == "a")
        #expect(try server.ringlog("append", "bytes", "--delimiter", "", input: []).status == 64, "an empty separator is refused")
        // After `--`, arguments are records, even ones that look like options; the server option
        // given before the command still applies.
        #expect(try server.ringlog("append", "bytes", "--", "-x", "--json").status == 0)
        #expect(try server.ringlog("read", "bytes", "--format", "hex").output.hasSuffix("2d78\n2d2d6a736f6e\n"))
    }

    @Test func appendStreamsASlowProducersRecordsAsTheyArrive() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "slow").status == 0)
        let producer = try server.tool("append", "slow")
        producer.write("one\n")
        // The first record commits while the producer is still open.
        #expect(producer.waitForOutput(seconds: 5) { $0 == "0/0\n" }, "position printed: \(producer.output)")
        #expect(try server.ringlog("read", "slow").output == "one\n")
        producer.write("two\nthree")
        producer.closeInput()
        #expect(producer.wait() == 0)
        #expect(producer.output == "0/0\n71/0\n71/1\n")
        #expect(try server.ringlog("read", "slow").output == "one\ntwo\nthree\n")
    }

    /// ringlogd killed with SIGKILL and restarted while `append` streams: the append reconnects,
    /// sends again what was not acknowledged, and every line is in the log once, in order.
    @Test func appendRidesThroughAKillNineAndStoresEachRecordOnce() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "steady").status == 0)
        let producer = try server.tool("append", "steady", "--linger-ms", "1", "--timeout", "30")
        var lines: [String] = []
        func write(_ range: Range<Int>) {
            let chunk = range.map { "line \($0)" }
            lines += chunk
            producer.write(chunk.joined(separator: "\n") + "\n")
        }
        write(0..<2_000)
        #expect(producer.waitForOutput(seconds: 10) { $0.split(separator: "\n").count >= 500 }, "positions printed: \(producer.output.count) bytes")
        write(2_000..<4_000)
        server.daemon.kill(SIGKILL)
        _ = server.daemon.waitForExit()
        write(4_000..<6_000)
        usleep(200_000)
        try server.restart()
        write(6_000..<8_000)
        producer.closeInput()
        #expect(producer.wait() == 0, "\(producer.error)")
        let positions = producer.output.split(separator: "\n")
        #expect(positions.count == lines.count, "a position for every record")
        #expect(Set(positions).count == positions.count, "no position printed twice")
        let stored = try server.ringlog("read", "steady").output.split(separator: "\n").map(String.init)
        #expect(stored == lines, "\(stored.count) records stored for \(lines.count) sent; first difference at \(Array(zip(stored, lines)).firstIndex { $0.0 != $0.1 } ?? -1)")
    }

    @Test func aRecordLargerThanTheServerTakesIsRefusedBeforeSending() throws {
        let server = try Server(["--max-batch-bytes", "64KiB"])
        #expect(try server.ringlog("create", "big").status == 0)
        let limit = (64 << 10) - 64 - 4
        let fits = try server.ringlog("append", "big", "--delimiter", "none", input: [UInt8](repeating: 0x61, count: limit))
        #expect(fits.status == 0, "\(fits.error)")
        let tooLarge = try server.ringlog("append", "big", "--delimiter", "none", input: [UInt8](repeating: 0x61, count: limit + 1))
        #expect(tooLarge.status == 64)
        #expect(tooLarge.error.contains("record of \(limit + 1) B exceeds the largest record this server takes (\(limit) B)"))
        let argument = try server.ringlog("append", "big", "before", String(repeating: "b", count: limit + 10))
        #expect(argument.status == 64)
        #expect(argument.output.hasSuffix("/0\n"), "the record before the too-large one was appended: \(argument.output)")
        #expect(try server.ringlog("read", "big", "--from", String(argument.output.split(separator: "/")[0])).output == "before\n")
        #expect(try server.ringlog("ping").status == 0, "the connection was not reset, the server is fine")
    }

    @Test func readReportsTheServersOffsetErrors() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "r").status == 0)
        #expect(try server.ringlog("append", "r", "one", "two").status == 0)
        let past = try server.ringlog("read", "r", "--from", "99999")
        #expect(past.status == 4)
        #expect(past.output.isEmpty)
        #expect(past.error.contains("OFFSET_OUT_OF_RANGE"))
        let inside = try server.ringlog("read", "r", "--from", "5")
        #expect(inside.status == 4)
        #expect(inside.error.contains("NOT_BATCH_BOUNDARY"))
        let atEnd = try server.ringlog("read", "r", "--from", "78")
        #expect(atEnd.status == 0)
        #expect(atEnd.output.isEmpty)
    }

    @Test func tailWritesEachRecordToAPipeAsItCommits() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "live").status == 0)
        let tail = try server.tool("tail", "live")
        usleep(300_000)
        #expect(try server.ringlog("append", "live", "first").status == 0)
        #expect(tail.waitForOutput(seconds: 5) { $0 == "first\n" }, "got \(tail.output.debugDescription)")
        #expect(try server.ringlog("append", "live", "second").status == 0)
        #expect(tail.waitForOutput(seconds: 5) { $0 == "first\nsecond\n" })
        tail.signal(SIGINT)
        #expect(tail.wait() == 128 + SIGINT || tail.process.terminationReason == .uncaughtSignal)
    }

    @Test func tailReconnectsAcrossAServerRestartAndResumesWhereItStopped() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "r").status == 0)
        let tail = try server.tool("tail", "r", "--from", "0")
        #expect(try server.ringlog("append", "r", "before").status == 0)
        #expect(tail.waitForOutput(seconds: 5) { $0 == "before\n" })
        server.daemon.kill(SIGTERM)
        #expect(server.daemon.waitForExit() == 0)
        #expect(tail.waitForError(seconds: 5) { $0.contains("the server is stopping; reconnecting") || $0.contains("reconnecting") })
        try server.restart()
        #expect(try server.ringlog("append", "r", "after").status == 0)
        #expect(tail.waitForOutput(seconds: 10) { $0 == "before\nafter\n" }, "got \(tail.output.debugDescription), \(tail.error)")
        #expect(tail.error.contains("reconnected"))
        tail.signal(SIGTERM)
        _ = tail.wait()

        let once = try server.tool("tail", "r", "--no-reconnect")
        usleep(300_000)
        server.daemon.kill(SIGTERM)
        #expect(once.wait() == 6)
        #expect(once.error.contains("the server is stopping") || once.error.contains("connection closed"))
    }

    @Test func tailLastStartsThatManyRecordsBeforeTheEnd() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "l").status == 0)
        #expect(try server.ringlog("append", "l", "a", "b", "c").status == 0)
        #expect(try server.ringlog("append", "l", "d", "e").status == 0)
        #expect(try server.ringlog("tail", "l", "--last", "3", "--count", "3").output == "c\nd\ne\n")
        #expect(try server.ringlog("tail", "l", "--last", "10", "--count", "5").output == "a\nb\nc\nd\ne\n")
        #expect(try server.ringlog("tail", "l", "--last", "1", "--count", "1").output == "e\n")
        #expect(try server.ringlog("tail", "l", "--last", "1", "--from", "0").status == 64)
    }

    @Test func aPeerThatNeverAnswersTimesOutAndOneThatIsNotRingLogIsNamed() throws {
        // Accepts connections (the kernel's backlog) and never answers.
        let silent = try silentListener()
        defer { close(silent.fd) }
        let started = Date()
        let hung = try runTool("ringlog", ["-s", "127.0.0.1:\(silent.port)", "ping", "--timeout", "1"])
        #expect(hung.status == 7)
        #expect(hung.error.contains("no answer from 127.0.0.1:\(silent.port) within 1 s"))
        #expect(Date().timeIntervalSince(started) < 5)

        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let daemon = try Daemon(directory: directory, arguments: ["--metrics-listen", "127.0.0.1:0"])
        defer { daemon.kill(SIGKILL) }
        let http = try runTool("ringlog", ["-s", daemon.metricsAddress!.description, "ping"])
        #expect(http.status == 2)
        #expect(http.error.contains("does not look like a RingLog server"))
    }

    @Test func hostNamesResolveAndEachAddressIsTried() throws {
        let server = try Server()
        let named = try runTool("ringlog", ["--server", "localhost:\(server.port)", "ping"])
        #expect(named.status == 0, "\(named.error)")
        #expect(named.output.contains("pong from ringlogd"))
        let unknown = try runTool("ringlog", ["--server", "no-such-host.invalid:\(server.port)", "ping"])
        #expect(unknown.status == 2)
        #expect(unknown.error.contains("cannot resolve no-such-host.invalid"))
        // Over IPv6 where the machine has ::1.
        if let v6 = try? SocketAddress(parsing: "[::1]:0"), let listening = try? Sockets.listen(on: v6) {
            close(listening.fd)
            let directory = makeTemporaryDirectory()
            defer { removeDirectory(directory) }
            let daemon = try Daemon(directory: directory, arguments: ["--listen", "[::1]:0"])
            defer { daemon.kill(SIGKILL) }
            #expect(try runTool("ringlog", ["--server", daemon.address.description, "ping"]).status == 0)
        }
    }

    @Test func everyCommandSpeaksJSON() throws {
        let server = try Server()
        let created = try json(try server.ringlog("create", "j", "--retention", "7d", "--json").output)
        #expect(created["name"] as? String == "j")
        #expect(created["retentionSeconds"] as? Double == 604_800)
        #expect(created["retentionBytes"] is NSNull, "absent values are null")
        #expect(created["failure"] is NSNull)
        let appended = try jsonLines(try server.ringlog("append", "j", "x", "y", "--json").output)
        #expect(appended.map { $0["index"] as? Int } == [0, 1])
        #expect(try jsonLines(try server.ringlog("list", "--json").output).map { $0["name"] as? String } == ["j"])
        let stats = try json(try server.ringlog("info", "--json").output)
        #expect(stats["appendsTotal"] as? Int == 1, "camelCase keys: \(stats.keys.sorted())")
        #expect(stats.keys.allSatisfy { !$0.contains("_") && !$0.contains("{") })
        #expect((stats["errorsTotal"] as? [String: Any])?["UNKNOWN_LOG"] as? Int == 0, "error counters by code: \(stats["errorsTotal"] ?? "none")")
        #expect(try json(try server.ringlog("info", "j", "--json").output)["committedEnd"] as? Int == 74)
        #expect(try json(try server.ringlog("ping", "--json").output)["roundTripSeconds"] is Double)
        #expect(try json(try server.ringlog("trim", "j", "74", "--json").output)["startOffset"] as? Int == 74)
        #expect(try json(try server.ringlog("delete", "j", "--json").output)["deleted"] as? String == "j")
        // Text output is for people: sizes and durations in their units.
        #expect(try server.ringlog("create", "k", "--retention", "36h").status == 0)
        let info = try server.ringlog("info", "k").output
        #expect(info.contains("16 MiB"))
        #expect(info.contains("36 hours"))
    }

    @Test func theBenchReportsServerCPUOnlyWhenItKnowsTheServerAndStopsWhenTheServerDies() throws {
        let server = try Server()
        let unknown = try json(try server.ringlog("bench", "produce", "--duration", "0.5", "--warmup", "0", "--json", "--quiet").output)
        #expect(unknown["serverCpuPercent"] is NSNull)
        let known = try json(
            try server.ringlog("bench", "produce", "--duration", "0.5", "--warmup", "0", "--json", "--quiet", "--server-pid", "\(server.daemon.pid)").output)
        #expect(known["serverCpuPercent"] is Double)

        let interrupted = try server.tool("bench", "produce", "--duration", "30", "--warmup", "0", "--json", "--quiet")
        usleep(1_500_000)
        interrupted.signal(SIGINT)
        #expect(interrupted.wait() == 130)
        let partial = try json(interrupted.output)
        #expect(partial["interrupted"] as? Bool == true)
        #expect((partial["records"] as? Int ?? 0) > 0)

        let dying = try server.tool("bench", "produce", "--duration", "30", "--warmup", "0", "--connections", "2", "--pipeline", "4")
        usleep(1_500_000)
        server.daemon.kill(SIGKILL)
        let killed = Date()
        #expect(dying.wait() == 1)
        #expect(Date().timeIntervalSince(killed) < 3, "stopped soon after the server died")
        // The progress lines' errors add up to the summary's.
        let progress = dying.error.split(separator: "\n").compactMap { line -> Int? in
            guard let range = line.range(of: "errors ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        let summary = dying.output.split(separator: "\n").first { $0.contains("errors") }.flatMap { line in
            Int(line.split(separator: " ").dropFirst().first { Int($0) != nil } ?? "")
        }
        #expect(summary == progress, "summary \(String(describing: summary)), progress \(progress)")
        #expect((summary ?? 0) > 0)
    }

    @Test func messagesNameTheOffendingCharacterAndWhereABadValueCameFrom() throws {
        let server = try Server()
        let slash = try server.ringlog("create", "a/b")
        #expect(slash.status == 1)
        #expect(slash.error.contains("'/' (U+002F) at character 2 is not allowed"), "\(slash.error)")
        let space = try server.ringlog("create", "my log")
        #expect(space.error.contains("a space (U+0020) at character 3"))
        let fromEnvironment = try runTool("ringlog", ["ping"], environment: ["RINGLOG_SERVER": "nowhere"])
        #expect(fromEnvironment.status == 64)
        #expect(fromEnvironment.error.contains("$RINGLOG_SERVER nowhere"))
        let fromFlag = try runTool("ringlog", ["ping", "--server", "nowhere"])
        #expect(fromFlag.error.contains("--server nowhere"))
        // Every subcommand's help lists the exit codes; completion scripts come from the parser.
        for command in ["create", "delete", "list", "append", "read", "tail", "info", "trim", "ping"] {
            #expect(try runTool("ringlog", [command, "--help"]).output.contains("130 interrupted"), "\(command)")
        }
        let completion = try runTool("ringlog", ["--generate-completion-script", "bash"])
        #expect(completion.status == 0)
        #expect(completion.output.contains("tail"))
    }

    @Test func appendIfEndWritesOnlyAtTheExpectedEnd() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "c").status == 0)
        #expect(try server.ringlog("append", "c", "--if-end", "0", "a", "b").output == "0/0\n0/1\n")
        let stale = try server.ringlog("append", "c", "--if-end", "0", "x")
        #expect(stale.status == 8)
        #expect(stale.error.contains("END_MISMATCH"))
        #expect(stale.error.contains("the log's end is 74"))
        // Streamed input in several batches: each expects the end the one before left.
        let streamed = try server.ringlog("append", "c", "--if-end", "74", "--batch-bytes", "76", input: Array("p\nq\nr\ns\nt\nu\n".utf8))
        #expect(streamed.status == 0, "\(streamed.error)")
        #expect(try server.ringlog("read", "c").output == "a\nb\np\nq\nr\ns\nt\nu\n")
    }

    @Test func readAndTailSinceATime() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "t").status == 0)
        for word in ["early", "middle", "late"] {
            #expect(try server.ringlog("append", "t", word).status == 0)
            usleep(20_000)
        }
        let records = try jsonLines(try server.ringlog("read", "t", "--json").output)
        let middle = try #require(records[1]["appendTimeMicros"] as? Int)
        // Half a millisecond before the middle record: it and what follows.
        let since = String(format: "@%.4f", Double(middle - 500) / 1e6)
        #expect(try server.ringlog("read", "t", "--since", since).output == "middle\nlate\n")
        #expect(try server.ringlog("read", "t", "--since", "1h").output == "early\nmiddle\nlate\n")
        #expect(try server.ringlog("read", "t", "--since", "2100-01-01T00:00:00Z").output == "")
        #expect(try server.ringlog("read", "t", "--since", "2000-01-01T00:00:00.5Z").output == "early\nmiddle\nlate\n")
        #expect(try server.ringlog("tail", "t", "--since", since, "--count", "2").output == "middle\nlate\n")
        #expect(try server.ringlog("read", "t", "--since", "yesterday").status == 64)
        #expect(try server.ringlog("read", "t", "--since", "2026-11-29T09:00:00.5e300Z").status == 64)
        #expect(try server.ringlog("read", "t", "--since", "1h", "--from", "0").status == 64)
        #expect(try server.ringlog("tail", "t", "--since", "1h", "--last", "1").status == 64)
    }

    @Test func tailWithACursorResumesWhereItStoppedAndCursorsListsSetsDeletes() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "q").status == 0)
        #expect(try server.ringlog("append", "q", "a", "b", "c").status == 0)
        #expect(try server.ringlog("append", "q", "d").status == 0)
        #expect(try server.ringlog("tail", "q", "--cursor", "worker", "--from", "0", "--count", "2").output == "a\nb\n")
        // Stopped in the middle of a batch: the next run starts at its third record.
        #expect(try server.ringlog("cursors", "q").output == "worker\t0/2\tlag=148\n")
        #expect(try server.ringlog("tail", "q", "--cursor", "worker", "--count", "2").output == "c\nd\n")
        // Batches: a, b, c at 0 (79 bytes), d at 79 (69 bytes). Stopping right after d leaves the
        // cursor past d's only record.
        let listed = try jsonLines(try server.ringlog("cursors", "q", "--json").output)
        #expect(listed.first?["offset"] as? Int == 79)
        #expect(listed.first?["index"] as? Int == 1)
        #expect(listed.first?["lagBytes"] as? Int == 69)
        #expect(try server.ringlog("append", "q", "e").status == 0)
        #expect(try server.ringlog("tail", "q", "--cursor", "worker", "--count", "1").output == "e\n")
        #expect(try server.ringlog("cursors", "q", "--set", "worker", "--to", "start").output == "cursor worker at 0/0\n")
        #expect(try server.ringlog("tail", "q", "--cursor", "worker", "--count", "1").output == "a\n")
        #expect(try server.ringlog("cursors", "q", "--delete", "worker").output == "deleted cursor worker\n")
        #expect(try server.ringlog("cursors", "q", "--delete", "worker").status == 1)
        #expect(try server.ringlog("cursors", "q", "--set", "w", "--to", "nowhere").status == 64)
        #expect(try server.ringlog("cursors", "q").output.isEmpty)
        // A cursor past all of its batch's records resumes at the next batch; one past what the
        // batch holds is refused when set.
        #expect(try server.ringlog("cursors", "q", "--set", "far", "--to", "0/3").status == 0)
        #expect(try server.ringlog("tail", "q", "--cursor", "far", "--count", "1", "--timeout", "5").output == "d\n")
        #expect(try server.ringlog("cursors", "q", "--set", "far", "--to", "0/100").status == 4)
    }

    /// From a terminal (a pty from script(1)), `append` says how to end the input, and takes
    /// what is typed.
    @Test func appendFromATerminalSaysHowToEndInput() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "typed").status == 0)
        try #require(FileManager.default.fileExists(atPath: "/usr/bin/script"), "script(1) (bsdutils) provides the terminal")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        process.arguments = ["-qec", "\(Daemon.binary("ringlog").path) -s \(server.address) append typed", "/dev/null"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        usleep(500_000)
        input.fileHandleForWriting.write(Data("typed line\n".utf8))
        usleep(300_000)
        input.fileHandleForWriting.write(Data([4]))  // Ctrl-D
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(text.contains("end with Ctrl-D"), "\(text)")
        #expect(try server.ringlog("read", "typed").output == "typed line\n")
    }

    /// What a newcomer following docs/cli.md tripped over: a closed pipe, a full disk on
    /// standard output, a new cursor that printed nothing, impossible cursor positions, a
    /// missing input file.
    @Test func pipesFullOutputsNewCursorsAndBadPositionsBehaveAsDocumented() throws {
        let server = try Server()
        #expect(try server.ringlog("create", "p").status == 0)
        let lines = (0..<20_000).map { "line \($0) of some text to fill more than a pipe" }.joined(separator: "\n") + "\n"
        #expect(try server.ringlog("append", "p", "--quiet", input: Array(lines.utf8)).status == 0)
        let ringlog = Daemon.binary("ringlog").path
        func bash(_ script: String) throws -> (status: Int32, output: String, error: String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", script]
            let output = Pipe()
            let error = Pipe()
            process.standardOutput = output
            process.standardError = error
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let errors = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text, errors)
        }
        let piped = try bash("set -o pipefail; \(ringlog) -s \(server.address) read p | head -1; echo \"status ${PIPESTATUS[0]}\"")
        #expect(piped.output.hasSuffix("status 0\n"), "a closed pipe ends read quietly: \(piped.output.suffix(40)) \(piped.error)")
        let full = try bash("\(ringlog) -s \(server.address) list > /dev/full")
        #expect(full.status == 74, "\(full.error)")
        #expect(full.error.contains("cannot write to standard output"))
        // A new cursor is saved where tail starts, before anything is printed.
        let tail = try server.tool("tail", "p", "--cursor", "fresh")
        usleep(700_000)
        tail.signal(SIGTERM)
        _ = tail.wait()
        #expect(try server.ringlog("cursors", "p").output.hasPrefix("fresh\t"), "the new cursor exists")
        #expect(try server.ringlog("cursors", "p", "--set", "x", "--to", "7").status == 4, "not a batch start")
        #expect(try server.ringlog("cursors", "p", "--set", "x", "--to", "0/999999").status == 4, "more records than the batch holds")
        let missing = try server.ringlog("append", "p", "--file", "/nonexistent/input")
        #expect(missing.status == 64)
        #expect(missing.error.hasPrefix("ringlog: cannot read /nonexistent/input"), "\(missing.error)")
    }
}
