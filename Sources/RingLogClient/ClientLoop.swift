import Glibc
import RingLogIO
import Synchronization

/// One thread running the loop core (`IOLoop`) for client connections: the client-side twin of
/// the server's loop. Work is posted with `execute` from any thread; everything it touches lives
/// on the loop thread, so connections need no locks.
public final class ClientLoop: Sendable {
    fileprivate struct Inbox {
        var work: [@Sendable (LoopCore) -> Void] = []
        /// The loop is (about to be) asleep in the ring and needs the eventfd to wake.
        var sleeping = false
        var stopping = false
    }

    /// Shared by the loop thread and the threads posting work.
    fileprivate final class Mailbox: Sendable {
        let state = Mutex(Inbox())

        /// The work posted so far; from now until the ring wait returns, new work must signal.
        func take() -> (work: [@Sendable (LoopCore) -> Void], stopping: Bool) {
            state.withLock { state in
                state.sleeping = !state.stopping
                defer { state.work.removeAll(keepingCapacity: true) }
                return (state.work, state.stopping)
            }
        }

        func awake() { state.withLock { $0.sleeping = false } }
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
            do { core = try LoopCore(mailbox: mailbox, wakeup: wakeup) } catch { fatalError("RingLog client cannot set up io_uring: \(error)") }
            core.run()
        }
    }

    /// Runs `work` on the loop thread, soon. Safe from any thread.
    package func execute(_ work: @escaping @Sendable (LoopCore) -> Void) {
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

/// The loop thread's state around the loop core: its sockets waiting to send, work to run at the
/// end of a turn, producers made through the async API. Use it only from work posted with
/// `ClientLoop.execute` or from callbacks the loop makes.
package final class LoopCore: IOLoopDriver {
    package let io: IOLoop
    private let mailbox: ClientLoop.Mailbox
    private var dirtySockets: [ClientSocket] = []
    /// Work to run at the end of the current turn (after completions are handled).
    private var deferred: [() -> Void] = []
    /// Producers created through the async API, by key.
    var producers: [Int: ProducerCore] = [:]
    private var nextProducerKey = 1
    private var kept: [AnyObject] = []
    private var stopping = false

    fileprivate init(mailbox: ClientLoop.Mailbox, wakeup: Wakeup) throws(RingError) {
        self.mailbox = mailbox
        io = IOLoop(ring: try Ring.forEventLoop(entries: 1024, completionEntries: 8192))
        io.watch(wakeup) {}
    }

    fileprivate func run() {
        io.run(driver: self)
        for handle in openSockets { (io.handler(at: handle.slot)?.handler as? ClientSocket)?.close(reason: "the client loop stopped") }
        io.flushSubmissions()
        io.drain(timeoutNanos: 1_000_000_000)
        // Sockets hold the core strongly; whatever is left goes with the loop.
        io.forgetHandlers()
        dirtySockets.removeAll()
    }

    private var openSockets: [IOHandle] = []

    package func beforeWait(_ loop: IOLoop) {
        let (work, stop) = mailbox.take()
        for item in work { item(self) }
        if stop {
            stopping = true
            loop.stop()
        }
        flushSockets()
    }

    package func afterCompletions(_ loop: IOLoop) {
        mailbox.awake()
        let later = deferred
        deferred.removeAll()
        for action in later { action() }
        flushSockets()
    }

    package func nextDeadline(_ loop: IOLoop) -> UInt64? { stopping ? 0 : nil }

    /// Monotonic nanoseconds.
    package var nowNanos: UInt64 { MonotonicClock.nanos() }

    /// Keeps `object` alive as long as the loop runs (for work driven only by callbacks).
    package func keepAlive(_ object: AnyObject) { kept.append(object) }

    func register(_ producer: ProducerCore) -> Int {
        defer { nextProducerKey += 1 }
        producers[nextProducerKey] = producer
        return nextProducerKey
    }

    // MARK: Sockets

    /// Opens a connection; `completion` runs on the loop thread when it is up or has failed.
    package func connect(to address: SocketAddress, completion: @escaping (Result<ClientSocket, RingLogError>) -> Void) {
        let socket = ClientSocket(core: self, address: address, onConnected: completion)
        openSockets.append(socket.handle)
        socket.startConnecting()
    }

    /// The socket `handle` names, if it is still open on this loop.
    package func socket(_ handle: IOHandle) -> ClientSocket? {
        guard let (handler, generation) = io.handler(at: handle.slot), generation == handle.generation else { return nil }
        return handler as? ClientSocket
    }

    func forget(_ socket: ClientSocket) {
        openSockets.removeAll { $0 == socket.handle }
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
    package func schedule(afterNanos nanos: UInt64, _ action: @escaping () -> Void) -> UInt64 {
        io.schedule(afterNanos: nanos, action)
    }

    package func cancelTimer(_ id: UInt64) { io.cancelTimer(id) }
}
