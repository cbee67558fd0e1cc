import RingLogSimulation
@testable import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

@Suite struct AppendAndReadTests {
    @Test func batchesGetContiguousByteOffsetsAndReadBackExactly() throws {
        let harness = try Harness()
        let id = try harness.createLog("events")
        let first = try harness.append(id, payload(100, seed: 1))
        let second = try harness.append(id, payload(10, seed: 2))
        #expect(first == .zero)
        #expect(second == LogOffset(UInt64(Batch.minHeaderBytes + 100)))
        let batches = try harness.batches(try harness.read(id, from: .zero).get())
        #expect(batches.map(\.offset) == [first, second])
        #expect(batches.map(\.payload) == [payload(100, seed: 1), payload(10, seed: 2)])
    }

    @Test func storedBytesAreTheClientBytesWithOnlyServerFieldsFilledIn() throws {
        let harness = try Harness()
        let id = try harness.createLog("exact")
        let sent = Batch.make(payload: payload(33, seed: 5), recordCount: 4)
        sent.withUnsafeBytes { bytes in
            #expect(harness.store.append(to: id, batch: bytes) == .placed(offset: .zero, end: LogOffset(UInt64(sent.count))))
        }
        harness.driver.runUntilQuiet()
        let stored = try harness.read(id, from: .zero).get().withUnsafeBytes { Array($0) }
        #expect(stored.count == sent.count)
        #expect(Array(stored[0..<4]) == Array(sent[0..<4]))
        #expect(Array(stored[28...]) == Array(sent[28...]), "everything the client controls is byte-identical")
        let header = stored.withUnsafeBytes { BatchHeader(unchecked: $0.baseAddress!) }
        #expect(header.offset == .zero)
        #expect(header.epoch == 1)
        #expect(header.appendTimeMicros == harness.driver.nowMicros)
    }

    @Test func acknowledgedMeansFdatasyncSucceeded() throws {
        let harness = try Harness()
        let id = try harness.createLog("durable")
        let syncsBefore = harness.disk.operationCounts["fdatasync", default: 0]
        let batch = Batch.make(payload: payload(64, seed: 1))
        let outcome = batch.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        guard case .placed(_, let end) = outcome else { throw TestFailure("not placed: \(outcome)") }
        #expect(harness.store.log(id)!.committedEnd == .zero, "nothing commits before its fdatasync")
        let read = try harness.read(id, from: .zero).get()
        #expect(read.isEmpty, "readers never see uncommitted bytes")
        harness.driver.runUntilQuiet()
        #expect(harness.store.log(id)!.committedEnd == end)
        #expect(harness.disk.operationCounts["fdatasync", default: 0] > syncsBefore)
    }

    @Test func readsReturnWholeBatchesAndAtLeastOneEvenWhenLargerThanTheLimit() throws {
        let harness = try Harness()
        let id = try harness.createLog("limits")
        for seed in 0..<5 { try harness.append(id, payload(1000, seed: seed)) }
        let one = try harness.batches(try harness.read(id, from: .zero, maxBytes: 10).get())
        #expect(one.count == 1, "a limit smaller than the first batch still returns that batch")
        let two = try harness.batches(try harness.read(id, from: .zero, maxBytes: 2 * 1048 + 1).get())
        #expect(two.count == 2, "no batch is cut to fit the limit")
    }

    @Test func readsOfOldDataComeFromTheSegmentFileOnceTheCacheMovedOn() throws {
        let harness = try Harness(configuration: .small(segmentBytes: 1 << 20, tailCacheBytes: 64 << 10))
        let id = try harness.createLog("cold")
        let expected = try harness.appendPayloads(id, length: 4000, seeds: 0..<40)
        let missesBefore = harness.store.statistics.tailReadMisses
        let batches = try harness.batches(try harness.read(id, from: .zero, maxBytes: 8096).get())
        #expect(harness.store.statistics.tailReadMisses == missesBefore + 1, "the first batches left the 64 KiB cache")
        #expect(batches.map(\.payload) == Array(expected[0..<2]))
        #expect(try harness.readAll(id).map(\.payload) == expected)
    }

    /// A consumer reading old data from the disk reads every byte once: each read ends on a batch
    /// boundary the index knows (then, uncached, on at the end of that page), and the next read
    /// starts right there.
    @Test func aConsumersDiskReadsNeitherOverlapNorSkip() throws {
        let harness = try Harness(configuration: .small(segmentBytes: 1 << 20, tailCacheBytes: 64 << 10))
        let id = try harness.createLog("consumer")
        let expected = try harness.appendPayloads(id, length: 300, seeds: 0..<400)
        let segment = try #require(harness.store.log(id)).segments[0]
        var reads: [Range<Int64>] = []
        harness.disk.onPerform = {
            if case .read(segment.fd, let position, let buffer, _) = $0 { reads.append(position..<position + Int64(buffer.count)) }
        }
        var offset = LogOffset.zero
        var found: [[UInt8]] = []
        for _ in 0..<5 {
            let result = try harness.read(id, from: offset, maxBytes: 6_000).get()
            found += try harness.batches(result).map(\.payload)
            offset = result.nextOffset
        }
        #expect(found == Array(expected.prefix(found.count)))
        #expect(reads.count == 5)
        #expect(reads.first?.lowerBound == 0)
        #expect(zip(reads, reads.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "\(reads)")
        // Reads are uncached (the default): each goes on to the end of its page and the next takes
        // the rest of that page from memory, so no page is asked of the kernel twice.
        #expect(reads.allSatisfy { $0.upperBound % 4096 == 0 } && reads.dropFirst().allSatisfy { $0.lowerBound % 4096 == 0 }, "\(reads)")
        #expect((reads.last?.upperBound ?? 0) >= segment.filePosition(of: offset))
    }

    /// A read from where a read served by the tail cache ended (usually not an index entry) starts
    /// its disk read exactly there once the cache has moved on, not at the index entry before it.
    @Test func aReadFromWhereAnEarlierReadEndedStartsThere() throws {
        let harness = try Harness(configuration: .small(segmentBytes: 1 << 20, tailCacheBytes: 64 << 10))
        let id = try harness.createLog("consumer")
        var expected = try harness.appendPayloads(id, length: 300, seeds: 0..<20)
        let first = try harness.read(id, from: .zero, maxBytes: 1_500).get()
        let end = first.nextOffset
        let segment = try #require(harness.store.log(id)).segments[0]
        guard case .walk = segment.index.boundary(at: segment.relative(end)) else {
            Issue.record("the first read ended on an index entry; the test needs one that does not")
            return
        }
        expected += try harness.appendPayloads(id, length: 300, seeds: 20..<400)
        var readPositions: [Int64] = []
        harness.disk.onPerform = { if case .read(segment.fd, let position, _, _) = $0 { readPositions.append(position) } }
        let second = try harness.read(id, from: end, maxBytes: 1_500).get()
        #expect(readPositions == [segment.filePosition(of: end)], "the cache still held the bytes, or the read walked from an entry")
        let both = try harness.batches(first) + harness.batches(second)
        #expect(both.map(\.payload) == Array(expected.prefix(both.count)))
        #expect(try harness.batches(second).count >= 1)
        // A recorded end vouches for itself only: the byte after it is still checked.
        #expect(try harness.read(id, from: end.advanced(by: 1)).failureValue == .notBatchBoundary(end.advanced(by: 1)))
    }

    @Test func emptyLogReadsEmptyAtZero() throws {
        let harness = try Harness()
        let id = try harness.createLog("empty")
        let result = try harness.read(id, from: .zero).get()
        #expect(result.isEmpty)
        #expect(result.committedEnd == .zero)
        #expect(try harness.read(id, from: LogOffset(1)).failureValue == .offsetBeyondEnd(requested: LogOffset(1), start: .zero, end: .zero))
    }

    @Test func everyKindOfBadOffsetGetsItsOwnError() throws {
        let harness = try Harness()
        let id = try harness.createLog("offsets")
        for seed in 0..<30 { try harness.append(id, payload(2000, seed: seed)) }
        let end = harness.store.log(id)!.committedEnd
        #expect(try harness.read(id, from: end.advanced(by: 1)).failureValue == .offsetBeyondEnd(requested: end.advanced(by: 1), start: .zero, end: end))
        #expect(try harness.read(id, from: LogOffset(5)).failureValue == .notBatchBoundary(LogOffset(5)))
        // Far from any index entry: ruled out without reading.
        #expect(try harness.read(id, from: LogOffset(2048 + 1500)).failureValue == .notBatchBoundary(LogOffset(2048 + 1500)))
        #expect(try harness.read(LogID(424_242), from: .zero).failureValue == .unknownLog("id 424242"))
        let second = LogOffset(2048)
        #expect(try harness.trim(id, to: second).get() == second)
        #expect(try harness.read(id, from: .zero).failureValue == .offsetBelowStart(requested: .zero, start: second, end: end))
        #expect(try harness.batches(try harness.read(id, from: second).get()).first?.offset == second)
    }

    @Test func theLargestAllowedBatchIsAcceptedAndOneByteMoreIsRefused() throws {
        let harness = try Harness()
        let id = try harness.createLog("large")
        let limit = harness.store.configuration.maxBatchBytes
        let largest = payload(limit - Batch.minHeaderBytes, seed: 3)
        let offset = try harness.append(id, largest)
        #expect(try harness.batches(try harness.read(id, from: offset).get()).first?.payload == largest)
        let tooLarge = Batch.make(payload: payload(limit - Batch.minHeaderBytes + 1, seed: 4))
        let outcome = tooLarge.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        #expect(outcome == .failed(.batchTooLarge(bytes: limit + 1, limit: limit)))
    }

    /// A log made with segments as small as the largest batch then allowed keeps them when the
    /// server restarts with a larger max-batch-bytes: a batch larger than its segment is refused
    /// (it once stopped the server), and the log goes on taking batches that fit.
    @Test func aBatchLargerThanTheLogsSegmentIsRefusedAfterTheLimitGrew() throws {
        let harness = try Harness()
        let id = try harness.createLog("small", settings: LogSettings(segmentBytes: 64 << 10))
        var larger = StoreConfiguration.small()
        larger.maxBatchBytes = 128 << 10
        larger.defaultLogSettings = LogSettings(segmentBytes: 256 << 10)
        try harness.driver.crashAndRecover(configuration: larger)
        let big = Batch.make(payload: payload(100 << 10, seed: 1))
        let outcome = big.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        #expect(outcome == .failed(.batchTooLarge(bytes: big.count, limit: 64 << 10)))
        let fits = try harness.append(id, payload(1_000, seed: 2))
        #expect(try harness.readAll(id).map(\.offset) == [fits])
    }

    /// The wall clock steps back (NTP, a VM restored): append times within a log still never go
    /// back, before and after a crash, so they can be searched in order.
    @Test func appendTimesNeverGoBackWhenTheClockDoes() throws {
        let harness = try Harness()
        let id = try harness.createLog("clock")
        _ = try harness.append(id, payload(100, seed: 1))
        harness.driver.nowMicros -= 60_000_000
        _ = try harness.append(id, payload(100, seed: 2))
        try harness.driver.crashAndRecover()
        harness.driver.nowMicros -= 60_000_000
        _ = try harness.append(id, payload(100, seed: 3))
        harness.driver.nowMicros += 300_000_000
        _ = try harness.append(id, payload(100, seed: 4))
        let result = try harness.read(id, from: .zero).get()
        var times: [UInt64] = []
        try result.withUnsafeBytes { bytes in
            try StoredBatches.forEach(in: bytes, startingAt: .zero, damaged: { TestFailure($0.description) }) { _, header, _ throws(TestFailure) in
                times.append(header.appendTimeMicros)
            }
        }
        #expect(times.count == 4)
        #expect(times == times.sorted(), "append times: \(times)")
        #expect(times[0] == times[2], "the clock's steps back were held at the newest time")
        #expect(times[3] > times[2], "and time moves on once the clock passes it")
    }

    @Test func aBatchExactlyFillingASegmentStaysInItAndTheNextStartsANewOne() throws {
        let harness = try Harness()
        let id = try harness.createLog("exactfit")
        let segmentBytes = 64 << 10
        let batchBytes = 16 << 10
        for seed in 0..<(segmentBytes / batchBytes) { try harness.append(id, payload(batchBytes - Batch.minHeaderBytes, seed: seed)) }
        #expect(harness.store.log(id)!.info.segmentCount == 1)
        #expect(harness.store.log(id)!.committedEnd == LogOffset(UInt64(segmentBytes)))
        let next = try harness.append(id, payload(10, seed: 9))
        #expect(next == LogOffset(UInt64(segmentBytes)))
        #expect(harness.store.log(id)!.info.segmentCount == 2)
        #expect(harness.segmentFiles("exactfit") == ["00000000000000000000.seg", "00000000000000065536.seg"])
        #expect(try harness.readAll(id).count == 5)
    }

    @Test func aBatchLargerThanTheRemainingSpaceGoesToTheNextSegment() throws {
        let harness = try Harness()
        let id = try harness.createLog("spill")
        var offsets: [LogOffset] = []
        for seed in 0..<4 { offsets.append(try harness.append(id, payload(15_000, seed: seed))) }
        // 4 x 15048 = 60192 bytes; 5344 remain, too few for the next 15048-byte batch.
        let spilled = try harness.append(id, payload(15_000, seed: 4))
        #expect(spilled == LogOffset(60_192), "the next segment starts where the data ended, not at the file's end")
        #expect(harness.segmentFiles("spill").last == "00000000000000060192.seg")
        #expect(try harness.readAll(id).map(\.offset) == offsets + [spilled])
    }

    @Test func readsNeverCrossASegmentButAConsumerContinuesIntoTheNext() throws {
        let harness = try Harness()
        let id = try harness.createLog("crossing")
        let expected = try harness.appendPayloads(id, length: 9000, seeds: 0..<12)
        #expect(harness.store.log(id)!.info.segmentCount >= 2)
        let first = try harness.read(id, from: .zero, maxBytes: 1 << 20).get()
        #expect(first.nextOffset <= LogOffset(64 << 10))
        #expect(first.committedEnd == harness.store.log(id)!.committedEnd, "the log's end, not the segment's")
        #expect(try harness.readAll(id).map(\.payload) == expected)
    }

    /// A read served from the segment file (not the cache) reports the log's committed end, not
    /// the end of the segment it read: consumers stop at the committed end. Found by the crash test.
    @Test func aReadFromDiskReportsTheLogsCommittedEndNotItsSegments() throws {
        let harness = try Harness()
        let id = try harness.createLog("ends")
        for seed in 0..<12 { try harness.append(id, payload(9000, seed: seed)) }
        try harness.shutDownCleanlyAndReopen()
        let end = harness.store.log(id)!.committedEnd
        let first = try harness.read(id, from: .zero, maxBytes: 1 << 20).get()
        #expect(harness.store.statistics.tailReadMisses == 1, "served from the file")
        #expect(first.nextOffset < end)
        #expect(first.committedEnd == end)
    }

    @Test func logNamesAreValidated() throws {
        let harness = try Harness()
        for bad in ["", ".", "..", "a/b", "../etc", "-dash", ".hidden", "sp ace", "nul\u{0}", String(repeating: "x", count: 129), "é"] {
            guard case .failure(.badLogName) = try harness.createLogResult(bad) else {
                Issue.record("name \(bad.debugDescription) was accepted")
                continue
            }
        }
        for good in ["a", "Orders-2024.v1_x", String(repeating: "y", count: 128), "0"] {
            #expect(throws: Never.self) { _ = try harness.createLog(good) }
        }
        #expect(harness.store.logs.count == 4)
    }

    @Test func creatingAnExistingLogFailsAndDeletingAnUnknownOneFails() throws {
        let harness = try Harness()
        _ = try harness.createLog("twice")
        #expect(try harness.createLogResult("twice").failureValue == .logExists("twice"))
        #expect(try harness.deleteLog("never").failureValue == .unknownLog("never"))
    }

    @Test func aDeletedLogIsGoneAndItsNameCanBeReusedWithANewID() throws {
        let harness = try Harness()
        let old = try harness.createLog("reused")
        try harness.append(old, payload(500, seed: 1))
        #expect(try harness.deleteLog("reused").get() == old)
        harness.driver.runUntilQuiet()
        #expect(harness.store.log(old) == nil)
        #expect(!harness.disk.exists("/data/logs/reused"))
        #expect(harness.disk.names(in: "/data/trash").isEmpty, "the deleted directory is removed after the delete is durable")
        let new = try harness.createLog("reused")
        #expect(new != old)
        #expect(harness.store.log(new)!.committedEnd == .zero)
        #expect(try harness.read(old, from: .zero).failureValue == .unknownLog("id \(old)"))
    }

    @Test func createdAndDeletedLogsSurviveACrashExactlyAsAcknowledged() throws {
        let harness = try Harness()
        let kept = try harness.createLog("kept")
        try harness.append(kept, payload(100, seed: 1))
        _ = try harness.createLog("dropped")
        _ = try harness.deleteLog("dropped").get()
        try harness.driver.crashAndRecover()
        #expect(harness.store.logs.map(\.name) == ["kept"])
        #expect(try harness.readAll(kept).map(\.payload) == [payload(100, seed: 1)])
    }

    @Test func aSecondStoreCannotOpenALockedDataDirectory() throws {
        let harness = try Harness()
        let second = LogStore.open(path: "/data", configuration: .small(), disk: harness.disk, environment: harness.driver.environment)
        guard case .failure(.dataDirectoryInUse(let path)) = second else {
            Issue.record("second open was not refused: \(second)")
            return
        }
        #expect(path == "/data/LOCK")
    }

    @Test func badConfigurationIsRefusedNamingTheSetting() {
        var configuration = StoreConfiguration.small()
        configuration.tailCacheBytes = 1000
        let opened = LogStore.open(path: "/x", configuration: configuration, disk: SimulatedDisk(), environment: SimulatedWorld(seed: 1).environment)
        guard case .failure(.badSettings(let problems)) = opened else {
            Issue.record("accepted: \(opened)")
            return
        }
        #expect(problems.map(\.setting) == ["cache-bytes"])
        #expect(problems.first?.minimum == 2 * (16 << 10), "twice the max batch")
    }
}

extension Result {
    var failureValue: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
