import Glibc
import RingLogIO
import RingLogWire

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
        return (head, try storedBatches(data, from: nil), data)
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
