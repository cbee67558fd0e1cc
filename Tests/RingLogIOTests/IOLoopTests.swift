import Glibc
import RingLogIO
import Synchronization
import SystemPackage
import Testing

/// The loop core: handles, completions, a full submission queue, timers, wake-ups.
@Suite struct IOLoopTests {
    /// Records every completion it is handed, and its release.
    final class Recorder: IOHandler {
        var completions: [IOCompletion] = []
        var releasedHandles: [IOHandle] = []
        func completed(_ completion: IOCompletion) { completions.append(completion) }
        func released(_ handle: IOHandle) { releasedHandles.append(handle) }
    }

    /// Runs turns with no work of its own until `done` says so (at most `turns`).
    final class Driver: IOLoopDriver {
        func beforeWait(_ loop: IOLoop) {}
        func afterCompletions(_ loop: IOLoop) {}
        func nextDeadline(_ loop: IOLoop) -> UInt64? { MonotonicClock.nanos() + 20_000_000 }
    }

    static func turn(_ loop: IOLoop, until done: () -> Bool, turns: Int = 200) {
        let driver = Driver()
        for _ in 0..<turns where !done() { loop.turn(driver: driver) }
    }

    static func makeLoop(entries: Int = 64) throws -> IOLoop {
        IOLoop(ring: try Ring(entries: UInt32(entries), completionEntries: UInt32(entries * 4)))
    }

    /// A released handle's slot goes to no one while an operation of it is in the ring; its
    /// completion still reaches it; then the slot is reused under a new generation, and the old
    /// handle no longer names it.
    @Test func aSlotIsReusedOnlyOnceNothingOfItsHandleIsInTheRing() throws {
        let loop = try Self.makeLoop()
        var pipeEnds: [Int32] = [0, 0]
        #expect(pipe(&pipeEnds) == 0)
        defer { close(pipeEnds[0]); close(pipeEnds[1]) }
        let first = Recorder()
        let handle = loop.register(first)
        var byte: UInt8 = 0
        withUnsafeMutableBytes(of: &byte) { loop.submit(.read(fd: pipeEnds[0], position: -1, into: $0, uncached: false), for: handle) }
        loop.release(handle)
        #expect(loop.isCurrent(handle), "still in the ring: not released yet")
        let second = Recorder()
        let other = loop.register(second)
        #expect(other.slot != handle.slot)
        var one: UInt8 = 7
        #expect(write(pipeEnds[1], &one, 1) == 1)
        Self.turn(loop, until: { !first.releasedHandles.isEmpty })
        #expect(first.completions.map(\.kind) == [.read])
        #expect(first.completions.first?.transferred == .success(1))
        #expect(first.releasedHandles == [handle])
        #expect(!loop.isCurrent(handle))
        let third = loop.register(Recorder())
        #expect(third.slot == handle.slot)
        #expect(third.generation != handle.generation)
        #expect(second.completions.isEmpty, "nothing reached the other handler")
    }

    /// When the submission queue is full, operations wait in order and all of them go in.
    @Test func aFullSubmissionQueueQueuesOperationsInOrder() throws {
        let loop = try Self.makeLoop(entries: 4)
        let recorder = Recorder()
        let handle = loop.register(recorder)
        for tag in 0..<60 { loop.submit(.nop, for: handle, tag: UInt8(tag)) }
        Self.turn(loop, until: { recorder.completions.count == 60 })
        #expect(recorder.completions.count == 60)
        #expect(Set(recorder.completions.map(\.tag)) == Set((0..<60).map(UInt8.init)))
        #expect(loop.unqueuedCount == 0)
        #expect(loop.operationsInFlight(handle) == 0)
    }

    /// Errors come back typed.
    @Test func failuresCarryTheirErrno() throws {
        let loop = try Self.makeLoop()
        let recorder = Recorder()
        let handle = loop.register(recorder)
        var byte: UInt8 = 0
        withUnsafeMutableBytes(of: &byte) { loop.submit(.read(fd: 12_345, position: 0, into: $0, uncached: false), for: handle) }
        Self.turn(loop, until: { !recorder.completions.isEmpty })
        #expect(recorder.completions.first?.errno == .badFileDescriptor)
        #expect(recorder.completions.first?.errno?.isProgrammingError == true)
    }

    /// Timers run once each, in deadline order; a cancelled one never runs.
    @Test func timersRunInOrderAndCancelledOnesDoNot() throws {
        let loop = try Self.makeLoop()
        var fired: [Int] = []
        let now = MonotonicClock.nanos()
        loop.schedule(atNanos: now + 30_000_000) { fired.append(3) }
        loop.schedule(atNanos: now + 10_000_000) { fired.append(1) }
        let cancelled = loop.schedule(atNanos: now + 20_000_000) { fired.append(2) }
        loop.cancelTimer(cancelled)
        Self.turn(loop, until: { fired.count == 2 })
        #expect(fired == [1, 3])
    }

    /// A wake-up signalled from another thread runs its action on the loop's thread.
    @Test func aWakeupFromAnotherThreadRunsOnTheLoop() throws {
        let loop = try Self.makeLoop()
        let wakeup = Wakeup()
        var woken = 0
        loop.watch(wakeup) { woken += 1 }
        let thread = spawnThread { wakeup.signal() }
        Self.turn(loop, until: { woken > 0 })
        joinThread(thread)
        #expect(woken == 1)
    }
}
