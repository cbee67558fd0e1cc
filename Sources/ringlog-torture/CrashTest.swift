import ArgumentParser
import Foundation
import Glibc
import RingLogClient
import RingLogIO
import RingLogTestKit
import RingLogWire
import Synchronization

/// kill -9 the daemon under load, again and again, and check every acknowledged batch survives.
struct Crash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Kill ringlogd with SIGKILL under load for N cycles; check every acknowledged append survives.",
        discussion: """
            Each cycle starts ringlogd on the same data directory, verifies the whole log against what \
            was acknowledged (present, intact, at its offset, offsets contiguous, nothing that was never \
            sent), checks the reader can resume where it stopped, then runs writers (durable appends) and \
            a tailing reader for a random moment and kills the daemon with SIGKILL. The reader moves a \
            cursor after each read; after every restart the cursor must be at its last acknowledged \
            position or a later one it sent. Beside them, one idempotent Producer (the client library's, \
            on its own connection) sends numbered records through every cycle, resending what was not \
            acknowledged whenever the daemon comes back: after every restart each of its records must be \
            in the log at most once, and each acknowledged one where its acknowledgement said. Exits 1 \
            on any loss, duplicate or misplaced record.
            """)

    @Option(help: "Kill-and-restart cycles.") var cycles = 50
    @Option(help: "Concurrent writers (each pipelines several appends).") var writers = 4
    @Option(help: "Longest load before the kill, in milliseconds (each kill comes at a random moment up to this).") var maxLoadMillis = 700
    @Option(help: "Give up (and fail) after this many seconds in all.") var maxSeconds = 900
    @Option(help: "Path to ringlogd (default: next to this program).") var ringlogd: String?
    @Option(help: "Random seed (default: from the clock).") var seed: UInt64?

    func run() async throws {
        let directory = makeTemporaryDirectory(prefix: "ringlog-crash")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let seed = self.seed ?? UInt64(Date().timeIntervalSince1970 * 1000)
        var generator = SeededGenerator(seed: seed)
        let deadline = Date().addingTimeInterval(Double(maxSeconds))
        let ledger = Ledger()
        var readerPosition = LogOffset.zero
        var verifiedTotal = 0
        var lost = 0
        var strangers = 0
        let cursor = Shared(CursorLedger())
        var cursorsBehind = 0
        // One port for every run of the daemon, so the idempotent producer finds it again.
        let port = try freeLoopbackPort()
        let daemonArguments = ["--segment-bytes", "16MiB", "--listen", "127.0.0.1:\(port)"]
        let producerLedger = ProducerLedger()
        var producerTask: Task<Void, Never>?
        var duplicates = 0
        var misplaced = 0
        log("crash test: \(cycles) cycles, \(writers) writers, seed \(seed), data \(directory)")
        for cycle in 1...cycles {
            guard Date() < deadline else { throw TestFailure("out of time after \(cycle - 1) cycles") }
            let daemon = try Daemon(executable: ringlogdExecutable(ringlogd), directory: directory, quiet: true, arguments: daemonArguments)
            let client = try await RingLogClient.connect(to: daemon.address.description)
            let log = cycle == 1 ? try await client.createLog("crash").logID : try await client.info("crash").logID
            if producerTask == nil { producerTask = try await startProducer(client, log, producerLedger) }
            let check = try await verify(client, log, ledger: ledger, readerPosition: readerPosition, producerLedger: producerLedger)
            duplicates += check.duplicates
            misplaced += check.misplaced
            if check.duplicates > 0 || check.misplaced > 0 {
                RingLogTorture.log("cycle \(cycle): producer records DUPLICATED \(check.duplicates), MISPLACED \(check.misplaced)")
            }
            verifiedTotal += check.verified
            lost += check.lost
            strangers += check.strangers
            if check.lost > 0 || check.strangers > 0 || !check.readerResumed {
                RingLogTorture.log("cycle \(cycle): LOST \(check.lost), UNKNOWN \(check.strangers), reader resumed: \(check.readerResumed)")
            }
            if !(try await checkCursor(client, log, cursor)) {
                cursorsBehind += 1
                RingLogTorture.log("cycle \(cycle): CURSOR outside [acknowledged, sent]: \(cursor.value)")
            }
            let loadMillis = UInt64.random(in: 50...UInt64(maxLoadMillis), using: &generator)
            readerPosition = try await load(daemon, log: log, cycle: cycle, ledger: ledger, from: readerPosition, millis: loadMillis, cursor: cursor)
            client.close()
            if cycle % 10 == 0 || cycle == cycles {
                RingLogTorture.log("cycle \(cycle): \(ledger.acknowledgedCount) acknowledged so far, \(verifiedTotal) verifications, lost \(lost)")
            }
        }
        // One last start to check what the final kill left; the producer sends what it still owes
        // and stops.
        let daemon = try Daemon(executable: ringlogdExecutable(ringlogd), directory: directory, quiet: true, arguments: daemonArguments)
        let client = try await RingLogClient.connect(to: daemon.address.description)
        let finalLog = try await client.info("crash").logID
        producerLedger.stop()
        await producerTask?.value
        let settleDeadline = Date().addingTimeInterval(60)
        while !producerLedger.settled && Date() < settleDeadline { try await Task.sleep(for: .milliseconds(20)) }
        let check = try await verify(client, finalLog, ledger: ledger, readerPosition: readerPosition, producerLedger: producerLedger)
        verifiedTotal += check.verified
        lost += check.lost
        strangers += check.strangers
        duplicates += check.duplicates
        misplaced += check.misplaced
        let producer = producerLedger.counts
        let retries: (resentBatches: Int, reconnections: Int) = await producerLedger.producer.value?.retryCounts() ?? (0, 0)
        if !producerLedger.settled { RingLogTorture.log("the producer did not settle: \(producer)") }
        if !(try await checkCursor(client, finalLog, cursor)) { cursorsBehind += 1 }
        client.close()
        daemon.stop()
        let batchesLine = "cycles \(cycles)  batches acknowledged \(ledger.acknowledgedCount)  batches verified \(verifiedTotal)  lost \(lost)  unknown \(strangers)"
        let cursorLine = "cursor commits acknowledged \(cursor.value.acknowledgedCount)  cursor wrong \(cursorsBehind)"
        let producerLine =
            "producer records acknowledged \(producer.acknowledged) failed \(producer.failed) duplicated \(duplicates) misplaced \(misplaced) "
            + "(batches resent \(retries.resentBatches), reconnections \(retries.reconnections))"
        print("\(batchesLine)  \(cursorLine)  \(producerLine)  seed \(seed)")
        if lost > 0 || strangers > 0 || cursorsBehind > 0 || duplicates > 0 || misplaced > 0 || !producerLedger.settled || producer.acknowledged == 0 {
            throw ExitCode(1)
        }
    }

    struct Check {
        var verified = 0
        var lost = 0
        var strangers = 0
        var readerResumed = true
        /// The idempotent producer's records found more than once, or acknowledged and not where
        /// the acknowledgement said.
        var duplicates = 0
        var misplaced = 0
    }

    /// The idempotent producer: numbered records, sent from a task of their own until stopped,
    /// about 5,000 a second (enough to have batches in flight at every kill; more would only make
    /// each cycle's verification longer), at most 2,000 unanswered at a time.
    func startProducer(_ client: RingLogClient, _ log: LogID, _ ledger: ProducerLedger) async throws -> Task<Void, Never> {
        let producer = try await client.producer(for: log, configuration: ProducerConfiguration(lingerMillis: 0, batchBytes: 8 << 10, retryTimeoutMillis: 600_000))
        ledger.producer.update { $0 = producer }
        guard producer.producerId != nil else { throw TestFailure("the producer is not idempotent") }
        return Task.detached {
            var number = 0
            while !ledger.stopping {
                if ledger.unanswered >= 2_000 {
                    try? await Task.sleep(for: .milliseconds(2))
                    continue
                }
                let index = number
                ledger.sent()
                producer.send(Array("idem \(index) ".utf8) + [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: index % 300)) { result in
                    ledger.answered(index, result)
                }
                number += 1
                if number % 50 == 0 { try? await Task.sleep(for: .milliseconds(10)) }
            }
            producer.flush()
        }
    }

    /// Reads the whole log: every batch must be one a writer sent (whole and intact: the client
    /// checks CRCs), offsets contiguous, and every acknowledged batch must be there, unchanged.
    func verify(_ client: RingLogClient, _ log: LogID, ledger: Ledger, readerPosition: LogOffset, producerLedger: ProducerLedger) async throws -> Check {
        var check = Check()
        // The producer goes on while this reads: check what was acknowledged before the read began
        // (all of it below the end read next).
        let acknowledgedBefore = producerLedger.acknowledgedPositions()
        let info = try await client.info(log)
        var offset = info.startOffset
        // The idempotent producer appends while this reads: read up to the end as it is now.
        let end = info.committedEnd
        var found: [LogOffset: UInt64] = [:]
        var producerRecords: [Int: [RecordPosition]] = [:]
        while true {
            let fetched = try await client.read(from: log, offset: offset, maxBytes: 4 << 20)
            var position = offset
            try fetched.withUnsafeBytes { bytes in
                try BatchReader.forEachBatch(in: bytes, startingAt: offset) { batchOffset, header, payload in
                    precondition(batchOffset == position)
                    position = batchOffset.advanced(by: header.totalBytes)
                    if header.producer.id != 0 {
                        // The idempotent producer's batch: its records are "idem N ...".
                        guard let records = try? RecordFraming.records(in: payload, expectedCount: Int(header.recordCount)) else {
                            check.strangers += 1
                            return
                        }
                        for (index, range) in records.enumerated() {
                            guard let number = producerRecordNumber(UnsafeRawBufferPointer(rebasing: payload[range])) else {
                                check.strangers += 1
                                continue
                            }
                            producerRecords[number, default: []].append(RecordPosition(batchOffset: batchOffset, index: index))
                        }
                        return
                    }
                    let digest = fingerprint(payload)
                    if !ledger.wasSent(digest) { check.strangers += 1 }
                    found[batchOffset] = digest
                }
            }
            offset = fetched.nextOffset
            if offset >= end || fetched.isEmpty { break }
        }
        check.duplicates = producerRecords.values.filter { $0.count > 1 }.count
        for (number, position) in acknowledgedBefore where producerRecords[number] != [position] {
            check.misplaced += 1
        }
        var missingExamples: [String] = []
        for (ackOffset, digest) in ledger.acknowledged() {
            if found[ackOffset] == digest {
                check.verified += 1
            } else {
                check.lost += 1
                if missingExamples.count < 5 { missingExamples.append("\(ackOffset):\(found[ackOffset] == nil ? "absent" : "different")") }
            }
        }
        if !missingExamples.isEmpty {
            let info = try await client.info(log)
            RingLogTorture.log("  read \(found.count) batches up to \(offset); log \(info.startOffset)-\(info.committedEnd), \(info.segmentCount) segments; missing e.g. \(missingExamples.sorted())")
        }
        // The reader's saved position must still be a place it can read from.
        do {
            _ = try await client.read(from: log, offset: readerPosition, maxBytes: 1)
        } catch {
            check.readerResumed = false
        }
        return check
    }

    /// Writers append durably while a reader tails, until the daemon is killed. Returns where the
    /// reader got to.
    /// The reader's cursor after a restart: at its last acknowledged commit or a later one it
    /// sent (it only moves forward), never behind. Resets the ledger to what was found.
    func checkCursor(_ client: RingLogClient, _ log: LogID, _ cursor: Shared<CursorLedger>) async throws -> Bool {
        let found: LogOffset
        do {
            found = try await client.cursor("reader", in: log).batchOffset
        } catch {
            guard error.serverCode == .unknownCursor else { throw error }
            return cursor.value.acknowledged == nil
        }
        let ledger = cursor.value
        let good = found >= (ledger.acknowledged ?? .zero) && found <= max(ledger.sentMax, ledger.acknowledged ?? .zero)
        cursor.update { $0.acknowledged = found; $0.sentMax = found }
        return good
    }

    func load(_ daemon: Daemon, log: LogID, cycle: Int, ledger: Ledger, from position: LogOffset, millis: UInt64, cursor: Shared<CursorLedger>) async throws -> LogOffset {
        let address = daemon.address.description
        let readerEnd = Shared(position)
        let writerCount = writers
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writerCount {
                group.addTask {
                    guard let client = try? await RingLogClient.connect(to: address) else { return }
                    await withTaskGroup(of: Void.self) { pipeline in
                        for lane in 0..<4 {
                            pipeline.addTask {
                                var sequence = 0
                                while true {
                                    let records = makeRecords(cycle: cycle, writer: writer, lane: lane, sequence: sequence)
                                    var builder = BatchBuilder()
                                    for record in records { builder.add(record) }
                                    let batch = builder.finish()
                                    let digest = batch.withUnsafeBytes { fingerprint(UnsafeRawBufferPointer(rebasing: $0[Batch.Format.v2.headerBytes...])) }
                                    ledger.sent(digest)
                                    guard let ack = try? await client.append(to: log, batch: batch) else { return }
                                    ledger.acknowledge(ack.offset, digest)
                                    sequence += 1
                                }
                            }
                        }
                    }
                }
            }
            group.addTask {
                guard let client = try? await RingLogClient.connect(to: address) else { return }
                var offset = readerEnd.value
                while true {
                    guard let fetched = try? await client.read(from: log, offset: offset, maxWaitMillis: 200) else { return }
                    guard (try? fetched.records()) != nil else { return }
                    offset = fetched.nextOffset
                    readerEnd.update { $0 = offset }
                    // Move the reader's cursor past what it read.
                    cursor.update { $0.sentMax = max($0.sentMax, offset) }
                    guard (try? await client.commitCursor("reader", in: log, at: RecordPosition(batchOffset: offset, index: 0))) != nil else { return }
                    cursor.update {
                        $0.acknowledged = max($0.acknowledged ?? .zero, offset)
                        $0.acknowledgedCount += 1
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(millis))
            daemon.kill(SIGKILL)
            try await group.waitForAll()
        }
        return readerEnd.value
    }
}

/// N from a record "idem N ...", or nil.
func producerRecordNumber(_ record: UnsafeRawBufferPointer) -> Int? {
    let prefix = Array("idem ".utf8)
    guard record.count > prefix.count, record.prefix(prefix.count).elementsEqual(prefix) else { return nil }
    var number = 0
    var digits = 0
    for byte in record.dropFirst(prefix.count) {
        guard byte != UInt8(ascii: " ") else { break }
        guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte), digits < 18 else { return nil }
        number = number * 10 + Int(byte - UInt8(ascii: "0"))
        digits += 1
    }
    return digits > 0 ? number : nil
}

/// The idempotent producer's records: how many were sent and answered, and where each
/// acknowledged one is.
final class ProducerLedger: Sendable {
    private struct State {
        var sent = 0
        var answered = 0
        var failed = 0
        var acknowledged: [Int: RecordPosition] = [:]
        var stopping = false
    }
    private let state = Mutex(State())
    /// The producer, for its retry counts.
    let producer = Shared<Producer?>(nil)

    func sent() { state.withLock { $0.sent += 1 } }
    func answered(_ number: Int, _ result: Result<RecordPosition, RingLogError>) {
        state.withLock {
            $0.answered += 1
            switch result {
            case .success(let position): $0.acknowledged[number] = position
            case .failure: $0.failed += 1
            }
        }
    }
    func stop() { state.withLock { $0.stopping = true } }
    var stopping: Bool { state.withLock { $0.stopping } }
    var unanswered: Int { state.withLock { $0.sent - $0.answered } }
    /// Stopped, and every record sent has its answer.
    var settled: Bool { state.withLock { $0.stopping && $0.sent == $0.answered } }
    func acknowledgedPositions() -> [Int: RecordPosition] { state.withLock { $0.acknowledged } }
    var counts: (sent: Int, acknowledged: Int, failed: Int) { state.withLock { ($0.sent, $0.acknowledged.count, $0.failed) } }
}

/// The reader's cursor: its last acknowledged position and the furthest it sent.
struct CursorLedger: Sendable, CustomStringConvertible {
    var acknowledged: LogOffset?
    var sentMax = LogOffset.zero
    var acknowledgedCount = 0
    var description: String { "acknowledged \(acknowledged.map { "\($0)" } ?? "none"), sent up to \(sentMax)" }
}

/// What writers sent and what was acknowledged, shared by their tasks.
final class Ledger: Sendable {
    private struct State {
        var sent: Set<UInt64> = []
        var acknowledged: [LogOffset: UInt64] = [:]
    }
    private let state = Mutex(State())

    func sent(_ digest: UInt64) { state.withLock { _ = $0.sent.insert(digest) } }
    func wasSent(_ digest: UInt64) -> Bool { state.withLock { $0.sent.contains(digest) } }
    func acknowledge(_ offset: LogOffset, _ digest: UInt64) { state.withLock { $0.acknowledged[offset] = digest } }
    func acknowledged() -> [LogOffset: UInt64] { state.withLock { $0.acknowledged } }
    var acknowledgedCount: Int { state.withLock { $0.acknowledged.count } }
}

/// Records unique to (cycle, writer, lane, sequence), of varied sizes.
func makeRecords(cycle: Int, writer: Int, lane: Int, sequence: Int) -> [[UInt8]] {
    var generator = SeededGenerator(seed: UInt64(cycle) << 40 ^ UInt64(writer) << 32 ^ UInt64(lane) << 28 ^ UInt64(sequence))
    let count = Int.random(in: 1...5, using: &generator)
    return (0..<count).map { index in
        var record = Array("c\(cycle) w\(writer) l\(lane) s\(sequence) r\(index) ".utf8)
        record += (0..<Int.random(in: 0...2000, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return record
    }
}

/// FNV-1a, 64 bits: a batch's identity in the ledger.
func fingerprint(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
    return hash
}
