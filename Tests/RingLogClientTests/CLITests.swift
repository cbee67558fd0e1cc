import Foundation
import Glibc
import RingLogTestKit
import RingLogTesting
import Testing

/// The ringlog command line against a real ringlogd process: output and exit codes.
@Suite(.serialized) struct CLITests {
    /// A daemon on a data directory of its own, removed afterwards (tests without a daemon make none).
    func withDaemon(_ body: (String) throws -> Void) throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let daemon = try Daemon(directory: directory)
        defer {
            daemon.kill(SIGTERM)
            _ = daemon.waitForExit()
        }
        try body(daemon.address.description)
    }

    @Test func everySubcommandWorksAndReportsErrorsWithItsExitCode() throws {
        try withDaemon { server in
            func ringlog(_ arguments: String..., input: String? = nil) throws -> (status: Int32, output: String, error: String) {
                try runTool("ringlog", ["--server", server] + arguments, input: input)
            }
            #expect(try ringlog("ping").output.hasPrefix("pong from ringlogd"))
            #expect(try ringlog("create", "demo").output == "created demo (id \(try logID(server))) \n".replacingOccurrences(of: " \n", with: "\n"))
            let appended = try ringlog("append", "demo", "one", "two")
            #expect(appended.status == 0)
            #expect(appended.output == "0/0\n0/1\n")
            let piped = try ringlog("append", "demo", input: "three\nfour\n")
            #expect(piped.output == "78/0\n78/1\n")
            #expect(try ringlog("read", "demo").output == "one\ntwo\nthree\nfour\n")
            #expect(try ringlog("read", "demo", "--positions", "--count", "3").output == "0/0\tone\n0/1\ttwo\n78/0\tthree\n")
            #expect(try ringlog("read", "demo", "--from", "78", "--format", "hex").output == "7468726565\n666f7572\n")
            let json = try ringlog("read", "demo", "--format", "json", "--count", "1").output
            let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            #expect(object?["value"] as? String == "one")
            #expect(object?["offset"] as? Int == 0)
            #expect(try ringlog("tail", "demo", "--from", "0", "--count", "2").output == "one\ntwo\n")
            #expect(try ringlog("info", "demo").output.contains("committed end   159"))
            let info = try JSONSerialization.jsonObject(with: Data(try ringlog("info", "demo", "--json").output.utf8)) as? [String: Any]
            #expect(info?["committedEnd"] as? Int == 159)
            #expect(try ringlog("info").output.contains("appends_total 2"))
            #expect(try ringlog("list").output == "demo\tstart=0\tend=159\tbytes=159\n")
            #expect(try ringlog("trim", "demo", "78").output == "start 78\n")

            let unknown = try ringlog("read", "nosuch")
            #expect(unknown.status == 3)
            #expect(unknown.error.contains("UNKNOWN_LOG"))
            let badOffset = try ringlog("read", "demo", "--from", "80")
            #expect(badOffset.status == 4)
            #expect(badOffset.error.contains("not the start of a batch"))
            #expect(try ringlog("read", "demo", "--from", "0").status == 4, "below the start after the trim")
            #expect(try ringlog("create", "demo").status == 1)
            #expect(try ringlog("create", "../x").error.contains("BAD_LOG_NAME"))
            #expect(try ringlog("append", "demo", "x", "--mode", "maybe").status == 64)
            #expect(try ringlog("delete", "demo").output == "deleted demo\n")
            #expect(try ringlog("info", "demo").status == 3)
        }
    }

    /// `create` range-checks its settings before any arithmetic (exit 64, naming the option and
    /// the range); accepted ones reach the server unchanged.
    @Test func createRefusesSettingsOutOfRange() throws {
        try withDaemon { server in
            func ringlog(_ arguments: String...) throws -> (status: Int32, output: String, error: String) {
                try runTool("ringlog", ["--server", server] + arguments)
            }
            let age = try ringlog("create", "old", "--retention-seconds", "18446744073709552")
            #expect(age.status == 64)
            #expect(age.error.contains("--retention-seconds 18446744073709552 is out of range: it must be from 1 to 3153600000"))
            let segment = try ringlog("create", "big", "--segment-bytes", "8GiB")
            #expect(segment.status == 64)
            #expect(segment.error.contains("--segment-bytes 8GiB is out of range"))
            #expect(try ringlog("list").output.isEmpty, "nothing was created")
            #expect(try ringlog("create", "week", "--retention-seconds", "604800").status == 0)
            let info = try JSONSerialization.jsonObject(with: Data(try ringlog("info", "week", "--json").output.utf8)) as? [String: Any]
            #expect(info?["retentionSeconds"] as? Double == 604_800)
        }
    }

    /// A damaged batch stops `read` with exit code 5 and says where the next batch is;
    /// `--skip-corrupt` steps over it, says so on standard error, and prints everything else.
    @Test func readStopsAtADamagedBatchUnlessToldToSkipIt() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        var daemon = try Daemon(directory: directory)
        func ringlog(_ arguments: String...) throws -> (status: Int32, output: String, error: String) {
            try runTool("ringlog", ["--server", daemon.address.description] + arguments)
        }
        #expect(try ringlog("create", "rot").status == 0)
        for word in ["one", "two", "three", "four"] { #expect(try ringlog("append", "rot", word).status == 0) }
        daemon.kill(SIGTERM)
        #expect(daemon.waitForExit() == 0)
        // Batches are 64 + 4 + len bytes: "one" at 0, "two" at 71, "three" at 142. Damage the
        // header CRC of "two".
        let segment = "\(directory)/logs/rot/00000000000000000000.seg"
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: segment))
        try handle.seek(toOffset: 71 + 5)
        let original = try handle.read(upToCount: 1)!
        try handle.seek(toOffset: 71 + 5)
        try handle.write(contentsOf: Data([original[0] ^ 0x10]))
        try handle.close()
        daemon = try Daemon(directory: directory)
        defer {
            daemon.kill(SIGTERM)
            _ = daemon.waitForExit()
        }
        let stopped = try ringlog("read", "rot")
        #expect(stopped.status == 5)
        #expect(stopped.output == "one\n")
        #expect(stopped.error.contains("corrupt batch at offset 71"))
        #expect(stopped.error.contains("the next batch starts at 142"))
        let skipped = try ringlog("read", "rot", "--skip-corrupt")
        #expect(skipped.status == 0)
        #expect(skipped.output == "one\nthree\nfour\n")
        #expect(skipped.error.contains("skipping the corrupt batch at offset 71"))
        #expect(try ringlog("tail", "rot", "--from", "0", "--count", "3", "--skip-corrupt").output == "one\nthree\nfour\n")
        #expect(try ringlog("read", "rot", "--from", "142").output == "three\nfour\n", "reads at good offsets after the damage")
    }

    @Test func aServerThatIsNotRunningIsExitCodeTwo() throws {
        let result = try runTool("ringlog", ["--server", "127.0.0.1:1", "ping"])
        #expect(result.status == 2)
        #expect(result.error.contains("cannot connect to 127.0.0.1:1"))
        let fromEnvironment = try runTool("ringlog", ["list"], environment: ["RINGLOG_SERVER": "127.0.0.1:1"])
        #expect(fromEnvironment.status == 2)
    }

    @Test func helpIsCompleteForEverySubcommand() throws {
        let top = try runTool("ringlog", ["--help"]).output
        for command in ["create", "delete", "list", "append", "read", "tail", "info", "trim", "ping", "bench"] {
            #expect(top.contains(command), "\(command) missing from ringlog --help")
            let help = try runTool("ringlog", [command, "--help"])
            #expect(help.status == 0)
            #expect(help.output.contains("USAGE"))
        }
        #expect(top.contains("Exit codes"))
    }

    @Test func theBenchRunsAndItsJSONHasTheExpectedFields() throws {
        try withDaemon { server in
            let result = try runTool(
                "ringlog", ["bench", "produce", "--server", server, "--connections", "4", "--pipeline", "4", "--duration", "1", "--warmup", "0", "--json", "--quiet"])
            #expect(result.status == 0, "\(result.error)")
            let summary = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
            for field in ["workload", "seconds", "records", "recordsPerSecond", "megabytesPerSecond", "requests", "errors", "latencyMicros", "clientCpuPercent"] {
                #expect(summary?[field] != nil, "missing \(field)")
            }
            #expect((summary?["records"] as? Int ?? 0) > 0)
            #expect(summary?["errors"] as? Int == 0)
            let latency = summary?["latencyMicros"] as? [String: Any]
            #expect(Set(latency?.keys.map { $0 } ?? []) == ["p50", "p90", "p99", "p99.9", "max"])

            let consume = try runTool("ringlog", ["bench", "consume", "--server", server, "--json", "--quiet"])
            let read = try JSONSerialization.jsonObject(with: Data(consume.output.utf8)) as? [String: Any]
            #expect(read?["workload"] as? String == "consume")
            #expect((read?["records"] as? Int ?? 0) >= (summary?["records"] as? Int ?? Int.max), "the consumer read back every record produced")

            let endToEnd = try runTool("ringlog", ["bench", "end-to-end", "--server", server, "--rate", "500", "--duration", "1", "--warmup", "0", "--json", "--quiet"])
            let e2e = try JSONSerialization.jsonObject(with: Data(endToEnd.output.utf8)) as? [String: Any]
            #expect((e2e?["endToEndMicros"] as? [String: Any])?["p99"] != nil)
        }
    }

    private func logID(_ server: String) throws -> String {
        let info = try runTool("ringlog", ["--server", server, "info", "demo", "--json"]).output
        let object = try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any]
        return "\(object?["id"] as? Int ?? 0)"
    }
}
