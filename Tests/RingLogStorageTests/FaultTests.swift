import Glibc
import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Each test injects one disk failure and states the expected outcome.
@Suite struct FaultTests {
    /// fdatasync fails with EIO: nothing past the last good sync is ever acknowledged, the log goes
    /// read-only with a storage-failed error, committed data still serves, and a restart recovers
    /// to the last successful sync.
    @Test func fdatasyncFailureStopsWritesButKeepsServingCommittedData() throws {
        let harness = try Harness()
        let id = try harness.createLog("eio")
        let kept = try (0..<3).map { try harness.append(id, payload(500, seed: $0)) }
        let committed = harness.store.log(id)!.committedEnd
        _ = harness.driver.takeEvents()
        harness.disk.syncFault = { path in path.hasSuffix(".seg") ? EIO : nil }
        let outcome = try harness.appendAndSettle(id, payload(500, seed: 9))
        guard case .placed = outcome else { throw TestFailure("append was not placed: \(outcome)") }
        let events = harness.driver.takeEvents()
        #expect(events.contains { if case .logFailed(id, .storageFailed) = $0 { true } else { false } })
        #expect(!events.contains { if case .committed(id) = $0 { true } else { false } }, "no commit past the failure")
        #expect(harness.store.log(id)!.committedEnd == committed)
        harness.disk.syncFault = nil
        let refused = Batch.make(payload: [1]).withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        guard case .failed(.storageFailed) = refused else { throw TestFailure("append after failure: \(refused)") }
        harness.driver.runUntilQuiet()
        #expect(harness.store.log(id)!.committedEnd == committed, "a later successful fsync must not commit lost data")
        #expect(try harness.readAll(id).map(\.offset) == kept)
        try harness.driver.crashAndRecover()
        #expect(harness.store.log(id)!.committedEnd == committed)
        #expect(try harness.readAll(id).map(\.payload) == (0..<3).map { payload(500, seed: $0) })
        #expect(try harness.append(id, payload(10, seed: 1)) == committed, "after a restart the log takes appends again")
    }

    /// A shutdown reports whether every log got its clean checkpoint: a failed log makes it unclean
    /// (the next start scans that log's tail).
    @Test func aShutdownWithAFailedLogIsReportedUnclean() throws {
        let harness = try Harness()
        let healthy = try harness.createLog("healthy")
        let broken = try harness.createLog("broken")
        try harness.append(healthy, payload(10, seed: 1))
        try harness.append(broken, payload(10, seed: 2))
        // The segment's path is the one it was opened under (in staging), so match the name.
        harness.disk.syncFault = { path in path.contains("broken") && path.hasSuffix(".seg") ? EIO : nil }
        _ = try harness.appendAndSettle(broken, payload(10, seed: 3))
        harness.disk.syncFault = nil
        let failed = try harness.waitFor("logFailed") { if case .logFailed(let id, _) = $0 { id } else { nil } }
        #expect(failed == broken)
        harness.store.beginShutdown()
        let clean = try harness.waitFor("shutdownComplete") { if case .shutdownComplete(let clean) = $0 { clean } else { nil } }
        #expect(!clean)
    }

    /// The next segment cannot be preallocated: appends that need it get disk-full, nothing
    /// committed is damaged, and appends work again once space returns.
    @Test func diskFullWhilePreallocatingIsReportedAndPassesWhenSpaceReturns() throws {
        let disk = SimulatedDisk()
        // Whole segments allocated up front: the full disk meets the spare, not the active
        // segment's growth (AllocationTests covers that).
        var configuration = StoreConfiguration.small()
        configuration.allocateAheadBytes = 0
        let harness = try Harness(configuration: configuration, disk: disk)
        let id = try harness.createLog("full")
        disk.capacityBytes = disk.usedBytes
        var appended: [LogOffset] = []
        var refusal: AppendOutcome?
        for seed in 0..<10 {
            let outcome = try harness.appendAndSettle(id, payload(15_000, seed: seed))
            if case .placed(let offset, _) = outcome { appended.append(offset) } else { refusal = outcome; break }
        }
        guard case .failed(.diskFull(let detail))? = refusal else { throw TestFailure("expected disk full, got \(String(describing: refusal))") }
        #expect(detail.contains("preallocating"))
        #expect(appended.count == 4, "the first segment still filled up")
        disk.capacityBytes = .max
        harness.passTime(micros: 2_000_000)
        let after = try harness.append(id, payload(15_000, seed: 99))
        #expect(after == LogOffset(4 * 15_048))
        #expect(try harness.readAll(id).map(\.offset) == appended + [after])
    }

    @Test func diskFullWhileCreatingALogLeavesNoTrace() throws {
        let disk = SimulatedDisk()
        let harness = try Harness(disk: disk)
        disk.capacityBytes = disk.usedBytes + 1000
        guard case .failure(.diskFull) = try harness.createLogResult("nospace") else { throw TestFailure("created without space") }
        harness.driver.runUntilQuiet()
        #expect(harness.store.logs.isEmpty)
        #expect(disk.names(in: "/data/staging").isEmpty)
        disk.capacityBytes = .max
        #expect(throws: Never.self) { _ = try harness.createLog("nospace") }
    }

    /// A segment write fails with ENOSPC: the appends it carried are undone and reported, the
    /// offsets are reused by later appends, and nothing committed moves.
    @Test func diskFullOnASegmentWriteUndoesOnlyTheUnwrittenAppends() throws {
        let disk = SimulatedDisk()
        let harness = try Harness(disk: disk)
        let id = try harness.createLog("rewind")
        let kept = try harness.append(id, payload(300, seed: 1))
        disk.writeFault = { path, _, _ in path.hasSuffix(".seg") ? .error(errno: ENOSPC) : nil }
        let outcome = try harness.appendAndSettle(id, payload(300, seed: 2))
        guard case .placed(let lostOffset, _) = outcome else { throw TestFailure("not placed: \(outcome)") }
        let events = harness.driver.takeEvents()
        #expect(events.contains { if case .appendsRewound(id, lostOffset, .diskFull) = $0 { true } else { false } })
        disk.writeFault = nil
        let next = try harness.append(id, payload(300, seed: 3))
        #expect(next == lostOffset, "the undone offset is given to the next append")
        #expect(try harness.readAll(id).map(\.payload) == [payload(300, seed: 1), payload(300, seed: 3)])
        #expect(try harness.readAll(id).first?.offset == kept)
    }

    /// Short writes and EINTR are retried until every byte is written; nothing is acknowledged short.
    @Test func shortWritesAndInterruptedWritesAreRetried() throws {
        let disk = SimulatedDisk()
        let harness = try Harness(disk: disk)
        let id = try harness.createLog("short")
        var calls = 0
        disk.writeFault = { path, _, count in
            guard path.hasSuffix(".seg") else { return nil }
            calls += 1
            if calls % 3 == 0 { return .error(errno: EINTR) }
            return calls % 3 == 1 && count > 1 ? .shortWrite(bytes: count / 2) : nil
        }
        let expected = (0..<30).map { payload(777, seed: $0) }
        for bytes in expected { try harness.append(id, bytes) }
        disk.writeFault = nil
        #expect(calls > 30)
        #expect(try harness.readAll(id).map(\.payload) == expected)
        try harness.driver.crashAndRecover()
        #expect(try harness.readAll(id).map(\.payload) == expected)
    }

    /// The tail cache is shared: an append to one log that waits for room is woken when another
    /// log's write frees it, not only by its own log's writes (issue 12's stalled appends).
    @Test func anAppendWaitingForCacheRoomIsWokenByAnotherLogsWrite() throws {
        let harness = try Harness(configuration: .small(segmentBytes: 1 << 20))
        let busy = try harness.createLog("busy")
        let idle = try harness.createLog("idle")
        harness.driver.holdBack = { if case .write = $0 { true } else { false } }
        let batch = Batch.make(payload: payload(16_000, seed: 1))
        for _ in 0..<16 {
            let outcome = batch.withUnsafeBytes { harness.store.append(to: busy, batch: $0) }
            guard case .placed = outcome else { throw TestFailure("the busy log's appends should fit: \(outcome)") }
        }
        let waiting = batch.withUnsafeBytes { harness.store.append(to: idle, batch: $0) }
        #expect(waiting == .wouldBlock, "the cache is full of the busy log's unwritten bytes")
        _ = harness.driver.takeEvents()
        harness.driver.holdBack = nil
        harness.driver.runUntilQuiet()
        let events = harness.driver.takeEvents()
        #expect(events.contains { if case .spaceAvailable = $0 { true } else { false } }, "\(events)")
        #expect(batch.withUnsafeBytes { harness.store.append(to: idle, batch: $0) } != .wouldBlock)
    }

    @Test func retentionBySizeDeletesWholeOldSegmentsButNeverTheActiveOne() throws {
        let harness = try Harness(configuration: .small(retentionBytes: 128 << 10))
        let id = try harness.createLog("sized")
        for seed in 0..<120 { try harness.append(id, payload(3000, seed: seed)) }
        harness.passTime(micros: 100_000)
        let log = try #require(harness.store.log(id))
        let kept = log.startOffset.distance(to: log.committedEnd)
        #expect(log.startOffset > .zero)
        #expect(kept <= 128 << 10 + 64 << 10)
        #expect(harness.segmentFiles("sized").count == log.info.segmentCount)
        #expect(try harness.readAll(id).first?.offset == log.startOffset)
    }

    @Test func retentionByAgeDeletesSegmentsWhoseNewestBatchIsTooOld() throws {
        let harness = try Harness(configuration: .small(retentionMicros: 60_000_000))
        let id = try harness.createLog("aged")
        for seed in 0..<50 { try harness.append(id, payload(3000, seed: seed)) }
        let segmentsBefore = harness.store.log(id)!.info.segmentCount
        harness.passTime(micros: 30_000_000)
        #expect(harness.store.log(id)!.startOffset == .zero, "nothing is old enough yet")
        harness.passTime(micros: 31_000_000)
        let log = try #require(harness.store.log(id))
        #expect(log.info.segmentCount == 1, "every sealed segment aged out; the active one stays")
        #expect(segmentsBefore > 1)
        #expect(log.startOffset == log.committedEnd.advanced(by: -log.info.storedBytes), "the start is the active segment's base")
    }

    @Test func trimToAnOffsetThatIsNotABatchStartIsRefused() throws {
        let harness = try Harness()
        let id = try harness.createLog("trimcheck")
        let offsets = try (0..<5).map { try harness.append(id, payload(100, seed: $0)) }
        #expect(try harness.trim(id, to: offsets[2].advanced(by: 1)).failureValue == .notBatchBoundary(offsets[2].advanced(by: 1)))
        let end = harness.store.log(id)!.committedEnd
        #expect(try harness.trim(id, to: end.advanced(by: 148)).failureValue == .offsetBeyondEnd(requested: end.advanced(by: 148), start: .zero, end: end))
        #expect(try harness.trim(id, to: offsets[2]).get() == offsets[2])
        #expect(try harness.trim(id, to: offsets[1]).get() == offsets[2], "trimming below the start changes nothing")
        #expect(try harness.trim(id, to: end).get() == end, "trimming to the end empties the log")
        #expect(try harness.read(id, from: end).map(\.isEmpty).get())
    }
}
