import RingLogIO
@testable import RingLogStorage
import RingLogWire
import Testing

@Suite struct SparseIndexTests {
    @Test func recordsTheFirstBatchAndThenOneAtLeastEveryInterval() {
        var index = SparseIndex(intervalBytes: 100)
        for position: UInt32 in [0, 40, 90, 100, 150, 260, 300] { index.noteBatch(at: position) }
        #expect(index.positions == [0, 100, 260])
    }

    @Test func boundaryChecksFollowTheSamplingRule() {
        let index = SparseIndex(intervalBytes: 100, positions: [0, 100, 260])
        #expect(index.boundary(at: 100) == .known)
        #expect(index.boundary(at: 150) == .walk(from: 100))
        #expect(index.boundary(at: 199) == .walk(from: 100))
        #expect(index.boundary(at: 200) == .impossible, "100 bytes past an entry, a batch start would have been recorded")
        #expect(index.boundary(at: 300) == .walk(from: 260))
    }

    @Test func removingEntriesFromAPositionKeepsTheOnesBelow() {
        var index = SparseIndex(intervalBytes: 10, positions: [0, 10, 25, 40])
        index.removeEntries(from: 25)
        #expect(index.positions == [0, 10])
        #expect(index.count(below: 10) == 1)
        #expect(index.floor(9) == 0)
    }

    @Test func implausibleLoadedIndexesAreRejected() {
        #expect(SparseIndex.isPlausible([0, 100, 200], intervalBytes: 100, limit: 300))
        #expect(!SparseIndex.isPlausible([5, 100], intervalBytes: 100, limit: 300), "must start at 0")
        #expect(!SparseIndex.isPlausible([0, 50], intervalBytes: 100, limit: 300), "closer than the interval")
        #expect(!SparseIndex.isPlausible([0, 200, 100], intervalBytes: 100, limit: 300), "not increasing")
        #expect(!SparseIndex.isPlausible([0, 300], intervalBytes: 100, limit: 300), "past the data")
    }
}

@Suite struct TailBufferTests {
    @Test func allocationSkipsToTheNextLapRatherThanStraddleTheEnd() {
        let buffer = TailBuffer(capacity: 1000)
        #expect(buffer.allocate(600, pinnedFloor: 0) == 0)
        #expect(buffer.allocate(300, pinnedFloor: 600) == 600)
        #expect(buffer.allocate(200, pinnedFloor: 900) == 1000, "900 + 200 would straddle the end")
        #expect(buffer.oldestResident == 200)
    }

    @Test func pinnedBytesAreNeverOverwritten() {
        let buffer = TailBuffer(capacity: 1000)
        _ = buffer.allocate(500, pinnedFloor: 0)
        _ = buffer.allocate(500, pinnedFloor: 0)
        #expect(buffer.allocate(100, pinnedFloor: 0) == nil, "bytes 0..<100 are not written yet")
        #expect(buffer.allocate(100, pinnedFloor: 100) == 1000)
    }

    @Test func extentsMergeWhenContiguousInBothLogAndRing() {
        var tail = LogTail()
        tail.record(logStart: LogOffset(0), sequence: 0, length: 100)
        tail.record(logStart: LogOffset(100), sequence: 100, length: 50)
        tail.record(logStart: LogOffset(150), sequence: 400, length: 50)
        #expect(tail.extents.count == 2)
        #expect(tail.locate(LogOffset(120), oldestResident: 0)! == (120, 30))
        #expect(tail.locate(LogOffset(160), oldestResident: 0)! == (410, 40))
        #expect(tail.locate(LogOffset(10), oldestResident: 50) == nil, "overwritten")
        #expect(tail.locate(LogOffset(200), oldestResident: 0) == nil, "past the end")
        tail.discard(from: LogOffset(120))
        #expect(tail.extents.count == 1)
        #expect(tail.locate(LogOffset(119), oldestResident: 0)! == (119, 1))
        tail.prune(oldestResident: 120)
        #expect(tail.extents.isEmpty)
    }
}

@Suite struct OnDiskFormatTests {
    @Test func checkpointRoundTripsAndRejectsAnyDamage() {
        let checkpoint = Checkpoint(
            logID: LogID(9), epoch: 3, clean: true, startOffset: LogOffset(10), checkpointOffset: LogOffset(4096), writtenAtMicros: 77)
        let bytes = checkpoint.encoded()
        #expect(bytes.count == 44 + 16, "format 2: 8 bytes of record number, no producers and none forgotten")
        #expect(Checkpoint(decoding: bytes) == checkpoint)
        for position in bytes.indices {
            var damaged = bytes
            damaged[position] ^= 0x01
            #expect(Checkpoint(decoding: damaged) == nil, "byte \(position)")
        }
        #expect(Checkpoint(decoding: Array(bytes.dropLast())) == nil)
    }

    @Test func logMetaRoundTripsWithAndWithoutRetention() {
        for settings in [LogSettings(segmentBytes: 1 << 20), LogSettings(segmentBytes: 1 << 20, retentionBytes: 1 << 30, retentionMicros: 3_600_000_000)] {
            let meta = LogMeta(logID: LogID(1), name: "orders.v2", createdMicros: 5, settings: settings)
            #expect(LogMeta(decoding: meta.encoded()) == meta)
        }
        var damaged = LogMeta(logID: LogID(1), name: "x", createdMicros: 5, settings: LogSettings()).encoded()
        damaged[42] = UInt8(ascii: "y")
        #expect(LogMeta(decoding: damaged) == nil)
    }

    @Test func aLabelMakesLogMetaFormatTwoAndNoLabelKeepsFormatOne() {
        let plain = LogMeta(logID: LogID(3), name: "orders.0", createdMicros: 5, settings: LogSettings())
        #expect(Array(plain.encoded().prefix(4)) == Array("RLM1".utf8), "a log without a label is written as before")
        let labelled = LogMeta(logID: LogID(3), name: "k0123.0", createdMicros: 5, settings: LogSettings(), label: "__consumer_offsets")
        let bytes = labelled.encoded()
        #expect(Array(bytes.prefix(4)) == Array("RLM2".utf8))
        #expect(LogMeta(decoding: bytes) == labelled)
        for position in 0..<bytes.count {
            var damaged = bytes
            damaged[position] ^= 0x20
            #expect(LogMeta(decoding: damaged) != labelled, "byte \(position)")
        }
        #expect(LogMeta(decoding: Array(bytes.dropLast())) == nil)
    }

    @Test func indexHeaderRoundTrips() {
        let header = IndexFileHeader(
            segmentBase: LogOffset(1 << 30), sealed: true, dataEnd: LogOffset(2 << 30), maxAppendTimeMicros: 12, entryCount: 3,
            intervalBytes: 16_384)
        #expect(IndexFileHeader(decoding: header.encoded()) == header)
        #expect(header.encoded().count == IndexFileHeader.encodedBytes)
    }

    @Test func segmentFileNamesSortByOffsetAndParseBack() {
        #expect(LogFileNames.segment(LogOffset(4096)) == "00000000000000004096.seg")
        #expect(LogFileNames.segmentBase(fromFileName: "00000000000000004096.seg") == LogOffset(4096))
        #expect(LogFileNames.segmentBase(fromFileName: "18446744073709551615.seg") == LogOffset(UInt64.max))
        for bad in ["4096.seg", "0000000000000000409a.seg", "00000000000000004096.idx", "00000000000000004096.seg.prealloc", "99999999999999999999.seg"] {
            #expect(LogFileNames.segmentBase(fromFileName: bad) == nil, "\(bad)")
        }
        #expect(LogFileNames.segment(LogOffset(9)) < LogFileNames.segment(LogOffset(10)))
    }
}

@Suite struct BufferPoolTests {
    @Test func aReleasedBufferIsHandedOutAgainForTheSameSizeClass() {
        let pool = BufferPool(maxPooledBytes: 16 << 20)
        var first: OwnedBytes? = pool.take(count: (4 << 20) + 100)
        let address = first!.buffer.baseAddress
        #expect(first!.count == (4 << 20) + 100)
        first = nil
        #expect(pool.idleByteCount == 5 << 20, "4 MiB + 100 B is in the 5 MiB class")
        let second = pool.take(count: (4 << 20) + 60_000)
        #expect(second.buffer.baseAddress == address)
        #expect(second.count == (4 << 20) + 60_000)
        #expect(pool.idleByteCount == 0)
    }

    @Test func idleBuffersStayWithinTheBoundAndSmallOnesAreNotPooled() {
        let pool = BufferPool(maxPooledBytes: 2 << 20)
        var held = (0..<3).map { _ in pool.take(count: 1 << 20) }
        #expect(pool.inUseBytes == 3 << 20)
        let addresses = Set(held.map { UInt(bitPattern: $0.buffer.baseAddress) })
        held.removeAll()
        #expect(pool.inUseBytes == 0)
        #expect(pool.idleByteCount == 2 << 20, "the third 1 MiB buffer is freed, not kept")
        let again = pool.take(count: 1 << 20)
        #expect(addresses.contains(UInt(bitPattern: again.buffer.baseAddress)), "a kept buffer is handed out again")
        #expect(pool.idleByteCount == 1 << 20)
        do {
            let small = pool.take(count: 1000)
            #expect(small.count == 1000)
            #expect(pool.inUseBytes == 1 << 20, "a small buffer is not the pool's")
        }
        #expect(pool.idleByteCount == 1 << 20, "a small buffer released is not kept")
        withExtendedLifetime(again) {}
    }

    @Test func aCopyHoldsTheBytesWhateverItsSize() {
        let pool = BufferPool(maxPooledBytes: 1 << 20)
        for size in [0, 10, BufferPool.smallestPooled + 1] {
            let source = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let copy = source.withUnsafeBytes { pool.copy($0) }
            #expect(Array(copy.bytes) == source)
        }
    }
}
