import Glibc
import RingLogIO
import RingLogTestKit
import RingLogTesting
import RingLogWire
import Testing

/// APPEND_IF: a batch goes in only if the log ends where the writer expects; otherwise nothing is
/// written and the answer says where the log ends.
@Suite struct ConditionalAppendTests {
    /// One APPEND_IF, waiting for its answer, so (by default) a new chain each time.
    func appendIf(
        _ client: RawClient, _ log: LogID, expecting end: LogOffset, _ payload: [UInt8], mode: AckMode = .durable, newChain: Bool = true
    ) throws -> WireResponse {
        let batch = Batch.make(payload: payload)
        let body = batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: end, batch: $0) }
        return try client.call(.appendIf, body, logID: log, flags: mode.rawValue | (newChain ? AppendIfRequest.newChainFlag : 0))
    }

    @Test func helloAnnouncesIt() throws {
        let server = try TestServer()
        let hello = try server.client().call(.hello, HelloRequest().encoded()).decode(HelloResponse.self)
        #expect(hello.features.contains(.appendIf))
    }

    @Test func theBatchGoesInOnlyAtTheExpectedEnd() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("fenced").logID
        let first = try appendIf(client, log, expecting: .zero, payload(100, seed: 1)).decode(AppendResponse.self)
        #expect(first.offset == .zero)
        let end = LogOffset(UInt64(Batch.minHeaderBytes + 100))
        // A writer that still believes the log is empty is refused, and told where it ends.
        let stale = try appendIf(client, log, expecting: .zero, payload(100, seed: 2))
        #expect(stale.errorCode == .endMismatch)
        #expect(stale.error?.detail1 == end.rawValue)
        #expect(stale.error?.detail2 == end.rawValue, "the committed end too")
        #expect(try client.readAll(log).map(\.payload) == [payload(100, seed: 1)], "nothing was written")
        // Past the end is refused the same way; at the end, it goes in (written mode too).
        #expect(try appendIf(client, log, expecting: LogOffset(9_999), payload(10, seed: 3)).errorCode == .endMismatch)
        let second = try appendIf(client, log, expecting: end, payload(50, seed: 4), mode: .written).decode(AppendResponse.self)
        #expect(second.offset == end)
        #expect(try client.call(.ping).header.status == 0, "the connection stays open after a refusal")
    }

    /// A single writer pipelines: each request expects the end the one before will leave. One
    /// wrong expectation is refused and, the end not having moved, so is everything after it
    /// that counted on it.
    @Test func aSingleWriterPipelinesAndARefusalStopsWhatDependsOnIt() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("pipe").logID
        var expected = LogOffset.zero
        var ids: [UInt64] = []
        for seed in 0..<5 {
            let batch = Batch.make(payload: payload(60, seed: seed))
            // The third one expects one byte too far.
            let claim = seed == 2 ? expected.advanced(by: 1) : expected
            let id = client.takeRequestID()
            try client.send(client.encode(.appendIf, batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: claim, batch: $0) }, logID: log, requestID: id))
            ids.append(id)
            expected = expected.advanced(by: batch.count)
        }
        var outcomes: [ErrorCode?] = []
        for id in ids {
            let response = try client.receive()
            #expect(response.header.requestID == id, "answered in order")
            outcomes.append(response.errorCode)
        }
        #expect(outcomes == [nil, nil, .endMismatch, .endMismatch, .endMismatch])
        #expect(try client.readAll(log).count == 2)
    }

    /// Another writer's batch of the same size lands first: the first of a pipelined pair is
    /// refused, and so is the second, though its expected end now matches, since it counted on
    /// the first. A new chain (the flag) goes on from the end the writer was told.
    @Test func aRefusalBreaksThePipelinedChainUntilANewOneStarts() throws {
        let server = try TestServer()
        let writerA = try server.client()
        let writerB = try server.client()
        let log = try writerA.createLog("chain").logID
        let size = Batch.make(payload: payload(40, seed: 0)).count
        #expect(try appendIf(writerB, log, expecting: .zero, payload(40, seed: 9)).errorCode == nil, "B gets there first")
        var ids: [UInt64] = []
        for (seed, expected) in [(1, LogOffset.zero), (2, LogOffset(UInt64(size)))] {
            let batch = Batch.make(payload: payload(40, seed: seed))
            let id = writerA.takeRequestID()
            let body = batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: expected, batch: $0) }
            // The first of the pair starts a new chain, as a writer's first request does.
            let flags = seed == 1 ? AppendIfRequest.newChainFlag : 0
            try writerA.send(writerA.encode(.appendIf, body, logID: log, flags: flags, requestID: id))
            ids.append(id)
        }
        #expect(try writerA.receive().errorCode == .endMismatch)
        #expect(try writerA.receive().errorCode == .endMismatch, "a2 counted on a1 and is refused")
        #expect(try writerA.readAll(log).map(\.payload) == [payload(40, seed: 9)], "nothing of A's was written")
        // Without the flag the chain stays broken; with it, A goes on from the end it was told.
        #expect(try appendIf(writerA, log, expecting: LogOffset(UInt64(size)), payload(40, seed: 3), newChain: false).errorCode == .endMismatch)
        let batch = Batch.make(payload: payload(40, seed: 4))
        let body = batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: LogOffset(UInt64(size)), batch: $0) }
        let restarted = try writerA.call(.appendIf, body, logID: log, flags: AppendIfRequest.newChainFlag)
        #expect(restarted.errorCode == nil)
        #expect(try restarted.decode(AppendResponse.self).offset == LogOffset(UInt64(size)))
    }

    @Test func twoWritersCannotBothAppendAtTheSameEnd() throws {
        let server = try TestServer()
        let writerA = try server.client()
        let writerB = try server.client()
        let log = try writerA.createLog("race").logID
        #expect(try appendIf(writerA, log, expecting: .zero, payload(10, seed: 1)).errorCode == nil)
        let loser = try appendIf(writerB, log, expecting: .zero, payload(10, seed: 2))
        #expect(loser.errorCode == .endMismatch)
        #expect(try writerB.readAll(log).map(\.payload) == [payload(10, seed: 1)])
    }

    @Test func badRequestsAreRefusedAndTheConnectionServesOn() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("bad").logID
        // Too short to hold the expected end.
        #expect(try client.call(.appendIf, [1, 2, 3], logID: log).errorCode == .malformedRequest)
        // A damaged batch after a good prefix.
        var batch = Batch.make(payload: payload(20, seed: 1))
        batch[batch.count - 1] ^= 0xFF
        let body = batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: .zero, batch: $0) }
        #expect(try client.call(.appendIf, body, logID: log).errorCode == .crcMismatch)
        // An unknown acknowledgement mode, and an unknown log.
        let good = Batch.make(payload: payload(20, seed: 2)).withUnsafeBytes { AppendIfRequest.encode(expectedEnd: .zero, batch: $0) }
        #expect(try client.call(.appendIf, good, logID: log, flags: 9).errorCode == .malformedRequest)
        #expect(try client.call(.appendIf, good, logID: LogID(77)).errorCode == .unknownLog)
        #expect(try client.call(.appendIf, good, logID: log).errorCode == nil)
        #expect(try client.readAll(log).count == 1)
    }
}

/// SEEK_TIME: the first batch appended at or after a time, over the wire.
@Suite struct SeekTimeTests {
    @Test func theFirstBatchAtOrAfterATimeIsFound() throws {
        let server = try TestServer()
        let client = try server.client()
        let hello = try client.call(.hello, HelloRequest().encoded()).decode(HelloResponse.self)
        #expect(hello.features.contains(.seekTime))
        let log = try client.createLog("timed").logID
        func seek(_ time: UInt64) throws -> WireResponse { try client.call(.seekTime, SeekTimeRequest(timeMicros: time).encoded(), logID: log) }
        #expect(try seek(0).decode(OffsetMessage.self).offset == .zero, "an empty log answers its end")
        var offsets: [LogOffset] = []
        for seed in 0..<3 {
            offsets.append(try client.append(log, payload(100, seed: seed)).decode(AppendResponse.self).offset)
            usleep(3_000)
        }
        let (_, batches, _) = try client.read(log, from: .zero).batches()
        #expect(batches.count == 3)
        let times = try client.read(log, from: .zero).body.withUnsafeBytes { body in
            var times: [UInt64] = []
            try StoredBatches.forEach(in: UnsafeRawBufferPointer(rebasing: body[ReadResponseHead.encodedBytes...]), startingAt: .zero, damaged: { TestFailure($0.description) }) {
                _, header, _ throws(TestFailure) in times.append(header.appendTimeMicros)
            }
            return times
        }
        #expect(try seek(times[1]).decode(OffsetMessage.self).offset == offsets[1])
        #expect(try seek(times[1] + 1).decode(OffsetMessage.self).offset == offsets[2])
        #expect(try seek(times[2] + 1).decode(OffsetMessage.self).offset == LogOffset(3 * 148), "after the last: the committed end")
        #expect(try client.call(.seekTime, SeekTimeRequest(timeMicros: 0).encoded(), logID: LogID(99)).errorCode == .unknownLog)
        #expect(try client.call(.seekTime, [1, 2], logID: log).errorCode == .malformedRequest)
        #expect(try client.call(.ping).header.status == 0)
    }
}

/// Cursors over the wire: commit (plain and conditional), fetch, list with lag, delete; they
/// survive a restart of the server on the same data directory.
@Suite struct CursorOperationTests {
    func commit(_ client: RawClient, _ log: LogID, _ name: String, _ offset: UInt64, index: UInt32 = 0, condition: CursorCommitRequest.Condition = .none) throws -> WireResponse {
        try client.call(.cursorCommit, CursorCommitRequest(name: name, offset: offset, index: index, condition: condition).encoded(), logID: log)
    }

    @Test func cursorsAreKeptDurablyAndConditionally() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        var server: TestServer? = try TestServer(directory: directory)
        var client = try server!.client()
        let hello = try client.call(.hello, HelloRequest().encoded()).decode(HelloResponse.self)
        #expect(hello.features.contains(.cursors))
        let log = try client.createLog("orders").logID
        for seed in 0..<3 { _ = try client.append(log, payload(100, seed: seed)).decode(AppendResponse.self) }
        #expect(try commit(client, log, "billing", 148, index: 1).decode(CursorPositionMessage.self) == CursorPositionMessage(offset: 148, index: 1))
        let stale = try commit(client, log, "billing", 296, condition: .at(offset: 0, index: 0))
        #expect(stale.errorCode == .cursorMismatch)
        #expect(stale.error?.detail1 == 148 && stale.error?.detail2 == 1, "the mismatch says where the cursor is")
        #expect(try commit(client, log, "billing", 296, condition: .at(offset: 148, index: 1)).errorCode == nil)
        #expect(try commit(client, log, "audit", 0, condition: .absent).errorCode == nil)
        #expect(try commit(client, log, "audit", 0, condition: .absent).errorCode == .cursorMismatch)
        #expect(try commit(client, log, "x/y", 0).errorCode == .badCursorName)
        #expect(try commit(client, log, "far", 999_999).errorCode == .offsetOutOfRange)
        #expect(try client.call(.cursorFetch, LogNameRequest(name: "nobody").encoded(), logID: log).errorCode == .unknownCursor)
        server!.stop()
        server = try TestServer(directory: directory)
        client = try server!.client()
        #expect(try client.call(.cursorFetch, LogNameRequest(name: "billing").encoded(), logID: log).decode(CursorPositionMessage.self).offset == 296)
        let list = try client.call(.cursorList, logID: log).decode(CursorList.self)
        #expect(list.entries.map(\.name) == ["audit", "billing"])
        #expect(list.entries.map(\.lagBytes) == [444, 148], "bytes from each cursor to the committed end")
        #expect(try client.call(.cursorDelete, LogNameRequest(name: "audit").encoded(), logID: log).errorCode == nil)
        #expect(try client.call(.cursorDelete, LogNameRequest(name: "audit").encoded(), logID: log).errorCode == .unknownCursor)
        #expect(try client.call(.cursorList, logID: LogID(5)).errorCode == .unknownLog)
        #expect(try client.call(.cursorCommit, [1, 2, 3], logID: log).errorCode == .malformedRequest)
    }
}
