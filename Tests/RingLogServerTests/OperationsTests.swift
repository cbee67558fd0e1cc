import Foundation
import Glibc
import RingLogIO
import RingLogServer
import RingLogStorage
import RingLogTestKit
import RingLogTesting
import RingLogWire
import Synchronization
import Testing

@Suite struct OperationsTests {
    /// Appends keep arriving on several connections when the stop comes: every append that was
    /// acknowledged is there after the restart, and the restart reads nothing (clean checkpoint).
    @Test func aGracefulStopUnderLoadLosesNoAckAndTheRestartScansNothing() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let server = try TestServer(directory: directory)
        let address = server.address
        let log = try server.client().createLog("busy").logID
        let acknowledged = Mutex<[(LogOffset, [UInt8])]>([])
        let writers = (0..<4).map { writer in
            spawnThread {
                guard let client = try? RawClient(address) else { return }
                var sequence = 0
                while true {
                    let bytes = payload(100 + sequence % 50, seed: writer * 100_000 + sequence)
                    guard let response = try? client.append(log, bytes), response.header.status == 0,
                        let ack = try? response.decode(AppendResponse.self)
                    else { return }
                    acknowledged.withLock { $0.append((ack.offset, bytes)) }
                    sequence += 1
                }
            }
        }
        usleep(300_000)
        #expect(server.stop(), "the stop was clean")
        for writer in writers { joinThread(writer) }
        let acks = acknowledged.withLock { $0 }.sorted { $0.0 < $1.0 }
        #expect(acks.count > 100)

        let restarted = try TestServer(directory: directory)
        let report = try #require(restarted.server.recoveryReports.first)
        #expect(report.cleanShutdown)
        #expect(report.scannedBytes == 0, "a restart after a clean stop reads nothing")
        let stored = Dictionary(uniqueKeysWithValues: try restarted.client().readAll(log).map { ($0.offset, $0.payload) })
        for (offset, bytes) in acks { #expect(stored[offset] == bytes, "acknowledged batch at \(offset)") }
    }

    @Test func aBadConfigFileIsRejectedNamingTheKey() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        func start(_ yaml: String) throws -> (status: Int32, standardError: String) {
            let path = "\(directory)/ringlogd.yaml"
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            return try Daemon.run(["--config", path])
        }
        let unknown = try start("data-dir: \(directory)/data\nsegmnt-bytes: 1GiB\n")
        #expect(unknown.status != 0)
        #expect(unknown.standardError.contains("unknown key 'segmnt-bytes'"))
        let badValue = try start("max-connections: plenty\n")
        #expect(badValue.status != 0)
        #expect(badValue.standardError.contains("key 'max-connections'"))
        let notAMapping = try start("- just\n- a list\n")
        #expect(notAMapping.status != 0)
        #expect(notAMapping.standardError.contains("must be a mapping"))
    }

    /// A setting out of range stops the start with EX_USAGE (64), naming the setting, where the
    /// value came from and the valid range; nothing overflows on the way (issue 12).
    @Test func outOfRangeSettingsExitSixtyFourNamingTheSourceAndRange() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let data = "\(directory)/data"
        let flag = try Daemon.run(["--data-dir", data, "--retention-seconds", "18446744073709552"])
        #expect(flag.status == 64)
        #expect(flag.standardError.contains("--retention-seconds 18446744073709552 (on the command line) is out of range: it must be from 1 s to 3153600000 s"))
        let path = "\(directory)/ringlogd.yaml"
        try "data-dir: \(data)\nmax-wait-ms: 99999999999\nreceive-buffers: 100\n".write(toFile: path, atomically: true, encoding: .utf8)
        let file = try Daemon.run(["--config", path])
        #expect(file.status == 64)
        #expect(file.standardError.contains("--max-wait-ms 99999999999 (in the config file \(path)) is out of range: it must be from 0 ms to 86400000 ms"))
        #expect(file.standardError.contains("--receive-buffers 100 (in the config file \(path)) is out of range: it must be from 1 to 32768 (a power of two)"))
        let overridden = try Daemon.run(["--config", path, "--max-wait-ms", "5", "--receive-buffers", "128", "--segment-bytes", "1KiB"])
        #expect(overridden.status == 64)
        #expect(overridden.standardError.contains("--segment-bytes 1KiB (on the command line)"))
        #expect(!overridden.standardError.contains("max-wait-ms"), "the command line's value replaced the file's")
        #expect(!FileManager.default.fileExists(atPath: data), "nothing was created")
    }

    @Test func theCommandLineOverridesTheConfigFile() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let path = "\(directory)/ringlogd.yaml"
        try "data-dir: \(directory)/data\nmax-in-flight: 7\nlog-level: warning\n".write(toFile: path, atomically: true, encoding: .utf8)
        let daemon = try Daemon(directory: "\(directory)/ignored", arguments: ["--config", path, "--max-in-flight", "9"])
        defer {
            daemon.kill(SIGTERM)
            _ = daemon.waitForExit()
        }
        let hello = try RawClient(daemon.address).call(.hello, HelloRequest().encoded()).decode(HelloResponse.self)
        #expect(hello.maxInFlight == 9)
        #expect(FileManager.default.fileExists(atPath: "\(directory)/ignored/LOCK"), "--data-dir from the test's arguments won over the file")
    }

    /// GET /metrics answers in the Prometheus text format, and its counters follow the traffic.
    @Test func metricsParseAsPrometheusTextAndMoveWithTraffic() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let daemon = try Daemon(directory: directory, arguments: ["--metrics-listen", "127.0.0.1:0"])
        defer {
            daemon.kill(SIGTERM)
            _ = daemon.waitForExit()
        }
        let metrics = try #require(daemon.metricsAddress)
        let client = try RawClient(daemon.address)
        let log = try client.createLog("metered").logID
        let before = try scrape(metrics)
        // Every error code is there from the start, at zero.
        for code in ErrorCode.allCases { #expect(before["ringlog_errors_total{code=\"\(code.description)\"}"] == 0, "\(code)") }
        for seed in 0..<10 { _ = try client.append(log, payload(100, seed: seed)).decode(AppendResponse.self) }
        _ = try client.read(log, from: .zero).batches()
        _ = try client.read(LogID(999), from: .zero)
        let after = try scrape(metrics)
        #expect(after["ringlog_appends_total"]! - (before["ringlog_appends_total"] ?? 0) == 10)
        #expect(after["ringlog_appended_bytes_total"]! - (before["ringlog_appended_bytes_total"] ?? 0) == 10 * 148)
        #expect(after["ringlog_reads_total"]! >= 1)
        #expect(after["ringlog_errors_total{code=\"UNKNOWN_LOG\"}"] == 1)
        #expect(after["ringlog_fdatasyncs_total"]! > (before["ringlog_fdatasyncs_total"] ?? 0))
        #expect(after["ringlog_fdatasync_seconds_count"]! >= 1, "the fdatasync latency histogram fills")
        #expect(after["ringlog_log_committed_end_bytes{log=\"metered\"}"] == 1480)
        #expect(after["ringlog_log_start_offset_bytes{log=\"metered\"}"] == 0)
        #expect(after["ringlog_connections_open"] == 1)
        #expect(after["ringlog_build_info{version=\"\(ringLogVersion)\"}"] == 1)
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds"] {
            #expect((after[name] ?? 0) > 0, "\(name)")
        }
        // SERVER_STATS (`ringlog info`) and /metrics name the same figures the same way.
        for (name, _) in try client.stats() { #expect(after["ringlog_\(name)"] != nil, "\(name) is not in /metrics") }
        #expect(try httpGet(metrics, path: "/other").status.contains("404"))
    }

    /// Every family has its HELP and TYPE, and two scrapes list the same samples in the same order.
    @Test func metricsAreDescribedAndInAStableOrder() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let daemon = try Daemon(directory: directory, arguments: ["--metrics-listen", "127.0.0.1:0"])
        defer { daemon.kill(SIGKILL) }
        let metrics = try #require(daemon.metricsAddress)
        let client = try RawClient(daemon.address)
        for name in ["b", "a", "c"] { _ = try client.createLog(name) }
        let first = try httpGet(metrics, path: "/metrics").body
        let second = try httpGet(metrics, path: "/metrics").body
        func names(_ body: String) -> [String] {
            body.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { String($0.split(separator: " ")[0]) }
        }
        #expect(names(first) == names(second))
        var described: Set<String> = []
        var typed: Set<String> = []
        for line in first.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("# HELP ") { described.insert(String(words[2])) }
            if line.hasPrefix("# TYPE ") { typed.insert(String(words[2])) }
        }
        #expect(described == typed)
        for sample in names(first) {
            let family = sample.split(separator: "{")[0]
            let base = ["_bucket", "_sum", "_count"].reduce(String(family)) { name, suffix in
                typed.contains(name) ? name : (name.hasSuffix(suffix) ? String(name.dropLast(suffix.count)) : name)
            }
            #expect(typed.contains(base), "\(sample) has no TYPE")
        }
        let logOrder = names(first).filter { $0.hasPrefix("ringlog_log_segments{") }
        #expect(logOrder == ["ringlog_log_segments{log=\"a\"}", "ringlog_log_segments{log=\"b\"}", "ringlog_log_segments{log=\"c\"}"])
    }

    /// Fetches /metrics and checks every line against the text format: comments are `# TYPE`/`# HELP`,
    /// samples are `name{labels} value`. Returns samples by name with labels.
    private func scrape(_ address: SocketAddress) throws -> [String: Double] {
        let (status, body) = try httpGet(address, path: "/metrics")
        #expect(status.hasPrefix("HTTP/1.0 200"))
        var samples: [String: Double] = [:]
        let sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})?) (-?[0-9.eE+-]+|\+Inf|NaN)$/
        for line in body.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") || line.hasPrefix("# HELP ") { continue }
            guard let match = String(line).wholeMatch(of: sample), let value = Double(String(match.output.4)) else {
                Issue.record("not Prometheus text: \(line)")
                continue
            }
            samples[String(match.output.1)] = value
        }
        #expect(!samples.isEmpty)
        return samples
    }
}
