import ArgumentParser
import Foundation
import Logging
import RingLogIO
import RingLogWire
import RingLogServer
import RingLogStorage
import ServiceLifecycle

/// A size on the command line: `4096`, `64KiB`, `1GiB`.
struct ByteSize: ExpressibleByArgument, CustomStringConvertible {
    let bytes: Int
    init?(argument: String) {
        guard let bytes = parseByteSize(argument) else { return nil }
        self.bytes = bytes
    }
    init(bytes: Int) { self.bytes = bytes }
    var description: String { formatByteSize(bytes) }
}

/// The engine's and server's own defaults, so the flags' defaults (and their help) cannot drift
/// from what a configuration built in code gets.
private let storeDefaults = StoreConfiguration()
private let logDefaults = LogSettings()
private let serverDefaults = ServerConfiguration(listen: try! SocketAddress(parsing: "127.0.0.1:7400"), dataDirectory: "./data")

extension SocketAddress: ExpressibleByArgument {
    public init?(argument: String) {
        guard let address = try? SocketAddress(parsing: argument) else { return nil }
        self = address
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

@main
struct RingLogDaemon: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringlogd",
        abstract: "The RingLog server: a durable, append-only log over TCP, all I/O through io_uring.",
        discussion: """
            On start it prints `listening <address>` to standard output (then `metrics <address>` when \
            --metrics-listen is given), then serves until \
            SIGTERM or SIGINT, which stop it gracefully: no new connections, in-flight appends finish and \
            are acknowledged, waiting readers are answered, every log gets a clean checkpoint, and the \
            process exits 0 (1 if the stop was not clean).

            Every option can also come from a YAML file given with --config: a mapping whose keys are the \
            option names without the dashes (segment-bytes: 1GiB). Options on the command line override \
            the file; an unknown key or a bad value stops the start with a message naming the key.
            """,
        version: ringLogVersion)

    @Option(help: "YAML file of options (keys are option names, e.g. data-dir: /var/lib/ringlog).")
    var config: String?

    @Option(help: "Directory holding the logs (created if missing; locked while running).")
    var dataDir = serverDefaults.dataDirectory

    @Option(help: "Address to listen on, host:port or [ipv6]:port. Port 0 picks a free port.")
    var listen = serverDefaults.listen

    @Option(help: "Serve Prometheus metrics at GET /metrics on this address (off unless given).")
    var metricsListen: SocketAddress?

    @Option(help: "Serve the Kafka protocol on this address (docs/kafka.md), or 'off'. Default 127.0.0.1:9092; when that default is taken, the daemon starts without it and says so.")
    var kafkaListen: String?

    @Option(help: "host:port that Kafka Metadata and FindCoordinator name for this broker (default: the Kafka listen address).")
    var kafkaAdvertise: SocketAddress?

    @Option(help: "Partitions of a Kafka topic created on first use.")
    var kafkaPartitions = 1

    @Flag(inversion: .prefixedNo, help: "Create a Kafka topic on its first Metadata or Produce request, as a development broker does.")
    var kafkaAutoCreate = true

    @Option(help: "Size of each segment file, e.g. 1GiB.")
    var segmentBytes = ByteSize(bytes: logDefaults.segmentBytes)

    @Option(help: "Memory for the recent-append cache shared by all logs.")
    var cacheBytes = ByteSize(bytes: storeDefaults.tailCacheBytes)

    @Option(help: "Largest batch (48-byte header plus payload) an append may carry.")
    var maxBatchBytes = ByteSize(bytes: storeDefaults.maxBatchBytes)

    @Option(help: "Default size retention for new logs (0 keeps everything).")
    var retentionBytes = ByteSize(argument: "0")!

    @Option(help: "Default age retention for new logs, in seconds (0 keeps everything).")
    var retentionSeconds = 0

    @Option(help: "Connections beyond this are refused.")
    var maxConnections = serverDefaults.maxConnections

    @Option(help: "Requests one connection may have in flight.")
    var maxInFlight = serverDefaults.maxInFlightPerConnection

    @Option(help: "Bytes one connection may hold in the server (a request being received, responses not yet sent).")
    var maxBufferedBytes = ByteSize(bytes: serverDefaults.maxBufferedBytesPerConnection)

    @Option(
        help: """
            Bytes all connections together may hold for requests and responses in flight; past it, reads wait \
            and connections holding memory stop being read (see docs/operations.md, Memory).
            """)
    var maxBufferedBytesTotal = ByteSize(bytes: serverDefaults.maxBufferedBytesTotal)

    @Option(help: "Most bytes one read returns (a larger single batch is still returned whole).")
    var maxReadBytes = ByteSize(bytes: serverDefaults.maxReadBytes)

    @Option(help: "Longest a read at the end of a log may wait for new data, in milliseconds.")
    var maxWaitMs = serverDefaults.maxWaitMillis

    @Option(help: "Time allowed to complete a request header once it started arriving, in milliseconds.")
    var headerTimeoutMs = serverDefaults.headerTimeoutMillis

    @Option(help: "Time allowed to complete a request body after its header, in milliseconds.")
    var payloadTimeoutMs = serverDefaults.payloadTimeoutMillis

    @Option(help: "Idle connections are closed after this many milliseconds.")
    var idleTimeoutMs = serverDefaults.idleTimeoutMillis

    @Option(help: "A client that reads no response for this many milliseconds is disconnected.")
    var sendTimeoutMs = serverDefaults.sendTimeoutMillis

    @Option(help: "How long a graceful stop waits for in-flight work, in milliseconds.")
    var shutdownTimeoutMs = serverDefaults.shutdownTimeoutMillis

    @Option(help: "Receive buffers shared by all connections (a power of two).")
    var receiveBuffers = serverDefaults.receiveBufferCount

    @Option(help: "Size of each receive buffer.")
    var receiveBufferBytes = ByteSize(bytes: serverDefaults.receiveBufferBytes)

    @Option(
        help: """
            Keep the active segment written with zeros this far ahead of the appends, so fdatasyncs \
            of small appends need no journal commit (see docs/storage.md). 0 turns it off.
            """)
    var zeroAheadBytes = ByteSize(bytes: storeDefaults.zeroAheadBytes)

    @Option(help: "Zero-ahead writes zeros in chunks of this size, one at a time.")
    var zeroChunkBytes = ByteSize(bytes: storeDefaults.zeroChunkBytes)

    @Option(
        help: """
            Allocate segment files in steps, keeping the active one allocated this far ahead of the \
            appends (a new segment starts with half of it), so a log's disk use follows its data. \
            0 allocates whole segments up front.
            """)
    var allocateAheadBytes = ByteSize(bytes: storeDefaults.allocateAheadBytes)

    @Option(help: "Cursors (consumers' saved positions) one log may hold.")
    var maxCursors = storeDefaults.maxCursorsPerLog

    @Option(help: "How many of an idempotent producer's latest batches a log remembers, to answer their retries with the original offset.")
    var producerWindow = storeDefaults.producerWindow

    @Option(help: "Idempotent producers one log keeps; a new one evicts the one idle longest (its retries are then refused, never stored twice).")
    var maxProducers = storeDefaults.maxProducersPerLog

    @Option(help: "Forget an idempotent producer idle this many seconds (0: never).")
    var producerExpirySeconds = Int(storeDefaults.producerExpiryMicros / 1_000_000)

    @Option(
        help: """
            Appends in batches at least this large are written uncached (RWF_DONTCACHE, Linux 6.14+): \
            bulk ingest does not fill the page cache, and lagging readers read those bytes from disk \
            (see docs/storage.md). 0 turns it off.
            """)
    var uncachedBatchBytes = ByteSize(bytes: storeDefaults.uncachedBatchBytes)

    @Option(
        help: """
            Segment reads keep what the page cache holds but do not cache what they read from disk, \
            so readers far behind do not fill the cache or push recent data out of it (true or false; \
            see docs/storage.md).
            """)
    var uncachedColdReads = storeDefaults.uncachedColdReads

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = Logger.Level.info

    func validate() throws {
        if let kafkaListen, kafkaListen != "off", (try? SocketAddress(parsing: kafkaListen)) == nil {
            throw ValidationError("--kafka-listen \(kafkaListen): give host:port, [ipv6]:port, or off")
        }
    }

    /// Options from --config go first, so the command line overrides them.
    static func main() async {
        do {
            let expanded: ConfigFile.Expanded
            do {
                expanded = try ConfigFile.expand(Array(CommandLine.arguments.dropFirst()))
            } catch let problem as ConfigFile.Problem {
                Console.error("ringlogd: \(problem)")
                Self.exit(withError: ExitCode(64))
            }
            var command = try parseAsRoot(expanded.arguments)
            if let daemon = command as? RingLogDaemon {
                let problems = daemon.settingProblems()
                if !problems.isEmpty {
                    // EX_USAGE, as for any other bad option: name each setting, where its value
                    // came from, and what would be accepted.
                    for problem in problems {
                        Console.error("ringlogd: --\(problem.setting) \(problem.value) (\(expanded.source(of: problem.setting))) \(problem.rangeDescription)")
                    }
                    Self.exit(withError: ExitCode(64))
                }
                try await daemon.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }

    /// Every setting out of range, each named as its flag. Checked before anything converts a
    /// value, so no arithmetic on a flag can overflow.
    func settingProblems() -> [SettingProblem] {
        let maxSeconds = LogSettings.maxRetentionMillis / 1000
        if retentionSeconds != 0,
            let problem = SettingProblem.check("retention-seconds", retentionSeconds, 1...maxSeconds, unit: .seconds, rule: "or 0 to keep everything")
        {
            return [problem]
        }
        if let problem = SettingProblem.check("kafka-partitions", kafkaPartitions, 1...1024, unit: .count) { return [problem] }
        return makeConfiguration().problems().map { problem in
            var named = problem
            // The storage engine names its own settings; these are the flags they come from.
            if problem.setting == "retention-micros" { named.setting = "retention-seconds" }
            return named
        }
    }

    func makeConfiguration() -> ServerConfiguration {
        var storage = StoreConfiguration()
        storage.maxBatchBytes = maxBatchBytes.bytes
        storage.tailCacheBytes = cacheBytes.bytes
        storage.zeroAheadBytes = zeroAheadBytes.bytes
        storage.zeroChunkBytes = zeroChunkBytes.bytes
        storage.allocateAheadBytes = allocateAheadBytes.bytes
        storage.maxCursorsPerLog = maxCursors
        storage.producerWindow = producerWindow
        storage.maxProducersPerLog = maxProducers
        storage.producerExpiryMicros = UInt64(max(0, producerExpirySeconds)).multipliedReportingOverflow(by: 1_000_000).partialValue
        storage.uncachedBatchBytes = uncachedBatchBytes.bytes
        storage.uncachedColdReads = uncachedColdReads
        storage.defaultLogSettings = LogSettings(
            segmentBytes: segmentBytes.bytes, retentionBytes: retentionBytes.bytes == 0 ? nil : retentionBytes.bytes,
            retentionMicros: retentionSeconds <= 0 ? nil : UInt64(retentionSeconds).multipliedReportingOverflow(by: 1_000_000).partialValue)
        var configuration = ServerConfiguration(listen: listen, dataDirectory: dataDir, storage: storage)
        configuration.maxConnections = maxConnections
        configuration.maxInFlightPerConnection = maxInFlight
        configuration.maxBufferedBytesPerConnection = maxBufferedBytes.bytes
        configuration.maxBufferedBytesTotal = maxBufferedBytesTotal.bytes
        configuration.maxReadBytes = maxReadBytes.bytes
        configuration.maxWaitMillis = maxWaitMs
        configuration.headerTimeoutMillis = headerTimeoutMs
        configuration.payloadTimeoutMillis = payloadTimeoutMs
        configuration.idleTimeoutMillis = idleTimeoutMs
        configuration.sendTimeoutMillis = sendTimeoutMs
        configuration.shutdownTimeoutMillis = shutdownTimeoutMs
        configuration.receiveBufferCount = receiveBuffers
        configuration.receiveBufferBytes = receiveBufferBytes.bytes
        configuration.metricsListen = metricsListen
        if kafkaListen != "off" {
            let address = kafkaListen.flatMap { try? SocketAddress(parsing: $0) } ?? (try! SocketAddress(parsing: "127.0.0.1:9092"))
            var kafka = KafkaSettings(listen: address)
            kafka.optional = kafkaListen == nil
            kafka.autoCreateTopics = kafkaAutoCreate
            kafka.defaultPartitions = kafkaPartitions
            if let advertised = kafkaAdvertise { kafka.advertised = (advertised.host, Int(advertised.port)) }
            configuration.kafka = kafka
        }
        return configuration
    }

    func run() async throws {
        let level = logLevel
        LoggingSystem.bootstrap { label in LogLines(label: label, logLevel: level) }
        let logger = Logger(label: "ringlogd")
        keepLargeAllocationsReturnable()
        let configuration = makeConfiguration()

        let started = ContinuousClock.now
        let server: Server
        do {
            server = try Server.start(configuration, logger: logger)
        } catch {
            Console.error("ringlogd: \(error)")
            throw ExitCode(1)
        }
        summarize(server, startup: ContinuousClock.now - started, logger: logger)

        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [ServiceGroupConfiguration.ServiceConfiguration(service: RingLogService(server: server))],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        let clean = await server.stopped()
        if !clean { throw ExitCode(1) }
    }

    /// One line an operator reads at start: version, where, what was found, what recovery did.
    private func summarize(_ server: Server, startup: Duration, logger: Logger) {
        let reports = server.recoveryReports
        let directory = URL(fileURLWithPath: dataDir).standardizedFileURL.path
        let logs = reports.map { "\($0.logName) (end \($0.committedEnd)\($0.cleanShutdown ? "" : ", scanned \($0.scannedBytes) B"))" }
        let recoveryMillis = reports.reduce(UInt64(0)) { $0 + $1.durationMicros } / 1000
        let startupMillis = startup.components.seconds * 1000 + startup.components.attoseconds / 1_000_000_000_000_000
        let found = logs.isEmpty ? "" : ": " + logs.joined(separator: ", ")
        let metrics = server.metricsAddress.map { "; metrics at http://\($0)/metrics" } ?? ""
        logger.notice(
            "ringlogd \(ringLogVersion) started in \(startupMillis) ms: data \(directory), \(reports.count) log(s)\(found); recovery \(recoveryMillis) ms\(metrics)")
        let unclean = reports.filter { !$0.cleanShutdown }
        if !unclean.isEmpty {
            let scanned = unclean.reduce(0) { $0 + $1.scannedBytes }
            let millis = unclean.reduce(UInt64(0)) { $0 + $1.durationMicros } / 1000
            logger.warning(
                "previous run did not stop cleanly: scanned \(scanned) B of tail written since the last checkpoint in \(millis) ms (\(unclean.count) of \(reports.count) log(s))")
        }
        // Each log holds its directory and every segment open, and a spare while one is ready.
        let openFiles = raiseOpenFileLimit()
        let room = max(0, Int(openFiles) - maxConnections - 64) / 3
        logger.notice("open-file limit \(openFiles): room for about \(room) logs of one segment each beside \(maxConnections) connections")
        for report in reports {
            if let cut = report.cut { logger.warning("recovery cut log \(report.logName) at \(cut.offset): \(cut.reason)") }
            for damage in report.corruption {
                logger.error("corruption in log \(report.logName) at \(damage.offset) (\(damage.file), position \(damage.position)): \(damage.detail)")
            }
        }
    }
}

/// The server as a service: SIGTERM or SIGINT (through swift-service-lifecycle) stops it gracefully.
struct RingLogService: Service {
    let server: Server

    func run() async throws {
        let server = self.server
        // `listening` tells supervisors and scripts the daemon is ready, which includes being
        // ready to stop gracefully: the service group traps SIGTERM and SIGINT before it runs its
        // services, so this is the first moment a SIGTERM is sure to mean a clean stop. (Printed
        // earlier, a SIGTERM sent right after it could find the default action and kill the
        // process without its shutdown checkpoint; the daemon test caught that under load.)
        Console.out("listening \(server.boundAddress)")
        if let metricsAddress = server.metricsAddress { Console.out("metrics \(metricsAddress)") }
        if let kafkaAddress = server.kafkaAddress { Console.out("kafka \(kafkaAddress)") }
        _ = await withGracefulShutdownHandler {
            await server.stopped()
        } onGracefulShutdown: {
            server.stop()
        }
    }
}
