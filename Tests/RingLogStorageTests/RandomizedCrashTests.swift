import Glibc
import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Random appends of random sizes (crossing segment, cache and checkpoint boundaries), random
/// completion order of the disk requests in flight, random trims, reads and clock jumps, and power
/// cuts at random moments (unsynced writes dropped or torn at a random byte). After every recovery:
/// every acknowledged batch is present, intact and at its offset; the log is a contiguous run of
/// whole, valid batches, each one that some append placed at exactly that offset; and whatever the
/// recovered log holds survives every later crash. A third of the appends come from an idempotent
/// producer (format 2): after every crash it sends again what was not acknowledged, and each of
/// those batches is then in the log exactly once (answered as a duplicate where it survived);
/// a retry of an acknowledged one is answered with its offset.
@Suite struct RandomizedCrashTests {
    /// `RINGLOG_CRASH_SEEDS=500 swift test --filter RandomizedCrashTests` runs a longer soak.
    /// `RINGLOG_CRASH_SEED=148` replays one seed.
    static let seeds: [UInt64] =
        Environment.integer("RINGLOG_CRASH_SEED").map { [UInt64($0)] } ?? Array(1...UInt64(Environment.integer("RINGLOG_CRASH_SEEDS") ?? 8))

    @Test(arguments: seeds)
    func everyAcknowledgedBatchSurvivesRandomCrashes(seed: UInt64) throws {
        var model = try CrashModel(seed: seed)
        for _ in 0..<1_500 { try model.randomStep() }
        try model.crashAndVerify()
        #expect(model.crashes >= 5, "seed \(seed) crashed only \(model.crashes) times")
        #expect(model.verifiedBatches > 500, "seed \(seed) verified only \(model.verifiedBatches) batches")
        #expect(model.harness.store.log(model.id)!.info.segmentCount + model.segmentsTrimmed > 3, "seed \(seed) never rotated")
        #expect(model.cursorCommitsAcknowledged > 0, "seed \(seed) never had a cursor commit acknowledged")
        #expect(model.producerRetries > 0, "seed \(seed) never retried a producer's batch")
        print("seed \(seed): \(model.crashes) crashes, \(model.cuts) cuts, \(model.verifiedBatches) batches verified, \(model.producerRetries) producer retries")
    }

    /// A seed replays exactly: the same appends, completion orders, crashes and tears, the same log
    /// id (drawn from the injected random source) and byte-identical files. A different seed
    /// gives a different run, so the comparison can fail.
    @Test func aSeedReplaysTheSameRunByteForByte() throws {
        func run(_ seed: UInt64) throws -> [String] {
            var model = try CrashModel(seed: seed)
            for _ in 0..<600 { try model.randomStep() }
            try model.crashAndVerify()
            var trace = ["id \(model.id) crashes \(model.crashes) cuts \(model.cuts) verified \(model.verifiedBatches)"]
            func walk(_ path: String) {
                let children = model.harness.disk.names(in: path)
                if children.isEmpty {
                    let bytes = model.harness.disk.contents(of: path) ?? []
                    trace.append("\(path) \(bytes.count) \(CRC32C.checksum(bytes))")
                }
                for child in children { walk("\(path)/\(child)") }
            }
            walk("/data")
            return trace
        }
        let first = try run(31)
        #expect(first.count > 4, "the run left files to compare: \(first)")
        #expect(try run(31) == first)
        #expect(try run(32) != first)
    }

    /// Guards the crash test against going vacuous: across a few seeds, power cuts must really
    /// leave torn or unsynced tails that recovery cuts.
    @Test func powerCutsReallyLeaveTornTails() throws {
        var cuts = 0
        for seed: UInt64 in 1001...1010 {
            var model = try CrashModel(seed: seed)
            for _ in 0..<800 { try model.randomStep() }
            cuts += model.cuts
        }
        print("guard seeds: \(cuts) torn tails cut")
        // Deterministic (seeded): 4 in seeds 1001-1005 when written, CUTS in 1001-1010 once disk reads
        // changed the order of operations. A drop below 3 means cuts stopped being tested.
        #expect(cuts >= 3, "only \(cuts) torn tails in ten seeds")
    }
}

struct CrashModel {
    let harness: Harness
    let id: LogID
    var generator: SeededGenerator
    /// Appends placed and not yet acknowledged: offset -> (end, payload).
    var unacknowledged: [LogOffset: (end: LogOffset, payload: [UInt8])] = [:]
    /// Batches the log must hold: acknowledged, or found by a recovery (which made them durable).
    var mustHold: [LogOffset: [UInt8]] = [:]
    /// Every payload ever placed at each offset, across restarts.
    var everPlaced: [LogOffset: [[UInt8]]] = [:]
    var start = LogOffset.zero
    var highestTrimRequested = LogOffset.zero
    var crashes = 0
    var verifiedBatches = 0
    var segmentsTrimmed = 0
    /// Recoveries that found and cut a torn or lost tail.
    var cuts = 0
    /// The model cursor: its last acknowledged (or recovered) position, the commits sent since, in
    /// order, and those still unanswered by context.
    var cursorDurable: CursorPosition?
    var cursorSentSince: [CursorPosition] = []
    var cursorPending: [UInt64: CursorPosition] = [:]
    var nextCursorContext: UInt64 = 1 << 40
    var cursorCommitsAcknowledged = 0
    /// The model producer (id 42): the sequence it owes next, its batches placed and not yet
    /// acknowledged, in order, and its latest acknowledged ones.
    static let producerId: UInt64 = 42
    var producerNext: UInt32 = 0
    var producerInFlight: [(sequence: UInt32, batch: [UInt8], payload: [UInt8], offset: LogOffset, end: LogOffset)] = []
    var producerAcknowledged: [(batch: [UInt8], offset: LogOffset)] = []
    var producerRetries = 0
    /// Payloads sent in format-2 batches (64-byte header; the others have 48).
    var formatTwoPayloads: Set<[UInt8]> = []

    init(seed: UInt64) throws {
        harness = try Harness(seed: seed, configuration: .small(segmentBytes: 64 << 10, tailCacheBytes: 128 << 10))
        generator = SeededGenerator(seed: seed &* 7_919)
        id = try harness.createLog("random")
    }

    mutating func randomStep() throws {
        let roll = Int.random(in: 0..<1000, using: &generator)
        switch roll {
        case 0..<560: try appendRandomBatch()
        case 560..<880: harness.driver.step(completing: Int.random(in: 1...8, using: &generator))
        case 880..<920:
            harness.driver.nowMicros += UInt64.random(in: 0...2_000_000, using: &generator)
            harness.driver.maintain()
        case 920..<961: try readRandomBatch()
        case 961..<966: try commitCursorSomewhere()
        case 966..<975: try seekRandomTime()
        case 975..<988: try trimSomewhere()
        default:
            // Half the power cuts come right after a burst of appends with little I/O finished,
            // so there is an unsynced tail to lose or tear.
            if Bool.random(using: &generator) {
                for _ in 0..<Int.random(in: 1...4, using: &generator) { try appendRandomBatch() }
                harness.driver.step(completing: Int.random(in: 0...2, using: &generator))
            }
            try crashAndVerify()
        }
        try absorbEvents()
    }

    private mutating func appendRandomBatch() throws {
        let size: Int
        switch Int.random(in: 0..<100, using: &generator) {
        case 0..<70: size = Int.random(in: 1...300, using: &generator)
        case 70..<95: size = Int.random(in: 301...4000, using: &generator)
        default: size = Int.random(in: 4001...(16 << 10) - Batch.minHeaderBytes, using: &generator)
        }
        var bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let idempotent = Int.random(in: 0..<3, using: &generator) == 0
        var batch: [UInt8]
        if idempotent {
            bytes = Array("producer sequence \(producerNext) ".utf8) + bytes.prefix((16 << 10) - 64 - 40)
            batch = Batch.make(payload: bytes, format: .v2, producer: ProducerStamp(id: Self.producerId, epoch: 0, baseSequence: producerNext))
            formatTwoPayloads.insert(bytes)
        } else {
            batch = Batch.make(payload: bytes)
        }
        let outcome = batch.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
        switch outcome {
        case .placed(let offset, let end):
            unacknowledged[offset] = (end, bytes)
            everPlaced[offset, default: []].append(bytes)
            if idempotent {
                producerInFlight.append((producerNext, batch, bytes, offset, end))
                producerNext += 1
            }
        case .wouldBlock:
            harness.driver.step(completing: 4)
        case .failed(let error):
            throw TestFailure("append failed with no fault injected: \(error)")
        case .duplicate, .endMismatch:
            throw TestFailure("a plain append came back \(outcome)")
        }
    }

    private mutating func readRandomBatch() throws {
        guard let offset = mustHold.keys.filter({ $0 >= start }).sorted().randomElement(using: &generator) else { return }
        let result = try harness.read(id, from: offset, maxBytes: Int.random(in: 1...20_000, using: &generator)).get()
        let batches = try harness.batches(result)
        guard let first = batches.first else { throw TestFailure("read at acknowledged \(offset) returned nothing") }
        try check(first.payload == mustHold[offset], "read at \(offset) returned different bytes")
        for batch in batches {
            try check(everPlaced[batch.offset]?.contains(batch.payload) == true, "read returned a batch at \(batch.offset) nobody appended")
        }
        try check(result.nextOffset <= harness.store.log(id)!.committedEnd, "read returned uncommitted bytes")
    }

    /// Moves the model cursor to an acknowledged batch (or the committed end), inside it at times.
    private mutating func commitCursorSomewhere() throws {
        guard let log = harness.store.log(id) else { return }
        let targets = mustHold.keys.filter { $0 >= start && $0 < log.committedEnd }
        let offset = targets.randomElement(using: &generator) ?? log.committedEnd
        let position = CursorPosition(offset: offset, index: UInt32.random(in: 0...2, using: &generator))
        let context = nextCursorContext
        nextCursorContext += 1
        switch harness.store.commitCursor(id, name: "model", position: position, expected: nil, context: context) {
        case .pending:
            cursorPending[context] = position
            cursorSentSince.append(position)
        case .failed(let error):
            throw TestFailure("cursor commit to \(position) refused: \(error)")
        }
    }

    /// A lookup by time, checked against the times of every kept committed batch read back.
    private mutating func seekRandomTime() throws {
        guard let log = harness.store.log(id) else { return }
        let committed = log.committedEnd
        var times: [(offset: LogOffset, time: UInt64)] = []
        var offset = log.startOffset
        while offset < committed {
            let result = try harness.read(id, from: offset, maxBytes: 64 << 10).get()
            try result.withUnsafeBytes { bytes in
                try StoredBatches.forEach(in: bytes, startingAt: offset, damaged: { TestFailure($0.description) }) { batchOffset, header, _ throws(TestFailure) in
                    times.append((batchOffset, header.appendTimeMicros))
                }
            }
            guard result.nextOffset > offset else { break }
            offset = result.nextOffset
        }
        guard let first = times.first, let last = times.last else { return }
        try check(zip(times, times.dropFirst()).allSatisfy { $0.time <= $1.time }, "append times went back")
        let target =
            Bool.random(using: &generator)
            ? times.randomElement(using: &generator)!.time : UInt64.random(in: (first.time - min(first.time, 1_000))...(last.time + 1_000), using: &generator)
        let expected = times.first { $0.time >= target }?.offset ?? committed
        let answer = try harness.seek(id, atOrAfter: target).get()
        // The log may have moved on while the lookup read (appends committed, a trim): the answer
        // is checked against what held when it was asked, allowing for a start that moved.
        try check(answer == expected || answer == max(expected, harness.store.log(id)!.startOffset) || (expected == committed && answer >= committed),
            "seek to \(target) answered \(answer), expected \(expected)")
    }

    private mutating func trimSomewhere() throws {
        let candidates = mustHold.keys.filter { $0 > start }.sorted()
        guard candidates.count > 20 else { return }
        let target = candidates[Int.random(in: 0..<(candidates.count / 2), using: &generator)]
        highestTrimRequested = max(highestTrimRequested, target)
        let segmentsBefore = harness.store.log(id)!.info.segmentCount
        let newStart = try harness.trim(id, to: target).get()
        try check(newStart >= target, "trim to \(target) reported start \(newStart)")
        segmentsTrimmed += max(0, segmentsBefore - harness.store.log(id)!.info.segmentCount)
        advanceStart(to: newStart)
    }

    private mutating func advanceStart(to newStart: LogOffset) {
        start = max(start, newStart)
        mustHold = mustHold.filter { $0.key >= start }
    }

    /// Applies the store's notifications: a committed end acknowledges every append below it.
    private mutating func absorbEvents() throws {
        for event in harness.driver.takeEvents() {
            switch event {
            case .committed(let logID) where logID == id:
                let committed = harness.store.log(id)!.committedEnd
                for (offset, entry) in unacknowledged where entry.end <= committed {
                    mustHold[offset] = entry.payload
                    unacknowledged[offset] = nil
                }
                while let first = producerInFlight.first, first.end <= committed {
                    producerAcknowledged.append((first.batch, first.offset))
                    producerInFlight.removeFirst()
                }
                producerAcknowledged = Array(producerAcknowledged.suffix(8))
            case .logFailed(_, let error), .appendsRewound(_, _, let error):
                throw TestFailure("storage failure with no fault injected: \(error)")
            case .trimmed(_, .success(let newStart)):
                advanceStart(to: newStart)
            case .cursorUpdated(let context, let result):
                guard let sent = cursorPending.removeValue(forKey: context) else { break }
                guard case .success(let position) = result, position == sent else { throw TestFailure("cursor commit answered \(result)") }
                // Answers come in commit order: everything sent up to this one is settled.
                guard let index = cursorSentSince.firstIndex(of: sent) else { throw TestFailure("cursor answer for a commit not sent") }
                cursorSentSince.removeFirst(index + 1)
                cursorDurable = sent
                cursorCommitsAcknowledged += 1
            default:
                break
            }
        }
    }

    mutating func crashAndVerify() throws {
        try absorbEvents()
        try harness.driver.crashAndRecover()
        crashes += 1
        unacknowledged.removeAll()
        if harness.store.recoveryReports.first?.cut != nil { cuts += 1 }
        guard let log = harness.store.log(id) else { throw TestFailure("the log vanished in a crash") }
        try check(log.startOffset >= start && log.startOffset <= max(start, highestTrimRequested),
            "start \(log.startOffset) outside [\(start), \(highestTrimRequested)]")
        advanceStart(to: log.startOffset)
        if let end = mustHold.map({ $0.key.advanced(by: headerBytes($0.value) + $0.value.count) }).max() {
            try check(log.committedEnd >= end, "committed end \(log.committedEnd) below acknowledged end \(end)")
        }
        let all = try harness.readAll(id)
        var found: [LogOffset: [UInt8]] = [:]
        var expected = log.startOffset
        for batch in all {
            try check(batch.offset == expected, "gap or overlap at \(batch.offset), expected \(expected)")
            try check(everPlaced[batch.offset]?.contains(batch.payload) == true, "batch at \(batch.offset) was never appended there")
            found[batch.offset] = batch.payload
            expected = batch.offset.advanced(by: headerBytes(batch.payload) + batch.payload.count)
        }
        try check(expected == log.committedEnd, "batches end at \(expected), log says \(log.committedEnd)")
        // The cursor is at its last acknowledged position or a later one that was sent.
        let cursor = try? harness.store.cursor(id, name: "model").get()
        try check(cursor == cursorDurable || (cursor != nil && cursorSentSince.contains(cursor!)),
            "cursor at \(String(describing: cursor)); acknowledged \(String(describing: cursorDurable)), sent since \(cursorSentSince)")
        cursorDurable = cursor
        cursorSentSince = []
        cursorPending = [:]
        for (offset, bytes) in mustHold {
            try check(found[offset] == bytes, "acknowledged batch at \(offset) is \(found[offset] == nil ? "missing" : "different")")
            verifiedBatches += 1
        }
        mustHold = found
        try retryProducerBatches(found: found)
    }

    private func headerBytes(_ payload: [UInt8]) -> Int { formatTwoPayloads.contains(payload) ? Batch.maxHeaderBytes : Batch.minHeaderBytes }

    /// After a crash the producer sends again, in order, every batch not acknowledged: one that
    /// survived is answered as a duplicate at the offset where it is; one that was lost is
    /// stored (and so is every later one: a crash cuts a tail). A retry of an acknowledged batch
    /// gets its offset back.
    private mutating func retryProducerBatches(found: [LogOffset: [UInt8]]) throws {
        let retrying = producerInFlight
        producerInFlight = []
        var lostOne = false
        for sent in retrying {
            producerRetries += 1
            switch try offerUntilPlaced(sent.batch) {
            case .duplicate(let offset, let end):
                try check(!lostOne, "sequence \(sent.sequence) survived after an earlier one was lost")
                try check(found[offset] == sent.payload, "retry of sequence \(sent.sequence) answered \(offset), which holds something else")
                try check(end == offset.advanced(by: sent.batch.count), "retry of sequence \(sent.sequence) answered a wrong end")
            case .placed(let offset, let end):
                lostOne = true
                try check(!found.values.contains(sent.payload), "sequence \(sent.sequence) is in the log and was stored again")
                unacknowledged[offset] = (end, sent.payload)
                everPlaced[offset, default: []].append(sent.payload)
                producerInFlight.append((sent.sequence, sent.batch, sent.payload, offset, end))
            case let other:
                throw TestFailure("retry of sequence \(sent.sequence) came back \(other)")
            }
        }
        if let acknowledged = producerAcknowledged.randomElement(using: &generator), acknowledged.offset >= start {
            producerRetries += 1
            let outcome = try offerUntilPlaced(acknowledged.batch)
            try check(outcome == .duplicate(offset: acknowledged.offset, end: acknowledged.offset.advanced(by: acknowledged.batch.count)),
                "retry of an acknowledged batch at \(acknowledged.offset) came back \(outcome)")
        }
    }

    private func offerUntilPlaced(_ batch: [UInt8]) throws -> AppendOutcome {
        for _ in 0..<1_000 {
            let outcome = batch.withUnsafeBytes { harness.store.append(to: id, batch: $0) }
            if outcome != .wouldBlock { return outcome }
            harness.driver.step(completing: 4)
        }
        throw TestFailure("append kept blocking")
    }

    private func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        if !condition { throw TestFailure(message()) }
    }
}

enum Environment {
    static func integer(_ name: String) -> Int? {
        guard let value = getenv(name) else { return nil }
        return Int(String(cString: value))
    }
}
