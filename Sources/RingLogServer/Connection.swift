import RingLogIO
import RingLogStorage
import RingLogWire

/// A response waiting its turn: responses leave in request order, so a ready one waits behind
/// any earlier one still waiting (an append for its fdatasync, a read for the disk).
struct PendingResponse {
    enum Body {
        case empty
        case append(AppendResponse)
        case offset(OffsetMessage)
        case read(ReadResponseHead, ReadResult)
        case encoded([UInt8])
        case error(ErrorBody)
    }

    var sequence: UInt32
    var requestID: UInt64
    var opcode: UInt8
    var ready = false
    var status: UInt16 = 0
    var body = Body.empty
    /// Whether this entry counts against the in-flight limit (error-only entries do not).
    var counted = true
}

/// A fixed-capacity first-in, first-out queue of pending responses.
struct ResponseQueue {
    private var storage: [PendingResponse?]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) { storage = Array(repeating: nil, count: capacity) }

    var capacity: Int { storage.count }
    var isFull: Bool { count == storage.count }

    mutating func append(_ response: PendingResponse) {
        precondition(!isFull)
        storage[(head + count) % storage.count] = response
        count += 1
    }

    var first: PendingResponse? { count == 0 ? nil : storage[head] }

    mutating func removeFirst() -> PendingResponse {
        let first = storage[head]!
        storage[head] = nil
        head = (head + 1) % storage.count
        count -= 1
        return first
    }

    /// Applies `change` to the entry with `sequence`, if it is still queued.
    mutating func update(sequence: UInt32, _ change: (inout PendingResponse) -> Void) -> Bool {
        guard count > 0, let first = storage[head] else { return false }
        let distance = Int(sequence &- first.sequence)
        guard distance >= 0 && distance < count else { return false }
        let index = (head + distance) % storage.count
        guard storage[index]?.sequence == sequence else { return false }
        change(&storage[index]!)
        return true
    }

    mutating func removeAll() {
        while count > 0 { _ = removeFirst() }
    }
}

/// One client connection: its framing state, the responses it is owed, and what it is sending.
final class Connection {
    let slot: Int
    let generation: UInt16
    let fd: Int32

    enum State {
        case open
        /// No more reading. With `flushFirst`, responses owed are sent before the socket closes.
        case closing(flushFirst: Bool)
    }
    var state = State.open
    /// The peer shut down its sending side; requests already received are still answered.
    var peerClosed = false
    var socketShutDown = false

    // Receiving: a request's header is collected first (it may arrive in pieces), then its body.
    private let headerStore = ByteStore()
    private(set) var header: RequestHeader?
    private let bodyStore = ByteStore()
    /// Bytes received while paused, parsed when the connection resumes.
    let stash = ByteStore()
    var receiveArmed = false
    /// Set while an append waits for room in the store; the connection reads nothing meanwhile.
    var blockedAppend: (header: RequestHeader, batch: OwnedBytes, sequence: UInt32)?

    // Responses, in request order.
    var responses: ResponseQueue
    private(set) var nextSequence: UInt32 = 0
    /// Requests counted against the in-flight limit.
    var countedInFlight = 0
    let output = SendQueue()
    /// The connection is on the loop's list of connections with responses to flush.
    var flushScheduled = false
    /// Operations in the ring for this connection (receive, send, shutdown); it is freed at zero.
    var operationsInFlight = 0

    // Deadlines (monotonic nanoseconds).
    var lastActivityNanos: UInt64
    /// When the first byte of the current, incomplete request arrived.
    var requestStartedNanos: UInt64?
    var headerCompletedNanos: UInt64?
    var lastSendProgressNanos: UInt64

    init(slot: Int, generation: UInt16, fd: Int32, responseCapacity: Int, nowNanos: UInt64) {
        self.slot = slot
        self.generation = generation
        self.fd = fd
        responses = ResponseQueue(capacity: responseCapacity)
        lastActivityNanos = nowNanos
        lastSendProgressNanos = nowNanos
    }

    var isPaused: Bool { blockedAppend != nil }

    /// A sequence number for the next response queued.
    func takeSequence() -> UInt32 {
        defer { nextSequence &+= 1 }
        return nextSequence
    }

    /// Limits the framing layer enforces before reading a body.
    struct Limits {
        var maxBatchBytes: Int
    }

    /// Why a request could not be framed, and what the error response says.
    struct FramingError {
        var code: ErrorCode
        var body: ErrorBody
        /// The request's id and opcode when its header was intact enough to trust (its CRC held).
        var requestID: UInt64 = 0
        var opcode: UInt8 = 0
    }

    /// Frames requests out of `bytes`, calling `deliver` for each complete one. Stops when the bytes
    /// run out, when `deliver` returns false, or at a framing error. Returns the bytes consumed and
    /// the error, if any. Bodies that arrive whole are passed without copying.
    func frame(
        _ bytes: UnsafeRawBufferPointer, limits: Limits, nowNanos: UInt64,
        deliver: (RequestHeader, UnsafeRawBufferPointer) -> Bool
    ) -> (consumed: Int, error: FramingError?) {
        var index = 0
        while index < bytes.count {
            if header == nil {
                if requestStartedNanos == nil { requestStartedNanos = nowNanos }
                let headerPointer: UnsafeRawPointer
                if headerStore.count == 0 && bytes.count - index >= WireProtocol.headerBytes {
                    headerPointer = bytes.baseAddress! + index
                    index += WireProtocol.headerBytes
                } else {
                    let take = min(WireProtocol.headerBytes - headerStore.count, bytes.count - index)
                    headerStore.append(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                    index += take
                    if headerStore.count < WireProtocol.headerBytes { return (index, nil) }
                    headerPointer = UnsafeRawPointer(headerStore.base!)
                }
                let decoded = RequestHeader.decode(headerPointer)
                let claimedID: UInt64 = headerPointer.loadLittleEndian(at: 8)
                let claimedOpcode = headerPointer.load(fromByteOffset: 3, as: UInt8.self)
                headerStore.removeAll(keepingCapacityUpTo: 64)
                switch decoded {
                case .failure(let error):
                    var framing = Connection.describe(error)
                    if case .unsupportedVersion = error { (framing.requestID, framing.opcode) = (claimedID, claimedOpcode) }
                    if case .reservedNotZero = error { (framing.requestID, framing.opcode) = (claimedID, claimedOpcode) }
                    return (index, framing)
                case .success(let decoded):
                    let limit = decoded.opcode == Opcode.append.rawValue ? limits.maxBatchBytes : WireProtocol.maxControlBodyBytes
                    if Int(decoded.bodyLength) > limit {
                        return (index, FramingError(
                            code: .lengthOverLimit,
                            body: ErrorBody(detail1: UInt64(limit), message: "request body of \(decoded.bodyLength) bytes exceeds the limit of \(limit)"),
                            requestID: decoded.requestID, opcode: decoded.opcode))
                    }
                    header = decoded
                    headerCompletedNanos = nowNanos
                }
            }
            let expected = Int(header!.bodyLength)
            let body: UnsafeRawBufferPointer
            if bodyStore.count == 0 && bytes.count - index >= expected {
                body = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + expected)])
                index += expected
            } else {
                let take = min(expected - bodyStore.count, bytes.count - index)
                if take > 0 {
                    bodyStore.append(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                    index += take
                }
                if bodyStore.count < expected { return (index, nil) }
                body = bodyStore.bytes
            }
            let complete = header!
            header = nil
            requestStartedNanos = nil
            headerCompletedNanos = nil
            let proceed = deliver(complete, body)
            bodyStore.removeAll(keepingCapacityUpTo: 64 << 10)
            if !proceed { return (index, nil) }
        }
        return (index, nil)
    }

    /// Bytes held for a request still arriving.
    var partialRequestBytes: Int { headerStore.count + bodyStore.count }

    private static func describe(_ error: RequestHeader.DecodeError) -> FramingError {
        let version = UInt64(WireProtocol.version)
        switch error {
        case .badMagic(let magic):
            return FramingError(code: .badMagic, body: ErrorBody(message: "request header magic 0x\(String(magic, radix: 16)) is not \"RL\" (0x4c52)"))
        case .unsupportedVersion(let got):
            return FramingError(
                code: .unsupportedVersion,
                body: ErrorBody(detail1: version, detail2: version, message: "protocol version \(got) is not supported; this server speaks 1"))
        case .checksumMismatch:
            return FramingError(code: .malformedRequest, body: ErrorBody(message: "request header CRC32C does not match"))
        case .reservedNotZero:
            return FramingError(code: .malformedRequest, body: ErrorBody(message: "request header reserved field is not zero"))
        }
    }
}
