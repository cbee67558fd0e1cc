import Foundation
import RingLogClient
import RingLogIO
import RingLogServer
import RingLogTestKit
import RingLogTesting
import RingLogWire
import Testing

@Suite struct ClientTests {
    @Test func theAsyncAPIRoundTripsEveryOperation() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        #expect(client.server.maxBatchBytes == 1 << 20)
        try await client.ping()
        let log = try await client.createLog("orders")
        let first = try await client.append(to: log.logID, records: [Array("a".utf8), Array("bb".utf8)])
        let second = try await client.append(to: log.logID, records: [Array("ccc".utf8)], mode: .written)
        #expect(first.offset == .zero)
        #expect(second.offset == LogOffset(64 + 4 + 1 + 4 + 2), "format 2: a 64-byte header")
        var records: [Record] = []
        var offset = LogOffset.zero
        while records.count < 3 {
            let fetched = try await client.read(from: log.logID, offset: offset, maxWaitMillis: 500)
            records += try fetched.records()
            offset = fetched.nextOffset
        }
        #expect(records.map(\.bytes) == [Array("a".utf8), Array("bb".utf8), Array("ccc".utf8)])
        #expect(records.map(\.position) == [
            RecordPosition(batchOffset: .zero, index: 0), RecordPosition(batchOffset: .zero, index: 1),
            RecordPosition(batchOffset: second.offset, index: 0),
        ])
        #expect(try await client.info("orders").committedEnd == offset)
        #expect(try await client.info(log.logID).name == "orders")
        #expect(try await client.listLogs().map(\.name) == ["orders"])
        #expect(try await client.trim(log.logID, to: second.offset) == second.offset)
        let stats = try await client.serverStats()
        #expect(stats.first { $0.name == "appends_total" }?.value == 2)
        try await client.deleteLog("orders")
        #expect(try await client.listLogs().isEmpty)
    }

    /// Large read responses are received into a buffer the connection reuses once nothing holds it:
    /// one a caller keeps must never be overwritten by the next.
    @Test func aKeptLargeReadIsNotOverwrittenByTheNext() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        let log = try await client.createLog("large")
        let records = (0..<4).map { batch in (0..<3).map { index in payload(100_000, seed: batch * 10 + index) } }
        var offsets: [LogOffset] = []
        for batch in records { offsets.append(try await client.append(to: log.logID, records: batch).offset) }
        let kept = try await client.read(from: log.logID, offset: offsets[0], maxBytes: 1)
        #expect(kept.byteCount > 128 << 10, "the response takes the large-body path")
        for index in 1..<records.count {
            let next = try await client.read(from: log.logID, offset: offsets[index], maxBytes: 1)
            #expect(try next.records().map(\.bytes) == records[index])
            #expect(try kept.records().map(\.bytes) == records[0])
        }
    }

    @Test func serverErrorsArriveWithTheirCodesAndDetails() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        let log = try await client.createLog("errors")
        _ = try await client.append(to: log.logID, records: [[1, 2, 3]])
        do {
            _ = try await client.read(from: log.logID, offset: LogOffset(1_000))
            Issue.record("a read past the end succeeded")
        } catch {
            guard case .server(let failure) = error else { throw error }
            #expect(failure.code == .offsetOutOfRange)
            #expect(failure.validRange == LogOffset(0)...LogOffset(71))
        }
        await #expect(throws: RingLogError.server(ServerError(code: .unknownLog, message: "unknown log missing"))) {
            _ = try await client.info("missing")
        }
        do {
            _ = try await client.createLog("errors")
            Issue.record("created twice")
        } catch {
            #expect(error.serverCode == .logExists)
        }
        try await client.ping()
    }

    @Test func seekingByTimeFindsTheFirstBatchAtOrAfterIt() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        #expect(client.server.features.contains(.seekTime))
        let log = try await client.createLog("when").logID
        let first = try await client.append(to: log, records: [Array("a".utf8)])
        let records = try await client.read(from: log, offset: first.offset).records()
        let time = records[0].appendTimeMicros
        #expect(try await client.seek(log, atOrAfterMicros: time) == first.offset)
        #expect(try await client.seek(log, atOrAfterMicros: time + 1) == first.committedEnd)
    }

    /// A consumer reading through a cursor resumes where it stopped, and the cursor moves only
    /// past what it handled.
    @Test func recordsThroughACursorResumeWhereTheConsumerStopped() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        let log = try await client.createLog("jobs").logID
        _ = try await client.append(to: log, records: ["a", "b", "c"].map { Array($0.utf8) })
        _ = try await client.append(to: log, records: [Array("d".utf8)])
        _ = try await client.append(to: log, records: [Array("e".utf8)])
        var handled: [String] = []
        for try await record in client.records(of: log, cursor: "worker", waitMillis: 50) {
            handled.append(String(decoding: record.bytes, as: UTF8.self))
            if handled.count == 4 { break }
        }
        #expect(handled == ["a", "b", "c", "d"])
        // Asking for "d" handled a, b and c: the cursor is past their batch (d was not handled).
        try await client.ping()
        #expect(try await client.cursor("worker", in: log) == RecordPosition(batchOffset: .zero, index: 3))
        var resumed: [String] = []
        for try await record in client.records(of: log, cursor: "worker", waitMillis: 50) {
            resumed.append(String(decoding: record.bytes, as: UTF8.self))
            if resumed.count == 2 { break }
        }
        #expect(resumed == ["d", "e"])
        // Inside a batch: a cursor at a/b's index 1 starts with b.
        try await client.commitCursor("inside", in: log, at: RecordPosition(batchOffset: .zero, index: 1))
        var inside: [String] = []
        for try await record in client.records(of: log, cursor: "inside", commit: .every(milliseconds: 0), waitMillis: 50) {
            inside.append(String(decoding: record.bytes, as: UTF8.self))
            if inside.count == 2 { break }
        }
        #expect(inside == ["b", "c"])
        try await client.ping()
        #expect(try await client.cursor("inside", in: log) == RecordPosition(batchOffset: .zero, index: 2), "b handled, c not yet")
    }

    /// A conditional append goes in at the expected end and is refused elsewhere, with the end.
    @Test func conditionalAppendsFenceAWriter() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        #expect(client.server.features.contains(.appendIf))
        let log = try await client.createLog("fenced").logID
        let batch = RecordFraming.batch([Array("one".utf8)])
        let first = try await client.append(to: log, batch: batch, ifEndIs: .zero)
        #expect(first.offset == .zero)
        do {
            _ = try await client.append(to: log, batch: batch, ifEndIs: .zero)
            Issue.record("a stale expectation was accepted")
        } catch {
            guard case .server(let failure) = error else { throw error }
            #expect(failure.code == .endMismatch)
            #expect(failure.currentEnd == LogOffset(UInt64(batch.count)))
        }
        let second = try await client.append(to: log, batch: batch, ifEndIs: LogOffset(UInt64(batch.count)))
        #expect(second.offset == LogOffset(UInt64(batch.count)))
    }

    /// Records sent one by one through a producer come back from a consumer in order, with the
    /// positions the producer reported, across batch and segment boundaries.
    @Test func producerPositionsMatchWhatTheConsumerSeesAcrossBatchesAndSegments() async throws {
        let server = try TestServer { $0.storage.defaultLogSettings.segmentBytes = 1 << 20 }
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        let log = try await client.createLog("events")
        let producer = try await client.producer(for: log.logID, configuration: ProducerConfiguration(lingerMillis: 2, batchBytes: 16 << 10))
        let count = 3_000
        let sent: [(position: RecordPosition, bytes: [UInt8])] = try await withThrowingTaskGroup(of: (Int, RecordPosition).self) { group in
            for index in 0..<count {
                group.addTask { (index, try await producer.send(payload(200 + index % 300, seed: index))) }
            }
            var positions = [RecordPosition?](repeating: nil, count: count)
            for try await (index, position) in group { positions[index] = position }
            return positions.enumerated().map { ($0.element!, payload(200 + $0.offset % 300, seed: $0.offset)) }
        }
        producer.close()
        let batches = Set(sent.map(\.position.batchOffset))
        #expect(batches.count > 20, "records were batched (\(batches.count) batches)")
        #expect(batches.count < count / 2, "records were batched (\(batches.count) batches)")
        #expect(try await client.info(log.logID).segmentCount > 1, "the log crossed a segment boundary")

        var consumed: [Record] = []
        for try await record in client.records(of: log.logID, from: .zero, maxBytes: 64 << 10, waitMillis: 100) {
            consumed.append(record)
            if consumed.count == count { break }
        }
        let expected = sent.sorted { $0.position < $1.position }
        #expect(consumed.map(\.position) == expected.map(\.position))
        #expect(consumed.map(\.bytes) == expected.map(\.bytes))
    }

    @Test func aByteFlippedInASegmentFileIsReportedAsCorruptionAtItsOffset() async throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        var offsets: [LogOffset] = []
        do {
            let server = try TestServer(directory: directory)
            let client = try await RingLogClient.connect(to: server.address.description)
            let log = try await client.createLog("rot")
            for index in 0..<3 { offsets.append(try await client.append(to: log.logID, records: [payload(300, seed: index)]).offset) }
            client.close()
            #expect(server.stop())
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: "\(directory)/logs/rot/00000000000000000000.seg"))
        try handle.seek(toOffset: offsets[1].rawValue + 100)
        try handle.write(contentsOf: Data([0xEE]))
        try handle.close()

        let server = try TestServer(directory: directory)
        let client = try await RingLogClient.connect(to: server.address.description)
        defer { client.close() }
        let log = try await client.info("rot").logID
        var delivered: [Record] = []
        do {
            for try await record in client.records(of: log, from: .zero, waitMillis: 0) { delivered.append(record) }
            Issue.record("the consumer did not stop at the damaged batch")
        } catch {
            #expect(error.corruptionOffset == offsets[1], "\(error)")
        }
        #expect(delivered.map(\.bytes) == [payload(300, seed: 0)], "everything before the damage, nothing garbled")
    }

    @Test func localVerificationCatchesDamageTheServerDidNotSee() throws {
        var batch = RecordFraming.batch([payload(64, seed: 1)])
        batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: LogOffset(4096), appendTimeMicros: 1, epoch: 1, firstRecord: 0) }
        batch[70] ^= 0x01
        batch.withUnsafeBytes { bytes in
            do {
                try BatchReader.forEachBatch(in: bytes, startingAt: LogOffset(4096)) { _, _, _ in }
                Issue.record("damage not detected")
            } catch let error as RingLogError {
                #expect(error.corruptionOffset == LogOffset(4096), "\(error)")
                #expect(error.corruptionReason?.contains("CRC32C") == true)
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }

    @Test func aDroppedConnectionFailsWaitingCallsClearly() async throws {
        let server = try TestServer()
        let client = try await RingLogClient.connect(to: server.address.description)
        let log = try await client.createLog("gone")
        let waiting = Task { try await client.read(from: log.logID, offset: .zero, maxWaitMillis: 10_000) }
        try await Task.sleep(for: .milliseconds(100))
        server.stop()
        do {
            let result = try await waiting.value
            #expect(result.isEmpty, "a waiting read is answered empty by a stopping server")
        } catch {
            #expect(error is RingLogError)
        }
        do {
            try await client.ping()
            Issue.record("ping succeeded on a closed connection")
        } catch {
            guard case .connectionClosed = error else {
                Issue.record("expected connectionClosed, got \(error)")
                return
            }
        }
    }

    @Test func connectingToNothingFailsWithTheAddress() async {
        do {
            _ = try await RingLogClient.connect(to: "127.0.0.1:1")
            Issue.record("connected to port 1")
        } catch {
            guard case .connectFailed(let address, _) = error else {
                Issue.record("expected connectFailed, got \(error)")
                return
            }
            #expect(address == "127.0.0.1:1")
        }
    }
}

extension RingLogError {
    var corruptionReason: String? {
        if case .corruptBatch(_, _, let reason) = self { return reason }
        return nil
    }

    var corruptionOffset: LogOffset? {
        if case .corruptBatch(let offset, _, _) = self { return offset }
        return nil
    }
}
