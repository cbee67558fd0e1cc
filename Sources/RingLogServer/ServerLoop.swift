import DequeModule
import Logging
import RingLogDiskIO
import RingLogIO
import RingLogStorage
import RingLogWire

/// The server on the loop core: the one thread that owns the ring, the logs and the connections
/// (docs/architecture.md).
///
/// Each turn of the loop (`IOLoop.turn`): time-driven work and the store's writes and fdatasyncs
/// go out (`beforeWait`); the loop waits for completions and hands each to its handler (a
/// connection, the listener, the disk executor, the metrics endpoint); then the store's events are
/// applied (acknowledgements, finished reads), reads waiting for memory start, and the responses
/// that became ready are sent (`afterCompletions`). Nothing blocks and nothing takes a lock.
final class ServerLoop: IOLoopDriver {
    enum Phase {
        case running
        /// Stop requested: no new connections or requests; finishing what is in flight.
        case draining(deadlineNanos: UInt64)
        case stopped
    }

    let configuration: ServerConfiguration
    let loop: IOLoop
    let store: LogStore
    let buffers: ProvidedBuffers
    let control: ServerControl
    let logger: Logger
    private let wakeup: Wakeup
    private var executor: DiskExecutor!
    private var listener: Listener!
    private var kafkaListener: Listener?
    /// Serves the Kafka listener's connections, when there is one.
    private(set) var kafka: KafkaDispatcher?
    private var metricsEndpoint: MetricsEndpoint?
    private(set) var dispatcher: RequestDispatcher!

    let waiters = Waiters()
    var budget: MemoryBudget
    var counters = ServerCounters()
    private var metrics = ServerMetrics()
    private(set) var phase = Phase.running

    /// Open connections, for the deadline sweep (each knows its place in the list).
    private(set) var connections: [Connection] = []
    private var flushQueue: [Connection] = []
    /// Connections waiting for room in the store to place a batch; retried when room frees.
    var blockedConnections: Deque<Connection> = []
    /// The store reported its shutdown complete.
    private var storeFinished = false

    private var nextSweepNanos: UInt64 = 0
    private var nextMaintenanceNanos: UInt64 = 0
    private var nextMetricsPublishNanos: UInt64 = 0
    static let sweepIntervalNanos: UInt64 = 100_000_000
    static let maintenanceIntervalNanos: UInt64 = 100_000_000

    init(
        configuration: ServerConfiguration, ring: Ring, store: LogStore, listenFD: Int32, metricsFD: Int32?, kafkaFD: Int32? = nil, wakeup: Wakeup,
        control: ServerControl, logger: Logger
    ) throws(RingError) {
        self.configuration = configuration
        loop = IOLoop(ring: ring)
        self.store = store
        self.wakeup = wakeup
        self.control = control
        self.logger = logger
        buffers = try ProvidedBuffers(ring: ring, groupID: 1, count: configuration.receiveBufferCount, bufferBytes: configuration.receiveBufferBytes)
        budget = MemoryBudget(limit: configuration.maxBufferedBytesTotal, allowance: configuration.receiveBufferBytes)
        executor = DiskExecutor(loop: loop, store: store, faults: configuration.diskFaults)
        dispatcher = RequestDispatcher(server: self)
        listener = Listener(server: self, fd: listenFD)
        if let kafkaFD, let settings = configuration.kafka {
            kafka = KafkaDispatcher(server: self, settings: settings)
            kafkaListener = Listener(server: self, fd: kafkaFD, kafka: true)
        }
        metricsEndpoint = metricsFD.map { MetricsEndpoint(loop: loop, listenFD: $0, exporter: { [unowned self] in metricsText() }) }
    }

    /// The operations the server submits; the daemon refuses to start if the kernel lacks one.
    static let requiredOperations: [RingOperation.Kind] =
        DiskOperation.ringOperationKinds + [.acceptMultishot, .receiveProvided, .sendMessage, .send, .shutdown, .cancel, .readCounter, .nop]

    // MARK: Running

    func run() {
        loop.watch(wakeup) { [unowned self] in
            if control.stopRequested, case .running = phase { beginDraining() }
        }
        listener.arm()
        kafkaListener?.arm()
        metricsEndpoint?.arm()
        loop.run(driver: self)
    }

    func beforeWait(_ loop: IOLoop) {
        let now = MonotonicClock.nanos()
        if case .draining(let deadline) = phase, now >= deadline { forceStop(reason: "shutdown timeout passed") }
        runTimers(now: now)
        store.flush()
        executor.submitQueued()
    }

    func afterCompletions(_ loop: IOLoop) {
        applyStoreEvents()
        serveBudgetWaiters()
        flushConnections()
        if case .stopped = phase { loop.stop() }
    }

    func nextDeadline(_ loop: IOLoop) -> UInt64? {
        var next = min(nextSweepNanos, nextMaintenanceNanos, nextMetricsPublishNanos)
        if let poll = waiters.nextDeadlineNanos { next = min(next, poll) }
        if let groups = kafka?.nextDeadlineNanos { next = min(next, groups) }
        if case .draining(let deadline) = phase { next = min(next, deadline) }
        return next
    }

    private func runTimers(now: UInt64) {
        if now >= nextMaintenanceNanos {
            store.maintain()
            nextMaintenanceNanos = now + ServerLoop.maintenanceIntervalNanos
        }
        dispatcher.expireLongPolls(nowNanos: now)
        kafka?.runTimers(nowNanos: now)
        if now >= nextSweepNanos {
            sweepConnections(now: now)
            metricsEndpoint?.sweep(now: now)
            nextSweepNanos = now + ServerLoop.sweepIntervalNanos
        }
        if now >= nextMetricsPublishNanos {
            publishMetrics()
            nextMetricsPublishNanos = now + 1_000_000_000
        }
    }

    // MARK: Connections

    var isStopping: Bool { if case .running = phase { false } else { true } }

    /// A connection the listener accepted.
    func accepted(fd: Int32, kafka isKafka: Bool = false) {
        let connection = Connection(server: self, fd: fd, nowNanos: MonotonicClock.nanos(), kafka: isKafka ? KafkaSession() : nil)
        connection.listPosition = connections.count
        connections.append(connection)
        counters.connectionsAccepted += 1
        logger.debug("connection opened", metadata: ["connection": "\(connection.handle.slot).\(connection.handle.generation)"])
        connection.armReceive()
    }

    /// Whether another connection may be accepted now.
    var acceptsConnections: Bool { !isStopping && connections.count < configuration.maxConnections }

    /// The connection is gone for good: its handle is free.
    func connectionReleased(_ connection: Connection) {
        let position = connection.listPosition
        guard position >= 0, position < connections.count, connections[position] === connection else { return }
        let last = connections.removeLast()
        if last !== connection {
            connections[position] = last
            last.listPosition = position
        }
        connection.listPosition = -1
        recharge(connection)
        logger.debug("connection closed", metadata: ["connection": "\(connection.handle.slot).\(connection.handle.generation)"])
        checkDrained()
    }

    /// The connection a response context belongs to, if it is still that slot's owner.
    func connection(for context: UInt64) -> Connection? {
        let (slot, generation, _) = ResponseContext.parts(context)
        guard let (handler, current) = loop.handler(at: slot), UInt16(truncatingIfNeeded: current) == generation else { return nil }
        return handler as? Connection
    }

    /// Removes everything waiting on behalf of `connection` (acknowledgements, long-polls, reads
    /// waiting for memory): it will never be answered.
    func abandonWaits(_ connection: Connection) {
        waiters.remove(connection)
        // A Kafka connection's waiting parts hold it (and their batches): they go with it.
        connection.kafka?.abandon()
        budget.remove(connection)
        budget.parkedReadCount -= connection.parkedReads.count
        connection.parkedReads.removeAll()
    }

    /// True when the connection may take more requests now: it is open, not waiting to place a
    /// batch, within its own limits, and either holds less than the allowance or the server's
    /// memory budget has room (otherwise it waits for room: `MemoryBudget`).
    func canRead(_ connection: Connection) -> Bool {
        guard connection.isOpen, !connection.isPaused else { return false }
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

    /// Updates the memory budget with what `connection` holds now.
    func recharge(_ connection: Connection) {
        let held = connection.listPosition >= 0 ? connection.heldBytes : 0
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
                isCurrent: { $0.listPosition >= 0 }, eligible: { !dispatcher.readWindowIsFull($0) && $0.heldBytes < share })
        {
            dispatcher.startParkedReads(connection, turnCame: true)
        }
        guard budget.hasRoom, !budget.pausedConnections.isEmpty else { return }
        let paused = budget.pausedConnections
        budget.pausedConnections.removeAll()
        for connection in paused where connection.listPosition >= 0 {
            connection.pausedForMemory = false
            scheduleFlush(connection)
        }
    }

    func scheduleFlush(_ connection: Connection) {
        guard !connection.flushScheduled else { return }
        connection.flushScheduled = true
        flushQueue.append(connection)
    }

    /// Sends every response that became ready this turn.
    private func flushConnections() {
        var index = 0
        while index < flushQueue.count {
            let connection = flushQueue[index]
            index += 1
            connection.flushScheduled = false
            guard connection.listPosition >= 0 else { continue }
            connection.flush()
        }
        flushQueue.removeAll(keepingCapacity: true)
    }

    func noteError(_ code: ErrorCode, _ body: ErrorBody, on connection: Connection) {
        counters.countError(code)
        logger.debug(
            "error response",
            metadata: ["connection": "\(connection.handle.slot).\(connection.handle.generation)", "code": "\(code)", "message": "\(body.message)"])
    }

    private func sweepConnections(now: UInt64) {
        let sendNanos = UInt64(configuration.sendTimeoutMillis) * 1_000_000
        let limits = DeadlineLimits(
            headerNanos: UInt64(configuration.headerTimeoutMillis) * 1_000_000,
            payloadNanos: UInt64(configuration.payloadTimeoutMillis) * 1_000_000,
            idleNanos: UInt64(configuration.idleTimeoutMillis) * 1_000_000, sendNanos: sendNanos,
            // While reads wait for memory, clients that hold some and take none of their
            // responses, or stop sending a body, lose it sooner (`MemoryBudget`).
            pressureNanos: budget.isContended ? min(sendNanos, MemoryBudget.pressureSendTimeoutNanos) : nil)
        for connection in connections { connection.checkDeadlines(nowNanos: now, limits: limits) }
    }

    // MARK: Store events

    private func applyStoreEvents() {
        while let event = store.nextEvent() {
            switch event {
            case .written(let id):
                guard let log = store.log(id) else { continue }
                waiters.acknowledge(id, upTo: log.writtenEnd, durable: false, committedEnd: log.committedEnd)
            case .committed(let id):
                guard let log = store.log(id) else { continue }
                waiters.acknowledge(id, upTo: log.committedEnd, durable: true, committedEnd: log.committedEnd)
                dispatcher.wakeReaders(id, committedEnd: log.committedEnd)
            case .appendsRewound(let id, let from, let error):
                waiters.failAcknowledgements(id, from: from, error: error)
                if case .unknownLog = error { waiters.failReaders(id, error: error) }
            case .logFailed(let id, let error):
                waiters.failAcknowledgements(id, from: .zero, error: error)
            case .spaceAvailable:
                let blocked = blockedConnections
                blockedConnections.removeAll()
                for connection in blocked where connection.listPosition >= 0 { connection.pump() }
            case .readCompleted(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .read(result)) else { continue }
                dispatcher.finishRead(connection, sequence, result)
            case .created(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .created(result.map { _ in () })) else { continue }
                switch result {
                case .success(let info): connection.answer(sequence, .encoded(RequestDispatcher.describe(info).encoded()))
                case .failure(let error): dispatcher.answer(connection, sequence, error: error)
                }
            case .deleted(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .deleted(result.map { _ in () })) else { continue }
                switch result {
                case .success: connection.answer(sequence, .empty)
                case .failure(let error): dispatcher.answer(connection, sequence, error: error)
                }
            case .trimmed(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .sought(result)) else { continue }
                switch result {
                case .success(let start): connection.answer(sequence, .offset(OffsetMessage(offset: start)))
                case .failure(let error): dispatcher.answer(connection, sequence, error: error)
                }
            case .cursorUpdated(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .cursor(result)) else { continue }
                switch result {
                case .success(let position?): connection.answer(sequence, .encoded(RequestDispatcher.encode(position).encoded()))
                case .success(nil): connection.answer(sequence, .empty)
                case .failure(let error): dispatcher.answer(connection, sequence, error: error)
                }
            case .sought(let context, let result):
                guard let (connection, sequence) = storageAnswered(context, .sought(result)) else { continue }
                switch result {
                case .success(let offset): connection.answer(sequence, .offset(OffsetMessage(offset: offset)))
                case .failure(let error): dispatcher.answer(connection, sequence, error: error)
                }
            case .shutdownComplete(let clean):
                storeShutDown(clean: clean)
            }
        }
    }

    /// A storage request's answer came back: the connection it belongs to (its handle was held
    /// for it) and the response's sequence. A Kafka connection's answer goes to `KafkaDispatcher`
    /// (nil is returned).
    private func storageAnswered(_ context: UInt64, _ answer: @autoclosure () -> KafkaStorageAnswer) -> (Connection, UInt32)? {
        guard let connection = connection(for: context) else { return nil }
        connection.storageRequestsInFlight -= 1
        defer { connection.finishIfDone() }
        let token = ResponseContext.parts(context).sequence
        if let session = connection.kafka {
            kafka?.storageAnswered(connection, session, token: token, answer())
            return nil
        }
        return (connection, token)
    }

    // MARK: Stopping

    /// Graceful stop: no new connections or requests; waiting readers are answered SHUTTING_DOWN;
    /// in-flight appends finish and are acknowledged; every log gets a clean checkpoint; then
    /// connections close. Bounded by the shutdown timeout.
    private func beginDraining() {
        logger.notice("stopping: finishing in-flight requests")
        phase = .draining(deadlineNanos: MonotonicClock.nanos() + UInt64(configuration.shutdownTimeoutMillis) * 1_000_000)
        metricsEndpoint?.close()
        listener.close()
        kafkaListener?.close()
        kafka?.beginDraining()
        for (connection, sequence) in waiters.takeAllLongPolls() { dispatcher.answer(connection, sequence, error: .shuttingDown) }
        for connection in connections where !connection.parkedReads.isEmpty {
            let parked = connection.parkedReads
            budget.remove(connection)
            budget.parkedReadCount -= parked.count
            connection.parkedReads.removeAll()
            for read in parked { dispatcher.answer(connection, read.sequence, error: .shuttingDown) }
        }
        for connection in connections {
            if let blocked = connection.blockedAppend {
                connection.blockedAppend = nil
                dispatcher.answer(connection, blocked.sequence, error: .shuttingDown)
            }
            if let session = connection.kafka { kafka?.abandonBlockedProduce(connection, session) }
            closeIfDrained(connection)
        }
        store.beginShutdown()
        checkDrained()
    }

    /// While stopping, a connection with nothing owed and nothing half-received closes at once;
    /// one in the middle of a request stays until that request is answered (SHUTTING_DOWN).
    func closeIfDrained(_ connection: Connection) {
        guard case .draining = phase, connection.isOpen, connection.responses.count == 0, connection.partialRequestBytes == 0,
            connection.stash.count == 0
        else { return }
        connection.beginClosing(flushFirst: true, reason: "server stopping")
    }

    private func storeShutDown(clean: Bool) {
        guard case .draining = phase else { return }
        storeFinished = true
        control.cleanShutdown = clean
        if !clean { logger.warning("stopping without a clean checkpoint for every log; the next start will scan their tails") }
        checkDrained()
    }

    private func checkDrained() {
        guard case .draining = phase, storeFinished, connections.isEmpty else { return }
        phase = .stopped
    }

    private func forceStop(reason: String) {
        logger.warning("stopping without waiting further", metadata: ["reason": "\(reason)"])
        for connection in connections { connection.beginClosing(flushFirst: false, reason: reason) }
        phase = .stopped
    }

    /// After the loop ends: closes every descriptor the store holds (releasing the data
    /// directory's lock) and the connections', and waits for the ring to finish what is still in
    /// it, so the loop's memory can go.
    func release() {
        for connection in connections { loop.submitUnobserved(.close(fd: connection.fd)) }
        for fd in store.closeAllDescriptors() { loop.submitUnobserved(.close(fd: fd)) }
        loop.flushSubmissions()
        loop.drain(timeoutNanos: 2_000_000_000)
        // Connections and the dispatcher hold the server strongly (and waits their connection):
        // let go of them so it can go.
        for connection in connections { waiters.remove(connection) }
        connections.removeAll()
        flushQueue.removeAll()
        blockedConnections.removeAll()
        dispatcher = nil
        kafka = nil
        loop.forgetHandlers()
    }

    // MARK: Metrics

    /// Takes the store's histogram samples (once a second, so they do not pile up unscraped).
    func publishMetrics() {
        metrics.collect(store)
    }

    /// `GET /metrics`: the same statistics as SERVER_STATS, per-log gauges, histograms, process.
    func metricsText() -> [UInt8] {
        metrics.collect(store)
        var lags: [(log: String, cursor: String, lagBytes: UInt64)] = []
        for log in store.logs {
            guard case .success(let cursors) = store.cursors(log.id) else { continue }
            for cursor in cursors { lags.append((log.name, cursor.name, cursor.lagBytes)) }
        }
        return metrics.render(statistics: statistics(), errors: errorCounts(), logs: store.logs, cursors: lags)
    }
}
