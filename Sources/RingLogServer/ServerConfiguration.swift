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
    /// Produces the metrics text for a scrape (the daemon passes its Prometheus registry's).
    public var metricsExporter: (@Sendable () -> [UInt8])?

    public init(listen: SocketAddress, dataDirectory: String, storage: StoreConfiguration = StoreConfiguration()) {
        self.listen = listen
        self.dataDirectory = dataDirectory
        self.storage = storage
    }

    /// Every reason this configuration cannot work, naming the setting.
    public func problems() -> [String] {
        var problems = storage.problems()
        func positive(_ value: Int, _ name: String) {
            if value <= 0 { problems.append("\(name) must be positive (got \(value))") }
        }
        positive(maxConnections, "max-connections")
        positive(maxInFlightPerConnection, "max-in-flight")
        positive(maxReadBytes, "max-read-bytes")
        positive(headerTimeoutMillis, "header-timeout-ms")
        positive(payloadTimeoutMillis, "payload-timeout-ms")
        positive(idleTimeoutMillis, "idle-timeout-ms")
        positive(sendTimeoutMillis, "send-timeout-ms")
        positive(shutdownTimeoutMillis, "shutdown-timeout-ms")
        if maxWaitMillis < 0 { problems.append("max-wait-ms must not be negative") }
        if maxInFlightPerConnection >= 1 << 23 { problems.append("max-in-flight must be below 8388608") }
        if maxConnections >= 1 << 24 { problems.append("max-connections must be below 16777216") }
        if receiveBufferCount <= 0 || receiveBufferCount & (receiveBufferCount - 1) != 0 || receiveBufferCount > 32_768 {
            problems.append("receive-buffers must be a power of two up to 32768 (got \(receiveBufferCount))")
        }
        if receiveBufferBytes < 4096 { problems.append("receive-buffer-bytes must be at least 4096") }
        if maxBufferedBytesPerConnection < storage.maxBatchBytes + 64 {
            problems.append("max-buffered-bytes (\(maxBufferedBytesPerConnection)) must hold at least one max batch (\(storage.maxBatchBytes))")
        }
        if maxReadBytes > Int(UInt32.max) { problems.append("max-read-bytes must fit in 32 bits") }
        return problems
    }
}
