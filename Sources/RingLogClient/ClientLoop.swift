import CLiburing
import Glibc
import HeapModule
import RingLogIO
import Synchronization

/// One thread with one io_uring that runs client connections (the client-side twin of the
/// server's event loop). Work is posted with `execute` from any thread; everything it touches
/// lives on the loop thread, so connections need no locks.
public final class ClientLoop: Sendable {
    private struct Inbox {
        var work: [@Sendable (LoopCore) -> Void] = []
        /// The loop is (about to be) asleep in the ring and needs the eventfd to wake.
        var sleeping = false
        var stopping = false
    }

    /// Shared by the loop thread and the threads posting work.
    private final class Mailbox: Sendable {
        let state = Mutex(Inbox())
    }

    private let mailbox = Mailbox()
    private let wakeup = Wakeup()
    private let thread: pthread_t

    /// A loop shared by clients that do not bring their own.
    public static let shared = ClientLoop()

    public init() {
        let mailbox = self.mailbox
        let wakeup = self.wakeup
        thread = spawnThread {
            let core: LoopCore
            do { core = try LoopCore(wakeup: wakeup) } catch { fatalError("RingLog client cannot set up io_uring: \(error)") }
            core.run {
                mailbox.state.withLock { state in
                    // From here until the ring wait returns, new work must signal the eventfd.
                    state.sleeping = !state.stopping
                    defer { state.work.removeAll(keepingCapacity: true) }
                    return (state.work, state.stopping)
                }
            } acknowledgeWake: {
                mailbox.state.withLock { $0.sleeping = false }
            }
        }
    }

    /// Runs `work` on the loop thread, soon. Safe from any thread.
    public func execute(_ work: @escaping @Sendable (LoopCore) -> Void) {
        let wake = mailbox.state.withLock { state in
            state.work.append(work)
            defer { state.sleeping = false }
            return state.sleeping
        }
        if wake { wakeup.signal() }
    }

    /// Stops the loop after the work already posted; connections are closed.
    public func shutdown() {
        mailbox.state.withLock { $0.stopping = true }
        wakeup.signal()
        joinThread(thread)
    }
}

/// The loop thread's state: the ring, the connections, the timers. Use it only from work posted
/// with `ClientLoop.execute` or from callbacks the loop makes.
public final class LoopCore {
    enum Kind: UInt64 {
        case wakeup = 1
        case connect = 2
        case receive = 3
        case send = 4
        case ignored = 5
    }

    let ring: Ring
    private let wakeup: Wakeup
    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private var sockets: [ClientSocket?] = []
    private var freeSocketIDs: [Int] = []
    /// Counts every socket this loop opened; never wraps, so a stale (id, generation) handle can
    /// never name a later socket.
    private var generation: UInt64 = 0
    private var dirtySockets: [ClientSocket] = []
    private var timers = Heap<TimerEntry>()
    private var timerActions: [UInt64: () -> Void] = [:]
    private var nextTimerID: UInt64 = 1
    /// Work to run at the end of the current turn (after completions are handled).
    private var deferred: [() -> Void] = []
    /// Producers created through the async API, by key.
    var producers: [Int: ProducerCore] = [:]
    private var nextProducerKey = 1

    private var kept: [AnyObject] = []

    /// Keeps `object` alive as long as the loop runs (for work driven only by callbacks).
    public func keepAlive(_ object: AnyObject) { kept.append(object) }

    func register(_ producer: ProducerCore) -> Int {
        defer { nextProducerKey += 1 }
        producers[nextProducerKey] = producer
        return nextProducerKey
    }

    struct TimerEntry: Comparable {
        var deadlineNanos: UInt64
        var id: UInt64
        static func < (lhs: TimerEntry, rhs: TimerEntry) -> Bool { lhs.deadlineNanos < rhs.deadlineNanos }
    }

    init(wakeup: Wakeup) throws(RingError) {
        self.wakeup = wakeup
        do {
            ring = try Ring(entries: 1024, completionEntries: 8192, flags: IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
        } catch where error.errno == EINVAL {
            ring = try Ring(entries: 1024, completionEntries: 8192)
        }
    }

    deinit { wakeBuffer.deallocate() }

    /// Monotonic nanoseconds.
    public var nowNanos: UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    func run(takeWork: () -> ([@Sendable (LoopCore) -> Void], Bool), acknowledgeWake: () -> Void) {
        armWakeup()
        while true {
            let (work, stopping) = takeWork()
            for item in work { item(self) }
            if stopping { break }
            runTimers()
            flushSockets()
            let now = nowNanos
            let timeout = timers.min.map { $0.deadlineNanos > now ? Int64($0.deadlineNanos - now) : 0 }
            ring.submitAndWait(count: 1, timeoutNanos: timeout)
            acknowledgeWake()
            ring.drainCompletions { userData, result, flags in dispatch(userData, result, flags) }
            let later = deferred
            deferred.removeAll()
            for action in later { action() }
            flushSockets()
        }
        for case let socket? in sockets { socket.close(reason: "the client loop stopped") }
        ring.submit()
    }

    private func armWakeup() {
        let entry = ring.submissionEntry()
        io_uring_prep_read(entry, wakeup.fd, wakeBuffer, 8, 0)
        io_uring_sqe_set_data64(entry, LoopCore.userData(.wakeup))
    }

    /// Kind (8 bits), socket id (24), low 32 bits of the generation. A socket is released only
    /// once none of its operations is in the ring, so its completions cannot reach a later one.
    static func userData(_ kind: Kind, socket: Int = 0, generation: UInt64 = 0) -> UInt64 {
        kind.rawValue << 56 | UInt64(socket & 0xFF_FFFF) << 32 | (generation & 0xFFFF_FFFF)
    }

    private func dispatch(_ userData: UInt64, _ result: Int32, _ flags: UInt32) {
        guard let kind = Kind(rawValue: userData >> 56) else { return }
        if kind == .wakeup {
            armWakeup()
            return
        }
        let id = Int((userData >> 32) & 0xFF_FFFF)
        guard id < sockets.count, let socket = sockets[id], socket.generation & 0xFFFF_FFFF == userData & 0xFFFF_FFFF else { return }
        switch kind {
        case .connect: socket.connected(result: result)
        case .receive: socket.received(result: result)
        case .send: socket.sent(result: result)
        case .wakeup, .ignored: break
        }
    }

    // MARK: Sockets

    /// Opens a connection; `completion` runs on the loop thread when it is up or has failed.
    public func connect(to address: SocketAddress, completion: @escaping (Result<ClientSocket, RingLogError>) -> Void) {
        let id = freeSocketIDs.popLast() ?? { sockets.append(nil); return sockets.count - 1 }()
        precondition(id <= 0xFF_FFFF, "more than 16 million sockets on one client loop")
        generation += 1
        let socket = ClientSocket(core: self, id: id, generation: generation, address: address, onConnected: completion)
        sockets[id] = socket
        socket.startConnecting()
    }

    public func socket(_ id: Int, generation: UInt64) -> ClientSocket? {
        guard id < sockets.count, let socket = sockets[id], socket.generation == generation else { return nil }
        return socket
    }

    func release(_ socket: ClientSocket) {
        guard sockets[socket.id] === socket else { return }
        sockets[socket.id] = nil
        freeSocketIDs.append(socket.id)
    }

    func markDirty(_ socket: ClientSocket) {
        guard !socket.flushScheduled else { return }
        socket.flushScheduled = true
        dirtySockets.append(socket)
    }

    private func flushSockets() {
        let dirty = dirtySockets
        dirtySockets.removeAll(keepingCapacity: true)
        for socket in dirty {
            socket.flushScheduled = false
            socket.flush()
        }
    }

    /// Runs `action` after the completions of this turn have been handled.
    func deferToEndOfTurn(_ action: @escaping () -> Void) { deferred.append(action) }

    // MARK: Timers

    /// Runs `action` on the loop thread after `nanos`; returns an id for `cancelTimer`.
    @discardableResult
    public func schedule(afterNanos nanos: UInt64, _ action: @escaping () -> Void) -> UInt64 {
        let id = nextTimerID
        nextTimerID += 1
        timerActions[id] = action
        timers.insert(TimerEntry(deadlineNanos: nowNanos + nanos, id: id))
        return id
    }

    public func cancelTimer(_ id: UInt64) { timerActions[id] = nil }

    private func runTimers() {
        let now = nowNanos
        while let first = timers.min, first.deadlineNanos <= now {
            _ = timers.removeMin()
            if let action = timerActions.removeValue(forKey: first.id) { action() }
        }
    }
}
