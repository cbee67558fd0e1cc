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
        /// A whole Kafka response frame, sent as it is (no RingLog header).
        case kafka(KafkaResponseBytes)
    }

    var sequence: UInt32
    var requestID: UInt64
    var opcode: UInt8
    var ready = false
    var status: UInt16 = 0
    var body = Body.empty
    /// Whether this entry counts against the in-flight limit (error-only entries do not).
    var counted = true
    /// Bytes of buffered-bytes budget this response holds until it is written out (a read's
    /// maximum size, reserved when the read starts).
    var reservedBytes = 0
}

/// A bounded first-in, first-out queue of pending responses, updated in place: the entry for a
/// request is written once when the request arrives, completed where it sits, and moved out when
/// it is sent. (An array of optionals copied each response several times, with a retain and
/// release per copy: a sixth of the work of an append.) Storage starts small and doubles up to
/// `capacity`, so an idle connection holds a few entries, not room for every request it may
/// pipeline; it shrinks back when the queue empties.
final class ResponseQueue {
    private var storage: UnsafeMutablePointer<PendingResponse>
    /// Most entries the queue may hold.
    let capacity: Int
    private(set) var allocated: Int
    private var head = 0
    private(set) var count = 0
    static let initialAllocation = 8

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        allocated = min(capacity, ResponseQueue.initialAllocation)
        storage = .allocate(capacity: allocated)
    }

    deinit {
        removeAll()
        storage.deallocate()
    }

    var isFull: Bool { count == capacity }

    /// Sequence numbers count modulo 2^24 (they fit in a `ResponseContext` beside the slot and the
    /// generation). They only need to tell apart the responses queued at one time, at most
    /// twice max-in-flight, which the configuration keeps below 2^24.
    static let sequenceMask: UInt32 = 0xFF_FFFF

    /// Memory the queue's storage takes.
    var allocatedBytes: Int { allocated * MemoryLayout<PendingResponse>.stride }

    private func slot(_ distance: Int) -> UnsafeMutablePointer<PendingResponse> {
        let index = head + distance
        return storage + (index >= allocated ? index - allocated : index)
    }

    func append(_ response: PendingResponse) {
        precondition(!isFull)
        if count == allocated { resize(to: min(capacity, allocated * 2)) }
        slot(count).initialize(to: response)
        count += 1
    }

    /// Moves the entries, oldest first, to storage of `size` entries.
    private func resize(to size: Int) {
        precondition(size >= count)
        let moved = UnsafeMutablePointer<PendingResponse>.allocate(capacity: size)
        for index in 0..<count { (moved + index).moveInitialize(from: slot(index), count: 1) }
        storage.deallocate()
        storage = moved
        allocated = size
        head = 0
    }

    /// The oldest entry is complete and may be sent.
    var firstIsReady: Bool { count > 0 && storage[head].ready }

    func removeFirst() -> PendingResponse {
        precondition(count > 0)
        let first = (storage + head).move()
        head = head + 1 == allocated ? 0 : head + 1
        count -= 1
        if count == 0 && allocated > ResponseQueue.initialAllocation { resize(to: min(capacity, ResponseQueue.initialAllocation)) }
        return first
    }

    /// Applies `change` to the entry with `sequence`, if it is still queued.
    func update(sequence: UInt32, _ change: (inout PendingResponse) -> Void) -> Bool {
        guard count > 0 else { return false }
        let distance = Int((sequence &- storage[head].sequence) & ResponseQueue.sequenceMask)
        guard distance >= 0 && distance < count else { return false }
        let entry = slot(distance)
        guard entry.pointee.sequence == sequence else { return false }
        change(&entry.pointee)
        return true
    }

    func removeAll() {
        while count > 0 { _ = removeFirst() }
    }
}

extension PendingResponse {
    /// Writes this response (header and body) into `output`: small parts copied inline, a read's
    /// batches referenced where the storage engine put them.
    func encode(into output: OutgoingBytes) {
        // Headers are plain values made per case: a closure capturing the response to make them
        // was a heap allocation per response.
        switch body {
        case .empty:
            let header = header(bodyLength: 0)
            output.appendInline(count: WireProtocol.headerBytes) { header.encode(into: $0) }
        case .append(let message):
            var header = header(bodyLength: 16)
            if message.duplicate { header.flags = ResponseHeader.duplicate }
            output.appendInline(count: WireProtocol.headerBytes + 16) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(message.offset.rawValue, at: 32)
                pointer.storeLittleEndian(message.committedEnd.rawValue, at: 40)
            }
        case .offset(let message):
            let header = header(bodyLength: 8)
            output.appendInline(count: WireProtocol.headerBytes + 8) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(message.offset.rawValue, at: 32)
            }
        case .read(let head, let result):
            let header = header(bodyLength: ReadResponseHead.encodedBytes + result.range.count)
            output.appendInline(count: WireProtocol.headerBytes + ReadResponseHead.encodedBytes) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(head.startOffset.rawValue, at: 32)
                pointer.storeLittleEndian(head.committedEnd.rawValue, at: 40)
            }
            if let buffer = result.buffer { output.appendExternal(buffer, result.range) }
        case .encoded(let bytes):
            appendInline(bytes, to: output)
        case .error(let error):
            appendInline(error.encoded(), to: output)
        case .kafka(let response):
            for piece in response.pieces {
                switch piece {
                case .bytes(let bytes):
                    output.appendInline(count: bytes.count) { pointer in
                        bytes.withUnsafeBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    }
                case .external(let owner, let range): output.appendExternal(owner, range)
                }
            }
        }
    }

    private func appendInline(_ bytes: [UInt8], to output: OutgoingBytes) {
        let header = header(bodyLength: bytes.count)
        output.appendInline(count: WireProtocol.headerBytes + bytes.count) { pointer in
            header.encode(into: pointer)
            bytes.withUnsafeBytes { (pointer + WireProtocol.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
    }

    private func header(bodyLength: Int) -> ResponseHeader {
        ResponseHeader(opcode: opcode, bodyLength: bodyLength, requestID: requestID, status: status)
    }

    /// Memory this response holds until it is written out, against the connection's and the
    /// server's budgets: a read's buffer, an encoded body, an error message.
    var heldBytes: Int {
        switch body {
        case .read(_, let result): result.buffer?.count ?? 0
        case .encoded(let bytes): bytes.count
        case .error(let error): 16 + error.message.utf8.count
        case .kafka(let response): response.heldBytes
        case .empty, .append, .offset: 0
        }
    }
}
