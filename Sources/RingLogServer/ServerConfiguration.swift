import RingLogDiskIO
import RingLogIO
import RingLogStorage

/// Everything ringlogd can be told, with the defaults a fresh start uses. Every limit here is what
/// keeps one client from taking memory, descriptors or time from the others.
public struct ServerConfiguration: Sendable {
    public var listen: SocketAddress
    public var dataDirectory: String
    public var storage: StoreConfiguration

    /// Connections beyond this are refused with TOO_MANY_CONNECTIONS.
    public var maxConnections: Int = 1024
    /// Requests a connection may have waiting for their responses; more get TOO_MANY_IN_FLIGHT.
    public var maxInFlightPerConnection: Int = 256
    /// Bytes a connection may hold in the server: a request body being received, and responses
    /// not yet sent. Past it the server stops reading from that connection until it drains.
    public var maxBufferedBytesPerConnection: Int = 32 << 20
    /// Bytes all connections together may hold for requests and responses in flight (see
    /// `MemoryBudget`); with the tail cache and the buffer pools it bounds the server's memory.
    public var maxBufferedBytesTotal: Int = 128 << 20
    /// The most a read returns (a single larger batch is still returned whole).
    public var maxReadBytes: Int = 4 << 20
    /// The longest a read at the end of a log may wait for new data.
    public var maxWaitMillis: Int = 30_000
    /// A request whose header has started arriving must be complete within this.
    public var headerTimeoutMillis: Int = 10_000
    /// A request body must be complete within this after its header arrived.
    public var payloadTimeoutMillis: Int = 10_000
    /// A connection with nothing in flight and no bytes received for this long is closed.
    public var idleTimeoutMillis: Int = 300_000
    /// A connection whose responses make no progress for this long (the client stopped reading) is closed.
    public var sendTimeoutMillis: Int = 30_000
    /// Receive buffers shared by all connections (a power of two) and their size.
    public var receiveBufferCount: Int = 512
    public var receiveBufferBytes: Int = 16 << 10
    /// Submission queue entries of the event loop's ring.
    public var ringEntries: Int = 4096
    /// How long a graceful stop waits for in-flight work before closing connections anyway.
    public var shutdownTimeoutMillis: Int = 10_000
    /// Disk failures to inject (tests only; nil in production).
    public var diskFaults: DiskFaults?
    /// Where to serve `GET /metrics` (Prometheus text format); nil serves nothing.
    public var metricsListen: SocketAddress?
    /// The Kafka listener (docs/kafka.md); nil serves none.
    public var kafka: KafkaSettings?

    public init(listen: SocketAddress, dataDirectory: String, storage: StoreConfiguration = StoreConfiguration()) {
        self.listen = listen
        self.dataDirectory = dataDirectory
        self.storage = storage
    }

    /// Every reason this configuration cannot work, each naming the setting as ringlogd's flag
    /// does, with its valid range (docs/operations.md lists them).
    public func problems() -> [SettingProblem] {
        var problems = storage.problems()
        func check(_ name: String, _ value: Int, _ range: ClosedRange<UInt64>, _ unit: SettingProblem.Unit, rule: String? = nil) {
            if let problem = SettingProblem.check(name, value, range, unit: unit, rule: rule) { problems.append(problem) }
        }
        check("max-connections", maxConnections, ServerConfiguration.maxConnectionsRange, .count)
        check("max-in-flight", maxInFlightPerConnection, ServerConfiguration.maxInFlightRange, .count)
        check(
            "max-buffered-bytes", maxBufferedBytesPerConnection, UInt64(clamping: storage.maxBatchBytes + 64)...(1 << 40), .bytes,
            rule: "room for one max batch and its header")
        check(
            "max-buffered-bytes-total", maxBufferedBytesTotal, UInt64(clamping: max(storage.maxBatchBytes, maxReadBytes) + 64)...(1 << 40), .bytes,
            rule: "room for the largest read or batch")
        check("max-read-bytes", maxReadBytes, 1...UInt64(UInt32.max), .bytes)
        check("max-wait-ms", maxWaitMillis, 0...ServerConfiguration.maxMillis, .milliseconds)
        check("header-timeout-ms", headerTimeoutMillis, 1...ServerConfiguration.maxMillis, .milliseconds)
        check("payload-timeout-ms", payloadTimeoutMillis, 1...ServerConfiguration.maxMillis, .milliseconds)
        check("idle-timeout-ms", idleTimeoutMillis, 1...ServerConfiguration.maxMillis, .milliseconds)
        check("send-timeout-ms", sendTimeoutMillis, 1...ServerConfiguration.maxMillis, .milliseconds)
        check("shutdown-timeout-ms", shutdownTimeoutMillis, 1...ServerConfiguration.maxMillis, .milliseconds)
        check("receive-buffers", receiveBufferCount, 1...32_768, .count, rule: "a power of two")
        if receiveBufferCount > 0 && receiveBufferCount.nonzeroBitCount != 1 {
            // In range but not a power of two, which the kernel's buffer ring requires.
            problems.append(
                SettingProblem(setting: "receive-buffers", value: "\(receiveBufferCount)", minimum: 1, maximum: 32_768, unit: .count, rule: "a power of two"))
        }
        check("receive-buffer-bytes", receiveBufferBytes, 4096...(1 << 20), .bytes)
        check("ring-entries", ringEntries, 64...32_768, .count)
        return problems
    }

    /// Slots are numbered in 24 bits (`ResponseContext`).
    public static let maxConnectionsRange: ClosedRange<UInt64> = 1...((1 << 24) - 1)
    /// A connection queues up to twice this many responses, numbered in 24 bits.
    public static let maxInFlightRange: ClosedRange<UInt64> = 1...((1 << 23) - 1)
    /// Timeouts and waits: at most a day.
    public static let maxMillis: UInt64 = 86_400_000
}

/// How the Kafka listener behaves (docs/kafka.md).
public struct KafkaSettings: Sendable {
    public var listen: SocketAddress
    /// The host and port Metadata and FindCoordinator name for this broker; nil: the address the
    /// listener is bound to.
    public var advertised: (host: String, port: Int)?
    /// Whether the server may bind elsewhere when `listen` is taken (only when it is the default,
    /// not an address the operator asked for): then the listener is off, with a warning.
    public var optional = false
    /// Create a topic on its first Metadata or Produce request.
    public var autoCreateTopics = true
    /// Partitions of a topic created that way.
    public var defaultPartitions = 1
    /// Consumer groups' sessions: a member not heard from for its session timeout leaves; a
    /// rebalance waits at most its rebalance timeout for members to rejoin. Bounded here.
    public var maxGroups = 1024
    public var maxMembersPerGroup = 256

    public init(listen: SocketAddress) { self.listen = listen }
}
