import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Finding the first batch appended at or after a time, across segments, after a restart (when
/// the older segments' indexes come from their files) and after a trim.
@Suite struct TimeSeekTests {
    /// Appends `count` batches, the virtual clock moving 10 ms before each; returns each batch's
    /// offset and append time.
    func appendTimed(_ harness: Harness, _ id: LogID, count: Int) throws -> [(offset: LogOffset, time: UInt64)] {
        var batches: [(LogOffset, UInt64)] = []
        for seed in 0..<count {
            harness.driver.nowMicros += 10_000
            let time = harness.driver.nowMicros
            batches.append((try harness.append(id, payload(1_500 + seed % 7 * 100, seed: seed)), time))
        }
        return batches
    }

    func expectAnswers(_ harness: Harness, _ id: LogID, _ batches: [(offset: LogOffset, time: UInt64)], start: Int = 0) throws {
        let end = harness.store.log(id)!.committedEnd
        for (index, batch) in batches.enumerated() {
            let expected = batches[max(index, start)].offset
            #expect(try harness.seek(id, atOrAfter: batch.time).get() == expected, "exactly at batch \(index)'s time")
            #expect(try harness.seek(id, atOrAfter: batch.time - 5_000).get() == expected, "just before batch \(index)")
        }
        #expect(try harness.seek(id, atOrAfter: 0).get() == batches[start].offset, "before everything: the first kept batch")
        #expect(try harness.seek(id, atOrAfter: batches.last!.time + 1).get() == end, "after everything: the committed end")
    }

    @Test func everyBatchIsFoundByItsTimeAcrossSegmentsAndRestarts() throws {
        let harness = try Harness()
        let id = try harness.createLog("timed")
        #expect(try harness.seek(id, atOrAfter: 0).get() == .zero, "an empty log answers its end")
        let batches = try appendTimed(harness, id, count: 120)
        #expect(harness.store.log(id)!.info.segmentCount > 2, "the batches span several segments")
        try expectAnswers(harness, id, batches)
        try harness.driver.crashAndRecover()
        try expectAnswers(harness, id, batches)
        try harness.shutDownCleanlyAndReopen()
        try expectAnswers(harness, id, batches)
    }

    @Test func aTrimmedBatchIsAnsweredWithTheStart() throws {
        let harness = try Harness()
        let id = try harness.createLog("trimmed")
        let batches = try appendTimed(harness, id, count: 80)
        _ = try harness.trim(id, to: batches[50].offset).get()
        try expectAnswers(harness, id, batches, start: 50)
    }

    @Test func theClockSteppingBackKeepsTheSearchOrdered() throws {
        let harness = try Harness()
        let id = try harness.createLog("stepped")
        var batches = try appendTimed(harness, id, count: 20)
        harness.driver.nowMicros -= 3_600_000_000
        // Held at the newest time: found at the first batch with that time.
        let held = try harness.append(id, payload(100, seed: 99))
        #expect(try harness.seek(id, atOrAfter: batches.last!.time + 1).get() == harness.store.log(id)!.committedEnd)
        harness.driver.nowMicros += 7_200_000_000
        batches += try appendTimed(harness, id, count: 5)
        #expect(try harness.seek(id, atOrAfter: batches[19].time).get() == batches[19].offset)
        #expect(try harness.seek(id, atOrAfter: batches[19].time + 1).get() == batches[20].offset)
        #expect(held < batches[20].offset)
    }

    @Test func anUnknownLogIsRefused() throws {
        let harness = try Harness()
        #expect(try harness.seek(LogID(42), atOrAfter: 0).failureValue == .unknownLog("id 42"))
    }
}
