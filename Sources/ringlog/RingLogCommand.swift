import ArgumentParser
import Glibc
import RingLogClient
import RingLogIO
import RingLogWire

@main
struct RingLogCommand: AsyncParsableCommand {
    /// `--server` belongs to the subcommands; accept it before the subcommand too
    /// (`ringlog --server host:port ping`) by moving it to the end.
    static func main() async {
        var arguments = Array(CommandLine.arguments.dropFirst())
        if let index = arguments.firstIndex(where: { $0 == "--server" || $0.hasPrefix("--server=") }),
            !arguments[..<index].contains(where: { !$0.hasPrefix("-") })
        {
            let taken = arguments[index] == "--server" && index + 1 < arguments.count ? 2 : 1
            let option = Array(arguments[index..<(index + taken)])
            arguments.removeSubrange(index..<(index + taken))
            arguments += option
        }
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
            Exit codes: 0 success; 1 error reported by the server (not listed below); 2 cannot \
            connect to the server; 3 unknown log; 4 offset out of range or not a batch start; \
            5 corrupt data; 6 connection lost; 64 bad command line.
            """,
        version: "0.1.0",
        subcommands: [
            Create.self, Delete.self, List.self, Append.self, Read.self, Tail.self, Info.self, Trim.self, Ping.self, Bench.self,
        ])
}

/// Options every subcommand that talks to a server takes.
struct ServerOptions: ParsableArguments {
    @Option(name: .long, help: "Server address, host:port or [ipv6]:port (default: $RINGLOG_SERVER, else 127.0.0.1:7400).")
    var server = environmentServer ?? "127.0.0.1:7400"

    func connect() async throws -> RingLogClient {
        try await reportingErrors { try await RingLogClient.connect(to: server) }
    }
}

let environmentServer: String? = getenv("RINGLOG_SERVER").map { String(cString: $0) }

/// Turns library errors into a message on standard error and the documented exit code.
func reportingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as RingLogError {
        Console.error("ringlog: \(error)")
        throw ExitCode(exitCode(for: error))
    }
}

func exitCode(for error: RingLogError) -> Int32 {
    switch error {
    case .connectFailed: 2
    case .connectionClosed, .protocolViolation: 6
    case .corruptBatch: 5
    case .invalidArgument: 64
    case .server(let failure):
        switch failure.code {
        case .unknownLog: 3
        case .offsetOutOfRange, .notBatchBoundary: 4
        case .corruptBatch: 5
        default: 1
        }
    }
}

/// Resolves a log name to its id.
func logID(_ client: RingLogClient, _ name: String) async throws -> LogID {
    try await reportingErrors { try await client.info(name).logID }
}

extension LogOffset: ExpressibleByArgument {
    public init?(argument: String) {
        guard let value = UInt64(argument) else { return nil }
        self.init(value)
    }
}
