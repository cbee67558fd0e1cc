import RingLogKafka
import Testing

/// Produce and Metadata against kafka-python 2.0.2's encodings of the same values.
@Suite struct KafkaMessageTests {
    static func hex(_ text: String) -> [UInt8] { KafkaRecordBatchTests.hex(text) }
    static let batch = KafkaRecordBatchTests.fromKafkaPython

    @Test func aProduceRequestFromAnotherImplementationDecodesToItsBatches() throws {
        var body: [UInt8] = Self.hex("ffffffff000075300000000100066f726465727300000002000000000000005b")
        body += Self.batch
        body += Self.hex("000000020000005b")
        body += Self.batch
        let request = try body.withUnsafeBytes { try KafkaProduceRequest.decode($0, version: 7) }
        #expect(request.transactionalID == nil && request.acks == -1 && request.timeoutMillis == 30_000)
        #expect(request.topics.map(\.name) == ["orders"])
        #expect(request.topics[0].partitions.map(\.index) == [0, 2])
        for partition in request.topics[0].partitions {
            let range = try #require(partition.records)
            #expect(Array(body[range]) == Self.batch)
        }
        // Cut anywhere, it is an error, never a wrong answer.
        for cut in stride(from: 0, to: body.count, by: 7) {
            let short = Array(body[..<cut])
            #expect(throws: KafkaDecodeError.self) { try short.withUnsafeBytes { try KafkaProduceRequest.decode($0, version: 7) } }
        }
        #expect(throws: KafkaDecodeError.self) { try body.withUnsafeBytes { try KafkaProduceRequest.decode($0, version: 2) } }
    }

    @Test func produceResponsesMatchAnotherImplementation() {
        var response = KafkaProduceResponse(topics: [
            .init(name: "orders", partitions: [.init(index: 0, errorCode: .none, baseOffset: 1000, logStartOffset: 0), .init(index: 2, errorCode: .invalidRecord, logStartOffset: 0)])
        ])
        #expect(response.encode(version: 7) == Self.hex(
            "0000000100066f72646572730000000200000000000000000000000003e8ffffffffffffffff0000000000000000000000020057ffffffffffffffffffffffffffffffff000000000000000000000000"))
        response = KafkaProduceResponse(topics: [.init(name: "orders", partitions: [.init(index: 0, errorCode: .none, baseOffset: 1000)])])
        #expect(response.encode(version: 3) == Self.hex("0000000100066f72646572730000000100000000000000000000000003e8ffffffffffffffff00000000"))
    }

    @Test func metadataRequestsOfEveryShape() throws {
        let all = try Self.hex("ffffffff01").withUnsafeBytes { try KafkaMetadataRequest.decode($0, version: 4) }
        #expect(all.topics == nil && all.allowAutoTopicCreation)
        let named = try Self.hex("0000000200016100066f7264657273").withUnsafeBytes { try KafkaMetadataRequest.decode($0, version: 0) }
        #expect(named.topics == ["a", "orders"])
        let v0All = try Self.hex("00000000").withUnsafeBytes { try KafkaMetadataRequest.decode($0, version: 0) }
        #expect(v0All.topics == nil, "v0 asks for every topic with an empty list")
        let none = try Self.hex("0000000000").withUnsafeBytes { try KafkaMetadataRequest.decode($0, version: 4) }
        #expect(none.topics == [] && !none.allowAutoTopicCreation)
        #expect(throws: KafkaDecodeError.self) { try Self.hex("ffffffff").withUnsafeBytes { try KafkaMetadataRequest.decode($0, version: 0) } }
    }

    @Test func metadataResponsesMatchAnotherImplementation() {
        let broker = KafkaMetadataResponse.Broker(nodeID: 1, host: "127.0.0.1", port: 9092)
        let v4 = KafkaMetadataResponse(
            brokers: [broker], clusterID: "ringlog", controllerID: 1,
            topics: [
                .init(name: "orders", partitions: [.init(index: 0, leader: 1), .init(index: 1, leader: 1)]),
                .init(errorCode: .unknownTopicOrPartition, name: "missing", partitions: []),
            ])
        #expect(v4.encode(version: 4) == Self.hex(
            "00000000000000010000000100093132372e302e302e3100002384ffff000772696e676c6f670000000100000002000000066f7264657273000000000200000000000000000001000000010000000100000001000000010000000000010000000100000001000000010000000100000001000300076d697373696e670000000000"))
        let v0 = KafkaMetadataResponse(brokers: [broker], clusterID: nil, controllerID: 1, topics: [.init(name: "orders", partitions: [.init(index: 0, leader: 1)])])
        #expect(v0.encode(version: 0) == Self.hex(
            "000000010000000100093132372e302e302e310000238400000001000000066f7264657273000000010000000000000000000100000001000000010000000100000001"))
    }
}

/// Fetch and ListOffsets against kafka-python 2.0.2's encodings of the same values.
@Suite struct KafkaFetchTests {
    static func hex(_ text: String) -> [UInt8] { KafkaRecordBatchTests.hex(text) }
    static let batch = KafkaRecordBatchTests.fromKafkaPython

    @Test func fetchRequestsOfOldAndNewVersionsDecode() throws {
        let v4 = try Self.hex("ffffffff000001f40000000103200000010000000100066f7264657273000000010000000000000000000003e800100000")
            .withUnsafeBytes { try KafkaFetchRequest.decode($0, version: 4) }
        #expect(v4.maxWaitMillis == 500 && v4.minBytes == 1 && v4.maxBytes == 52_428_800 && v4.isolationLevel == 1)
        #expect(v4.topics == [.init(name: "orders", partitions: [.init(index: 0, fetchOffset: 1000, maxBytes: 1_048_576)])])
        let v10 = try Self.hex(
            "ffffffff000001f400000001032000000100000000ffffffff0000000100066f72646572730000000100000000ffffffff00000000000003e800000000000000000010000000000000"
        ).withUnsafeBytes { try KafkaFetchRequest.decode($0, version: 10) }
        #expect(v10.topics == v4.topics)
        #expect(throws: KafkaDecodeError.self) { try Self.hex("ffffffff").withUnsafeBytes { try KafkaFetchRequest.decode($0, version: 10) } }
    }

    @Test func fetchResponsesMatchAnotherImplementation() {
        let one = KafkaFetchResponse(topics: [.init(name: "orders", partitions: [.init(index: 0, highWatermark: 2000, records: Self.batch)])])
        #expect(one.encode(version: 4) == Self.hex("000000000000000100066f72646572730000000100000000000000000000000007d000000000000007d0000000000000005b") + Self.batch)
        let two = KafkaFetchResponse(topics: [
            .init(name: "orders", partitions: [
                .init(index: 0, highWatermark: 2000, logStartOffset: 5, records: Self.batch),
                .init(index: 1, errorCode: .offsetOutOfRange),
            ])
        ])
        #expect(two.encode(version: 10) == Self.hex(
            "000000000000000000000000000100066f72646572730000000200000000000000000000000007d000000000000007d00000000000000005000000000000005b")
            + Self.batch + Self.hex("000000010001ffffffffffffffffffffffffffffffffffffffffffffffff0000000000000000"))
    }

    @Test func listOffsetsMatchAnotherImplementation() throws {
        let v1 = try Self.hex("ffffffff0000000100066f72646572730000000200000000fffffffffffffffe000000010000019ad20f2800")
            .withUnsafeBytes { try KafkaListOffsetsRequest.decode($0, version: 1) }
        #expect(v1.topics == [.init(name: "orders", partitions: [.init(index: 0, timestamp: -2), .init(index: 1, timestamp: 1_764_460_800_000)])])
        let v2 = try Self.hex("ffffffff010000000100066f72646572730000000100000000ffffffffffffffff").withUnsafeBytes { try KafkaListOffsetsRequest.decode($0, version: 2) }
        #expect(v2.topics[0].partitions == [.init(index: 0, timestamp: -1)])
        let answer = KafkaListOffsetsResponse(topics: [.init(name: "orders", partitions: [.init(index: 0, offset: 1500), .init(index: 1, errorCode: .unknownTopicOrPartition)])])
        #expect(answer.encode(version: 1) == Self.hex("0000000100066f726465727300000002000000000000ffffffffffffffff00000000000005dc000000010003ffffffffffffffffffffffffffffffff"))
        let timed = KafkaListOffsetsResponse(topics: [.init(name: "orders", partitions: [.init(index: 0, timestamp: 1_764_460_800_000, offset: 1500)])])
        #expect(timed.encode(version: 2) == Self.hex("000000000000000100066f7264657273000000010000000000000000019ad20f280000000000000005dc"))
    }
}
