import ArgumentParser
import Glibc
import RingLogClient
import RingLogIO
import RingLogWire
import Synchronization

@main
struct RingLogCommand: AsyncParsableCommand {
    /// `--server`, `-s` and `--timeout` belong to the subcommands; accept them before the
    /// subcommand too (`ringlog -s host:port ping`) by moving them to the end.
    static func main() async {
        // A closed pipe (`ringlog read LOG | head`) shows up as EPIPE from write, which ends the
        // command quietly with status 0 (StandardOutput), rather than as a kill by SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        var arguments = Array(CommandLine.arguments.dropFirst())
        var moved: [String] = []
        while let first = arguments.first, first.hasPrefix("-") {
            let takesValue = ["--server", "-s", "--timeout"].contains(first)
            let inline = first.hasPrefix("--server=") || first.hasPrefix("--timeout=")
            guard takesValue || inline else { break }
            let taken = takesValue && arguments.count > 1 ? 2 : 1
            moved += arguments.prefix(taken)
            arguments.removeFirst(taken)
        }
        // At the end, but before a `--` (after it, they would be records or names).
        arguments.insert(contentsOf: moved, at: arguments.firstIndex(of: "--") ?? arguments.endIndex)
        do {
            var command = try parseAsRoot(arguments)
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "ringlog",
        abstract: "Talk to a RingLog server: manage logs, append and read records, benchmark.",
        discussion: """
            The server is --server (-s), else $RINGLOG_SERVER, else 127.0.0.1:7400; host names \
            resolve (IPv4 and IPv6). Every command takes --json.

            \(exitCodesHelp)
            """,
        version: "0.1.0",
        subcommands: [
            Create.self, Delete.self, List.self, Append.self, Read.self, Tail.self, Cursors.self, Info.self, Trim.self, Ping.self, Bench.self,
        ])
}

let exitCodesHelp = """
    Exit codes: 0 success; 1 error reported by the server (not listed below); 2 cannot connect \
    to the server, or the address is not a RingLog server; 3 unknown log; 4 offset out of range \
    or not a batch start; 5 corrupt data; 6 connection lost; 7 no answer within --timeout; 8 the \
    log's end was not the one --if-end expected (nothing written); 64 bad \
    command line or a record too large for the server; 74 standard output could not be written; \
    130 interrupted (Ctrl-C).
    """

/// Options every subcommand that talks to a server takes.
struct ServerOptions: ParsableArguments {
    @Option(name: [.customShort("s"), .customLong("server")], help: "Server address, host:port or [ipv6]:port (default: $RINGLOG_SERVER, else 127.0.0.1:7400).")
    var serverOption: String?

    /// `--server`, else `$RINGLOG_SERVER`, else the default.
    var server: String { serverOption ?? environmentServer ?? "127.0.0.1:7400" }
    @Option(help: "Seconds to wait for each answer, connecting included; 0 waits for ever (default: 10; tail: no limit).")
    var timeout: Double?

    func validate() throws {
        if let timeout, !(0...1_000_000).contains(timeout) { throw ValidationError("--timeout must be from 0 to 1000000 seconds") }
        do { _ = try SocketAddress.split(server) } catch {
            // Say where the bad address came from: the flag, or the environment.
            let source = serverOption == nil ? "$RINGLOG_SERVER" : "--server"
            throw ValidationError("\(source) \(server): \(error)")
        }
    }

    /// The watchdog for this command: `--timeout`, else `defaultSeconds`.
    func watchdog(defaultSeconds: Double? = 10) -> Watchdog {
        let seconds = timeout ?? defaultSeconds
        return Watchdog(seconds: seconds == 0 ? nil : seconds, server: server)
    }

    func connect(_ watchdog: Watchdog) async throws -> RingLogClient {
        try await reportingErrors { try await watchdog.run { try await RingLogClient.connect(to: server) } }
    }
}

let environmentServer: String? = getenv("RINGLOG_SERVER").map { String(cString: $0) }

/// Ends the program with exit code 7 when an answer the command waits for takes longer than
/// `seconds`. Armed only while a request is outstanding, so a long read or a slow producer on
/// standard input is not cut short.
final class Watchdog: Sendable {
    let seconds: Double?
    private final class Deadline: Sendable {
        let due = Mutex<UInt64?>(nil)
    }
    private let deadline = Deadline()

    init(seconds: Double?, server: String) {
        self.seconds = seconds
        guard let seconds else { return }
        let thread = spawnThread { [deadline] in
            while true {
                usleep(20_000)
                if let due = deadline.due.withLock({ $0 }), MonotonicClock.nanos() > due {
                    Console.error("ringlog: no answer from \(server) within \(formatSeconds(seconds))")
                    exit(7)
                }
            }
        }
        pthread_detach(thread)
    }

    /// (Re)starts the clock: an answer is due within `seconds` from now.
    func arm() {
        guard let seconds else { return }
        let due = MonotonicClock.nanos() + UInt64(seconds * 1e9)
        deadline.due.withLock { $0 = due }
    }

    func disarm() { deadline.due.withLock { $0 = nil } }

    func run<T>(_ body: () async throws -> T) async rethrows -> T {
        arm()
        defer { disarm() }
        return try await body()
    }
}

/// `0.5 s`, `10 s`, `2 min`.
func formatSeconds(_ seconds: Double) -> String {
    if seconds >= 120 && seconds.truncatingRemainder(dividingBy: 60) == 0 { return "\(Int(seconds / 60)) min" }
    return seconds == seconds.rounded() ? "\(Int(seconds)) s" : "\(seconds) s"
}

/// Turns library errors into a message on standard error and the documented exit code.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as RingLogError {
        Console.error("ringlog: \(error)")
        throw ExitCode(exitStatus(for: error))
    } catch let error as RecordTooLarge {
        Console.error("ringlog: \(error.message)")
        throw ExitCode(64)
    } catch let error as CommandFailure {
        Console.error("ringlog: \(error.message)")
        throw ExitCode(error.code)
    }
}

func exitStatus(for error: RingLogError) -> Int32 {
    switch error {
    case .connectFailed, .notRingLog: 2
    case .connectionClosed, .protocolViolation: 6
    case .corruptBatch: 5
    case .invalidArgument: 64
    case .server(let failure):
        switch failure.code {
        case .unknownLog: 3
        case .offsetOutOfRange, .notBatchBoundary: 4
        case .endMismatch: 8
        case .corruptBatch: 5
        case .shuttingDown: 6
        default: 1
        }
    }
}

/// A failure found while running (not a usage error): said on standard error, with its code.
struct CommandFailure: Error {
    let message: String
    var code: Int32 = 64
}

/// One line to standard output, through write(2), so a failing write is an error (exit 74) and
/// a closed pipe ends the command quietly, as for record output.
func say(_ line: String) {
    let output = StandardOutput()
    output.line(line)
    output.flush()
}

/// Resolves a log name to its id.
func logID(_ client: RingLogClient, _ name: String, _ watchdog: Watchdog) async throws -> LogID {
    try await reportingErrors { try await watchdog.run { try await client.info(name).logID } }
}

extension LogOffset: ExpressibleByArgument {
    public init?(argument: String) {
        guard let value = UInt64(argument) else { return nil }
        self.init(value)
    }
}
