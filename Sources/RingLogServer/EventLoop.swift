import CLiburing
import DequeModule
import Glibc
import HeapModule
import Logging
import RingLogIO
import RingLogStorage
import RingLogWire

/// The one thread that owns the ring, the logs and the connections (docs/architecture.md).
///
/// Each turn: submit what is queued and wait for at least one completion (or the next deadline);
/// dispatch every completion (accepts, receives, sends, disk operations); apply the store's events
/// (acknowledgements, finished reads); let the store issue the writes and fdatasyncs that made
/// possible; send the responses that became ready. Nothing here blocks and nothing takes a lock.
final class EventLoop {
    /// What a completion is for: the top 8 bits of its user data.
    enum Kind: UInt64 {
        case disk = 1
        case accept = 2
        case receive = 3
        case send = 4
        case wakeup = 5
        case reject = 6
        /// Completions nobody waits for (closes, cancels, shutdowns).
        case ignored = 7
        case metricsAccept = 8
        case metricsReceive = 9
        case metricsSend = 10
    }

    enum Phase {
        case running
        /// Stop requested: no new connections or requests; finishing what is in flight.
        case draining(deadlineNanos: UInt64)
        case stopped
    }

    let configuration: ServerConfiguration
    let ring: Ring
    let store: LogStore
    let disk: RingDiskExecutor
    let buffers: ProvidedBuffers
    private(set) var listenFD: Int32
    let wakeup: Wakeup
    let control: ServerControl
    var logger: Logger

    var connections: [Connection?]
    var generations: [UInt16]
    var freeSlots: [Int]
    var openConnections = 0
    var acceptArmed = false
    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    /// Each rejected connection's error response is sent from here.
    let rejection: OwnedBytes

    var waiters: [LogID: LogWaiters] = [:]
    var longPollDeadlines = Heap<LongPollDeadline>()
    var flushQueue: [Connection] = []
    var blockedConnections: Deque<Connection> = []
    var phase = Phase.running
    var counters = ServerCounters()
    var budget: MemoryBudget
    var metrics = ServerMetrics()
    let metricsEndpoint: MetricsEndpoint?
    private var nextMetricsPublishNanos: UInt64 = 0
    private var nextSweepNanos: UInt64 = 0
    /// The store reported its shutdown complete.
    private var storeFinished = false
    private var nextMaintenanceNanos: UInt64 = 0

    static let sweepIntervalNanos: UInt64 = 100_000_000
    static let maintenanceIntervalNanos: UInt64 = 100_000_000

    init(
        configuration: ServerConfiguration, ring: Ring, store: LogStore, listenFD: Int32, metricsFD: Int32?, wakeup: Wakeup,
        control: ServerControl, logger: Logger
    ) throws(RingError) {
        self.configuration = configuration
        self.ring = ring
        self.store = store
        self.listenFD = listenFD
        self.wakeup = wakeup
        self.control = control
        self.logger = logger
        disk = RingDiskExecutor(faults: configuration.diskFaults)
        metricsEndpoint = metricsFD.map { MetricsEndpoint(listenFD: $0, exporter: configuration.metricsExporter ?? { [] }) }
        buffers = try ProvidedBuffers(ring: ring, groupID: 1, count: configuration.receiveBufferCount, bufferBytes: configuration.receiveBufferBytes)
        connections = Array(repeating: nil, count: configuration.maxConnections)
        generations = Array(repeating: 0, count: configuration.maxConnections)
        freeSlots = Array((0..<configuration.maxConnections).reversed())
        budget = MemoryBudget(limit: configuration.maxBufferedBytesTotal, allowance: configuration.receiveBufferBytes)
        var body = WireWriter()
        ErrorBody(detail1: UInt64(configuration.maxConnections), message: "too many connections: the limit is \(configuration.maxConnections)").encode(into: &body)
        var rejection = [UInt8](repeating: 0, count: WireProtocol.headerBytes)
        rejection.withUnsafeMutableBytes {
            ResponseHeader(opcode: 0, bodyLength: body.bytes.count, requestID: 0, status: ErrorCode.tooManyConnections.rawValue).encode(into: $0.baseAddress!)
        }
        self.rejection = OwnedBytes(rejection + body.bytes)
    }

    deinit { wakeBuffer.deallocate() }

    /// The ring operations the server needs; the daemon refuses to start if any is missing.
    static let requiredOperations: [(name: String, code: io_uring_op)] =
        DiskOperation.ringOperations + [
            ("accept", IORING_OP_ACCEPT), ("recv", IORING_OP_RECV), ("sendmsg", IORING_OP_SENDMSG), ("shutdown", IORING_OP_SHUTDOWN),
            ("async_cancel", IORING_OP_ASYNC_CANCEL),
        ]

    // MARK: User data

    @inline(__always)
    static func userData(_ kind: Kind, slot: Int = 0, generation: UInt16 = 0) -> UInt64 {
        kind.rawValue << 56 | UInt64(slot) << 32 | UInt64(generation) << 16
    }

    @inline(__always)
    func userData(_ kind: Kind, _ connection: Connection) -> UInt64 {
        EventLoop.userData(kind, slot: connection.slot, generation: connection.generation)
    }

    // MARK: Running

    func run() {
        armAccept()
        armWakeup()
        metricsEndpoint?.armAccept(on: ring)
        while true {
            let now = monotonicNanos()
            if case .stopped = phase { break }
            if case .draining(let deadline) = phase, now >= deadline { forceStop(reason: "shutdown timeout passed") }
            runTimers(now: now)
            store.flush()
            disk.prepareQueued(from: store, on: ring, tag: Kind.disk.rawValue)
            let result = ring.submitAndWait(count: 1, timeoutNanos: Int64(timeUntilNextDeadline(now: now)))
            if result < 0 && result != -ETIME && result != -EINTR && result != -EBUSY {
                logger.critical("io_uring_enter failed", metadata: ["errno": "\(-result)"])
            }
            ring.drainCompletions { userData, result, flags in dispatch(userData: userData, result: result, flags: flags) }
            applyStoreEvents()
            serveBudgetWaiters()
            flushConnections()
        }
        closeEverything()
    }

    private func dispatch(userData: UInt64, result: Int32, flags: UInt32) {
        guard let kind = Kind(rawValue: userData >> 56) else { return }
        let slot = Int((userData >> 32) & 0xFF_FFFF)
        let generation = UInt16(truncatingIfNeeded: userData >> 16)
        switch kind {
        case .disk: disk.complete(userData: userData, result: result, store: store)
        case .accept: accepted(result: result, flags: flags)
        case .wakeup: wokenUp(result: result)
        case .reject: _ = submitClose(Int32(slot))
        case .ignored: break
        case .metricsAccept: metricsEndpoint?.accepted(result: result, flags: flags, ring: ring)
        case .metricsReceive, .metricsSend:
            metricsEndpoint?.completed(kind, slot: slot, generation: generation, result: result, ring: ring) { publishMetrics() }
        case .receive, .send:
            guard let connection = connections[slot], connection.generation == generation else {
                if kind == .receive, let id = ProvidedBuffers.bufferID(fromFlags: flags) { buffers.recycle(id: id) }
                return
            }
            connection.operationsInFlight -= 1
            if kind == .receive { received(connection, result: result, flags: flags) } else { sent(connection, result: result) }
            finishIfDone(connection)
        }
    }

    /// Nanoseconds until the next thing that happens on a clock (at most the sweep interval).
    private func timeUntilNextDeadline(now: UInt64) -> UInt64 {
        var next = min(nextSweepNanos, nextMaintenanceNanos)
        if let poll = longPollDeadlines.min { next = min(next, poll.deadlineNanos) }
        if case .draining(let deadline) = phase { next = min(next, deadline) }
        return next > now ? max(next - now, 50_000) : 50_000
    }

    private func runTimers(now: UInt64) {
        if now >= nextMaintenanceNanos {
            store.maintain()
            nextMaintenanceNanos = now + EventLoop.maintenanceIntervalNanos
        }
        expireLongPolls(now: now)
        if now >= nextSweepNanos {
            sweepConnections(now: now)
            metricsEndpoint?.sweep(now: now, ring: ring)
            nextSweepNanos = now + EventLoop.sweepIntervalNanos
        }
        if now >= nextMetricsPublishNanos {
            publishMetrics()
            nextMetricsPublishNanos = now + 1_000_000_000
        }
    }

    // MARK: Accepting

    private func armAccept() {
        guard case .running = phase, listenFD >= 0 else { return }
        let entry = ring.submissionEntry()
        io_uring_prep_multishot_accept(entry, listenFD, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        io_uring_sqe_set_data64(entry, EventLoop.userData(.accept))
        acceptArmed = true
    }

    private func accepted(result: Int32, flags: UInt32) {
        if flags & IORING_CQE_F_MORE == 0 {
            acceptArmed = false
            armAccept()
        }
        guard result >= 0 else {
            if result != -ECANCELED { logger.warning("accept failed", metadata: ["errno": "\(-result)"]) }
            return
        }
        let fd = result
        guard case .running = phase, let slot = freeSlots.popLast() else {
            reject(fd)
            return
        }
        generations[slot] &+= 1
        let connection = Connection(
            slot: slot, generation: generations[slot], fd: fd, responseCapacity: 2 * configuration.maxInFlightPerConnection,
            limits: RequestFramer.Limits(maxAppendBodyBytes: configuration.storage.maxBatchBytes), nowNanos: monotonicNanos())
        connections[slot] = connection
        openConnections += 1
        counters.connectionsAccepted += 1
        logger.debug("connection opened", metadata: ["connection": "\(slot).\(connection.generation)"])
        armReceive(connection)
    }

    /// Answers a connection over the limit with TOO_MANY_CONNECTIONS, then closes it.
    private func reject(_ fd: Int32) {
        counters.connectionsRejected += 1
        let entry = ring.submissionEntry()
        io_uring_prep_send(entry, fd, rejection.bytes.baseAddress, rejection.count, Int32(MSG_NOSIGNAL))
        io_uring_sqe_set_data64(entry, EventLoop.userData(.reject, slot: Int(fd)))
    }

    @discardableResult
    func submitClose(_ fd: Int32) -> Bool {
        let entry = ring.submissionEntry()
        io_uring_prep_close(entry, fd)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
        return true
    }

    // MARK: Receiving

    func armReceive(_ connection: Connection) {
        guard !connection.receiveArmed, case .open = connection.state else { return }
        let entry = ring.submissionEntry()
        io_uring_prep_recv(entry, connection.fd, nil, configuration.receiveBufferBytes, 0)
        entry.pointee.flags |= RINGLOG_IOSQE_BUFFER_SELECT
        entry.pointee.buf_group = buffers.groupID
        io_uring_sqe_set_data64(entry, userData(.receive, connection))
        connection.receiveArmed = true
        connection.operationsInFlight += 1
    }

    private func received(_ connection: Connection, result: Int32, flags: UInt32) {
        connection.receiveArmed = false
        let buffer = ProvidedBuffers.bufferID(fromFlags: flags)
        defer { if let buffer { buffers.recycle(id: buffer) } }
        // A closing connection reads nothing more; its receive was cancelled on purpose.
        guard case .open = connection.state else { return }
        guard result > 0, let buffer else {
            switch result {
            case -ENOBUFS:
                // Every receive buffer is taken; they come back within this turn, so try again.
                counters.receiveBufferShortages += 1
                scheduleFlush(connection)
            case 0:
                // The client finished sending: answer what it sent, then close.
                connection.peerClosed = true
                pump(connection)
            case -ECONNRESET, -ECANCELED, -EPIPE, -ETIMEDOUT:
                beginClosing(connection, flushFirst: false, reason: "connection reset")
            default:
                beginClosing(connection, flushFirst: false, reason: "receive failed: errno \(-result)")
            }
            return
        }
        let now = monotonicNanos()
        connection.lastActivityNanos = now
        counters.bytesReceived += UInt64(result)
        let bytes = buffers.bytes(id: buffer, count: Int(result))
        if connection.stash.count > 0 || !canRead(connection) {
            connection.stash.append(bytes)
        } else {
            let consumed = frame(connection, bytes, now: now)
            if consumed < bytes.count, case .open = connection.state {
                connection.stash.append(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
            }
        }
        pump(connection)
    }

    /// Frames and handles requests from `bytes`; returns how many bytes were used.
    private func frame(_ connection: Connection, _ bytes: UnsafeRawBufferPointer, now: UInt64) -> Int {
        let (consumed, failure) = connection.frame(bytes, nowNanos: now) { header in
            admitAssembly(connection, header)
        } discarded: { header in
            refuseForMemory(connection, header)
        } deliver: { header, body in
            handle(connection, header, body)
        }
        if let failure { protocolError(connection, failure.code, failure.body, requestID: failure.requestID, opcode: failure.opcode) }
        return consumed
    }

    /// True when the connection may take more requests now: it is open, not waiting to place a
    /// batch, within its own limits, and either holds less than the allowance or the server's
    /// memory budget has room (otherwise it waits for room: `MemoryBudget`).
    func canRead(_ connection: Connection) -> Bool {
        guard case .open = connection.state, !connection.isPaused else { return false }
        let held = connection.heldBytes
        guard !connection.responses.isFull && held < configuration.maxBufferedBytesPerConnection else { return false }
        // A body being assembled has its memory reserved already: reading it adds nothing.
        if held < budget.allowance || budget.hasRoom || connection.assemblyReservedBytes > 0 { return true }
        if !connection.pausedForMemory {
            connection.pausedForMemory = true
            budget.pausedConnections.append(connection)
            counters.budgetPauses += 1
        }
        return false
    }

    /// Whether a request body that spans receive buffers may be assembled: always when it is no
    /// larger than the allowance, else when the memory budget can hold all of it (reserved now).
    /// Otherwise it is read and dropped, and the request answered SERVER_BUSY.
    private func admitAssembly(_ connection: Connection, _ header: RequestHeader) -> Bool {
        let length = Int(header.bodyLength)
        if length > budget.allowance {
            guard budget.fits(length) else { return false }
            connection.assemblyReservedBytes = length
            recharge(connection)
        }
        return true
    }

    /// Updates the memory budget with what `connection` holds now.
    func recharge(_ connection: Connection) {
        let held = connections[connection.slot] === connection ? connection.heldBytes : 0
        guard held != connection.charged else { return }
        budget.charge(from: connection.charged, to: held)
        connection.charged = held
    }

    /// While there is room: connections in line for it start a read each, in turn, those
    /// holding little first (`MemoryBudget`); then connections that stopped reading for lack of
    /// room go on.
    private func serveBudgetWaiters() {
        guard budget.hasRoom, budget.isContended else { return }
        let share = budget.contendedShare
        while budget.hasRoom,
            let connection = budget.dequeue(
                isCurrent: { connections[$0.slot] === $0 }, eligible: { !readWindowIsFull($0) && $0.heldBytes < share })
        {
            startParkedReads(connection, turnCame: true)
        }
        guard budget.hasRoom, !budget.pausedConnections.isEmpty else { return }
        let paused = budget.pausedConnections
        budget.pausedConnections.removeAll()
        for connection in paused where connections[connection.slot] === connection {
            connection.pausedForMemory = false
            scheduleFlush(connection)
        }
    }

    /// Moves a connection on as far as it can: retries a blocked append, parses stashed bytes, and
    /// arms the next receive when it may read.
    func pump(_ connection: Connection) {
        defer { recharge(connection) }
        if connection.blockedAppend != nil { retryBlockedAppend(connection) }
        while connection.stash.count > 0 && canRead(connection) {
            let consumed = frame(connection, connection.stash.bytes, now: monotonicNanos())
            guard case .open = connection.state else { return }
            connection.stash.removeFirst(consumed)
            if consumed == 0 { break }
        }
        guard connection.stash.count == 0 else { return }
        connection.stash.removeAll(keepingCapacityUpTo: 4 << 10)
        if connection.peerClosed {
            if connection.blockedAppend == nil, case .open = connection.state {
                beginClosing(connection, flushFirst: true, reason: "peer closed")
            }
        } else if canRead(connection) {
            armReceive(connection)
        }
    }

    /// Answers with an error that ends the connection: the stream can no longer be trusted.
    func protocolError(_ connection: Connection, _ code: ErrorCode, _ body: ErrorBody, requestID: UInt64, opcode: UInt8 = 0) {
        counters.countError(code)
        logger.debug("protocol error", metadata: ["connection": "\(connection.slot)", "code": "\(code)", "message": "\(body.message)"])
        var response = PendingResponse(sequence: connection.takeSequence(), requestID: requestID, opcode: opcode, counted: false)
        response.ready = true
        response.status = code.rawValue
        response.body = .error(body)
        if !connection.responses.isFull { connection.responses.append(response) }
        scheduleFlush(connection)
        beginClosing(connection, flushFirst: true, reason: body.message)
    }

    // MARK: Sending

    func scheduleFlush(_ connection: Connection) {
        guard !connection.flushScheduled else { return }
        connection.flushScheduled = true
        flushQueue.append(connection)
    }

    private func flushConnections() {
        var index = 0
        while index < flushQueue.count {
            let connection = flushQueue[index]
            index += 1
            connection.flushScheduled = false
            guard connections[connection.slot] === connection else { continue }
            // The send deadline counts from when output started waiting, not from the last send
            // ever: a connection idle for longer than the deadline must not be closed the moment
            // its next response is queued.
            let wasIdle = connection.output.backlogBytes == 0
            writeReadyResponses(connection)
            if wasIdle && connection.output.backlogBytes > 0 { connection.sendClock.outputStarted(nowNanos: monotonicNanos()) }
            if connection.output.prepareSend() {
                let entry = ring.submissionEntry()
                io_uring_prep_sendmsg(entry, connection.fd, connection.output.message, UInt32(MSG_NOSIGNAL))
                io_uring_sqe_set_data64(entry, userData(.send, connection))
                connection.operationsInFlight += 1
            }
            pump(connection)
            closeIfDrained(connection)
            finishIfDone(connection)
        }
        flushQueue.removeAll(keepingCapacity: true)
    }

    private func sent(_ connection: Connection, result: Int32) {
        guard result >= 0 else {
            connection.output.sendFinished(bytes: 0)
            beginClosing(connection, flushFirst: false, reason: "send failed: errno \(-result)")
            return
        }
        connection.output.sendFinished(bytes: Int(result))
        connection.sendClock.progressed(nowNanos: monotonicNanos())
        counters.bytesSent += UInt64(result)
        recharge(connection)
        // The client collected results: reads waiting for its read window may start.
        if !connection.parkedReads.isEmpty && !connection.queuedForMemory { startParkedReads(connection) }
        scheduleFlush(connection)
    }

    // MARK: Closing

    /// Stops reading from a connection. With `flushFirst`, responses already owed are sent first.
    func beginClosing(_ connection: Connection, flushFirst: Bool, reason: String) {
        switch connection.state {
        case .open:
            logger.debug("closing connection", metadata: ["connection": "\(connection.slot)", "reason": "\(reason)"])
            connection.state = .closing(flushFirst: flushFirst)
            if connection.receiveArmed { cancel(connection) }
            connection.stash.removeAll(keepingCapacityUpTo: 0)
            if flushFirst { answerLongPollsNow(connection) }
            recharge(connection)
        case .closing(let flushing):
            guard flushing && !flushFirst else { return }
            connection.state = .closing(flushFirst: false)
        }
        if !flushFirst {
            connection.blockedAppend = nil
            abandonWaits(connection)
            shutDownSocket(connection)
        }
        finishIfDone(connection)
    }

    private func cancel(_ connection: Connection) {
        let entry = ring.submissionEntry()
        io_uring_prep_cancel64(entry, userData(.receive, connection), 0)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
    }

    private func shutDownSocket(_ connection: Connection) {
        guard connection.operationsInFlight > 0, !connection.socketShutDown else { return }
        connection.socketShutDown = true
        let entry = ring.submissionEntry()
        io_uring_prep_shutdown(entry, connection.fd, Int32(SHUT_RDWR))
        io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
    }

    /// Frees a closing connection once it owes nothing (or gave up on owing) and the ring holds
    /// no operation of its.
    func finishIfDone(_ connection: Connection) {
        guard case .closing(let flushFirst) = connection.state, connections[connection.slot] === connection else { return }
        if flushFirst && (connection.responses.count > 0 || connection.output.backlogBytes > 0) { return }
        if flushFirst {
            connection.state = .closing(flushFirst: false)
            if connection.receiveArmed { cancel(connection) }
        }
        guard connection.operationsInFlight == 0 else {
            shutDownSocket(connection)
            return
        }
        abandonWaits(connection)
        if !connection.descriptorClosed {
            connection.descriptorClosed = true
            submitClose(connection.fd)
        }
        // Answers to storage requests still in flight find the slot by its generation; holding
        // the slot until they are back means no later connection can ever be their target.
        guard connection.storageRequestsInFlight == 0 else { return }
        connections[connection.slot] = nil
        freeSlots.append(connection.slot)
        openConnections -= 1
        connection.responses.removeAll()
        connection.output.discardAll()
        recharge(connection)
        logger.debug("connection closed", metadata: ["connection": "\(connection.slot).\(connection.generation)"])
        checkDrained()
    }

    // MARK: Deadlines

    private func sweepConnections(now: UInt64) {
        let headerTimeout = UInt64(configuration.headerTimeoutMillis) * 1_000_000
        let payloadTimeout = UInt64(configuration.payloadTimeoutMillis) * 1_000_000
        let idleTimeout = UInt64(configuration.idleTimeoutMillis) * 1_000_000
        let sendTimeout = UInt64(configuration.sendTimeoutMillis) * 1_000_000
        // While reads wait for memory, clients that hold some and take none of their responses
        // lose it sooner (`MemoryBudget`).
        let contended = budget.isContended
        let pressureSendTimeout = min(sendTimeout, MemoryBudget.pressureSendTimeoutNanos)
        for case let connection? in connections {
            if connection.sendClock.isLate(backlogBytes: connection.output.backlogBytes, nowNanos: now, timeoutNanos: sendTimeout) {
                counters.timeouts += 1
                beginClosing(connection, flushFirst: false, reason: "client stopped reading its responses")
                continue
            }
            if contended, connection.charged >= budget.allowance,
                connection.sendClock.isLate(backlogBytes: connection.output.backlogBytes, nowNanos: now, timeoutNanos: pressureSendTimeout)
            {
                counters.timeouts += 1
                counters.memoryPressureCloses += 1
                beginClosing(connection, flushFirst: false, reason: "client stopped reading its responses while reads wait for memory")
                continue
            }
            guard case .open = connection.state else { continue }
            if let started = connection.requestStartedNanos, connection.header == nil, now > started + headerTimeout {
                counters.timeouts += 1
                protocolError(
                    connection, .timedOut, ErrorBody(message: "request header not complete within \(configuration.headerTimeoutMillis) ms"), requestID: 0)
            } else if let headerDone = connection.headerCompletedNanos, let header = connection.header, now > headerDone + payloadTimeout {
                counters.timeouts += 1
                protocolError(
                    connection, .timedOut, ErrorBody(message: "request body not complete within \(configuration.payloadTimeoutMillis) ms"),
                    requestID: header.requestID, opcode: header.opcode)
            } else if contended, let header = connection.header, connection.charged >= budget.allowance,
                now > connection.lastActivityNanos + pressureSendTimeout
            {
                // A body holding memory that others wait for must keep arriving.
                counters.timeouts += 1
                counters.memoryPressureCloses += 1
                protocolError(
                    connection, .timedOut, ErrorBody(message: "request body stalled for \(pressureSendTimeout / 1_000_000) ms while the server is short of memory"),
                    requestID: header.requestID, opcode: header.opcode)
            } else if connection.responses.count == 0 && connection.partialRequestBytes == 0 && connection.output.backlogBytes == 0
                && now > connection.lastActivityNanos + idleTimeout
            {
                beginClosing(connection, flushFirst: false, reason: "idle for \(configuration.idleTimeoutMillis) ms")
            }
        }
    }

    // MARK: Stopping

    private func armWakeup() {
        let entry = ring.submissionEntry()
        io_uring_prep_read(entry, wakeup.fd, wakeBuffer, 8, 0)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.wakeup))
    }

    private func wokenUp(result: Int32) {
        if control.stopRequested, case .running = phase { beginDraining() }
        if case .stopped = phase { return }
        armWakeup()
    }

    /// Graceful stop: no new connections or requests; waiting readers are answered now; in-flight
    /// appends finish and are acknowledged; every log gets a clean checkpoint; then connections
    /// close. Bounded by the shutdown timeout.
    private func beginDraining() {
        logger.notice("stopping: finishing in-flight requests")
        phase = .draining(deadlineNanos: monotonicNanos() + UInt64(configuration.shutdownTimeoutMillis) * 1_000_000)
        metricsEndpoint?.close(ring: ring)
        if listenFD >= 0 {
            let entry = ring.submissionEntry()
            io_uring_prep_cancel64(entry, EventLoop.userData(.accept), 0)
            io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
            submitClose(listenFD)
            listenFD = -1
        }
        answerAllLongPolls()
        for case let connection? in connections {
            if let blocked = connection.blockedAppend {
                connection.blockedAppend = nil
                respond(connection, sequence: blocked.sequence, error: .shuttingDown)
            }
            closeIfDrained(connection)
        }
        store.beginShutdown()
        checkDrained()
    }

    /// While stopping, a connection with nothing owed and nothing half-received closes at once;
    /// one in the middle of a request stays until that request is answered (SHUTTING_DOWN).
    func closeIfDrained(_ connection: Connection) {
        guard case .draining = phase, case .open = connection.state, connection.responses.count == 0,
            connection.partialRequestBytes == 0, connection.stash.count == 0
        else { return }
        beginClosing(connection, flushFirst: true, reason: "server stopping")
    }

    /// Called when the store has nothing more in flight; the loop ends once connections are gone too.
    func storeShutDown(clean: Bool) {
        guard case .draining = phase else { return }
        storeFinished = true
        control.cleanShutdown = clean
        if !clean { logger.warning("stopping without a clean checkpoint for every log; the next start will scan their tails") }
        checkDrained()
    }

    func checkDrained() {
        guard case .draining = phase, storeFinished, openConnections == 0 else { return }
        phase = .stopped
    }

    private func forceStop(reason: String) {
        logger.warning("stopping without waiting further", metadata: ["reason": "\(reason)"])
        for case let connection? in connections { beginClosing(connection, flushFirst: false, reason: reason) }
        phase = .stopped
    }

    private func closeEverything() {
        for case let connection? in connections where connection.operationsInFlight == 0 && !connection.descriptorClosed {
            submitClose(connection.fd)
        }
        ring.submit()
    }
}

extension EventLoop {
    func publishMetrics() {
        let waiting = waiters.values.reduce(0) { $0 + $1.readers.count }
        metrics.publish(counters: counters, store: store, openConnections: openConnections, waiting: waiting)
    }
}

/// A read waiting at the end of a log for new batches, by deadline.
struct LongPollDeadline: Comparable {
    var deadlineNanos: UInt64
    var logID: LogID
    var context: UInt64

    static func < (lhs: LongPollDeadline, rhs: LongPollDeadline) -> Bool { lhs.deadlineNanos < rhs.deadlineNanos }
}

func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
