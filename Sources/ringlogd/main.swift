import ArgumentParser
import Glibc
import Logging
import RingLogIO
import RingLogServer
import RingLogStorage

/// A size on the command line: `4096`, `64KiB`, `1GiB`.
struct ByteSize: ExpressibleByArgument {
    let bytes: Int
    init?(argument: String) {
        guard let bytes = parseByteSize(argument) else { return nil }
        self.bytes = bytes
    }
}

extension SocketAddress: ExpressibleByArgument {
    public init?(argument: String) {
        guard let address = try? SocketAddress(parsing: argument) else { return nil }
        self = address
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

@main
struct RingLogDaemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringlogd",
        abstract: "The RingLog server: a durable, append-only log over TCP, all I/O through io_uring.",
        discussion: """
            On start it prints one line, `listening <address>`, to standard output, then serves until
            SIGTERM or SIGINT, which stop it gracefully (in-flight appends finish and are acknowledged,
            every log is checkpointed, the process exits 0).
            """,
        version: ringLogVersion)

    @Option(help: "Directory holding the logs (created if missing; locked while running).")
    var dataDir = "./data"

    @Option(help: "Address to listen on, host:port or [ipv6]:port. Port 0 picks a free port.")
    var listen = try! SocketAddress(parsing: "127.0.0.1:7400")

    @Option(help: "Size of each segment file, e.g. 1GiB.")
    var segmentBytes = ByteSize(argument: "1GiB")!

    @Option(help: "Memory for the recent-append cache shared by all logs.")
    var cacheBytes = ByteSize(argument: "64MiB")!

    @Option(help: "Largest batch (48-byte header plus payload) an append may carry.")
    var maxBatchBytes = ByteSize(argument: "8MiB")!

    @Option(help: "Default size retention for new logs (0 keeps everything).")
    var retentionBytes = ByteSize(argument: "0")!

    @Option(help: "Default age retention for new logs, in seconds (0 keeps everything).")
    var retentionSeconds = 0

    @Option(help: "Connections beyond this are refused.")
    var maxConnections = 1024

    @Option(help: "Requests one connection may have in flight.")
    var maxInFlight = 256

    @Option(help: "Bytes one connection may hold in the server (a request being received, responses not yet sent).")
    var maxBufferedBytes = ByteSize(argument: "32MiB")!

    @Option(help: "Most bytes one read returns (a larger single batch is still returned whole).")
    var maxReadBytes = ByteSize(argument: "4MiB")!

    @Option(help: "Longest a read at the end of a log may wait for new data, in milliseconds.")
    var maxWaitMs = 30_000

    @Option(help: "Time allowed to complete a request header once it started arriving, in milliseconds.")
    var headerTimeoutMs = 10_000

    @Option(help: "Time allowed to complete a request body after its header, in milliseconds.")
    var payloadTimeoutMs = 10_000

    @Option(help: "Idle connections are closed after this many milliseconds.")
    var idleTimeoutMs = 300_000

    @Option(help: "A client that reads no response for this many milliseconds is disconnected.")
    var sendTimeoutMs = 30_000

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = Logger.Level.info

    func makeConfiguration() -> ServerConfiguration {
        var storage = StoreConfiguration()
        storage.maxBatchBytes = maxBatchBytes.bytes
        storage.tailCacheBytes = cacheBytes.bytes
        storage.defaultLogSettings = LogSettings(
            segmentBytes: segmentBytes.bytes, retentionBytes: retentionBytes.bytes == 0 ? nil : retentionBytes.bytes,
            retentionMicros: retentionSeconds == 0 ? nil : UInt64(retentionSeconds) * 1_000_000)
        var configuration = ServerConfiguration(listen: listen, dataDirectory: dataDir, storage: storage)
        configuration.maxConnections = maxConnections
        configuration.maxInFlightPerConnection = maxInFlight
        configuration.maxBufferedBytesPerConnection = maxBufferedBytes.bytes
        configuration.maxReadBytes = maxReadBytes.bytes
        configuration.maxWaitMillis = maxWaitMs
        configuration.headerTimeoutMillis = headerTimeoutMs
        configuration.payloadTimeoutMillis = payloadTimeoutMs
        configuration.idleTimeoutMillis = idleTimeoutMs
        configuration.sendTimeoutMillis = sendTimeoutMs
        return configuration
    }

    func run() throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ringlogd")
        // Block the stop signals before any thread starts, so every thread inherits the mask and
        // this one alone takes them with sigwait.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)

        let server: Server
        do {
            server = try Server.start(makeConfiguration(), logger: logger)
        } catch {
            Console.error("ringlogd: \(error)")
            throw ExitCode(1)
        }
        for report in server.recoveryReports { logger.info("\(report)") }
        Console.out("listening \(server.boundAddress)")

        var received: Int32 = 0
        sigwait(&signals, &received)
        logger.notice("received \(received == SIGTERM ? "SIGTERM" : "SIGINT"); stopping")
        server.stop()
        let clean = server.wait()
        if !clean { throw ExitCode(1) }
    }
}
