import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Finding the batch that holds a record number (how Kafka offsets become byte offsets): across
/// segments, after a crash and a clean restart (when the segments' indexes come from their files),
/// after a trim, and past format-1 batches.
@Suite struct RecordSeekTests {
    /// Appends `count` format-2 batches of 1 to 9 records each; returns each batch's offset and
    /// first record number.
    func appendCounted(_ harness: Harness, _ id: LogID, count: Int, firstRecord: UInt64 = 0) throws -> [(offset: LogOffset, first: UInt64, count: UInt32)] {
        var batches: [(LogOffset, UInt64, UInt32)] = []
        var next = firstRecord
        for seed in 0..<count {
            let records = UInt32(1 + seed % 9)
            let batch = Batch.make(payload: payload(1_300 + seed % 5 * 200, seed: seed), recordCount: records, format: .v2)
            guard case .placed(let offset, _) = try harness.appendAndSettle(id, batch: batch) else { throw TestFailure("not placed") }
            batches.append((offset, next, records))
            next += UInt64(records)
        }
        return batches
    }

    func expectAnswers(_ harness: Harness, _ id: LogID, _ batches: [(offset: LogOffset, first: UInt64, count: UInt32)], start: Int = 0) throws {
        let log = harness.store.log(id)!
        for (index, batch) in batches.enumerated() {
            let expected = batches[max(index, start)].offset
            for record in [batch.first, batch.first + UInt64(batch.count) - 1] {
                #expect(try harness.seek(id, record: record).get() == expected, "record \(record) of batch \(index)")
            }
        }
        let last = batches.last!
        #expect(log.committedRecords == last.first + UInt64(last.count), "the high watermark counts every record")
        #expect(try harness.seek(id, record: log.committedRecords).get() == log.committedEnd, "the next record: the committed end")
        #expect(try harness.seek(id, record: log.committedRecords + 1_000).get() == log.committedEnd, "far past the end")
        #expect(try harness.seek(id, record: 0).get() == batches[start].offset, "record 0: the first kept batch")
    }

    @Test func everyRecordIsFoundAcrossSegmentsCrashesAndRestarts() throws {
        let harness = try Harness()
        let id = try harness.createLog("counted")
        #expect(try harness.seek(id, record: 0).get() == .zero, "an empty log answers its end")
        let batches = try appendCounted(harness, id, count: 150)
        #expect(harness.store.log(id)!.info.segmentCount > 3, "the batches span several segments")
        try expectAnswers(harness, id, batches)
        try harness.driver.crashAndRecover()
        try expectAnswers(harness, id, batches)
        try harness.shutDownCleanlyAndReopen()
        try expectAnswers(harness, id, batches)
    }

    @Test func aTrimmedRecordIsAnsweredWithTheStart() throws {
        let harness = try Harness()
        let id = try harness.createLog("trimmed")
        let batches = try appendCounted(harness, id, count: 90)
        _ = try harness.trim(id, to: batches[60].offset).get()
        try expectAnswers(harness, id, batches, start: 60)
    }

    @Test func formatOneBatchesBeforeFormatTwoOnesAreCountedAndPassedOver() throws {
        let harness = try Harness()
        let id = try harness.createLog("mixed")
        // Format-1 batches still advance the record count (1 record each here).
        for seed in 0..<30 { try harness.append(id, payload(1_200, seed: seed)) }
        let batches = try appendCounted(harness, id, count: 60, firstRecord: 30)
        try expectAnswers(harness, id, batches)
        // A record of a format-1 batch finds the first format-2 batch.
        #expect(try harness.seek(id, record: 3).get() == batches[0].offset)
    }

    @Test func anUnknownLogIsRefused() throws {
        let harness = try Harness()
        #expect(try harness.seek(LogID(7), record: 0).failureValue == .unknownLog("id 7"))
    }
}
