import RingLogWire

/// An error response from the server: its stable code, its message, and the code's details.
public struct ServerError: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: ErrorCode
    public let message: String
    public let detail1: UInt64
    public let detail2: UInt64

    /// END_MISMATCH: the log's end the condition was checked against.
    public var currentEnd: LogOffset? { code == .endMismatch ? LogOffset(detail1) : nil }

    public init(code: ErrorCode, message: String, detail1: UInt64 = 0, detail2: UInt64 = 0) {
        self.code = code
        self.message = message
        self.detail1 = detail1
        self.detail2 = detail2
    }

    /// For OFFSET_OUT_OF_RANGE: the log's valid offsets (start through committed end).
    public var validRange: ClosedRange<LogOffset>? {
        code == .offsetOutOfRange ? LogOffset(detail1)...LogOffset(max(detail1, detail2)) : nil
    }

    /// For CORRUPT_BATCH: where the next batch starts, when the server could tell.
    public var nextOffset: LogOffset? {
        code == .corruptBatch && detail2 != UInt64.max ? LogOffset(detail2) : nil
    }

    public var description: String { "\(code) (\(code.rawValue)): \(message)" }
}

/// Everything the client library can fail with.
public enum RingLogError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The server answered with an error code.
    case server(ServerError)
    /// Could not reach the server.
    case connectFailed(address: String, reason: String)
    /// The connection ended. Requests in flight may or may not have taken effect: an append sent
    /// before this may be in the log (retrying gives at-least-once delivery).
    case connectionClosed(String)
    /// A batch read back failed its checks (CRC, framing): never skipped, never partly delivered.
    /// `next` is where the following batch starts when the server or this library could tell; a
    /// reader may continue there, knowingly skipping the damaged batch.
    case corruptBatch(offset: LogOffset, next: LogOffset?, reason: String)
    /// The server sent bytes that break the protocol.
    case protocolViolation(String)
    /// Something listens at the address but did not answer the hello in RingLog's protocol (an
    /// HTTP port, another service).
    case notRingLog(address: String, reason: String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .server(let error): "server error \(error)"
        case .connectFailed(let address, let reason): "cannot connect to \(address): \(reason)"
        case .connectionClosed(let reason): "connection closed: \(reason)"
        case .corruptBatch(let offset, let next, let reason):
            "corrupt batch at offset \(offset): \(reason)" + (next.map { "; the next batch starts at \($0)" } ?? "")
        case .protocolViolation(let reason): "protocol violation from the server: \(reason)"
        case .notRingLog(let address, let reason): "\(address) does not look like a RingLog server (\(reason))"
        case .invalidArgument(let reason): "invalid argument: \(reason)"
        }
    }

    /// A server error; CORRUPT_BATCH becomes `corruptBatch`, so damage reads the same whether the
    /// server or this library found it.
    public init(_ error: ServerError) {
        if error.code == .corruptBatch {
            self = .corruptBatch(offset: LogOffset(error.detail1), next: error.nextOffset, reason: error.message)
        } else {
            self = .server(error)
        }
    }

    /// The server's error code, when this is a server error.
    public var serverCode: ErrorCode? {
        if case .server(let error) = self { return error.code }
        return nil
    }
}
