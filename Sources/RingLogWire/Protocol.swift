/// Protocol v1: fixed 32-byte headers, little-endian bodies (docs/protocol.md is the reference).
public enum WireProtocol {
    public static let version: UInt8 = 1
    public static let headerBytes = 32
    /// "RL": a request header.
    public static let requestMagic: UInt16 = 0x4C52
    /// "rl": a response header.
    public static let responseMagic: UInt16 = 0x6C72
    /// The largest body of any request other than an append (whose body is one batch).
    public static let maxControlBodyBytes = 4096
}

public enum Opcode: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case ping = 0x02
    case createLog = 0x10
    case deleteLog = 0x11
    case listLogs = 0x12
    case logInfo = 0x13
    case append = 0x20
    case read = 0x21
    case trim = 0x22
    /// APPEND only if the log's end is where the writer expects (see `AppendIfRequest`).
    case appendIf = 0x23
    /// The offset of the first batch appended at or after a time (`SeekTimeRequest`).
    case seekTime = 0x24
    /// Consumers' named positions in a log (`CursorCommitRequest`, `CursorPositionMessage`, `CursorList`).
    case cursorCommit = 0x25
    case cursorFetch = 0x26
    case cursorList = 0x27
    case cursorDelete = 0x28
    /// An idempotent producer's id and epoch (`InitProducerRequest`).
    case initProducer = 0x29
    case serverStats = 0x30

    /// The operation a request header names; appends, most of the traffic, without a table lookup.
    @inlinable
    public static func named(_ raw: UInt8) -> Opcode? {
        raw == Opcode.append.rawValue ? .append : Opcode(rawValue: raw)
    }
}

/// How long an append waits before it is acknowledged.
public enum AckMode: UInt32, Sendable {
    /// After fdatasync covered the batch: survives kill -9 and power loss. The default.
    case durable = 0
    /// After the write reached the page cache: survives the server process dying, not the machine.
    case written = 1
}

/// Stable numeric codes in error responses. Codes are never reused for another meaning.
public enum ErrorCode: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    case badMagic = 1
    case unsupportedVersion = 2
    case unknownOperation = 3
    case malformedRequest = 4
    case lengthOverLimit = 5
    case crcMismatch = 6
    case badBatch = 7
    case unknownLog = 10
    case logExists = 11
    case badLogName = 12
    case badLogSettings = 13
    /// No cursor of that name in the log.
    case unknownCursor = 14
    /// The log holds its limit of cursors.
    case tooManyCursors = 15
    case badCursorName = 16
    case offsetOutOfRange = 20
    case notBatchBoundary = 21
    case corruptBatch = 22
    /// APPEND_IF: the log's end is not the one the request expected; nothing was written.
    case endMismatch = 23
    /// A conditional cursor commit found the cursor elsewhere; nothing changed.
    case cursorMismatch = 24
    /// An idempotent batch's sequence is past the next one the producer owes: batches in between
    /// are missing. Nothing was written.
    case outOfOrderSequence = 25
    /// An idempotent batch repeats one older than the batches the server remembers for the
    /// producer: it was stored once, its offset is no longer known. Nothing was written.
    case duplicateSequence = 26
    /// The producer id is not one this log knows at that sequence (never issued, expired or
    /// evicted). Nothing was written.
    case unknownProducer = 27
    /// A newer epoch of this producer id has written to the log. Nothing was written.
    case producerFenced = 28
    case tooManyConnections = 30
    case tooManyInFlight = 31
    case timedOut = 32
    /// The server is short of memory for a request body this large right now; the body was
    /// read and dropped, and the same request may be retried.
    case serverBusy = 33
    case storageFailed = 40
    case diskFull = 41
    case shuttingDown = 42
    case internalError = 43

    public var description: String {
        switch self {
        case .badMagic: "BAD_MAGIC"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .unknownOperation: "UNKNOWN_OPERATION"
        case .malformedRequest: "MALFORMED_REQUEST"
        case .lengthOverLimit: "LENGTH_OVER_LIMIT"
        case .crcMismatch: "CRC_MISMATCH"
        case .badBatch: "BAD_BATCH"
        case .unknownLog: "UNKNOWN_LOG"
        case .logExists: "LOG_EXISTS"
        case .badLogName: "BAD_LOG_NAME"
        case .badLogSettings: "BAD_LOG_SETTINGS"
        case .unknownCursor: "UNKNOWN_CURSOR"
        case .tooManyCursors: "TOO_MANY_CURSORS"
        case .badCursorName: "BAD_CURSOR_NAME"
        case .cursorMismatch: "CURSOR_MISMATCH"
        case .offsetOutOfRange: "OFFSET_OUT_OF_RANGE"
        case .notBatchBoundary: "NOT_BATCH_BOUNDARY"
        case .corruptBatch: "CORRUPT_BATCH"
        case .endMismatch: "END_MISMATCH"
        case .outOfOrderSequence: "OUT_OF_ORDER_SEQUENCE"
        case .duplicateSequence: "DUPLICATE_SEQUENCE"
        case .unknownProducer: "UNKNOWN_PRODUCER"
        case .producerFenced: "PRODUCER_FENCED"
        case .tooManyConnections: "TOO_MANY_CONNECTIONS"
        case .tooManyInFlight: "TOO_MANY_IN_FLIGHT"
        case .timedOut: "TIMED_OUT"
        case .serverBusy: "SERVER_BUSY"
        case .storageFailed: "STORAGE_FAILED"
        case .diskFull: "DISK_FULL"
        case .shuttingDown: "SHUTTING_DOWN"
        case .internalError: "INTERNAL_ERROR"
        }
    }

    /// Codes after which the server closes the connection: the byte stream can no longer be trusted.
    public var closesConnection: Bool {
        switch self {
        case .badMagic, .unsupportedVersion, .malformedRequest, .lengthOverLimit, .tooManyConnections, .timedOut, .shuttingDown: true
        default: false
        }
    }
}

/// The fixed 32-byte header that starts every request.
///
/// ```
///  0 u16 magic      52 4C ("RL")
///  2 u8  version    1
///  3 u8  opcode
///  4 u32 bodyLength bytes after the header
///  8 u64 requestID  chosen by the client, echoed in the response
/// 16 u32 logID      the log the request targets (0 when none)
/// 20 u32 flags      append: the acknowledgement mode; 0 for other operations
/// 24 u32 reserved   0
/// 28 u32 headerCRC  CRC32C of bytes [0, 28)
/// ```
public struct RequestHeader: Equatable, Sendable {
    /// Raw, so an unknown opcode can be answered with UNKNOWN_OPERATION.
    public var opcode: UInt8
    public var bodyLength: UInt32
    public var requestID: UInt64
    public var logID: LogID
    public var flags: UInt32

    public init(opcode: Opcode, bodyLength: Int, requestID: UInt64, logID: LogID = .none, flags: UInt32 = 0) {
        self.opcode = opcode.rawValue
        self.bodyLength = UInt32(bodyLength)
        self.requestID = requestID
        self.logID = logID
        self.flags = flags
    }

    public init(rawOpcode: UInt8, bodyLength: UInt32, requestID: UInt64, logID: LogID, flags: UInt32) {
        opcode = rawOpcode
        self.bodyLength = bodyLength
        self.requestID = requestID
        self.logID = logID
        self.flags = flags
    }

    public enum DecodeError: Error, Equatable, Sendable {
        case badMagic(UInt16)
        case unsupportedVersion(UInt8)
        case checksumMismatch
        case reservedNotZero
    }

    /// Decodes and checks the 32 bytes at `pointer`. A request that fails this cannot be framed,
    /// so the connection is closed after the error response.
    @inlinable
    public static func decode(_ pointer: UnsafeRawPointer) -> Result<RequestHeader, DecodeError> {
        let magic: UInt16 = pointer.loadLittleEndian(at: 0)
        if magic != WireProtocol.requestMagic { return .failure(.badMagic(magic)) }
        let version: UInt8 = pointer.load(fromByteOffset: 2, as: UInt8.self)
        let stored: UInt32 = pointer.loadLittleEndian(at: 28)
        if CRC32C.checksum(pointer, count: 28) != stored { return .failure(.checksumMismatch) }
        if version != WireProtocol.version { return .failure(.unsupportedVersion(version)) }
        let reserved: UInt32 = pointer.loadLittleEndian(at: 24)
        if reserved != 0 { return .failure(.reservedNotZero) }
        return .success(
            RequestHeader(
                rawOpcode: pointer.load(fromByteOffset: 3, as: UInt8.self), bodyLength: pointer.loadLittleEndian(at: 4),
                requestID: pointer.loadLittleEndian(at: 8), logID: LogID(pointer.loadLittleEndian(at: 16, as: UInt32.self)),
                flags: pointer.loadLittleEndian(at: 20)))
    }

    @inlinable
    public func encode(into pointer: UnsafeMutableRawPointer) {
        pointer.storeLittleEndian(WireProtocol.requestMagic, at: 0)
        pointer.storeBytes(of: WireProtocol.version, toByteOffset: 2, as: UInt8.self)
        pointer.storeBytes(of: opcode, toByteOffset: 3, as: UInt8.self)
        pointer.storeLittleEndian(bodyLength, at: 4)
        pointer.storeLittleEndian(requestID, at: 8)
        pointer.storeLittleEndian(logID.rawValue, at: 16)
        pointer.storeLittleEndian(flags, at: 20)
        pointer.storeLittleEndian(UInt32(0), at: 24)
        pointer.storeLittleEndian(CRC32C.checksum(UnsafeRawPointer(pointer), count: 28), at: 28)
    }

    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: WireProtocol.headerBytes)
        bytes.withUnsafeMutableBytes { encode(into: $0.baseAddress!) }
        return bytes
    }
}

/// The fixed 32-byte header that starts every response.
///
/// ```
///  0 u16 magic      72 6C ("rl")
///  2 u8  version    1
///  3 u8  opcode     the request's
///  4 u32 bodyLength bytes after the header
///  8 u64 requestID  the request's
/// 16 u16 status     0 = success, else an ErrorCode (the body is then an error body)
/// 18 u16 flags      bit 0: DUPLICATE (an append's batch was already in the log); else 0
/// 20 u64 reserved   0
/// 28 u32 headerCRC  CRC32C of bytes [0, 28)
/// ```
public struct ResponseHeader: Equatable, Sendable {
    public var opcode: UInt8
    public var bodyLength: UInt32
    public var requestID: UInt64
    public var status: UInt16
    public var flags: UInt16

    /// In `flags`: an append answered with the offset of the batch it repeats, not stored again.
    public static let duplicate: UInt16 = 1 << 0

    public init(opcode: UInt8, bodyLength: Int, requestID: UInt64, status: UInt16 = 0, flags: UInt16 = 0) {
        self.opcode = opcode
        self.bodyLength = UInt32(bodyLength)
        self.requestID = requestID
        self.status = status
        self.flags = flags
    }

    @inlinable
    public func encode(into pointer: UnsafeMutableRawPointer) {
        pointer.storeLittleEndian(WireProtocol.responseMagic, at: 0)
        pointer.storeBytes(of: WireProtocol.version, toByteOffset: 2, as: UInt8.self)
        pointer.storeBytes(of: opcode, toByteOffset: 3, as: UInt8.self)
        pointer.storeLittleEndian(bodyLength, at: 4)
        pointer.storeLittleEndian(requestID, at: 8)
        pointer.storeLittleEndian(status, at: 16)
        pointer.storeLittleEndian(flags, at: 18)
        pointer.storeLittleEndian(UInt64(0), at: 20)
        pointer.storeLittleEndian(CRC32C.checksum(UnsafeRawPointer(pointer), count: 28), at: 28)
    }

    public enum DecodeError: Error, Equatable, Sendable {
        case badMagic(UInt16)
        case unsupportedVersion(UInt8)
        case checksumMismatch
    }

    @inlinable
    public static func decode(_ pointer: UnsafeRawPointer) -> Result<ResponseHeader, DecodeError> {
        let magic: UInt16 = pointer.loadLittleEndian(at: 0)
        if magic != WireProtocol.responseMagic { return .failure(.badMagic(magic)) }
        let stored: UInt32 = pointer.loadLittleEndian(at: 28)
        if CRC32C.checksum(pointer, count: 28) != stored { return .failure(.checksumMismatch) }
        let version: UInt8 = pointer.load(fromByteOffset: 2, as: UInt8.self)
        if version != WireProtocol.version { return .failure(.unsupportedVersion(version)) }
        return .success(
            ResponseHeader(
                opcode: pointer.load(fromByteOffset: 3, as: UInt8.self), bodyLength: Int(pointer.loadLittleEndian(at: 4, as: UInt32.self)),
                requestID: pointer.loadLittleEndian(at: 8), status: pointer.loadLittleEndian(at: 16), flags: pointer.loadLittleEndian(at: 18)))
    }
}
