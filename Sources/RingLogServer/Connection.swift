import DequeModule
import Glibc
import RingLogIO
import RingLogStorage
import RingLogWire

/// One client connection: its socket operations on the loop core, the requests framed out of
/// what it receives, the responses it is owed (in request order), what it sends, and everything
/// that waits on its behalf. Closing it, by whatever path, ends all of that; its handle (and so
/// its slot) is released only once nothing of it is in the ring and no storage answer is due.
final class Connection: IOHandler {
    /// A strong reference, as a load through an unowned one costs a retain and a release on
    /// every use: the cycle ends when the server lets the connection go (`connectionReleased`,
    /// or `ServerLoop.release` for any left when the loop ends).
    let server: ServerLoop
    let fd: Int32
    /// Set right after the connection registers with the loop.
    private(set) var handle = IOHandle.none
    /// Set on a connection accepted by the Kafka listener: its bytes are Kafka frames, its
    /// requests go to `KafkaDispatcher`, and what storage answers on its behalf goes there too.
    let kafka: KafkaSession?

    enum State {
        case open
        /// No more reading. With `flushFirst`, responses owed are sent before the socket closes.
        case closing(flushFirst: Bool)
        /// The handle is released; waiting for the loop to confirm nothing of it is in the ring.
        case released
    }
    private(set) var state = State.open
    /// The peer shut down its sending side; requests already received are still answered.
    private var peerClosed = false
    private var socketShutDown = false

    // Receiving: requests are framed out of the received bytes (header first, then its body).
    private var framer: RequestFramer
    /// Bytes held for a request still arriving, as of the last framing call.
    private(set) var partialRequestBytes = 0
    /// The header of the request whose body is arriving, as of the last framing call.
    private(set) var pendingHeader: RequestHeader?
    /// Bytes received while paused, parsed when the connection goes on.
    let stash = ByteStore()
    private var receiveArmed = false
    /// Memory budget held for the request body being assembled (its announced length).
    var assemblyReservedBytes = 0
    /// The log this connection appended to last, so an append needs no table lookup.
    var appendLog: Log?
    /// Set while an append waits for room in the store; the connection reads nothing meanwhile.
    var blockedAppend: (header: RequestHeader, batch: OwnedBytes, sequence: UInt32, expectedEnd: LogOffset?)?
    /// Logs whose APPEND_IF chain on this connection was broken by an END_MISMATCH: later
    /// APPEND_IFs for them are refused until one starts a new chain (`AppendIfRequest.newChainFlag`).
    var brokenChains: Set<LogID> = []

    // What waits on its behalf.
    /// Its acknowledgements and long-polls, one `LogWait` per log (see `Waiters`).
    var waits: [LogWait] = []
    var lastWait: LogWait?
    /// Storage requests whose answers come back as store events (disk reads, creates, deletes,
    /// trims); the handle is not released until they are back.
    var storageRequestsInFlight = 0
    /// Reads not started yet, in request order: waiting for room in the memory budget, or for the
    /// connection's read window.
    var parkedReads: Deque<ParkedRead> = []
    /// In the memory budget's line for room.
    var queuedForMemory = false
    /// Bytes counted against the server's memory budget (`MemoryBudget`).
    var charged = 0
    /// Stopped reading because it holds more than the allowance and the memory budget is full.
    var pausedForMemory = false

    // Responses, in request order.
    let responses: ResponseQueue
    private var nextSequence: UInt32 = 0
    /// Requests counted against the in-flight limit.
    var countedInFlight = 0
    /// Bytes reserved by reads whose responses have not reached the send queue yet.
    var reservedReadBytes = 0
    let output = SendQueue()
    /// On the server's list of connections with responses to write out.
    var flushScheduled = false
    /// Its place in the server's list of connections; -1 once it is gone.
    var listPosition = -1

    // Deadlines (monotonic nanoseconds).
    private(set) var lastActivityNanos: UInt64
    /// When the first byte of the current, incomplete request arrived; when its header was whole.
    private(set) var requestStartedNanos: UInt64?
    private(set) var headerCompletedNanos: UInt64?
    private(set) var sendClock: SendClock

    init(server: ServerLoop, fd: Int32, nowNanos: UInt64, kafka: KafkaSession? = nil) {
        self.server = server
        self.fd = fd
        self.kafka = kafka
        framer = RequestFramer(limits: RequestFramer.Limits(maxAppendBodyBytes: server.configuration.storage.maxBatchBytes))
        responses = ResponseQueue(capacity: 2 * server.configuration.maxInFlightPerConnection)
        lastActivityNanos = nowNanos
        sendClock = SendClock(nowNanos: nowNanos)
        handle = server.loop.register(self)
    }

    var isOpen: Bool { if case .open = state { true } else { false } }
    var isPaused: Bool { blockedAppend != nil || kafka?.blockedProduce != nil }
    var isMidRequest: Bool { pendingHeader != nil }

    /// Memory this connection holds in the server: output kept alive by its send queue, a request
    /// being assembled, reservations of reads in flight, bytes received while paused, a batch
    /// waiting for room, and its response queue.
    var heldBytes: Int {
        output.heldBytes + max(partialRequestBytes, assemblyReservedBytes) + reservedReadBytes + stash.count
            + (blockedAppend?.batch.count ?? 0) + (kafka?.blockedBytes ?? 0) + responses.allocatedBytes
    }

    /// Nothing in flight, nothing half-received, nothing to send.
    var isIdle: Bool { responses.count == 0 && partialRequestBytes == 0 && output.backlogBytes == 0 }

    /// A sequence number for the next response queued.
    func takeSequence() -> UInt32 {
        defer { nextSequence = (nextSequence &+ 1) & ResponseQueue.sequenceMask }
        return nextSequence
    }

    // MARK: The loop

    func completed(_ completion: IOCompletion) {
        switch completion.kind {
        case .receiveProvided: received(completion)
        case .sendMessage: sent(completion)
        default: break  // the shutdown that ends pending operations
        }
        finishIfDone()
    }

    func released(_ handle: IOHandle) {
        server.connectionReleased(self)
    }

    // MARK: Receiving

    func armReceive() {
        guard !receiveArmed, isOpen else { return }
        server.loop.submit(.receiveProvided(fd: fd, bufferGroup: server.buffers.groupID, length: server.configuration.receiveBufferBytes), for: handle)
        receiveArmed = true
    }

    private func received(_ completion: IOCompletion) {
        receiveArmed = false
        let buffer = completion.providedBuffer
        defer { if let buffer { server.buffers.recycle(id: buffer) } }
        // A closing connection reads nothing more; its receive was cancelled on purpose.
        guard isOpen else { return }
        guard completion.result > 0, let buffer else {
            if completion.result == 0 {
                // The client finished sending: answer what it sent, then close.
                peerClosed = true
                pump()
            } else if completion.errno == .noBufferSpace {
                // Every receive buffer is taken; they come back within this turn, so try again.
                server.counters.receiveBufferShortages += 1
                server.scheduleFlush(self)
            } else {
                let reason = completion.errno.map { $0.isDisconnect ? "connection reset" : "receive failed: \($0)" } ?? "receive failed"
                beginClosing(flushFirst: false, reason: reason)
            }
            return
        }
        let now = MonotonicClock.nanos()
        lastActivityNanos = now
        server.counters.bytesReceived += UInt64(completion.result)
        let bytes = server.buffers.bytes(id: buffer, count: Int(completion.result))
        if stash.count > 0 || !server.canRead(self) {
            stash.append(bytes)
        } else {
            let consumed = frame(bytes, nowNanos: now)
            if consumed < bytes.count, isOpen { stash.append(UnsafeRawBufferPointer(rebasing: bytes[consumed...])) }
        }
        pump()
    }

    /// Frames and handles requests from `bytes`; returns how many bytes were used.
    private func frame(_ bytes: UnsafeRawBufferPointer, nowNanos: UInt64) -> Int {
        if kafka != nil {
            let consumed = server.kafka!.frame(self, bytes)
            // A frame still arriving: its bytes stay in the stash, which `heldBytes` counts. Its
            // deadline counts from when it began: now, if a frame was completed in this call.
            partialRequestBytes = 0
            let rest = UnsafeRawBufferPointer(rebasing: bytes[consumed...])
            let incomplete = !rest.isEmpty && !server.kafka!.holdsWholeFrame(rest)
            // Whole frames waiting their turn are not late: only an incomplete one is timed.
            if consumed > 0 || !incomplete { requestDone() }
            if incomplete { requestStartedNanos = requestStartedNanos ?? nowNanos }
            return consumed
        }
        let dispatcher: RequestDispatcher = server.dispatcher
        let (consumed, failure) = framer.frame(bytes) { header in
            dispatcher.admitAssembly(self, header)
        } discarded: { header in
            requestDone()
            return dispatcher.refuseForMemory(self, header)
        } deliver: { header, body in
            requestDone()
            return dispatcher.handle(self, header, body)
        }
        partialRequestBytes = framer.partialBytes
        pendingHeader = framer.pendingHeader
        if partialRequestBytes > 0 || pendingHeader != nil {
            requestStartedNanos = requestStartedNanos ?? nowNanos
            if pendingHeader != nil { headerCompletedNanos = headerCompletedNanos ?? nowNanos }
        }
        if let failure { protocolError(failure.code, failure.body, requestID: failure.requestID, opcode: failure.opcode) }
        return consumed
    }

    private func requestDone() {
        requestStartedNanos = nil
        headerCompletedNanos = nil
        assemblyReservedBytes = 0
    }

    /// Moves the connection on as far as it can: retries a blocked append, parses stashed bytes,
    /// and arms the next receive when it may read.
    func pump() {
        defer { server.recharge(self) }
        if blockedAppend != nil { server.dispatcher.retryBlockedAppend(self) }
        if let kafka, kafka.blockedProduce != nil { server.kafka!.retryBlockedProduce(self, kafka) }
        var stuck = false
        while stash.count > 0 && server.canRead(self) {
            let consumed = frame(stash.bytes, nowNanos: MonotonicClock.nanos())
            guard isOpen else { return }
            stash.removeFirst(consumed)
            if consumed == 0 {
                // A Kafka frame that is all here but waits (in-flight limit, read window, a
                // Produce waiting for room) is a pause; only an incomplete one is stuck.
                stuck = kafka == nil || !server.kafka!.holdsWholeFrame(stash.bytes)
                break
            }
        }
        guard stash.count == 0 else {
            // The peer finished sending in the middle of a request, which can never complete now:
            // what came before it is answered, then the connection closes.
            if stuck && peerClosed && !isPaused {
                beginClosing(flushFirst: true, reason: "peer closed in the middle of a request")
            } else if stuck && !peerClosed && server.canRead(self) {
                // A request still arriving (a Kafka frame waits whole in the stash): read on.
                armReceive()
            }
            return
        }
        stash.removeAll(keepingCapacityUpTo: 4 << 10)
        if peerClosed {
            if blockedAppend == nil, isOpen { beginClosing(flushFirst: true, reason: "peer closed") }
        } else if server.canRead(self) {
            armReceive()
        }
    }

    /// Answers with an error that ends the connection: the stream can no longer be trusted.
    func protocolError(_ code: ErrorCode, _ body: ErrorBody, requestID: UInt64, opcode: UInt8 = 0) {
        server.counters.countError(code)
        if kafka != nil {
            // Kafka has no error frame outside a response: the connection just ends.
            server.logger.debug("kafka protocol error", metadata: ["connection": "\(handle.slot)", "message": "\(body.message)"])
            beginClosing(flushFirst: true, reason: body.message)
            return
        }
        server.logger.debug("protocol error", metadata: ["connection": "\(handle.slot)", "code": "\(code)", "message": "\(body.message)"])
        var response = PendingResponse(sequence: takeSequence(), requestID: requestID, opcode: opcode, counted: false)
        response.ready = true
        response.status = code.rawValue
        response.body = .error(body)
        if !responses.isFull { responses.append(response) }
        server.scheduleFlush(self)
        beginClosing(flushFirst: true, reason: body.message)
    }

    // MARK: Answering

    /// Completes the queued response `sequence` (dropped when it is no longer queued). On a Kafka
    /// connection `sequence` is a token of the request part that waited (an acknowledgement, a
    /// long-poll), which `KafkaDispatcher` routes.
    func answer(_ sequence: UInt32, status: UInt16 = 0, _ body: PendingResponse.Body) {
        if let kafka {
            server.kafka!.answered(self, kafka, token: sequence, status: status, body)
            return
        }
        complete(sequence, status: status, body)
    }

    /// Completes the queued response `sequence` itself.
    func complete(_ sequence: UInt32, status: UInt16 = 0, _ body: PendingResponse.Body) {
        let found = responses.update(sequence: sequence) { response in
            response.ready = true
            response.status = status
            response.body = body
            // A read's reservation shrinks to the buffer its result holds; other bodies hold
            // what they hold until written out.
            let holds = response.heldBytes
            reservedReadBytes += holds - response.reservedBytes
            response.reservedBytes = holds
        }
        guard found else { return }
        server.recharge(self)
        server.scheduleFlush(self)
    }

    func answer(_ sequence: UInt32, code: ErrorCode, _ body: ErrorBody) {
        server.noteError(code, body, on: self)
        answer(sequence, status: code.rawValue, .error(body))
    }

    // MARK: Sending

    /// Moves every ready response at the head of the queue into the output and sends.
    func flush() {
        // The send deadline counts from when output started waiting, not from the connection's
        // last send ever: one idle for longer than the deadline is not late the moment its next
        // response is queued.
        let wasIdle = output.backlogBytes == 0
        while responses.firstIsReady {
            let response = responses.removeFirst()
            if response.counted { countedInFlight -= 1 }
            reservedReadBytes -= response.reservedBytes
            response.encode(into: output.filling)
        }
        if wasIdle && output.backlogBytes > 0 { sendClock.outputStarted(nowNanos: MonotonicClock.nanos()) }
        if !descriptorClosed, output.prepareSend() {
            server.loop.submit(.sendMessage(fd: fd, message: output.message), for: handle)
        }
        pump()
        server.closeIfDrained(self)
        finishIfDone()
    }

    private func sent(_ completion: IOCompletion) {
        guard completion.result >= 0 else {
            output.sendFinished(bytes: 0)
            beginClosing(flushFirst: false, reason: "send failed: \(completion.errno.map { "\($0)" } ?? "")")
            return
        }
        output.sendFinished(bytes: Int(completion.result))
        sendClock.progressed(nowNanos: MonotonicClock.nanos())
        server.counters.bytesSent += UInt64(completion.result)
        server.recharge(self)
        // The client collected results: reads waiting for its read window may start.
        if !parkedReads.isEmpty && !queuedForMemory { server.dispatcher.startParkedReads(self) }
        server.scheduleFlush(self)
    }

    // MARK: Closing

    private var descriptorClosed = false

    /// Stops reading. With `flushFirst`, responses already owed are sent first; otherwise
    /// nothing more is sent and everything that waits on the connection's behalf is dropped.
    func beginClosing(flushFirst: Bool, reason: String) {
        switch state {
        case .open:
            server.logger.debug("closing connection", metadata: ["connection": "\(handle.slot)", "reason": "\(reason)"])
            state = .closing(flushFirst: flushFirst)
            if receiveArmed { server.loop.cancel(.receiveProvided, of: handle) }
            stash.removeAll(keepingCapacityUpTo: 0)
            // Long-polls are answered now, empty: the connection is not held open for them.
            if flushFirst { server.dispatcher.answerLongPollsNow(self) }
            server.recharge(self)
        case .closing(let flushing):
            guard flushing && !flushFirst else { return }
            state = .closing(flushFirst: false)
        case .released:
            return
        }
        if !flushFirst {
            blockedAppend = nil
            kafka?.blockedProduce = nil
            server.abandonWaits(self)
            shutDownSocket()
        }
        finishIfDone()
    }

    private func shutDownSocket() {
        guard server.loop.operationsInFlight(handle) > 0, !socketShutDown else { return }
        socketShutDown = true
        server.loop.submit(.shutdown(fd: fd), for: handle)
    }

    /// Ends a closing connection once it owes nothing (or gave up owing) and no storage answer
    /// is due: its waits go, its socket closes, its handle is released (the loop frees the slot
    /// when nothing of it is left in the ring).
    func finishIfDone() {
        guard case .closing(let flushFirst) = state else { return }
        if flushFirst && (responses.count > 0 || output.backlogBytes > 0) { return }
        if flushFirst {
            state = .closing(flushFirst: false)
            if receiveArmed { server.loop.cancel(.receiveProvided, of: handle) }
        }
        guard server.loop.operationsInFlight(handle) == 0 else {
            shutDownSocket()
            return
        }
        server.abandonWaits(self)
        if !descriptorClosed {
            descriptorClosed = true
            server.loop.submitUnobserved(.close(fd: fd))
        }
        // Storage answers in flight find the connection by its handle; holding the handle until
        // they are back means no later connection can ever be their target.
        guard storageRequestsInFlight == 0 else { return }
        state = .released
        responses.removeAll()
        output.discardAll()
        server.loop.release(handle)
    }

    // MARK: Deadlines

    /// Closes the connection if a deadline passed: a request header or body not complete in time,
    /// responses not collected (`sendLate`), or nothing happening for the idle time.
    func checkDeadlines(nowNanos now: UInt64, limits: DeadlineLimits) {
        if sendClock.isLate(backlogBytes: output.backlogBytes, nowNanos: now, timeoutNanos: limits.sendNanos) {
            server.counters.timeouts += 1
            beginClosing(flushFirst: false, reason: "client stopped reading its responses")
            return
        }
        if let pressure = limits.pressureNanos, charged >= server.budget.allowance,
            sendClock.isLate(backlogBytes: output.backlogBytes, nowNanos: now, timeoutNanos: pressure)
        {
            server.counters.timeouts += 1
            server.counters.memoryPressureCloses += 1
            beginClosing(flushFirst: false, reason: "client stopped reading its responses while reads wait for memory")
            return
        }
        guard isOpen else { return }
        if let started = requestStartedNanos, pendingHeader == nil, now > started + limits.headerNanos {
            server.counters.timeouts += 1
            protocolError(.timedOut, ErrorBody(message: "request header not complete within \(limits.headerNanos / 1_000_000) ms"), requestID: 0)
        } else if let headerDone = headerCompletedNanos, let header = pendingHeader, now > headerDone + limits.payloadNanos {
            server.counters.timeouts += 1
            protocolError(
                .timedOut, ErrorBody(message: "request body not complete within \(limits.payloadNanos / 1_000_000) ms"),
                requestID: header.requestID, opcode: header.opcode)
        } else if let pressure = limits.pressureNanos, let header = pendingHeader, charged >= server.budget.allowance,
            now > lastActivityNanos + pressure
        {
            // A body holding memory that others wait for must keep arriving.
            server.counters.timeouts += 1
            server.counters.memoryPressureCloses += 1
            protocolError(
                .timedOut, ErrorBody(message: "request body stalled for \(pressure / 1_000_000) ms while the server is short of memory"),
                requestID: header.requestID, opcode: header.opcode)
        } else if isIdle && now > lastActivityNanos + limits.idleNanos {
            beginClosing(flushFirst: false, reason: "idle for \(limits.idleNanos / 1_000_000) ms")
        }
    }
}

/// The deadlines a sweep applies, in nanoseconds; `pressureNanos` is set while reads wait for
/// memory (the send and body deadlines, shortened).
struct DeadlineLimits {
    var headerNanos: UInt64
    var payloadNanos: UInt64
    var idleNanos: UInt64
    var sendNanos: UInt64
    var pressureNanos: UInt64?
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

/// A response's place: which connection (its slot and the low 16 bits of its generation) and
/// which queued response (its sequence number), in 24 + 16 + 24 bits. A connection's handle is not
/// released while a storage answer carrying its context is due, so the slot still belongs to it
/// when the answer comes.
enum ResponseContext {
    @inline(__always)
    static func make(_ connection: Connection, sequence: UInt32) -> UInt64 {
        UInt64(connection.handle.slot) << 40 | UInt64(connection.handle.generation & 0xFFFF) << 24 | UInt64(sequence & ResponseQueue.sequenceMask)
    }

    @inline(__always)
    static func parts(_ context: UInt64) -> (slot: Int, generation: UInt16, sequence: UInt32) {
        (Int(context >> 40), UInt16(truncatingIfNeeded: context >> 24), UInt32(truncatingIfNeeded: context) & ResponseQueue.sequenceMask)
    }
}
