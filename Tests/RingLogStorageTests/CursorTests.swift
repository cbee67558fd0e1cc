import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Cursors: named positions in a log, durable when acknowledged, conditional on request.
@Suite struct CursorTests {
    @Test func anAcknowledgedCommitSurvivesACrashAndAConditionalOneFencesAWriter() throws {
        let harness = try Harness()
        let id = try harness.createLog("orders")
        let offsets = try (0..<5).map { try harness.append(id, payload(100, seed: $0)) }
        let at2 = CursorPosition(offset: offsets[2], index: 0)
        #expect(try harness.cursor(id, "billing", set: at2).get() == at2)
        try harness.driver.crashAndRecover()
        #expect(try harness.store.cursor(id, name: "billing").get() == at2)
        // Conditional: only from where the caller saw it.
        let at3 = CursorPosition(offset: offsets[3], index: 0)
        let stale = try harness.cursor(id, "billing", set: at3, expected: .some(CursorPosition(offset: offsets[1])))
        #expect(stale.failureValue == .cursorMismatch(name: "billing", current: at2))
        #expect(try harness.cursor(id, "billing", set: at3, expected: .some(at2)).get() == at3)
        // "Only if new" refuses an existing cursor and creates a missing one.
        #expect(try harness.cursor(id, "billing", set: at2, expected: .some(nil)).failureValue == .cursorMismatch(name: "billing", current: at3))
        #expect(try harness.cursor(id, "audit", set: CursorPosition(offset: offsets[4], index: 1), expected: .some(nil)).get() != nil)
        try harness.shutDownCleanlyAndReopen()
        #expect(try harness.store.cursors(id).get().map(\.name) == ["audit", "billing"])
        #expect(try harness.store.cursor(id, name: "audit").get() == CursorPosition(offset: offsets[4], index: 1))
        #expect(try harness.cursor(id, "audit").get() == nil, "deleted")
        try harness.driver.crashAndRecover()
        #expect(try harness.store.cursors(id).get().map(\.name) == ["billing"])
    }

    /// A commit not yet acknowledged when the power goes is found at the value before or after
    /// it, never anywhere else.
    @Test func aCrashLeavesACursorAtTheAcknowledgedValueOrALaterCommit() throws {
        for seed: UInt64 in 1...30 {
            let harness = try Harness(seed: seed)
            let id = try harness.createLog("c")
            let offsets = try (0..<4).map { try harness.append(id, payload(50, seed: $0)) }
            let acknowledged = CursorPosition(offset: offsets[1])
            _ = try harness.cursor(id, "x", set: acknowledged).get()
            let sent = CursorPosition(offset: offsets[3])
            guard case .pending = harness.store.commitCursor(id, name: "x", position: sent, expected: nil, context: 999) else {
                throw TestFailure("the commit was refused")
            }
            harness.driver.step(completing: Int(seed % 4))
            try harness.driver.crashAndRecover()
            let found = try harness.store.cursor(id, name: "x").get()
            #expect(found == acknowledged || found == sent, "seed \(seed): cursor at \(found)")
        }
    }

    @Test func badNamesLimitsAndPositionsAreRefused() throws {
        var configuration = StoreConfiguration.small()
        configuration.maxCursorsPerLog = 2
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("l")
        let end = try harness.append(id, payload(10, seed: 1)).advanced(by: Batch.minHeaderBytes + 10)
        #expect(try harness.cursor(id, "a/b", set: CursorPosition(offset: .zero)).failureValue.map { "\($0)" }?.contains("cursor name") == true)
        #expect(try harness.cursor(id, "past", set: CursorPosition(offset: end.advanced(by: 1))).failureValue != nil, "past the committed end")
        #expect(try harness.cursor(id, "one", set: CursorPosition(offset: end)).get() != nil, "the committed end itself is a position")
        #expect(try harness.cursor(id, "two", set: CursorPosition(offset: .zero)).get() != nil)
        #expect(try harness.cursor(id, "three", set: CursorPosition(offset: .zero)).failureValue == .tooManyCursors(limit: 2))
        #expect(try harness.cursor(id, "missing").failureValue == .unknownCursor("missing"))
        #expect(try harness.cursor(LogID(4242), "x", set: CursorPosition(offset: .zero)).failureValue == .unknownLog("id 4242"))
    }

    /// Commits arriving while the cursors file is being written wait and go out together.
    @Test func manyCommitsShareAFewFileWrites() throws {
        let harness = try Harness()
        let id = try harness.createLog("busy")
        let end = try harness.append(id, payload(10, seed: 1)).advanced(by: Batch.minHeaderBytes + 10)
        harness.driver.runUntilQuiet()
        let syncsBefore = harness.disk.operationCounts["fdatasync", default: 0]
        for round in 0..<50 {
            guard case .pending = harness.store.commitCursor(id, name: "c\(round % 7)", position: CursorPosition(offset: round % 2 == 0 ? .zero : end), expected: nil, context: UInt64(5_000 + round)) else {
                throw TestFailure("refused")
            }
            if round % 10 == 0 { harness.driver.step(completing: 1) }
        }
        harness.driver.runUntilQuiet()
        let answered = harness.driver.takeEvents().filter { if case .cursorUpdated(_, .success) = $0 { true } else { false } }.count
        #expect(answered == 50)
        let syncs = harness.disk.operationCounts["fdatasync", default: 0] - syncsBefore
        #expect(syncs > 0 && syncs < 15, "group commit: \(syncs) fdatasyncs for 50 commits")
    }
}
