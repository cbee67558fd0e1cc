import Foundation
import Glibc
import RingLogClient
import RingLogIO
import RingLogTestKit
import RingLogWire
import Synchronization
import Testing

/// The idempotent Producer against a real ringlogd killed with SIGKILL while batches are in
/// flight and while they are being sent again: every record is acknowledged, and each is in the
/// log exactly once, at the position its acknowledgement gave.
@Suite(.serialized) struct IdempotentProducerTests {
    final class Answers: Sendable {
        let values = Mutex<[Int: Result<RecordPosition, RingLogError>]>([:])
    }

    @Test func killNineDuringSendsAndRetriesLosesAndDuplicatesNothing() async throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let port = try freeLoopbackPort()
        let arguments = ["--listen", "127.0.0.1:\(port)"]
        var daemon = try Daemon(directory: directory, quiet: true, arguments: arguments)
        defer { daemon.kill(SIGKILL) }
        let client = try await RingLogClient.connect(to: "127.0.0.1:\(port)")
        let log = try await client.createLog("exactly-once").logID
        let producer = try await client.producer(
            for: log, configuration: ProducerConfiguration(lingerMillis: 1, batchBytes: 600, maxBatchesInFlight: 16, retryTimeoutMillis: 60_000))
        #expect(producer.producerId != nil, "idempotent by default")

        let total = 4_000
        let results = Answers()
        let sender = Task.detached {
            for index in 0..<total {
                producer.send(Array("record \(index) ".utf8) + [UInt8](repeating: UInt8(index % 251), count: 40)) { result in
                    results.values.withLock { $0[index] = result }
                }
                // Spread the sends over the kills below.
                if index % 50 == 49 { try? await Task.sleep(nanoseconds: 2_000_000) }
            }
        }
        func answered() -> Int { results.values.withLock { $0.count } }
        func waitUntil(_ count: Int, seconds: Double) async {
            let deadline = Date().addingTimeInterval(seconds)
            while answered() < count && Date() < deadline { try? await Task.sleep(nanoseconds: 5_000_000) }
        }
        // Kill -9 with batches in flight, come back, and kill again while the producer is
        // sending its unanswered batches again.
        for round in 0..<3 {
            await waitUntil(total * (round + 1) / 5, seconds: 30)
            daemon.kill(SIGKILL)
            _ = daemon.waitForExit()
            try await Task.sleep(nanoseconds: 150_000_000)
            daemon = try Daemon(directory: directory, quiet: true, arguments: arguments)
            if round == 1 {
                try await Task.sleep(nanoseconds: 30_000_000)
                daemon.kill(SIGKILL)
                _ = daemon.waitForExit()
                daemon = try Daemon(directory: directory, quiet: true, arguments: arguments)
            }
        }
        await sender.value
        producer.flush()
        await waitUntil(total, seconds: 60)
        let final = results.values.withLock { $0 }
        #expect(final.count == total, "every record answered")
        let failures = final.values.compactMap { if case .failure(let error) = $0 { error } else { nil } }
        #expect(failures.isEmpty, "\(failures.count) failed, first: \(failures.first.map { "\($0)" } ?? "")")
        let counts = await producer.retryCounts()
        #expect(counts.resentBatches > 0 && counts.reconnections >= 1, "the kills made it send again: \(counts)")

        // Read everything back on a new connection: each record once, where it was acknowledged.
        let reader = try await RingLogClient.connect(to: "127.0.0.1:\(port)")
        var seen: [String: RecordPosition] = [:]
        var duplicates = 0
        var offset = LogOffset.zero
        while true {
            let fetched = try await reader.read(from: log, offset: offset)
            if fetched.isEmpty { break }
            for record in try fetched.records() {
                // "record N " names it.
                let name = String(decoding: record.bytes.prefix(while: { $0 != 0x20 }) + [0x20] + record.bytes.dropFirst(7).prefix(while: { $0 != 0x20 }), as: UTF8.self)
                if seen[name] != nil { duplicates += 1 }
                seen[name] = record.position
            }
            offset = fetched.nextOffset
        }
        #expect(duplicates == 0)
        #expect(seen.count == total, "records in the log: \(seen.count) of \(total)")
        var misplaced = 0
        for (index, result) in final {
            guard case .success(let position) = result else { continue }
            if seen["record \(index)"] != position { misplaced += 1 }
        }
        #expect(misplaced == 0, "acknowledged positions that hold another record")
        reader.close()
        client.close()
    }
}
