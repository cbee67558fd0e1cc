import Glibc
import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Idempotent producers: each log remembers a producer's latest batches, answers a retry with
/// the batch it repeats, refuses gaps, old repeats, unknown and fenced producers, and rebuilds
/// all of it after a crash from the checkpoint and the batches after it. Also record numbers.
@Suite struct ProducerTests {
    /// Records that say who wrote them (so no two batches of a test are alike), padded to `size`.
    static func batch(_ producer: UInt64, epoch: UInt16 = 0, sequence: UInt32, records: Int = 1, seed: Int, size: Int = 40) -> [UInt8] {
        RecordFraming.batch(
            (0..<records).map { Array("p\(producer) e\(epoch) s\(sequence) r\($0) seed \(seed) ".utf8) + payload(size, seed: seed) }, format: .v2,
            producer: ProducerStamp(id: producer, epoch: epoch, baseSequence: sequence))
    }

    /// Places a batch and runs the store until quiet (retrying while it would block).
    static func offer(_ harness: Harness, _ id: LogID, _ batch: [UInt8]) throws -> AppendOutcome {
        try harness.appendAndSettle(id, batch: batch)
    }

    static func placedOffset(_ outcome: AppendOutcome) throws -> LogOffset {
        guard case .placed(let offset, _) = outcome else { throw TestFailure("not placed: \(outcome)") }
        return offset
    }

    static func refusal(_ outcome: AppendOutcome) -> StorageError? {
        if case .failed(let error) = outcome { error } else { nil }
    }

    @Test func aRetryGetsTheOriginalOffsetAndEveryOtherMistakeItsOwnError() throws {
        let harness = try Harness()
        let id = try harness.createLog("p")
        let first = Self.batch(7, sequence: 0, records: 2, seed: 1)
        let firstOffset = try Self.placedOffset(try Self.offer(harness, id, first))
        let second = Self.batch(7, sequence: 2, seed: 2)
        let secondOffset = try Self.placedOffset(try Self.offer(harness, id, second))
        // Both retried, in any order: the originals, nothing stored again.
        #expect(try Self.offer(harness, id, second) == .duplicate(offset: secondOffset, end: secondOffset.advanced(by: second.count)))
        #expect(try Self.offer(harness, id, first) == .duplicate(offset: firstOffset, end: firstOffset.advanced(by: first.count)))
        #expect(try harness.readAll(id).count == 2)
        // A gap, a sequence already used with another record count, a new producer not starting
        // at 0, an older epoch: each refused with nothing written.
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(7, sequence: 5, seed: 3)))
            == .outOfOrderSequence(producer: 7, sequence: 5, expected: 3, epoch: 0))
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(7, sequence: 0, records: 3, seed: 4)))
            == .outOfOrderSequence(producer: 7, sequence: 0, expected: 3, epoch: 0))
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(8, sequence: 4, seed: 5))) == .unknownProducer(producer: 8, sequence: 4))
        #expect(try harness.readAll(id).count == 2)
        // The next sequence, a second producer, a new epoch from 0; then the old epoch is fenced.
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(7, sequence: 3, seed: 6)))
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(8, sequence: 0, seed: 7)))
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(7, epoch: 1, sequence: 4, seed: 8)))
            == .outOfOrderSequence(producer: 7, sequence: 4, expected: 0, epoch: 1), "a new epoch starts at 0")
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(7, epoch: 1, sequence: 0, seed: 9)))
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(7, epoch: 0, sequence: 4, seed: 10)))
            == .producerFenced(producer: 7, epoch: 0, current: 1))
        // A plain format-2 batch (no producer) and a format-1 batch are never judged.
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(0, sequence: 0, seed: 11)))
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(0, sequence: 0, seed: 11)))
        _ = try harness.append(id, payload(10, seed: 12))
        #expect(try harness.readAll(id).count == 8)
    }

    /// A repeat of a batch older than the window is refused as such; a window of 4 remembers 4.
    @Test func theWindowAndTheNumberOfProducersAreBounded() throws {
        var configuration = StoreConfiguration.small()
        configuration.producerWindow = 4
        configuration.maxProducersPerLog = 2
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("w")
        var offsets: [LogOffset] = []
        for sequence in 0..<6 { offsets.append(try Self.placedOffset(try Self.offer(harness, id, Self.batch(1, sequence: UInt32(sequence), seed: sequence)))) }
        for sequence in 2..<6 {
            guard case .duplicate(let offset, _) = try Self.offer(harness, id, Self.batch(1, sequence: UInt32(sequence), seed: sequence)) else {
                throw TestFailure("sequence \(sequence) is in the window")
            }
            #expect(offset == offsets[sequence])
        }
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(1, sequence: 1, seed: 1)))
            == .duplicateSequence(producer: 1, sequence: 1, expected: 6, epoch: 0))
        // Two producers fit; a third evicts the one idle longest (1), whose retries are then
        // refused as unknown, never stored.
        harness.passTime(micros: 10)
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(2, sequence: 0, seed: 20)))
        harness.passTime(micros: 10)
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(3, sequence: 0, seed: 30)))
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(1, sequence: 5, seed: 5))) == .unknownProducer(producer: 1, sequence: 5))
        guard case .duplicate = try Self.offer(harness, id, Self.batch(2, sequence: 0, seed: 20)) else { throw TestFailure("producer 2 was evicted") }
    }

    /// A producer the log forgot (evicted here) cannot have its first batch taken again for a new
    /// producer's: sequence 0 is refused until it comes back under a newer epoch, across a crash too.
    @Test func aForgottenProducersFirstBatchIsNotStoredTwice() throws {
        var configuration = StoreConfiguration.small()
        configuration.maxProducersPerLog = 2
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("f")
        let first = Self.batch(1, sequence: 0, seed: 1)
        _ = try Self.placedOffset(try Self.offer(harness, id, first))
        harness.passTime(micros: 10)
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(2, sequence: 0, seed: 2)))
        harness.passTime(micros: 10)
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(3, sequence: 0, seed: 3)))
        #expect(Self.refusal(try Self.offer(harness, id, first)) == .unknownProducer(producer: 1, sequence: 0))
        try harness.driver.crashAndRecover()
        #expect(Self.refusal(try Self.offer(harness, id, first)) == .unknownProducer(producer: 1, sequence: 0), "remembered across a crash")
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(1, epoch: 1, sequence: 0, seed: 4)))
        #expect(try harness.readAll(id).count == 4)
    }

    /// Many producers coming and going through a small table: it behaves as a table of the most
    /// recently appending ones (what eviction promises), whatever order they are added and removed.
    @Test func evictionKeepsTheMostRecentlyAppendingProducers() throws {
        var configuration = StoreConfiguration.small(segmentBytes: 1 << 20, tailCacheBytes: 1 << 20)
        configuration.maxProducersPerLog = 24
        configuration.producerWindow = 2
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("lru")
        var generator = SeededGenerator(seed: 77)
        var next: [UInt64: UInt32] = [:]
        var epochs: [UInt64: UInt16] = [:]
        var recency: [UInt64] = []  // least recent first: what the table should hold
        for round in 0..<1_500 {
            let producer = UInt64.random(in: 1...80, using: &generator)
            harness.driver.nowMicros += 1
            let known = recency.contains(producer)
            let sequence = next[producer, default: 0]
            let outcome = try Self.offer(harness, id, Self.batch(producer, epoch: epochs[producer, default: 0], sequence: sequence, seed: round, size: 4))
            if known || sequence == 0 && epochs[producer] == nil {
                _ = try Self.placedOffset(outcome)
            } else {
                // Forgotten: refused, then back under the next epoch.
                #expect(Self.refusal(outcome) == .unknownProducer(producer: producer, sequence: sequence), "round \(round)")
                epochs[producer, default: 0] += 1
                _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(producer, epoch: epochs[producer]!, sequence: 0, seed: round, size: 4)))
                next[producer] = 0
            }
            next[producer, default: 0] += 1
            if epochs[producer] == nil { epochs[producer] = 0 }
            recency.removeAll { $0 == producer }
            recency.append(producer)
            if recency.count > 24 { recency.removeFirst() }
        }
        // Every producer the table should hold answers a retry of its last batch as a duplicate.
        for producer in recency {
            let last = next[producer]! - 1
            guard case .duplicate = try Self.offer(harness, id, Self.batch(producer, epoch: epochs[producer]!, sequence: last, seed: -1, size: 4)) else {
                throw TestFailure("producer \(producer) should be remembered")
            }
        }
    }

    @Test func idleProducersExpire() throws {
        var configuration = StoreConfiguration.small()
        configuration.producerExpiryMicros = 60_000_000
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("e")
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(5, sequence: 0, seed: 1)))
        harness.passTime(micros: 30_000_000)
        guard case .duplicate = try Self.offer(harness, id, Self.batch(5, sequence: 0, seed: 1)) else { throw TestFailure("expired too early") }
        // A checkpoint after the expiry forgets it (appends elsewhere make one due).
        harness.passTime(micros: 31_000_000)
        _ = try harness.append(id, payload(10, seed: 2))
        harness.passTime(micros: 2_000_000)
        #expect(Self.refusal(try Self.offer(harness, id, Self.batch(5, sequence: 1, seed: 3))) == .unknownProducer(producer: 5, sequence: 1))
    }

    /// After a clean restart and after crashes at random points, every remembered batch is still
    /// answered with its offset and the next sequence is still the one owed: the checkpoint holds
    /// the table as of its offset, recovery replays the batches after it.
    @Test func theTableSurvivesCrashesAcrossCheckpoints() throws {
        for seed: UInt64 in 1...12 {
            var generator = SeededGenerator(seed: seed)
            let harness = try Harness(seed: seed)
            let id = try harness.createLog("c")
            var next: [UInt64: UInt32] = [1: 0, 2: 0, 3: 0]
            var acknowledged: [UInt64: [(sequence: UInt32, offset: LogOffset, batch: [UInt8])]] = [:]
            for round in 0..<120 {
                let producer = UInt64.random(in: 1...3, using: &generator)
                let records = Int.random(in: 1...3, using: &generator)
                let batch = Self.batch(producer, sequence: next[producer]!, records: records, seed: round)
                let offset: LogOffset
                if round % 7 == 3 {
                    // A checkpoint planned while this batch is placed and not yet committed: it
                    // records the table without it, and recovery finds it after the checkpoint.
                    let outcome = batch.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
                    offset = try Self.placedOffset(outcome)
                    harness.passTime(micros: 1_100_000)
                } else {
                    offset = try Self.placedOffset(try Self.offer(harness, id, batch))
                }
                acknowledged[producer, default: []].append((next[producer]!, offset, batch))
                next[producer]! += UInt32(records)
                if round % 40 == 39 {
                    if seed % 2 == 0 { try harness.shutDownCleanlyAndReopen() } else { try harness.driver.crashAndRecover() }
                }
            }
            // Placed but not acknowledged when the power goes: found once or not at all.
            let last = Self.batch(1, sequence: next[1]!, seed: 999)
            let pending = last.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
            guard case .placed(let pendingOffset, _) = pending else { throw TestFailure("not placed: \(pending)") }
            harness.driver.step(completing: Int(seed % 3))
            try harness.driver.crashAndRecover()
            for (producer, batches) in acknowledged {
                for remembered in batches.suffix(harness.store.configuration.producerWindow) {
                    let outcome = try Self.offer(harness, id, remembered.batch)
                    #expect(outcome == .duplicate(offset: remembered.offset, end: remembered.offset.advanced(by: remembered.batch.count)),
                        "seed \(seed) producer \(producer) sequence \(remembered.sequence): \(outcome)")
                }
            }
            let retried = try Self.offer(harness, id, last)
            switch retried {
            case .duplicate(let offset, _): #expect(offset == pendingOffset, "seed \(seed)")
            case .placed: break
            default: Issue.record("seed \(seed): the retry of the unacknowledged batch got \(retried)")
            }
            let stored = try harness.readAll(id).filter { $0.payload == Array(last[64...]) }
            #expect(stored.count == 1, "seed \(seed): the batch is in the log once, not \(stored.count) times")
            // Each producer goes on at the sequence it owes.
            for producer: UInt64 in [2, 3] {
                _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(producer, sequence: next[producer]!, seed: 2_000 + Int(producer))))
            }
        }
    }

    /// A checkpoint written while a batch is placed but not yet on disk must not remember it: if
    /// the power then goes, the batch is gone, and its retry must be stored, not answered with an
    /// offset that holds nothing.
    @Test func aCheckpointRemembersOnlyBatchesItCovers() throws {
        let harness = try Harness()
        let id = try harness.createLog("k")
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(6, sequence: 0, seed: 1)))
        let unwritten = Self.batch(6, sequence: 1, seed: 2)
        // The segment write of exactly this batch never completes; everything else does.
        harness.driver.holdBack = { operation in
            if case .write(_, _, let bytes, _) = operation { bytes.count == unwritten.count } else { false }
        }
        let outcome = unwritten.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        guard case .placed(let offset, _) = outcome else { throw TestFailure("not placed: \(outcome)") }
        harness.passTime(micros: 1_100_000)
        harness.passTime(micros: 1_100_000)
        harness.driver.holdBack = nil
        try harness.driver.crashAndRecover()
        let retried = try Self.offer(harness, id, unwritten)
        #expect(retried == .placed(offset: offset, end: offset.advanced(by: unwritten.count)), "got \(retried)")
        #expect(try harness.readAll(id).count == 2)
    }

    /// Reservations undone for a full disk leave the producer owing the undone batch again.
    @Test func batchesUndoneForAFullDiskAreOwedAgain() throws {
        let disk = SimulatedDisk()
        let harness = try Harness(disk: disk)
        let id = try harness.createLog("full")
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(4, sequence: 0, seed: 1)))
        disk.writeFault = { path, _, _ in path.hasSuffix(".seg") ? .error(errno: ENOSPC) : nil }
        let lost = try Self.offer(harness, id, Self.batch(4, sequence: 1, seed: 2))
        guard case .placed = lost else { throw TestFailure("not placed: \(lost)") }
        #expect(harness.driver.takeEvents().contains { if case .appendsRewound = $0 { true } else { false } })
        disk.writeFault = nil
        _ = try Self.placedOffset(try Self.offer(harness, id, Self.batch(4, sequence: 1, seed: 2)))
        #expect(try harness.readAll(id).count == 2)
    }

    /// A data directory from before format 2 (format-1 batches, a format-1 checkpoint) opens:
    /// its batches read back, record numbers count from 0 at its checkpoint, and the next
    /// checkpoint is format 2.
    @Test func aFormatOneCheckpointStillOpens() throws {
        let harness = try Harness()
        let id = try harness.createLog("old")
        let old = try (0..<5).map { try harness.append(id, payload(30, seed: $0)) }
        try harness.shutDownCleanlyAndReopen()
        let path = "/data/logs/old/checkpoint"
        guard let bytes = harness.disk.contents(of: path), var checkpoint = Checkpoint(decoding: bytes) else {
            throw TestFailure("no checkpoint to rewrite")
        }
        checkpoint.nextRecord = nil
        let formatOne = checkpoint.encoded()
        #expect(formatOne.count == 44 && formatOne.prefix(4).elementsEqual([0x52, 0x4C, 0x43, 0x31]), "RLC1, 44 bytes")
        let fd = Int32(harness.disk.perform(.open(path: CPath(path), flags: O_WRONLY | O_TRUNC, mode: 0)))
        formatOne.withUnsafeBytes { _ = harness.disk.perform(.write(fd: fd, position: 0, bytes: $0, uncached: false)) }
        _ = harness.disk.perform(.fdatasync(fd: fd))
        _ = harness.disk.perform(.close(fd: fd))
        try harness.driver.crashAndRecover()
        #expect(try harness.readAll(id).map(\.offset) == old)
        let numbered = try Self.placedOffset(try Self.offer(harness, id, Self.batch(0, sequence: 0, records: 2, seed: 1)))
        harness.driver.runUntilQuiet()
        let header = try harness.read(id, from: numbered, maxBytes: 1).get().withUnsafeBytes { BatchHeader(unchecked: $0.baseAddress!) }
        #expect(header.firstRecord == 0, "counted from the format-1 checkpoint's offset")
        try harness.shutDownCleanlyAndReopen()
        #expect(harness.disk.contents(of: path)?.prefix(4).elementsEqual([0x52, 0x4C, 0x43, 0x32]) == true, "rewritten as RLC2")
        #expect(harness.store.log(id)?.info.committedRecords == 2)
    }

    /// Every batch, of either format, advances the log's record count; a format-2 batch carries
    /// the number of its first record, across segments, restarts and crashes.
    @Test func recordNumbersCountEveryRecordInLogOrder() throws {
        let harness = try Harness()
        let id = try harness.createLog("n")
        var expected: [LogOffset: UInt64] = [:]
        var count: UInt64 = 0
        for round in 0..<300 {
            let records = 1 + round % 4
            if round % 5 == 0 {
                let framed = RecordFraming.batch((0..<records).map { payload(8, seed: $0) }, format: .v1)
                _ = try Self.placedOffset(try Self.offer(harness, id, framed))
            } else {
                let offset = try Self.placedOffset(try Self.offer(harness, id, Self.batch(0, sequence: 0, records: records, seed: round, size: 200)))
                expected[offset] = count
            }
            count += UInt64(records)
            if round == 100 { try harness.shutDownCleanlyAndReopen() }
            if round == 200 { try harness.driver.crashAndRecover() }
        }
        #expect(harness.store.log(id)!.info.segmentCount > 1)
        var seen = 0
        for (offset, _) in try harness.readAll(id) {
            let result = try harness.read(id, from: offset, maxBytes: 1).get()
            let header = result.withUnsafeBytes { BatchHeader(unchecked: $0.baseAddress!) }
            guard let number = expected[offset] else { continue }
            #expect(header.firstRecord == number, "batch at \(offset)")
            seen += 1
        }
        #expect(seen == expected.count)
    }
}
