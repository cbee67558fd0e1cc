import CLiburing
import DequeModule
import Glibc
import HeapModule

/// Something that submits operations to an `IOLoop` and is told when each completes.
public protocol IOHandler: AnyObject {
    /// One operation of this handler completed (for a multishot one: one of its completions).
    func completed(_ completion: IOCompletion)
    /// The handle was released and no operation of it is left in the ring: the handler will hear
    /// nothing more, and the handle's slot may go to someone else.
    func released(_ handle: IOHandle)
}

extension IOHandler {
    public func released(_ handle: IOHandle) {}
}

/// A handler's place in the loop: its slot and the generation the slot had when it was given.
public struct IOHandle: Equatable, Hashable, Sendable {
    public let slot: Int
    public let generation: UInt32

    public init(slot: Int, generation: UInt32) {
        self.slot = slot
        self.generation = generation
    }

    /// No handle (the loop's own slot, which no handler is given).
    public static let none = IOHandle(slot: 0, generation: 0)
}

/// What a loop's owner does around each turn (Redis's beforeSleep, and after the completions).
public protocol IOLoopDriver: AnyObject {
    /// Before the loop submits and waits: issue what the last turn made possible.
    func beforeWait(_ loop: IOLoop)
    /// After every completion of the turn was handled.
    func afterCompletions(_ loop: IOLoop)
    /// Monotonic nanoseconds of the next thing the driver must do on a clock, if any.
    func nextDeadline(_ loop: IOLoop) -> UInt64?
}

/// The one io_uring event loop core: it owns the ring, gives every user of it a handle in one
/// slot table, carries out their operations and hands each completion back to the handler that
/// submitted it, with timers and a cross-thread wake-up. The server's connections, its metrics
/// endpoint, the storage executor and the client library all run on it.
///
/// Each operation's user data is its kind, a tag, and the handle (slot and generation). A slot is
/// reused only once its handle was released *and* none of its operations is left in the ring, so
/// a completion can only ever reach the handler that submitted it. When the submission queue is
/// full, operations wait in order and go in as it drains. Not thread-safe: one thread creates and
/// runs it (`Wakeup` and `post` are the ways in from other threads).
public final class IOLoop {
    public let ring: Ring

    struct Slot {
        var handler: IOHandler?
        var generation: UInt32 = 0
        var context: UInt64 = 0
        /// Operations submitted and not completed (a multishot one counts until its last).
        var inFlight = 0
        var releasing = false
    }

    /// The slot table, grown by doubling and written in place. Not an Array: every submit and
    /// completion writes to it, and an in-place write to an Array of references that a class
    /// holds costs a uniqueness check and a runtime exclusivity check each time. Each access here
    /// is a plain load of the pointer, which the compiler can prove never overlaps another.
    private var slots: UnsafeMutablePointer<Slot>
    private var slotCount = 0
    private var slotCapacity = 64
    private var freeSlots: [Int] = []
    /// Operations that found the submission queue full, oldest first.
    private var unqueued: Deque<(operation: RingOperation, userData: UInt64)> = []
    private var unqueuedOperations = 0

    private struct Timer: Comparable {
        var deadlineNanos: UInt64
        var id: UInt64
        static func < (lhs: Timer, rhs: Timer) -> Bool { lhs.deadlineNanos < rhs.deadlineNanos }
    }
    private var timers = Heap<Timer>()
    private var timerActions: [UInt64: () -> Void] = [:]
    private var nextTimerID: UInt64 = 1

    private var wakeups: [(wakeup: Wakeup, counter: UnsafeMutablePointer<UInt64>, action: () -> Void)] = []
    private var stopRequested = false

    /// Slots reserved for the loop's own operations (wake-up reads, fire-and-forget closes).
    private static let internalSlot = 0
    private final class InternalHandler: IOHandler {
        /// Not weak: a weak reference gives the loop a side table, and every retain and release
        /// of it takes the runtime's slow path. The loop owns this handler and outlives it.
        unowned(unsafe) var loop: IOLoop?
        func completed(_ completion: IOCompletion) {
            guard completion.kind == .readCounter, let loop else { return }
            loop.wakeupCompleted(index: Int(completion.tag))
        }
    }
    private let internalHandler = InternalHandler()

    public init(ring: Ring) {
        self.ring = ring
        slots = .allocate(capacity: slotCapacity)
        internalHandler.loop = self
        appendSlot(Slot(handler: internalHandler))
    }

    deinit {
        for wakeup in wakeups { wakeup.counter.deallocate() }
        slots.deinitialize(count: slotCount)
        slots.deallocate()
    }

    private func appendSlot(_ slot: Slot) {
        if slotCount == slotCapacity {
            let grown = UnsafeMutablePointer<Slot>.allocate(capacity: slotCapacity * 2)
            grown.moveInitialize(from: slots, count: slotCount)
            slots.deallocate()
            slots = grown
            slotCapacity *= 2
        }
        (slots + slotCount).initialize(to: slot)
        slotCount += 1
    }

    // MARK: Handles

    /// Gives `handler` a handle; `context` comes back in every completion of it.
    public func register(_ handler: IOHandler, context: UInt64 = 0) -> IOHandle {
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            precondition(slotCount < 1 << 24, "more than 16 million handles on one loop")
            appendSlot(Slot())
            slot = slotCount - 1
        }
        slots[slot].handler = handler
        slots[slot].context = context
        slots[slot].releasing = false
        return IOHandle(slot: slot, generation: slots[slot].generation)
    }

    /// Ends a handle: once none of its operations is left in the ring (at once when none is),
    /// the handler gets `released` and the slot becomes free. Completions until then still reach
    /// the handler.
    public func release(_ handle: IOHandle) {
        guard isCurrent(handle), !slots[handle.slot].releasing else { return }
        slots[handle.slot].releasing = true
        finishReleaseIfIdle(handle.slot)
    }

    /// Whether `handle` still names its slot's owner.
    @inline(__always)
    public func isCurrent(_ handle: IOHandle) -> Bool {
        handle.slot < slotCount && slots[handle.slot].generation == handle.generation && slots[handle.slot].handler != nil
    }

    /// The handler holding `slot` and the slot's whole generation, if the slot is in use.
    @inline(__always)
    public func handler(at slot: Int) -> (handler: IOHandler, generation: UInt32)? {
        guard slot > IOLoop.internalSlot, slot < slotCount, let handler = slots[slot].handler else { return nil }
        return (handler, slots[slot].generation)
    }

    /// Operations of `handle` in the ring now.
    public func operationsInFlight(_ handle: IOHandle) -> Int { isCurrent(handle) ? slots[handle.slot].inFlight : 0 }

    /// Handles given out and not yet free (the loop's own slot excluded).
    public var handlesInUse: Int { slotCount - 1 - freeSlots.count }

    private func finishReleaseIfIdle(_ slot: Int) {
        guard slots[slot].releasing, slots[slot].inFlight == 0, let handler = slots[slot].handler else { return }
        let handle = IOHandle(slot: slot, generation: slots[slot].generation)
        slots[slot].handler = nil
        slots[slot].releasing = false
        slots[slot].generation &+= 1
        freeSlots.append(slot)
        handler.released(handle)
    }

    // MARK: Submitting

    /// The user data an operation of `kind` with `tag` for `handle` carries: kind (8 bits), tag
    /// (8), generation (24), slot (24).
    @inline(__always)
    public static func userData(_ kind: RingOperation.Kind, tag: UInt8, handle: IOHandle) -> UInt64 {
        UInt64(kind.rawValue) << 56 | UInt64(tag) << 48 | UInt64(handle.generation & 0xFF_FFFF) << 24 | UInt64(handle.slot)
    }

    /// Submits `operation` for `handle`; its completion comes back to the handle's handler.
    @inline(__always)
    public func submit(_ operation: RingOperation, for handle: IOHandle, tag: UInt8 = 0) {
        precondition(isCurrent(handle) && !slots[handle.slot].releasing, "submitting for a released handle")
        slots[handle.slot].inFlight += 1
        enqueue(operation, userData: IOLoop.userData(operation.kind, tag: tag, handle: handle))
    }

    /// Submits an operation whose result nobody needs (closing a descriptor, cancelling).
    public func submitUnobserved(_ operation: RingOperation) {
        submit(operation, for: IOHandle(slot: IOLoop.internalSlot, generation: slots[IOLoop.internalSlot].generation), tag: 255)
    }

    /// Cancels `handle`'s operation of `kind` with `tag`, if one is in the ring.
    public func cancel(_ kind: RingOperation.Kind, tag: UInt8 = 0, of handle: IOHandle) {
        submitUnobserved(.cancel(userData: IOLoop.userData(kind, tag: tag, handle: handle)))
    }

    @inline(__always)
    private func enqueue(_ operation: RingOperation, userData: UInt64) {
        // The count, not the queue, on this path: the queue's accesses are checked at run time.
        guard unqueuedOperations == 0, let entry = ring.submissionEntry() else {
            unqueued.append((operation, userData))
            unqueuedOperations += 1
            return
        }
        operation.prepare(entry)
        io_uring_sqe_set_data64(entry, userData)
    }

    /// Moves waiting operations into the submission queue, in order, while it has room.
    private func submitUnqueued() {
        while unqueuedOperations > 0, let first = unqueued.first, let entry = ring.submissionEntry() {
            unqueued.removeFirst()
            unqueuedOperations -= 1
            first.operation.prepare(entry)
            io_uring_sqe_set_data64(entry, first.userData)
        }
    }

    /// Operations waiting for room in the submission queue.
    public var unqueuedCount: Int { unqueuedOperations }

    // MARK: Completions

    /// Hands every ready completion to its handler; returns how many there were.
    @discardableResult
    public func dispatchCompletions() -> Int {
        ring.drainCompletions { userData, result, flags in dispatch(userData: userData, result: result, flags: flags) }
    }

    @inline(__always)
    private func dispatch(userData: UInt64, result: Int32, flags: UInt32) {
        let slot = Int(userData & 0xFF_FFFF)
        guard let kind = RingOperation.Kind(rawValue: UInt8(truncatingIfNeeded: userData >> 56)), slot < slotCount,
            slots[slot].generation & 0xFF_FFFF == UInt32((userData >> 24) & 0xFF_FFFF), let handler = slots[slot].handler
        else {
            preconditionFailure("a completion for no operation in flight (user data \(userData))")
        }
        // A multishot operation stays in flight until its last completion.
        if flags & IORING_CQE_F_MORE == 0 { slots[slot].inFlight -= 1 }
        let tag = UInt8(truncatingIfNeeded: userData >> 48)
        if slot != IOLoop.internalSlot || tag != 255 {
            handler.completed(IOCompletion(kind: kind, tag: tag, context: slots[slot].context, result: result, flags: flags))
        }
        if slots[slot].releasing { finishReleaseIfIdle(slot) }
    }

    // MARK: Timers

    /// Runs `action` on the loop thread at `deadlineNanos` (monotonic); returns an id for
    /// `cancelTimer`.
    @discardableResult
    public func schedule(atNanos deadlineNanos: UInt64, _ action: @escaping () -> Void) -> UInt64 {
        let id = nextTimerID
        nextTimerID += 1
        timerActions[id] = action
        timers.insert(Timer(deadlineNanos: deadlineNanos, id: id))
        return id
    }

    @discardableResult
    public func schedule(afterNanos nanos: UInt64, _ action: @escaping () -> Void) -> UInt64 {
        schedule(atNanos: MonotonicClock.nanos() + nanos, action)
    }

    public func cancelTimer(_ id: UInt64) { timerActions[id] = nil }

    private func runDueTimers(now: UInt64) {
        while let first = timers.min, first.deadlineNanos <= now {
            _ = timers.removeMin()
            if let action = timerActions.removeValue(forKey: first.id) { action() }
        }
    }

    // MARK: Waking from other threads

    /// Runs `action` on the loop thread each time `wakeup` is signalled (signals that arrive
    /// together run it once).
    public func watch(_ wakeup: Wakeup, _ action: @escaping () -> Void) {
        precondition(wakeups.count < 255, "too many wake-ups on one loop")
        let counter = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
        wakeups.append((wakeup, counter, action))
        armWakeup(index: wakeups.count - 1)
    }

    private func armWakeup(index: Int) {
        let watched = wakeups[index]
        submit(
            .readCounter(fd: watched.wakeup.fd, into: watched.counter),
            for: IOHandle(slot: IOLoop.internalSlot, generation: slots[IOLoop.internalSlot].generation), tag: UInt8(index))
    }

    private func wakeupCompleted(index: Int) {
        guard index < wakeups.count else { return }
        if !stopRequested { armWakeup(index: index) }
        let action = wakeups[index].action
        action()
    }

    // MARK: Running

    /// Runs turns until `stop` is called: timers that are due, the driver's work before waiting,
    /// one submit-and-wait (until a completion, the next timer or the driver's next deadline),
    /// every completion, the driver's work after them.
    public func run(driver: IOLoopDriver) {
        stopRequested = false
        while !stopRequested { turn(driver: driver) }
    }

    /// Ends `run` after the current turn.
    public func stop() { stopRequested = true }

    public func turn(driver: IOLoopDriver) {
        let now = MonotonicClock.nanos()
        runDueTimers(now: now)
        driver.beforeWait(self)
        submitUnqueued()
        var next = timers.min?.deadlineNanos ?? UInt64.max
        if let deadline = driver.nextDeadline(self) { next = min(next, deadline) }
        // Sleep at least 50 µs so a deadline a hair away does not spin; at most a second.
        let timeout = next > now ? min(max(next - now, 50_000), 1_000_000_000) : 50_000
        let result = ring.submitAndWait(count: 1, timeoutNanos: Int64(timeout))
        precondition(result >= 0 || result == -ETIME || result == -EINTR || result == -EBUSY, "io_uring_enter failed: errno \(-result)")
        dispatchCompletions()
        submitUnqueued()
        driver.afterCompletions(self)
    }

    /// Submits what is queued without waiting.
    public func flushSubmissions() {
        submitUnqueued()
        ring.submit()
    }

    /// Waits until every handle's operations have completed (or `timeoutNanos` passed), handing
    /// completions to their handlers; for shutting down.
    public func drain(timeoutNanos: UInt64) {
        let deadline = MonotonicClock.nanos() + timeoutNanos
        while hasOperationsInFlight() || !unqueued.isEmpty,
            MonotonicClock.nanos() < deadline
        {
            submitUnqueued()
            ring.submitAndWait(count: 1, timeoutNanos: 100_000_000)
            dispatchCompletions()
        }
    }

    /// Whether any handler but the loop's own has an operation in the ring.
    private func hasOperationsInFlight() -> Bool {
        for index in 0..<slotCount where index != Self.internalSlot && slots[index].inFlight > 0 { return true }
        return false
    }

    /// Lets go of every handler, for an owner whose handlers hold it strongly, once the loop has
    /// ended and drained: nothing is dispatched after this.
    public func forgetHandlers() {
        for index in 0..<slotCount where index != Self.internalSlot { slots[index].handler = nil }
    }

    /// Whether this kernel's io_uring has every operation in `kinds`; the names of those it lacks.
    public func unsupported(_ kinds: [RingOperation.Kind]) -> [String] {
        ring.unsupportedOperations(RingOperation.ringOpcodes(kinds))
    }
}
