import Logging
import RingLogIO
import RingLogServer
import RingLogStorage
import RingLogTestKit

/// A server on a loopback port chosen by the kernel, over a fresh data directory, stopped and
/// removed at the end of the test.
public final class TestServer {
    public let server: Server
    public let directory: String
    /// Only a directory this object made is removed with it.
    private let ownsDirectory: Bool
    public var address: SocketAddress { server.boundAddress }

    public static func configuration(directory: String) -> ServerConfiguration {
        var storage = StoreConfiguration()
        storage.maxBatchBytes = 1 << 20
        storage.tailCacheBytes = 8 << 20
        storage.defaultLogSettings = LogSettings(segmentBytes: 4 << 20)
        var configuration = ServerConfiguration(listen: try! SocketAddress(parsing: "127.0.0.1:0"), dataDirectory: directory, storage: storage)
        configuration.receiveBufferCount = 256
        configuration.shutdownTimeoutMillis = 5_000
        return configuration
    }

    public init(directory: String? = nil, _ adjust: (inout ServerConfiguration) -> Void = { _ in }) throws {
        self.directory = directory ?? makeTemporaryDirectory()
        ownsDirectory = directory == nil
        var configuration = TestServer.configuration(directory: self.directory)
        adjust(&configuration)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        server = try Server.start(configuration, logger: logger)
    }

    /// Stops gracefully; returns whether the stop was clean.
    @discardableResult
    public func stop() -> Bool {
        server.stop()
        return server.wait()
    }

    public func client(timeoutSeconds: Int = 10) throws -> RawClient { try RawClient(address, timeoutSeconds: timeoutSeconds) }

    deinit {
        if !server.isStopped { stop() }
        if ownsDirectory { removeDirectory(directory) }
    }
}

