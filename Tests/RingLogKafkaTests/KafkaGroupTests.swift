import RingLogKafka
import Testing

/// Group and producer-id messages: kafka-python 2.0.2's encodings where it has them, the
/// protocol's field order (docs of the schemas) where it does not.
@Suite struct KafkaGroupTests {
    static func hex(_ text: String) -> [UInt8] { KafkaRecordBatchTests.hex(text) }

    @Test func offsetCommitBothWays() throws {
        let request = try Self.hex("00036772700000000300036d2d31ffffffffffffffff0000000100066f7264657273000000010000000000000000000005dc00046d657461")
            .withUnsafeBytes { try KafkaOffsetCommitRequest.decode($0, version: 2) }
        #expect(request.groupID == "grp" && request.generationID == 3 && request.memberID == "m-1")
        #expect(request.topics == [.init(name: "orders", partitions: [.init(index: 0, offset: 1500, metadata: "meta")])])
        #expect(KafkaOffsetCommitRequest.responseBody(version: 3, [("orders", [(0, .none), (1, .rebalanceInProgress)])])
            == Self.hex("000000000000000100066f72646572730000000200000000000000000001001b"))
        #expect(throws: KafkaDecodeError.self) { try Self.hex("0003677270").withUnsafeBytes { try KafkaOffsetCommitRequest.decode($0, version: 2) } }
    }

    @Test func offsetFetchBothWays() throws {
        let all = try Self.hex("0003677270ffffffff").withUnsafeBytes { try KafkaOffsetFetchRequest.decode($0, version: 3) }
        #expect(all.groupID == "grp" && all.topics == nil)
        let some = try Self.hex("00036772700000000100066f7264657273000000020000000000000001").withUnsafeBytes { try KafkaOffsetFetchRequest.decode($0, version: 1) }
        #expect(some.topics?.first?.name == "orders" && some.topics?.first?.partitions == [0, 1])
        #expect(throws: KafkaDecodeError.self) { try Self.hex("0003677270ffffffff").withUnsafeBytes { try KafkaOffsetFetchRequest.decode($0, version: 1) } }
        #expect(KafkaOffsetFetchRequest.responseBody(version: 3, [("orders", [(0, 1500, nil, .none), (1, -1, nil, .none)])])
            == Self.hex("000000000000000100066f7264657273000000020000000000000000000005dc0000000000000001ffffffffffffffff000000000000"))
    }

    @Test func coordinatorHeartbeatLeaveAndProducerIds() throws {
        let find = try Self.hex("000367727000").withUnsafeBytes { try KafkaFindCoordinatorRequest.decode($0, version: 1) }
        #expect(find.key == "grp" && find.keyType == 0)
        // v0: error, node, host, port; v1+: throttle time first, a null error message after the error.
        #expect(KafkaFindCoordinatorRequest.responseBody(version: 0, errorCode: .none, nodeID: 1, host: "h", port: 9092)
            == Self.hex("0000" + "00000001" + "000168" + "00002384"))
        #expect(KafkaFindCoordinatorRequest.responseBody(version: 2, errorCode: .none, nodeID: 1, host: "h", port: 9092)
            == Self.hex("00000000" + "0000" + "ffff" + "00000001" + "000168" + "00002384"))
        let heartbeat = try Self.hex("00036772700000000300036d2d31").withUnsafeBytes { try KafkaMembershipRequest.decodeHeartbeat($0, version: 1) }
        #expect(heartbeat.groupID == "grp" && heartbeat.generationID == 3 && heartbeat.memberID == "m-1")
        let leave = try Self.hex("000367727000036d2d31").withUnsafeBytes { try KafkaMembershipRequest.decodeLeaveGroup($0, version: 1) }
        #expect(leave.memberID == "m-1" && leave.generationID == nil)
        #expect(KafkaMembershipRequest.responseBody(version: 1, errorCode: .rebalanceInProgress) == Self.hex("00000000001b"))
        #expect(KafkaMembershipRequest.responseBody(version: 0, errorCode: .none) == Self.hex("0000"))
        let initID = try Self.hex("ffff0000ea60").withUnsafeBytes { try KafkaInitProducerIdRequest.decode($0, version: 1) }
        #expect(initID.transactionalID == nil && initID.transactionTimeoutMillis == 60_000)
        #expect(KafkaInitProducerIdRequest.responseBody(errorCode: .none, producerID: 3 << 32 | 1, producerEpoch: 0)
            == Self.hex("00000000" + "0000" + "0000000300000001" + "0000"))
    }
}
