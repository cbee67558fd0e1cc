import Glibc
import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

@Suite struct RecoveryTests {
    @Test func aRestartAfterACleanShutdownScansNothing() throws {
        let harness = try Harness()
        let id = try harness.createLog("clean")
        for seed in 0..<50 { try harness.append(id, payload(900, seed: seed)) }
        try harness.shutDownCleanlyAndReopen()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.cleanShutdown)
        #expect(report.scannedBytes == 0)
        #expect(report.cut == nil)
        #expect(report.committedEnd == LogOffset(50 * 948))
        #expect(try harness.readAll(id).count == 50)
    }

    /// A checkpoint after appends that added no sparse-index entry left the segment's `.idx`
    /// header behind the checkpoint, and the next start rebuilt the index by scanning, even after
    /// a clean stop (issue 12). The clean checkpoint now brings the header up to date, and a start
    /// after a crash scans only the few bytes between the header and the checkpoint.
    @Test func aCleanRestartNeverRebuildsAnIndexEvenWhenTheLastAppendsAddedNoEntry() throws {
        let harness = try Harness()
        let id = try harness.createLog("quiet")
        // Index entries every 1 KiB (`.small()`): batches at 0 and 2048 are entries, one at 2148 is not.
        try harness.append(id, payload(2000, seed: 0))
        try harness.append(id, payload(52, seed: 1))
        harness.passTime(micros: 2_000_000)  // a checkpoint writes the index with both entries
        try harness.append(id, payload(10, seed: 2))  // at 2148: no new index entry
        harness.passTime(micros: 2_000_000)  // a checkpoint past the .idx header's end
        try harness.shutDownCleanlyAndReopen()
        var report = try #require(harness.store.recoveryReports.first)
        #expect(report.cleanShutdown)
        #expect(report.rebuiltIndexes.isEmpty, "\(report)")
        #expect(report.scannedBytes == 0)
        try harness.shutDownCleanlyAndReopen()
        report = try #require(harness.store.recoveryReports.first)
        #expect(report.rebuiltIndexes.isEmpty, "\(report)")
        #expect(try harness.readAll(id).map(\.payload) == [payload(2000, seed: 0), payload(52, seed: 1), payload(10, seed: 2)])

        // After a crash: the header is behind the checkpoint by one small batch; recovery reads
        // that batch to extend the index instead of rebuilding it from the segment's start.
        try harness.append(id, payload(100, seed: 3))  // at 2206: not an entry either
        harness.passTime(micros: 2_000_000)  // the checkpoint moves to 2354; the header stays at 2206
        try harness.driver.crashAndRecover()
        report = try #require(harness.store.recoveryReports.first)
        #expect(report.rebuiltIndexes.isEmpty, "\(report)")
        #expect(report.scannedBytes == 148, "only the batch between the index header and the checkpoint: \(report)")
        #expect(try harness.readAll(id).count == 4)
    }

    /// Opening a log costs per segment what reading its small files costs: each is read into a
    /// buffer of its own size. (Issue 12: a zeroed 64 MiB buffer per index file made opening a
    /// 300-segment log take 10 s; Scripts/bench-storage has the figures.)
    @Test func openingReadsEachSmallFileIntoABufferOfItsOwnSize() throws {
        let harness = try Harness()
        let id = try harness.createLog("many")
        for seed in 0..<40 { try harness.append(id, payload(9000, seed: seed)) }
        #expect(harness.store.log(id)!.info.segmentCount >= 5)
        var largestRead = 0
        var reads = 0
        harness.disk.onPerform = { operation in
            if case .read(_, _, let buffer, _) = operation {
                largestRead = max(largestRead, buffer.count)
                reads += 1
            }
        }
        try harness.shutDownCleanlyAndReopen()
        harness.disk.onPerform = nil
        #expect(harness.store.recoveryReports.first?.scannedBytes == 0)
        #expect(reads > 0)
        // The largest read is the check that the active segment's unused space starts with
        // zeros (at most 256 KiB); before the fix, 1 MiB for each small file and 64 MiB per index.
        #expect(largestRead < 256 << 10, "small files are read at their size, not at a limit (largest read: \(largestRead) B)")
        #expect(try harness.readAll(id).count == 40)
    }

    @Test func aCrashKeepsEveryCommittedBatchAndLosesOnlyUnsyncedOnes() throws {
        let harness = try Harness(seed: 11)
        let id = try harness.createLog("crash")
        for seed in 0..<20 { try harness.append(id, payload(700, seed: seed)) }
        let committed = harness.store.log(id)!.committedEnd
        // More appends whose writes and syncs never get to run.
        for seed in 20..<25 {
            let batch = Batch.make(payload: payload(700, seed: seed))
            _ = batch.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        }
        harness.driver.step(completing: 1)
        try harness.driver.crashAndRecover()
        let recovered = try harness.readAll(id)
        #expect(recovered.count >= 20)
        #expect(Array(recovered.prefix(20).map(\.payload)) == (0..<20).map { payload(700, seed: $0) })
        #expect(harness.store.log(id)!.committedEnd >= committed)
    }

    @Test func recoveryScansOnlyFromTheCheckpoint() throws {
        let harness = try Harness()
        let id = try harness.createLog("bounded")
        for seed in 0..<60 { try harness.append(id, payload(1000, seed: seed)) }
        harness.passTime(micros: 2_000_000)
        let checkpointed = harness.store.log(id)!.committedEnd
        for seed in 60..<63 { try harness.append(id, payload(1000, seed: seed)) }
        try harness.driver.crashAndRecover()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.scanFrom == checkpointed)
        #expect(report.scannedBytes == 3 * 1048, "only the three batches after the checkpoint are read")
        #expect(try harness.readAll(id).count == 63)
    }

    @Test func aDamagedBatchAfterTheCheckpointIsCutAsATornTailAndReported() throws {
        let harness = try Harness()
        let id = try harness.createLog("torn")
        try harness.append(id, payload(100, seed: 1))
        let second = try harness.append(id, payload(100, seed: 2))
        try harness.append(id, payload(100, seed: 3))
        // The checkpoint is still at 0, so everything is "tail" to recovery.
        harness.disk.flipBit(path: "/data/logs/torn/00000000000000000000.seg", position: Int(second.rawValue) + 60)
        try harness.driver.crashAndRecover()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.cut?.offset == second)
        #expect(report.cut?.reason.contains("CRC32C") == true)
        #expect(harness.store.log(id)!.committedEnd == second)
        #expect(try harness.readAll(id).map(\.payload) == [payload(100, seed: 1)])
    }

    /// A log whose metadata is damaged stops the start, names the log and the way out, and changes
    /// nothing on disk: repairing the file brings the log back whole.
    @Test func aDamagedLogMetaStopsTheStartNamingTheLogAndChangesNothing() throws {
        let harness = try Harness()
        let id = try harness.createLog("meta")
        let offsets = try (0..<3).map { try harness.append(id, payload(500, seed: $0)) }
        try harness.shutDownCleanlyAndReopen()
        let metaPath = "/data/logs/meta/log.meta"
        let segmentPath = "/data/logs/meta/00000000000000000000.seg"
        let segmentBefore = harness.disk.contents(of: segmentPath)
        harness.disk.flipBit(path: metaPath, position: 20)
        do {
            _ = try harness.driver.crashAndRecover()
            throw TestFailure("the store opened with a damaged log.meta")
        } catch let error as StorageError {
            guard case .recoveryFailed(let log, let reason) = error else { throw TestFailure("unexpected error \(error)") }
            #expect(log == "meta")
            #expect(reason.contains("log.meta"))
            #expect(error.description.contains("logs/meta"), "the message says which directory to move aside")
        }
        #expect(harness.disk.contents(of: segmentPath) == segmentBefore)
        harness.disk.flipBit(path: metaPath, position: 20)
        _ = try harness.driver.crashAndRecover()
        #expect(try harness.readAll(id).map(\.offset) == offsets)
    }

    @Test func corruptionBelowTheCheckpointIsReportedOnReadAndNeverTruncated() throws {
        let harness = try Harness()
        let id = try harness.createLog("rot")
        let offsets = try (0..<6).map { try harness.append(id, payload(3000, seed: $0)) }
        harness.passTime(micros: 2_000_000)
        let end = harness.store.log(id)!.committedEnd
        try harness.shutDownCleanlyAndReopen()
        // After the restart the cache is empty, so reads come from the damaged file.
        harness.disk.flipBit(path: "/data/logs/rot/00000000000000000000.seg", position: Int(offsets[2].rawValue) + 100)
        let damaged = try harness.read(id, from: offsets[2])
        #expect(damaged.failureValue?.isCorruption(at: offsets[2], next: offsets[3]) == true, "\(damaged)")
        #expect(try harness.batches(try harness.read(id, from: offsets[3]).get()).first?.payload == payload(3000, seed: 3))
        let before = try harness.batches(try harness.read(id, from: .zero, maxBytes: 1 << 20).get())
        #expect(before.map(\.offset) == [offsets[0], offsets[1]], "a read stops before the damaged batch")
        try harness.driver.crashAndRecover()
        #expect(harness.store.log(id)!.committedEnd == end, "nothing committed was cut")
        #expect(harness.store.recoveryReports.first?.cut == nil)
        #expect(try harness.read(id, from: offsets[2]).failureValue?.isCorruption(at: offsets[2], next: offsets[3]) == true)
    }

    @Test func recoveryReportsCorruptionWithFileAndPositionWhenItHasToReadOldData() throws {
        let harness = try Harness()
        let id = try harness.createLog("lost-index")
        let offsets = try (0..<40).map { try harness.append(id, payload(3000, seed: $0)) }
        harness.passTime(micros: 2_000_000)
        let end = harness.store.log(id)!.committedEnd
        #expect(harness.store.log(id)!.info.segmentCount >= 2)
        try harness.shutDownCleanlyAndReopen()
        // Damage a batch in the first (sealed) segment and remove that segment's index, so
        // recovery must read the segment to rebuild it.
        harness.disk.flipBit(path: "/data/logs/lost-index/00000000000000000000.seg", position: Int(offsets[5].rawValue) + 200)
        _ = harness.disk.perform(.unlink(path: CPath("/data/logs/lost-index/00000000000000000000.idx"), isDirectory: false))
        let directory = harness.disk.perform(.open(path: CPath("/data/logs/lost-index"), flags: O_RDONLY | O_DIRECTORY, mode: 0))
        #expect(harness.disk.perform(.fsync(fd: Int32(directory))) == 0)
        try harness.driver.crashAndRecover()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.rebuiltIndexes == [.zero])
        let corruption = try #require(report.corruption.first)
        #expect(corruption.offset == offsets[5])
        #expect(corruption.file == "/data/logs/lost-index/00000000000000000000.seg")
        #expect(corruption.position == Int64(offsets[5].rawValue))
        #expect(report.cut == nil)
        #expect(harness.store.log(id)!.committedEnd == end)
        #expect(try harness.read(id, from: offsets[6]).map { _ in true }.get())
    }

    @Test func bytesLeftFromAnEarlierRunAfterACutAreNeverResurrected() throws {
        let harness = try Harness()
        let id = try harness.createLog("epochs")
        let first = try harness.append(id, payload(200, seed: 1))
        let stale = try harness.append(id, payload(200, seed: 2))
        // Make the first batch unreadable: recovery (checkpoint at 0) cuts the log at 0, leaving
        // the second, intact batch behind the cut.
        harness.disk.flipBit(path: "/data/logs/epochs/00000000000000000000.seg", position: 60)
        try harness.driver.crashAndRecover()
        #expect(harness.store.log(id)!.committedEnd == first)
        // A new batch of the same size lands exactly where the old one was, so the stale batch
        // now sits at the next boundary with the right offset and a valid CRC.
        try harness.append(id, payload(200, seed: 3))
        try harness.driver.crashAndRecover()
        let report = try #require(harness.store.recoveryReports.first)
        #expect(report.cut?.offset == stale)
        #expect(report.cut?.reason.contains("epoch") == true)
        #expect(try harness.readAll(id).map(\.payload) == [payload(200, seed: 3)])
    }

    @Test func aTrimSurvivesACrashAndItsSegmentsStayDeleted() throws {
        let harness = try Harness()
        let id = try harness.createLog("trimmed")
        let offsets = try (0..<40).map { try harness.append(id, payload(3000, seed: $0)) }
        let secondSegment = try #require(harness.segmentFiles("trimmed").dropFirst().first)
        let cut = offsets[25]
        #expect(try harness.trim(id, to: cut).get() == cut)
        harness.driver.runUntilQuiet()
        #expect(!harness.segmentFiles("trimmed").contains("00000000000000000000.seg"))
        try harness.driver.crashAndRecover()
        let log = try #require(harness.store.log(id))
        #expect(log.startOffset == cut)
        #expect(try harness.readAll(id).map(\.offset) == Array(offsets[25...]))
        #expect(harness.segmentFiles("trimmed").first.map { $0 >= secondSegment } == true)
    }
}

@Suite struct NameReuseTests {
    /// A trim's segment deletions still in flight must hold back the log's deletion: otherwise a
    /// log created again under the same name could lose its files to the old log's unlinks.
    @Test func deletingALogWaitsForItsSegmentDeletionsAndTheNameIsSafeToReuse() throws {
        let harness = try Harness()
        let old = try harness.createLog("again")
        let offsets = try (0..<45).map { try harness.append(old, payload(3000, seed: $0)) }
        harness.driver.holdBack = { operation in
            if case .unlink(let path, _) = operation { return path.string.hasPrefix("/data/logs/again/") }
            return false
        }
        #expect(try harness.trim(old, to: offsets[44]).get() == offsets[44])
        harness.store.deleteLog(named: "again", context: 90_002)
        harness.driver.runUntilQuiet()
        let early = harness.driver.takeEvents().contains { if case .deleted(90_002, _) = $0 { true } else { false } }
        #expect(!early, "the log was deleted while its own unlinks were still in flight")
        #expect(harness.disk.exists("/data/logs/again"))
        harness.driver.holdBack = nil
        _ = try harness.waitFor("deleted") { if case .deleted(90_002, let result) = $0 { result } else { nil } }
        let new = try harness.createLog("again")
        let kept = try (0..<5).map { _ in try harness.append(new, payload(500, seed: 77)) }
        try harness.driver.crashAndRecover()
        #expect(try harness.readAll(new).map(\.offset) == kept)
        #expect(harness.segmentFiles("again") == ["00000000000000000000.seg"])
    }
}

extension StorageError {
    func isCorruption(at offset: LogOffset, next: LogOffset?) -> Bool {
        if case .corruption(offset, _, next) = self { return true }
        return false
    }
}
