import Glibc
import RingLogSimulation
@testable import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// One damaged batch header must not hide the healthy batches after it (issue 12: a flipped
/// header byte made every batch up to the next sparse-index entry unreadable, "while locating").
/// Reads at any good offset are served; a read of the damaged batch says where the next one is.
@Suite struct DamagedHeaderTests {
    static let segment = "/data/logs/rot/00000000000000000000.seg"

    /// A log of `count` batches of 300 B (index entries every 1 KiB: every fourth batch or so),
    /// stopped cleanly and reopened so reads come from the file, not the cache.
    static func logWithBatches(_ count: Int, payloads: ((Int) -> [UInt8])? = nil) throws -> (Harness, LogID, [LogOffset]) {
        let harness = try Harness(configuration: .small(segmentBytes: 1 << 20))
        let id = try harness.createLog("rot")
        let offsets = try (0..<count).map { try harness.append(id, payloads?($0) ?? payload(300, seed: $0)) }
        try harness.shutDownCleanlyAndReopen()
        return (harness, id, offsets)
    }

    /// Damage in each header field, server-set or client-set: every other batch reads at its exact
    /// offset, the damaged one is CORRUPT_BATCH with the next batch's offset, and a consumer that
    /// steps over it reads everything else in order.
    @Test(arguments: [0, 5, 9, 20, 26, 33, 37, 44])
    func batchesAfterADamagedHeaderStillServe(_ field: Int) throws {
        let (harness, id, offsets) = try Self.logWithBatches(24)
        let damaged = 9
        harness.disk.flipBit(path: Self.segment, position: Int(offsets[damaged].rawValue) + field, bit: 3)
        for (index, offset) in offsets.enumerated() where index != damaged {
            let read = try harness.read(id, from: offset, maxBytes: 1)
            let batches = try harness.batches(try read.get())
            #expect(batches.map(\.offset) == [offset], "batch \(index) at \(offset), header byte \(field) of batch \(damaged) damaged")
            #expect(batches.first?.payload == payload(300, seed: index))
        }
        let bad = try harness.read(id, from: offsets[damaged])
        #expect(bad.failureValue?.isCorruption(at: offsets[damaged], next: offsets[damaged + 1]) == true, "\(bad)")

        var consumed: [Int] = []
        var offset = LogOffset.zero
        while offset < harness.store.log(id)!.committedEnd {
            switch try harness.read(id, from: offset, maxBytes: 4096) {
            case .success(let result):
                let batches = try harness.batches(result)
                consumed += batches.map { batch in offsets.firstIndex(of: batch.offset)! }
                offset = result.nextOffset
            case .failure(.corruption(let at, _, let next?)):
                #expect(at == offsets[damaged])
                offset = next
            case .failure(let error):
                throw error
            }
        }
        #expect(consumed == Array(0..<24).filter { $0 != damaged })
    }

    /// A payload holding something that looks like a batch (magic, a header CRC and an offset
    /// that verify at its position, a good payload CRC) is not taken for the next batch unless
    /// walking on from it reaches the next known batch start.
    @Test func aBatchForgedInsideAPayloadDoesNotFoolTheResynchronization() throws {
        let (harness, id, offsets) = try Self.logWithBatches(12) { index in
            guard index == 4 else { return payload(300, seed: index) }
            // Batch 4 starts at 4 * 348 = 1392; its payload at 1440. A fake batch there, whose
            // end (1440 + 48 + 100) falls inside batch 4's own payload.
            var fake = Batch.make(payload: payload(100, seed: 99))
            fake.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: LogOffset(1440), appendTimeMicros: 1, epoch: 1, firstRecord: 0) }
            return fake + payload(300 - fake.count, seed: 4)
        }
        #expect(offsets[4] == LogOffset(1392))
        // Damage batch 4's payloadLength, so its own length cannot be trusted.
        harness.disk.flipBit(path: Self.segment, position: 1392 + 33, bit: 1)
        let bad = try harness.read(id, from: offsets[4])
        #expect(bad.failureValue?.isCorruption(at: offsets[4], next: offsets[5]) == true, "\(bad)")
        #expect(try harness.read(id, from: LogOffset(1440)).failureValue == .notBatchBoundary(LogOffset(1440)), "the fake is not served")
        for index in 5..<12 {
            #expect(try harness.batches(try harness.read(id, from: offsets[index], maxBytes: 1).get()).first?.payload == payload(300, seed: index))
        }
    }

    /// When recovery must rebuild a segment's index (its `.idx` file is gone) and meets a damaged
    /// header, it steps over it too, so the rebuilt index covers the rest of the segment and the
    /// batches after the damage still serve.
    @Test func aRebuiltIndexStepsOverADamagedHeader() throws {
        let harness = try Harness(configuration: .small(segmentBytes: 64 << 10))
        let id = try harness.createLog("rot")
        let offsets = try (0..<40).map { try harness.append(id, payload(3000, seed: $0)) }
        harness.passTime(micros: 2_000_000)
        #expect(harness.store.log(id)!.info.segmentCount >= 2)
        try harness.shutDownCleanlyAndReopen()
        harness.disk.flipBit(path: Self.segment, position: Int(offsets[5].rawValue) + 33, bit: 2)
        _ = harness.disk.perform(.unlink(path: CPath("/data/logs/rot/00000000000000000000.idx"), isDirectory: false))
        let directory = harness.disk.perform(.open(path: CPath("/data/logs/rot"), flags: O_RDONLY | O_DIRECTORY, mode: 0))
        #expect(harness.disk.perform(.fsync(fd: Int32(directory))) == 0)
        try harness.driver.crashAndRecover()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.rebuiltIndexes == [.zero])
        #expect(report.corruption.map(\.offset) == [offsets[5]], "\(report)")
        #expect(report.cut == nil)
        #expect(try harness.read(id, from: offsets[5]).failureValue?.isCorruption(at: offsets[5], next: offsets[6]) == true)
        for index in 6..<20 {
            #expect(try harness.batches(try harness.read(id, from: offsets[index], maxBytes: 1).get()).first?.payload == payload(3000, seed: index))
        }
    }

    /// Unit level: the resynchronization prefers the damaged header's own length when the
    /// client's CRC proves it, scans otherwise, and falls back to the anchor.
    @Test func nextBatchAfterDamageFindsTheRealBoundaryOrTheAnchor() {
        var bytes: [UInt8] = []
        var starts: [LogOffset] = []
        for seed in 0..<4 {
            starts.append(LogOffset(UInt64(bytes.count)))
            var batch = Batch.make(payload: payload(64, seed: seed))
            batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: starts.last!, appendTimeMicros: 7, epoch: 1, firstRecord: 0) }
            bytes += batch
        }
        let end = LogOffset(UInt64(bytes.count))
        func resync(_ damage: (inout [UInt8]) -> Void, anchor: LogOffset = end) -> BatchWalk.Resync {
            var copy = bytes
            damage(&copy)
            return copy.withUnsafeBytes { BatchWalk.nextBatch(after: starts[1], in: $0, runStart: .zero, anchor: anchor) }
        }
        #expect(resync { $0[Int(starts[1].rawValue) + 4] ^= 1 } == .found(starts[2]), "header CRC damaged: the length is proven")
        #expect(resync { $0[Int(starts[1].rawValue) + 33] ^= 1 } == .found(starts[2]), "length damaged: found by scanning")
        // Damage the next header too: the scan finds the batch after it.
        #expect(resync { $0[Int(starts[1].rawValue) + 33] ^= 1; $0[Int(starts[2].rawValue) + 10] ^= 1 } == .found(starts[3]))
        // Nothing verifies before the anchor: the anchor.
        #expect(resync({ $0[Int(starts[1].rawValue) + 33] ^= 1; $0[Int(starts[2].rawValue) + 10] ^= 1 }, anchor: starts[3]) == .found(starts[3]))
        // The bytes up to the anchor are needed to look.
        #expect(Array(bytes[0..<200]).withUnsafeBytes { BatchWalk.nextBatch(after: starts[1], in: $0, runStart: .zero, anchor: end) }
            == .needMore(bytesFromRunStart: bytes.count))
    }
}
