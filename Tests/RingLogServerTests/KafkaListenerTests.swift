import Dispatch
import Glibc
import RingLogIO
import RingLogKafka
import RingLogServer
import RingLogTestKit
import RingLogTesting
import RingLogWire
import Testing

/// The Kafka listener over a socket, byte for byte: requests made here with the codec's writer,
/// responses read back field by field. (Real clients, kcat, librdkafka and kafka-python, are run
/// against ringlogd by Scripts/kafka-test.)
@Suite struct KafkaListenerTests {
    /// A blocking Kafka client for tests: it sends exactly what it is told to.
    final class KafkaClient {
        let raw: RawClient
        var correlation: Int32 = 0

        convenience init(_ server: TestServer) throws { try self.init(address: server.server.kafkaAddress!) }
        init(address: SocketAddress) throws { raw = try RawClient(address) }

        func frame(api: Int16, version: Int16, _ body: [UInt8]) -> [UInt8] {
            correlation += 1
            return Self.frame(api: api, version: version, correlation: correlation, body)
        }

        /// The bytes of a request: size, header v1 (api, version, correlation id, client id), body.
        static func frame(api: Int16, version: Int16, correlation: Int32 = 1, _ body: [UInt8]) -> [UInt8] {
            var header = KafkaWriter()
            header.int16(api)
            header.int16(version)
            header.int32(correlation)
            header.nullableString("ringlog-test")
            var frame = KafkaWriter()
            frame.int32(Int32(header.bytes.count + body.count))
            frame.raw(header.bytes)
            frame.raw(body)
            return frame.bytes
        }

        /// Sends a request and returns the response body (the correlation id checked).
        func call(api: Int16, version: Int16, _ body: [UInt8]) throws -> [UInt8] {
            try raw.send(frame(api: api, version: version, body))
            return try receive(correlation)
        }

        func receive(_ expected: Int32) throws -> [UInt8] {
            let size = try raw.receiveExactly(4).withUnsafeBytes { Int(Int32(bigEndian: $0.loadUnaligned(as: Int32.self))) }
            let bytes = try raw.receiveExactly(size)
            let correlation = bytes.withUnsafeBytes { Int32(bigEndian: $0.loadUnaligned(as: Int32.self)) }
            guard correlation == expected else { throw TestFailure("response to \(correlation), expected \(expected)") }
            return Array(bytes[4...])
        }

        /// Metadata v1 of `topics` (nil: every topic).
        func metadata(_ topics: [String]?) throws -> [(name: String, error: Int16, partitions: Int)] {
            var body = KafkaWriter()
            body.arrayCount(topics?.count)
            for topic in topics ?? [] { body.nullableString(topic) }
            let response = try call(api: 3, version: 1, body.bytes)
            return try response.withUnsafeBytes { bytes in
                var reader = KafkaReader(bytes)
                for _ in 0..<(try reader.arrayCount() ?? 0) {
                    _ = try reader.int32()
                    _ = try reader.string()
                    _ = try reader.int32()
                    _ = try reader.nullableString()
                }
                _ = try reader.int32()  // controller
                var topics: [(String, Int16, Int)] = []
                for _ in 0..<(try reader.arrayCount() ?? 0) {
                    let error = try reader.int16()
                    let name = try reader.string()
                    _ = try reader.boolean()
                    let count = try reader.arrayCount() ?? 0
                    for _ in 0..<count {
                        _ = try reader.int16()
                        _ = try reader.int32()
                        _ = try reader.int32()
                        for _ in 0..<2 { for _ in 0..<(try reader.arrayCount() ?? 0) { _ = try reader.int32() } }
                    }
                    topics.append((name, error, count))
                }
                return topics
            }
        }

        /// Produce v7 of one batch to one partition; the partition's error and base offset (nil
        /// with acks 0, which gets no response).
        func produce(_ topic: String, partition: Int32 = 0, acks: Int16 = -1, _ batch: [UInt8]) throws -> (error: Int16, baseOffset: Int64)? {
            var body = KafkaWriter()
            body.nullableString(nil)
            body.int16(acks)
            body.int32(5_000)
            body.arrayCount(1)
            body.nullableString(topic)
            body.arrayCount(1)
            body.int32(partition)
            body.nullableBytes(batch)
            if acks == 0 {
                try raw.send(frame(api: 0, version: 7, body.bytes))
                return nil
            }
            let response = try call(api: 0, version: 7, body.bytes)
            return try response.withUnsafeBytes { bytes in
                var reader = KafkaReader(bytes)
                _ = try reader.arrayCount()
                _ = try reader.string()
                _ = try reader.arrayCount()
                _ = try reader.int32()
                return (try reader.int16(), try reader.int64())
            }
        }

        /// Fetch v11 of one partition: error, high watermark and the records' bytes.
        func fetch(_ topic: String, partition: Int32 = 0, offset: Int64, maxWaitMillis: Int32 = 0) throws -> (error: Int16, highWatermark: Int64, records: [UInt8]) {
            var body = KafkaWriter()
            body.int32(-1)
            body.int32(maxWaitMillis)
            body.int32(1)
            body.int32(50 << 20)
            body.int8(0)
            body.int32(0)
            body.int32(-1)
            body.arrayCount(1)
            body.nullableString(topic)
            body.arrayCount(1)
            body.int32(partition)
            body.int32(-1)
            body.int64(offset)
            body.int64(-1)
            body.int32(1 << 20)
            body.arrayCount(0)
            body.nullableString("")
            let response = try call(api: 1, version: 11, body.bytes)
            return try response.withUnsafeBytes { bytes in
                var reader = KafkaReader(bytes)
                _ = try reader.int32()
                #expect(try reader.int16() == 0)
                _ = try reader.int32()
                _ = try reader.arrayCount()
                _ = try reader.string()
                _ = try reader.arrayCount()
                _ = try reader.int32()
                let error = try reader.int16()
                let highWatermark = try reader.int64()
                _ = try reader.int64()
                _ = try reader.int64()
                _ = try reader.arrayCount()
                _ = try reader.int32()
                return (error, highWatermark, Array(try reader.nullableBytes() ?? UnsafeRawBufferPointer(start: nil, count: 0)))
            }
        }

        func listOffset(_ topic: String, time: Int64) throws -> (error: Int16, offset: Int64) {
            var body = KafkaWriter()
            body.int32(-1)
            body.int8(0)
            body.arrayCount(1)
            body.nullableString(topic)
            body.arrayCount(1)
            body.int32(0)
            body.int64(time)
            let response = try call(api: 2, version: 2, body.bytes)
            return try response.withUnsafeBytes { bytes in
                var reader = KafkaReader(bytes)
                _ = try reader.int32()
                _ = try reader.arrayCount()
                _ = try reader.string()
                _ = try reader.arrayCount()
                _ = try reader.int32()
                let error = try reader.int16()
                _ = try reader.int64()
                return (error, try reader.int64())
            }
        }
    }

    /// Every batch in a Fetch's records, decoded: base offset and values.
    static func batches(_ records: [UInt8]) throws -> [(base: Int64, values: [String])] {
        var found: [(Int64, [String])] = []
        var position = 0
        while position + 12 <= records.count {
            let length = records.withUnsafeBytes { Int(Int32(bigEndian: $0.loadUnaligned(fromByteOffset: position + 8, as: Int32.self))) }
            let batch = Array(records[position..<(position + 12 + length)])
            let header = try batch.withUnsafeBytes { try KafkaRecordBatch.header($0) }
            let values = try batch.withUnsafeBytes { try KafkaRecordBatch.records($0) }.map { String(decoding: $0.value ?? [], as: UTF8.self) }
            // The CRC the producer made still holds (RingLog stored the bytes it covers untouched).
            #expect(batch.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[21...])) } == header.crc)
            found.append((header.baseOffset, values))
            position += 12 + length
        }
        return found
    }

    static func batch(_ values: [String], producerId: Int64 = -1, epoch: Int16 = -1, sequence: Int32 = -1) -> [UInt8] {
        let records = values.enumerated().map { KafkaRecord(offsetDelta: Int32($0.offset), timestampDelta: 0, key: nil, value: Array($0.element.utf8)) }
        return KafkaRecordBatch.build(records, baseTimestamp: 1_700_000_000_000, producerId: producerId, producerEpoch: epoch, baseSequence: sequence)
    }

    static func kafkaServer(_ adjust: (inout KafkaSettings) -> Void = { _ in }) throws -> TestServer {
        try TestServer { configuration in
            var settings = KafkaSettings(listen: try! SocketAddress(parsing: "127.0.0.1:0"))
            adjust(&settings)
            configuration.kafka = settings
        }
    }

    @Test func producedRecordsAreFetchedBackWithTheirOffsets() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        #expect(try client.metadata(["orders"]).map(\.partitions) == [1], "created on first use")
        #expect(try client.produce("orders", Self.batch(["a", "b", "c"]))! == (0, 0))
        #expect(try client.produce("orders", acks: 1, Self.batch(["d", "e"]))! == (0, 3))
        #expect(try client.produce("orders", Self.batch(["f"]))! == (0, 5))

        let all = try client.fetch("orders", offset: 0)
        #expect(all.error == 0 && all.highWatermark == 6)
        let batches = try Self.batches(all.records)
        #expect(batches.map(\.base) == [0, 3, 5])
        #expect(batches.flatMap(\.values) == ["a", "b", "c", "d", "e", "f"])
        // An offset inside a batch returns that whole batch (the client skips what it has).
        #expect(try Self.batches(client.fetch("orders", offset: 4).records).map(\.base) == [3, 5])
        #expect(try client.fetch("orders", offset: 6).records.isEmpty, "at the high watermark: nothing")
        #expect(try client.fetch("orders", offset: 7).error == KafkaErrorCode.offsetOutOfRange.rawValue)
        #expect(try client.listOffset("orders", time: -2) == (0, 0))
        #expect(try client.listOffset("orders", time: -1) == (0, 6))
        #expect(try client.listOffset("orders", time: 0) == (0, 0), "by time: everything is later than 1970")

        // A fresh connection (no remembered position) finds records by lookup.
        let other = try KafkaClient(server)
        #expect(try Self.batches(other.fetch("orders", offset: 5).records).map(\.base) == [5])
        #expect(try Self.batches(other.fetch("orders", offset: 1).records).map(\.base) == [0, 3, 5])
    }

    @Test func aFetchAtTheEndWaitsForTheNextBatch() throws {
        let server = try Self.kafkaServer()
        let consumer = try KafkaClient(server)
        let producer = try KafkaClient(server)
        _ = try producer.metadata(["waits"])
        _ = try producer.produce("waits", Self.batch(["first"]))
        // The consumer's Fetch at offset 1 waits up to 5 s; another connection appends meanwhile.
        let started = MonotonicClock.nanos()
        let address = server.server.kafkaAddress!
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) {
            _ = try? KafkaClient(address: address).produce("waits", Self.batch(["second"]))
        }
        let fetched = try consumer.fetch("waits", offset: 1, maxWaitMillis: 5_000)
        #expect(try Self.batches(fetched.records).flatMap(\.values) == ["second"])
        #expect(MonotonicClock.nanos() - started < 4_000_000_000, "answered by the append, not the deadline")
        let empty = try consumer.fetch("waits", offset: 2, maxWaitMillis: 200)
        #expect(empty.error == 0 && empty.records.isEmpty, "answered empty when the wait runs out")
    }

    @Test func anIdempotentRetryIsStoredOnce() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        var body = KafkaWriter()
        body.nullableString(nil)
        body.int32(60_000)
        let (producerId, epoch) = try client.call(api: 22, version: 1, body.bytes).withUnsafeBytes { bytes in
            var reader = KafkaReader(bytes)
            _ = try reader.int32()
            #expect(try reader.int16() == 0)
            return (try reader.int64(), try reader.int16())
        }
        #expect(producerId > 0 && epoch == 0)
        _ = try client.metadata(["idem"])
        let first = Self.batch(["x", "y"], producerId: producerId, epoch: epoch, sequence: 0)
        #expect(try client.produce("idem", first)! == (0, 0))
        #expect(try client.produce("idem", first)! == (0, 0), "the retry is answered with the original's offset")
        #expect(try client.produce("idem", Self.batch(["z"], producerId: producerId, epoch: epoch, sequence: 2))! == (0, 2))
        #expect(try client.produce("idem", Self.batch(["gap"], producerId: producerId, epoch: epoch, sequence: 9))!.error == 45, "a gap: OUT_OF_ORDER_SEQUENCE_NUMBER")
        #expect(try client.produce("idem", Self.batch(["forged"], producerId: 12345, epoch: 0, sequence: 0))!.error == 59, "an id this server never gave")
        let fetched = try client.fetch("idem", offset: 0)
        #expect(fetched.highWatermark == 3)
        #expect(try Self.batches(fetched.records).flatMap(\.values) == ["x", "y", "z"])
    }

    @Test func badBatchesAndTopicsAreRefusedWithKafkaErrors() throws {
        let server = try Self.kafkaServer { $0.autoCreateTopics = false }
        let client = try KafkaClient(server)
        #expect(try client.metadata(["absent"]).map(\.error) == [KafkaErrorCode.unknownTopicOrPartition.rawValue], "auto-creation is off")
        #expect(try client.metadata(["bad/name"]).map(\.error) == [KafkaErrorCode.invalidTopic.rawValue])
        #expect(try client.metadata([String(repeating: "t", count: 250)]).map(\.error) == [KafkaErrorCode.invalidTopic.rawValue])
        #expect(try client.produce("absent", Self.batch(["a"]))!.error == KafkaErrorCode.unknownTopicOrPartition.rawValue)
        // CreateTopics v1: two partitions.
        var body = KafkaWriter()
        body.arrayCount(1)
        body.nullableString("made")
        body.int32(2)
        body.int16(1)
        body.arrayCount(0)
        body.arrayCount(0)
        body.int32(5_000)
        body.boolean(false)
        _ = try client.call(api: 19, version: 1, body.bytes)
        #expect(try client.metadata(["made"]).map(\.partitions) == [2])
        var damaged = Self.batch(["a", "b"])
        damaged[damaged.count - 1] ^= 0xFF
        #expect(try client.produce("made", damaged)!.error == KafkaErrorCode.corruptMessage.rawValue, "CRC mismatch")
        #expect(try client.produce("made", partition: 2, Self.batch(["a"]))!.error == KafkaErrorCode.unknownTopicOrPartition.rawValue)
        #expect(try client.produce("made", partition: 1, Self.batch(["ok"]))! == (0, 0))
        #expect(try client.fetch("made", partition: 1, offset: 0).highWatermark == 1)
    }

    @Test func topicsALogNameCannotCarryLiveUnderLabelledLogsAcrossRestarts() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let odd = ["_private", ".hidden", String(repeating: "long", count: 62)]
        do {
            let server = try TestServer(directory: directory) { $0.kafka = KafkaSettings(listen: try! SocketAddress(parsing: "127.0.0.1:0")) }
            let client = try KafkaClient(server)
            #expect(try client.metadata(odd).map(\.partitions) == [1, 1, 1], "created on first use")
            for (index, topic) in odd.enumerated() { #expect(try client.produce(topic, Self.batch(["\(index)"]))! == (0, 0)) }
            for log in server.server.recoveryReports.map(\.logName) { #expect(!log.hasPrefix("_")) }
            server.stop()
        }
        let server = try TestServer(directory: directory) { $0.kafka = KafkaSettings(listen: try! SocketAddress(parsing: "127.0.0.1:0")) }
        let client = try KafkaClient(server)
        let names = server.server.recoveryReports.map(\.logName)
        #expect(names.count == 3 && names.allSatisfy { $0.hasPrefix("k") && $0.hasSuffix(".0") }, "hashed log names: \(names)")
        // Listed under their own names (Metadata of every topic), records where they were.
        #expect(Set(try client.metadata(nil).map(\.name)).isSuperset(of: odd))
        for (index, topic) in odd.enumerated() {
            #expect(try Self.batches(client.fetch(topic, offset: 0).records).flatMap(\.values) == ["\(index)"])
        }
    }

    @Test func aNativeBatchIsServedAsKafkaRecordsWhateverItsCountClaims() throws {
        let server = try Self.kafkaServer()
        let native = try server.client()
        let log = try native.createLog("native.0").logID
        // Framed records, then a batch whose count (a client's word) is far past its payload.
        _ = try native.call(.append, RecordFraming.batch([Array("one".utf8), Array("two".utf8)], format: .v2), logID: log, flags: AckMode.durable.rawValue)
        _ = try native.call(.append, Batch.make(payload: Array("unframed".utf8), recordCount: 1_000_000, format: .v2), logID: log, flags: AckMode.durable.rawValue)
        _ = try native.call(.append, RecordFraming.batch([Array("after".utf8)], format: .v2), logID: log, flags: AckMode.durable.rawValue)
        let client = try KafkaClient(server)
        let fetched = try client.fetch("native", offset: 0)
        #expect(fetched.highWatermark == 1_000_003)
        let batches = try Self.batches(fetched.records)
        #expect(batches.map(\.base) == [0, 2, 1_000_002], "offsets line up with the record count")
        #expect(batches.map(\.values) == [["one", "two"], ["unframed"], ["after"]])
    }

    @Test func aFetchNamingAPartitionThousandsOfTimesIsAnsweredWhole() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        _ = try client.metadata(["many"])
        _ = try client.produce("many", Self.batch(["x"]))
        // The same partition named 9,000 times, each read served from the tail cache at once.
        var body = KafkaWriter()
        body.int32(-1)
        body.int32(0)
        body.int32(1)
        body.int32(4 << 20)
        body.int8(0)
        body.arrayCount(1)
        body.nullableString("many")
        body.arrayCount(9_000)
        for _ in 0..<9_000 {
            body.int32(0)
            body.int64(0)
            body.int64(-1)
            body.int32(1)
        }
        let response = try client.call(api: 1, version: 5, body.bytes)
        #expect(response.count > 9_000 * 40, "every entry answered")
        #expect(try client.produce("many", Self.batch(["still"]))! == (0, 1))
    }

    @Test func acksZeroGetsNoResponseAndTheNextRequestItsOwn() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        _ = try client.metadata(["quiet"])
        #expect(try client.produce("quiet", acks: 0, Self.batch(["silent"])) == nil)
        #expect(try client.produce("quiet", Self.batch(["loud"]))! == (0, 1), "the next response is the next request's")
    }

    @Test func aFrameArrivingInPiecesIsAssembledAndAHalfCloseMidFrameCloses() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        _ = try client.metadata(["pieces"])
        // A Produce of 200 KB (many receive buffers), sent in three parts with pauses between.
        var body = KafkaWriter()
        body.nullableString(nil)
        body.int16(-1)
        body.int32(5_000)
        body.arrayCount(1)
        body.nullableString("pieces")
        body.arrayCount(1)
        body.int32(0)
        body.nullableBytes(Self.batch((0..<200).map { String(repeating: "\($0 % 10)", count: 1_000) }))
        let frame = client.frame(api: 0, version: 7, body.bytes)
        let started = MonotonicClock.nanos()
        for part in [frame[..<3], frame[3..<70_000], frame[70_000...]] {
            try client.raw.send(Array(part))
            usleep(100_000)
        }
        let response = try client.receive(client.correlation)
        #expect(MonotonicClock.nanos() - started < 5_000_000_000, "answered when whole, not at the header deadline")
        #expect(response.count > 20)
        #expect(try client.fetch("pieces", offset: 0).highWatermark == 200)
        // Half a frame, then the end of the stream: closed at once.
        let cut = try RawClient(server.server.kafkaAddress!, timeoutSeconds: 5)
        try cut.send(Array(frame[..<100]))
        shutdown(cut.fd, Int32(SHUT_WR))
        let waited = MonotonicClock.nanos()
        #expect(cut.waitForClose())
        #expect(MonotonicClock.nanos() - waited < 3_000_000_000, "closed on the end of the stream, not at the deadline")
    }

    @Test func aGracefulStopAnswersWaitingFetchesAndIsClean() throws {
        let server = try Self.kafkaServer()
        let client = try KafkaClient(server)
        _ = try client.metadata(["stopping"])
        _ = try client.produce("stopping", Self.batch(["one"]))
        // A consumer waiting at the end (for up to 30 s).
        try client.raw.send(client.frame(api: 1, version: 5, Self.fetchBody("stopping", offset: 1, maxWaitMillis: 30_000)))
        usleep(100_000)
        let started = MonotonicClock.nanos()
        #expect(server.stop(), "clean: every log checkpointed")
        #expect(MonotonicClock.nanos() - started < 4_000_000_000, "the waiting Fetch was answered, nothing held the stop")
        let answer = try client.receive(client.correlation)
        #expect(answer.count > 8, "the Fetch got its (empty) answer before the connection closed")
    }

    static func fetchBody(_ topic: String, offset: Int64, maxWaitMillis: Int32) -> [UInt8] {
        var body = KafkaWriter()
        body.int32(-1)
        body.int32(maxWaitMillis)
        body.int32(1)
        body.int32(1 << 20)
        body.int8(0)
        body.arrayCount(1)
        body.nullableString(topic)
        body.arrayCount(1)
        body.int32(0)
        body.int64(offset)
        body.int64(-1)
        body.int32(1 << 20)
        return body.bytes
    }

    @Test func hostileFramesCloseOnlyTheirConnection() throws {
        let server = try Self.kafkaServer()
        let honest = try KafkaClient(server)
        _ = try honest.metadata(["safe"])
        let attacks: [[UInt8]] = [
            [0xFF, 0xFF, 0xFF, 0xFF],  // size -1
            [0x7F, 0xFF, 0xFF, 0xFF],  // 2 GiB
            [0, 0, 0, 2, 0, 1],  // smaller than a header
            KafkaClient.frame(api: 999, version: 0, []),  // no such API
            KafkaClient.frame(api: 0, version: 7, [0, 0, 0]),  // a Produce cut short
            KafkaClient.frame(api: 1, version: 99, []),  // a version not served
        ]
        for attack in attacks {
            let attacker = try RawClient(server.server.kafkaAddress!, timeoutSeconds: 5)
            try attacker.send(attack)
            #expect(attacker.waitForClose(), "closed after \(attack.prefix(8))")
        }
        // SASL is answered plainly (no mechanism), then the connection ends.
        let sasl = try KafkaClient(server)
        var mechanism = KafkaWriter()
        mechanism.nullableString("PLAIN")
        #expect(try sasl.call(api: 17, version: 1, mechanism.bytes) == [0, 33, 0, 0, 0, 0], "UNSUPPORTED_SASL_MECHANISM, no mechanisms")
        #expect(sasl.raw.waitForClose())
        // Unsupported ApiVersions gets the v0-shaped answer instead of a close.
        let asking = try KafkaClient(server)
        let answer = try asking.call(api: 18, version: 99, [])
        #expect(answer.prefix(2) == [0, 35], "UNSUPPORTED_VERSION")
        #expect(try honest.produce("safe", Self.batch(["still served"]))! == (0, 0))
    }
}
