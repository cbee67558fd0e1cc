import Glibc
import RingLogIO
import RingLogTestKit
import RingLogTesting
import RingLogWire
import Testing

/// Idempotent appends over the wire: INIT_PRODUCER, the DUPLICATE flag, the producer errors, and
/// retries across a restart of the server.
@Suite struct IdempotentAppendTests {
    static func batch(_ producer: InitProducerResponse, sequence: UInt32, records: Int = 1, tag: String) -> [UInt8] {
        RecordFraming.batch(
            (0..<records).map { Array("\(tag) \($0)".utf8) }, format: .v2,
            producer: ProducerStamp(id: producer.producerId, epoch: producer.epoch, baseSequence: sequence))
    }

    static func isDuplicate(_ response: WireResponse) -> Bool { response.header.flags & ResponseHeader.duplicate != 0 }

    @Test func helloAnnouncesItAndInitProducerHandsOutDistinctIds() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let server = try TestServer(directory: directory)
        let client = try server.client()
        #expect(try client.call(.hello, HelloRequest().encoded()).decode(HelloResponse.self).features.contains(.batchFormat2))
        let first = try client.call(.initProducer, InitProducerRequest().encoded()).decode(InitProducerResponse.self)
        let second = try client.call(.initProducer, InitProducerRequest().encoded()).decode(InitProducerResponse.self)
        #expect(first.producerId != 0 && first.producerId != second.producerId)
        #expect(first.epoch == 0)
        #expect(first.window == 64)
        let bumped = try client.call(.initProducer, InitProducerRequest(producerId: first.producerId, epoch: 0).encoded()).decode(InitProducerResponse.self)
        #expect(bumped.producerId == first.producerId && bumped.epoch == 1)
        // Ids nobody issued, a new id asking for an epoch, reserved bytes, a log id: refused.
        #expect(try client.call(.initProducer, InitProducerRequest(producerId: 0xFFFF_0000_0000_0001, epoch: 0).encoded()).errorCode == .unknownProducer)
        #expect(try client.call(.initProducer, InitProducerRequest(producerId: first.producerId + 1000, epoch: 0).encoded()).errorCode == .unknownProducer)
        #expect(try client.call(.initProducer, InitProducerRequest(producerId: 0, epoch: 3).encoded()).errorCode == .malformedRequest)
        var reserved = InitProducerRequest().encoded()
        reserved[11] = 1
        #expect(try client.call(.initProducer, reserved).errorCode == .malformedRequest)
        #expect(try client.call(.initProducer, InitProducerRequest().encoded(), logID: LogID(1)).errorCode == .malformedRequest)
        #expect(try client.call(.initProducer, Array(InitProducerRequest().encoded().prefix(10))).errorCode == .malformedRequest)
        // Ids stay distinct across runs of the same data directory.
        #expect(server.stop())
        let again = try TestServer(directory: directory)
        let later = try again.client().call(.initProducer, InitProducerRequest().encoded()).decode(InitProducerResponse.self)
        #expect(later.producerId >> 32 > first.producerId >> 32)
        #expect(try again.client().call(.initProducer, InitProducerRequest(producerId: first.producerId, epoch: 1).encoded())
            .decode(InitProducerResponse.self).epoch == 2, "an id from an earlier run is still known")
    }

    @Test func aRetryIsAnsweredWithTheOriginalOffsetAndFlaggedAcrossARestart() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let server = try TestServer(directory: directory)
        var client = try server.client()
        let log = try client.createLog("once").logID
        let producer = try client.call(.initProducer, InitProducerRequest().encoded()).decode(InitProducerResponse.self)
        let first = Self.batch(producer, sequence: 0, records: 2, tag: "first")
        let stored = try client.call(.append, first, logID: log)
        #expect(!Self.isDuplicate(stored))
        let offset = try stored.decode(AppendResponse.self).offset
        let retry = try client.call(.append, first, logID: log)
        #expect(Self.isDuplicate(retry))
        #expect(try retry.decode(AppendResponse.self).offset == offset)
        // A retried conditional append whose first attempt landed: the original offset, whatever
        // the end is now.
        let conditional = Self.batch(producer, sequence: 2, tag: "conditional")
        let end = try client.call(.logInfo, LogNameRequest(name: "once").encoded()).decode(LogDescription.self).committedEnd
        let body = conditional.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: end, batch: $0) }
        let placed = try client.call(.appendIf, body, logID: log, flags: AppendIfRequest.newChainFlag).decode(AppendResponse.self)
        let again = try client.call(.appendIf, body, logID: log, flags: AppendIfRequest.newChainFlag)
        #expect(Self.isDuplicate(again))
        #expect(try again.decode(AppendResponse.self).offset == placed.offset)
        // A gap and a repeat of a sequence with other contents are refused with the sequence owed.
        let gap = try client.call(.append, Self.batch(producer, sequence: 9, tag: "gap"), logID: log)
        #expect(gap.errorCode == .outOfOrderSequence)
        #expect(gap.error?.detail1 == 3)
        #expect(try client.call(.append, Self.batch(producer, sequence: 0, records: 5, tag: "other"), logID: log).errorCode == .outOfOrderSequence)
        // A restart: the log still knows the producer (kill -9: the client tests and crash-test).
        server.stop()
        let restarted = try TestServer(directory: directory)
        client = try restarted.client()
        let afterRestart = try client.call(.append, first, logID: log)
        #expect(Self.isDuplicate(afterRestart))
        #expect(try afterRestart.decode(AppendResponse.self).offset == offset)
        #expect(try client.call(.append, Self.batch(producer, sequence: 3, tag: "next"), logID: log).header.status == 0)
        #expect(try client.readAll(log).count == 3, "first, conditional, next: each once")
        #expect(try client.stats()["duplicate_appends_total"] == 1, "this run answered one retry")
        #expect(try client.stats()["producers_initialized_total"] == 0)
        // An older epoch is fenced once a newer one wrote.
        let newer = try client.call(.initProducer, InitProducerRequest(producerId: producer.producerId, epoch: producer.epoch).encoded())
            .decode(InitProducerResponse.self)
        #expect(try client.call(.append, Self.batch(newer, sequence: 0, tag: "newer"), logID: log).header.status == 0)
        let fenced = try client.call(.append, Self.batch(producer, sequence: 4, tag: "fenced"), logID: log)
        #expect(fenced.errorCode == .producerFenced)
        #expect(fenced.error?.detail2 == 1)
    }

    /// A retry that arrives while the original is still on its way to the disk is answered with it,
    /// in order, once it is durable; pipelined on one connection and from a second one.
    @Test func aRetryOfABatchInFlightWaitsForItsOriginal() throws {
        let server = try TestServer()
        let client = try server.client()
        let other = try server.client()
        let log = try client.createLog("inflight").logID
        let producer = try client.call(.initProducer, InitProducerRequest().encoded()).decode(InitProducerResponse.self)
        let batches = (0..<8).map { Self.batch(producer, sequence: UInt32($0), tag: "b\($0)") }
        var ids: [UInt64] = []
        for batch in batches + batches {
            let id = client.takeRequestID()
            ids.append(id)
            try client.send(client.encode(.append, batch, logID: log, requestID: id))
        }
        let fromOther = try other.call(.append, batches[3], logID: log)
        var offsets: [LogOffset] = []
        for (index, id) in ids.enumerated() {
            let response = try client.receive()
            #expect(response.header.requestID == id)
            #expect(Self.isDuplicate(response) == (index >= batches.count), "response \(index)")
            offsets.append(try response.decode(AppendResponse.self).offset)
        }
        #expect(Array(offsets[batches.count...]) == Array(offsets[..<batches.count]))
        #expect(Self.isDuplicate(fromOther))
        #expect(try fromOther.decode(AppendResponse.self).offset == offsets[3])
        #expect(try client.readAll(log).count == batches.count)
    }

    /// Format-2 batches that break the rules are refused as BAD_BATCH, and the server goes on.
    @Test func malformedFormatTwoBatchesAreRefused() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("bad").logID
        let empty = RecordFraming.batch([[UInt8]](), format: .v2)
        #expect(try client.call(.append, empty, logID: log).errorCode == .badBatch)
        let hugeSequence = RecordFraming.batch([[1]], format: .v2, producer: ProducerStamp(id: 5, epoch: 0, baseSequence: 1 << 31))
        #expect(try client.call(.append, hugeSequence, logID: log).errorCode == .badBatch)
        var cut = RecordFraming.batch([[1, 2, 3]], format: .v2)
        cut.removeLast(cut.count - 56)
        #expect(try client.call(.append, cut, logID: log).errorCode == .badBatch)
        #expect(try client.call(.ping).header.status == 0)
    }
}
