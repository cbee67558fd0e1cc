import DequeModule
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
        let distance = Int((sequence &- storage[head].sequence) & Connection.sequenceMask)
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
    /// The socket is closed; the slot may still be held for storage answers in flight.
    var descriptorClosed = false

    // Receiving: requests are framed out of the received bytes (header first, then its body).
    private var framer: RequestFramer
    /// Bytes held for a request still arriving, as of the last framing call (read this, not the
    /// framer, while a request is being handled).
    private(set) var partialRequestBytes = 0
    /// The header of the request whose body is arriving, as of the last framing call.
    private(set) var header: RequestHeader?
    /// Bytes received while paused, parsed when the connection resumes.
    let stash = ByteStore()
    var receiveArmed = false
    /// The log this connection appended to last and its waiting acknowledgements, so that an
    /// append needs no table lookups (each checks that its entry is still current).
    var appendLog: Log?
    var appendWaiters: LogWaiters?
    /// Set while an append waits for room in the store; the connection reads nothing meanwhile.
    var blockedAppend: (header: RequestHeader, batch: OwnedBytes, sequence: UInt32)?
    /// Logs where this connection has something waiting (acknowledgements, long-polls). Closing
    /// the connection removes those waits, so nothing is ever answered into a later connection.
    var waitingOn: [LogID] = []
    /// Storage requests whose answers will come back as store events (disk reads, creates,
    /// deletes, trims). The slot is not reused until they are back, so an answer can only ever
    /// find the connection that asked.
    var storageRequestsInFlight = 0
    /// Memory budget held for the request body being assembled (its announced length).
    var assemblyReservedBytes = 0
    /// Reads of this connection not started yet, in request order: waiting for room in the
    /// memory budget, or for the connection's read window (results it has not collected).
    var parkedReads: Deque<ParkedRead> = []
    /// In the memory budget's line for room.
    var queuedForMemory = false
    /// Bytes this connection has counted against the server's memory budget (`MemoryBudget`).
    var charged = 0
    /// Stopped reading because it holds more than the allowance and the memory budget is full.
    var pausedForMemory = false

    // Responses, in request order.
    let responses: ResponseQueue
    private(set) var nextSequence: UInt32 = 0
    /// Requests counted against the in-flight limit.
    var countedInFlight = 0
    /// Bytes reserved by reads whose responses have not reached the send queue yet.
    var reservedReadBytes = 0
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
    var sendClock: SendClock

    init(slot: Int, generation: UInt16, fd: Int32, responseCapacity: Int, limits: RequestFramer.Limits, nowNanos: UInt64) {
        framer = RequestFramer(limits: limits)
        self.slot = slot
        self.generation = generation
        self.fd = fd
        responses = ResponseQueue(capacity: responseCapacity)
        lastActivityNanos = nowNanos
        sendClock = SendClock(nowNanos: nowNanos)
    }

    var isPaused: Bool { blockedAppend != nil }

    /// Memory this connection holds in the server: output not yet sent, a request being
    /// assembled, reservations of reads in flight, bytes received while paused, a batch waiting
    /// for room, and its response queue.
    var heldBytes: Int {
        output.heldBytes + max(partialRequestBytes, assemblyReservedBytes) + reservedReadBytes + stash.count
            + (blockedAppend?.batch.count ?? 0) + responses.allocatedBytes
    }


    /// Notes that something waits on `log` for this connection.
    func noteWaiting(on log: LogID) {
        if !waitingOn.contains(log) { waitingOn.append(log) }
    }

    /// Sequence numbers count modulo 2^24 (they fit in a `ResponseContext` beside the slot and the
    /// whole generation). They only need to tell apart the responses queued at one time, at most
    /// twice max-in-flight, which the configuration keeps below 2^23.
    static let sequenceMask: UInt32 = 0xFF_FFFF

    /// A sequence number for the next response queued.
    func takeSequence() -> UInt32 {
        defer { nextSequence = (nextSequence &+ 1) & Connection.sequenceMask }
        return nextSequence
    }

    /// Frames requests out of `bytes` and hands each to `deliver` (which returns false to stop).
    /// Keeps the request deadlines' clocks: when a request started arriving, when its header was
    /// complete. Returns the bytes consumed and the framing failure, if any.
    func frame(
        _ bytes: UnsafeRawBufferPointer, nowNanos: UInt64, assemble: (RequestHeader) -> Bool, discarded: (RequestHeader) -> Bool,
        deliver: (RequestHeader, UnsafeRawBufferPointer) -> Bool
    ) -> (consumed: Int, failure: RequestFramer.Failure?) {
        let result = framer.frame(bytes, assemble: assemble) { header in
            requestStartedNanos = nil
            headerCompletedNanos = nil
            assemblyReservedBytes = 0
            return discarded(header)
        } deliver: { header, body in
            requestStartedNanos = nil
            headerCompletedNanos = nil
            assemblyReservedBytes = 0
            return deliver(header, body)
        }
        partialRequestBytes = framer.partialBytes
        header = framer.pendingHeader
        if partialRequestBytes > 0 || header != nil {
            requestStartedNanos = requestStartedNanos ?? nowNanos
            if header != nil { headerCompletedNanos = headerCompletedNanos ?? nowNanos }
        }
        return result
    }

}

/// The send deadline's clock: how long output has been waiting without the socket taking any of
/// it. It restarts when output is queued on a connection that had none waiting (a connection idle
/// for longer than the deadline is not late the moment its next response is queued) and whenever
/// a send completes.
struct SendClock {
    private var sinceNanos: UInt64

    init(nowNanos: UInt64) { sinceNanos = nowNanos }

    /// Output was queued on a connection that had none waiting.
    mutating func outputStarted(nowNanos: UInt64) { sinceNanos = nowNanos }

    mutating func progressed(nowNanos: UInt64) { sinceNanos = nowNanos }

    func isLate(backlogBytes: Int, nowNanos: UInt64, timeoutNanos: UInt64) -> Bool {
        backlogBytes > 0 && nowNanos > sinceNanos + timeoutNanos
    }
}
