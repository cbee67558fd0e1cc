import Foundation
import Glibc
import Logging
import RingLogIO
import RingLogServer
import RingLogStorage
import RingLogWire

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A response as it came off the wire.
public struct WireResponse {
    public var header: ResponseHeader
    public var body: [UInt8]

    public var errorCode: ErrorCode? { header.status == 0 ? nil : ErrorCode(rawValue: header.status) }

    public var error: ErrorBody? {
        guard header.status != 0 else { return nil }
        return try? body.withUnsafeBytes { try ErrorBody.decode($0) }
    }

    public func decode<M: WireMessage>(_ type: M.Type) throws -> M {
        guard header.status == 0 else { throw TestFailure("error response \(errorCode.map { "\($0)" } ?? "\(header.status)"): \(error?.message ?? "")") }
        return try body.withUnsafeBytes { try M.decode($0) }
    }

    /// The batches of a read response, each checked as a client would check it.
    public func batches() throws -> (head: ReadResponseHead, batches: [(offset: LogOffset, payload: [UInt8])], bytes: [UInt8]) {
        guard header.status == 0 else { throw TestFailure("read failed: \(errorCode!) \(error?.message ?? "")") }
        let head = try body.withUnsafeBytes { try ReadResponseHead.decode(UnsafeRawBufferPointer(rebasing: $0[0..<16])) }
        let data = Array(body[16...])
        return (head, try parseBatches(data, firstOffset: nil), data)
    }
}

/// Splits stored batches and checks each (header CRC, payload CRC); offsets come from the headers.
public func parseBatches(_ data: [UInt8], firstOffset: LogOffset?) throws -> [(offset: LogOffset, payload: [UInt8])] {
    try data.withUnsafeBytes { bytes in
        var found: [(LogOffset, [UInt8])] = []
        var index = 0
        while index < bytes.count {
            let header = BatchHeader(unchecked: bytes.baseAddress! + index)
            let checked = try Batch.verifyStoredHeader(bytes.baseAddress! + index, expectedOffset: header.offset, maxPayloadBytes: bytes.count).get()
            if let error = Batch.verifyPayload(bytes.baseAddress! + index, header: checked) { throw error }
            found.append((checked.offset, Array(bytes[(index + 48)..<(index + checked.totalBytes)])))
            index += checked.totalBytes
        }
        return found
    }
}

/// A deliberately simple, blocking protocol client for tests: it sends exactly the bytes it is
/// told to (so tests can send garbage) and reads responses one at a time.
public final class RawClient {
    public private(set) var fd: Int32
    private var nextRequestID: UInt64 = 1

    public init(_ address: SocketAddress, timeoutSeconds: Int = 10) throws {
        fd = try Sockets.connect(to: address)
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Closes abortively: with `SO_LINGER` 0 the kernel sends RST instead of FIN, as when a client
    /// process is killed with data unread.
    public func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
        fd = -1
    }

    /// The server's statistics (SERVER_STATS) by name.
    public func stats() throws -> [String: UInt64] {
        let stats = try call(.serverStats).decode(ServerStats.self)
        return Dictionary(stats.entries.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
    }

    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let result = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if result < 0 {
                if errno == EINTR { continue }
                throw TestFailure("send failed: \(String(cString: strerror(errno)))")
            }
            sent += result
        }
    }

    public func takeRequestID() -> UInt64 {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    /// The bytes of a well-formed request.
    public func encode(_ opcode: Opcode, _ body: [UInt8] = [], logID: LogID = .none, flags: UInt32 = 0, requestID: UInt64? = nil) -> [UInt8] {
        RequestHeader(opcode: opcode, bodyLength: body.count, requestID: requestID ?? takeRequestID(), logID: logID, flags: flags).encoded() + body
    }

    public func call(_ opcode: Opcode, _ body: [UInt8] = [], logID: LogID = .none, flags: UInt32 = 0) throws -> WireResponse {
        let id = takeRequestID()
        try send(encode(opcode, body, logID: logID, flags: flags, requestID: id))
        let response = try receive()
        guard response.header.requestID == id else { throw TestFailure("response for request \(response.header.requestID), expected \(id)") }
        return response
    }

    public func receive() throws -> WireResponse {
        let headerBytes = try receiveExactly(WireProtocol.headerBytes)
        let header = try headerBytes.withUnsafeBytes { try ResponseHeader.decode($0.baseAddress!).get() }
        return WireResponse(header: header, body: try receiveExactly(Int(header.bodyLength)))
    }

    public func receiveExactly(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let result = bytes.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + received, count - received, 0) }
            if result == 0 { throw TestFailure("connection closed by the server") }
            if result < 0 {
                if errno == EINTR { continue }
                throw TestFailure("receive failed: \(String(cString: strerror(errno)))")
            }
            received += result
        }
        return bytes
    }

    /// Whether bytes (or an end of stream) arrive within `withinMillis`.
    public func hasData(withinMillis: Int) -> Bool {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, Int32(withinMillis)) > 0
    }

    /// True when the server closed the connection (a read returns end-of-file) within the timeout.
    public func waitForClose() -> Bool {
        var byte: UInt8 = 0
        while true {
            let result = recv(fd, &byte, 1, 0)
            if result == 0 { return true }
            if result < 0 && errno == EINTR { continue }
            if result < 0 { return errno == ECONNRESET }
        }
    }

    // Conveniences for well-formed operations.

    public func createLog(_ name: String, segmentBytes: UInt64 = serverDefault) throws -> LogDescription {
        try call(.createLog, CreateLogRequest(name: name, segmentBytes: segmentBytes).encoded()).decode(LogDescription.self)
    }

    public func append(_ log: LogID, _ payload: [UInt8], mode: AckMode = .durable) throws -> WireResponse {
        try call(.append, Batch.make(payload: payload), logID: log, flags: mode.rawValue)
    }

    public func read(_ log: LogID, from offset: LogOffset, maxBytes: UInt32 = 1 << 20, waitMillis: UInt32 = 0) throws -> WireResponse {
        try call(.read, ReadRequest(offset: offset, maxBytes: maxBytes, maxWaitMillis: waitMillis).encoded(), logID: log)
    }

    /// Every batch from `offset` to the committed end, reading as a consumer does (a read may
    /// return fewer batches than fit; the next continues where it stopped).
    public func readAll(_ log: LogID, from offset: LogOffset = .zero) throws -> [(offset: LogOffset, payload: [UInt8])] {
        var all: [(LogOffset, [UInt8])] = []
        var next = offset
        while true {
            let (head, batches, bytes) = try read(log, from: next).batches()
            all.append(contentsOf: batches)
            next = next.advanced(by: bytes.count)
            if next >= head.committedEnd { return all }
            if batches.isEmpty { throw TestFailure("empty read at \(next) below the committed end \(head.committedEnd)") }
        }
    }
}

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

public func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/ringlog-test-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    return String(cString: made)
}

public func removeDirectory(_ path: String) {
    guard path.hasPrefix("/tmp/ringlog-test-") else { return }
    try? FileManager.default.removeItem(atPath: path)
}

public func payload(_ length: Int, seed: Int) -> [UInt8] {
    (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
}

/// TCP sockets on the machine whose local port is `port`, by kernel state (`/proc/net/tcp*`
/// codes: 01 established, 08 close-wait, 0A listen, ...). A server socket stuck in close-wait is a
/// descriptor the server never closed.
public func socketStates(localPort port: UInt16) -> [String] {
    var states: [String] = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":"),
                UInt16(fields[1][fields[1].index(after: colon)...], radix: 16) == port
            else { continue }
            states.append(String(fields[3]))
        }
    }
    return states
}

/// A ringlogd child process on a kernel-chosen loopback port.
public struct Daemon {
    public let process: Process
    public let address: SocketAddress
    /// Set when ringlogd was started with --metrics-listen.
    public let metricsAddress: SocketAddress?

    /// A binary built next to the test bundle (`swift build --build-tests` builds them all).
    public static func binary(_ name: String) -> URL {
        let tests = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = tests.deletingLastPathComponent()
        while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent(name)
    }

    static var executable: URL { binary("ringlogd") }

    public init(directory: String, arguments: [String] = []) throws {
        process = Process()
        process.executableURL = Daemon.executable
        process.arguments = ["--data-dir", directory, "--listen", "127.0.0.1:0", "--segment-bytes", "16MiB", "--log-level", "warning"] + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        var line: [UInt8] = []
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw TestFailure("ringlogd exited before listening") }
            line += chunk
        }
        let wantsMetrics = arguments.contains("--metrics-listen")
        while wantsMetrics && line.filter({ $0 == UInt8(ascii: "\n") }).count < 2 {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw TestFailure("ringlogd exited before printing its metrics address") }
            line += chunk
        }
        let lines = String(decoding: line, as: UTF8.self).split(separator: "\n")
        guard lines[0].hasPrefix("listening ") else { throw TestFailure("unexpected first line: \(lines[0])") }
        address = try SocketAddress(parsing: String(lines[0].dropFirst("listening ".count)))
        metricsAddress = try wantsMetrics ? SocketAddress(parsing: String(lines[1].dropFirst("metrics ".count))) : nil
    }

    public var pid: Int32 { process.processIdentifier }

    public func kill(_ signal: Int32) {
        Glibc.kill(process.processIdentifier, signal)
        if signal == SIGKILL { process.waitUntilExit() }
    }

    public func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs ringlogd to completion (for start-up failures); returns its status and standard error.
    public static func run(_ arguments: [String]) throws -> (status: Int32, standardError: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let error = Pipe()
        process.standardError = error
        process.standardOutput = Pipe()
        try process.run()
        let data = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// Runs a built binary with `arguments` (and `input` on its standard input) to completion.
public func runTool(_ name: String, _ arguments: [String], input: String? = nil, environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = Daemon.binary(name)
    process.arguments = arguments
    var merged = ProcessInfo.processInfo.environment
    for (key, value) in environment { merged[key] = value }
    process.environment = merged
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    let standardInput = Pipe()
    process.standardInput = standardInput
    try process.run()
    if let input { standardInput.fileHandleForWriting.write(Data(input.utf8)) }
    try standardInput.fileHandleForWriting.close()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
}

/// GET `path` from a loopback HTTP server; returns status line and body.
public func httpGet(_ address: SocketAddress, path: String) throws -> (status: String, body: String) {
    let client = try RawClient(address, timeoutSeconds: 5)
    try client.send(Array("GET \(path) HTTP/1.0\r\nHost: localhost\r\n\r\n".utf8))
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress!, $0.count, 0) }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("no HTTP header end in \(text.prefix(200))") }
    let status = String(text[..<split.lowerBound].split(separator: "\r\n").first ?? "")
    return (status, String(text[split.upperBound...]))
}
