import RingLogKafka
import Testing

/// JoinGroup, SyncGroup, CreateTopics and DeleteTopics against kafka-python's encodings of the
/// same values: 2.0.2 where it has the version, 3.0.12 where it does not (JoinGroup v3-v5,
/// SyncGroup v2-v3, CreateTopics v4). Every vector was also checked against 3.0.12's messages
/// generated from Kafka's JSON schemas, which agree byte for byte.
@Suite struct KafkaAdminTests {
    static func hex(_ text: String) -> [UInt8] { KafkaRecordBatchTests.hex(text) }

    /// Every proper prefix of `body` is an error, never a shorter answer.
    static func everyCutThrows(_ body: [UInt8], _ decode: @escaping (UnsafeRawBufferPointer) throws -> Void) {
        for cut in 0..<body.count {
            let short = Array(body[..<cut])
            #expect(throws: KafkaDecodeError.self, "cut at \(cut)") { try short.withUnsafeBytes { try decode($0) } }
        }
    }

    /// The reason `body` does not decode (nil: it does).
    static func failure(_ body: [UInt8], _ decode: (UnsafeRawBufferPointer) throws -> Void) -> String? {
        do {
            try body.withUnsafeBytes { try decode($0) }
            return nil
        } catch {
            return (error as? KafkaDecodeError)?.reason ?? "\(error)"
        }
    }

    // MARK: JoinGroup

    /// kafka-python 2.0.2, JoinGroupRequest_v0("grp", 10000, "", "consumer", [("range", b"\x00\x01"), ("roundrobin", b"")]).
    static let joinV0 = "0003677270" + "00002710" + "0000" + "0008636f6e73756d6572"
        + "00000002" + "000572616e6765" + "000000020001" + "000a726f756e64726f62696e" + "00000000"
    /// kafka-python 3.0.12, JoinGroupRequest_v5("grp", 10000, 300000, "m-1", "inst-1", "consumer", [("range", b"\x00\x01\x02")]).
    static let joinV5 = "0003677270" + "00002710" + "000493e0" + "00036d2d31" + "0006696e73742d31" + "0008636f6e73756d6572"
        + "00000001" + "000572616e6765" + "00000003000102"

    @Test func joinGroupRequestsOfEveryShape() throws {
        let v0 = try Self.hex(Self.joinV0).withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 0) }
        #expect(v0.groupID == "grp" && v0.sessionTimeoutMillis == 10_000 && v0.memberID == "" && v0.groupInstanceID == nil)
        #expect(v0.rebalanceTimeoutMillis == 10_000, "v0 has no rebalance timeout: the session timeout stands in")
        #expect(v0.protocolType == "consumer")
        #expect(v0.protocols == [.init(name: "range", metadata: [0, 1]), .init(name: "roundrobin", metadata: [])])

        // kafka-python 2.0.2, JoinGroupRequest_v1 (and _v2, the same bytes) with rebalance 300000, member "m-1".
        let v1Bytes = Self.hex(
            "000367727000002710000493e000036d2d310008636f6e73756d657200000002000572616e6765000000020001000a726f756e64726f62696e00000000")
        for version: Int16 in [1, 2] {
            let v1 = try v1Bytes.withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: version) }
            #expect(v1.rebalanceTimeoutMillis == 300_000 && v1.memberID == "m-1" && v1.groupInstanceID == nil)
            #expect(v1.protocols.map(\.name) == ["range", "roundrobin"])
        }

        // kafka-python 3.0.12, JoinGroupRequest_v4 with an empty member id (a first join).
        let v4 = try Self.hex("000367727000002710000493e000000008636f6e73756d657200000001000572616e676500000003000102")
            .withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 4) }
        #expect(v4.memberID == "" && v4.rebalanceTimeoutMillis == 300_000 && v4.protocols == [.init(name: "range", metadata: [0, 1, 2])])

        let v5 = try Self.hex(Self.joinV5).withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 5) }
        #expect(v5.groupID == "grp" && v5.memberID == "m-1" && v5.groupInstanceID == "inst-1" && v5.protocolType == "consumer")
        #expect(v5.protocols == [.init(name: "range", metadata: [0, 1, 2])])
        // The same with a null group instance id (kafka-python 3.0.12).
        let dynamic = try Self.hex("000367727000002710000493e000036d2d31ffff0008636f6e73756d657200000001000572616e676500000003000102")
            .withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 5) }
        #expect(dynamic.groupInstanceID == nil && dynamic.protocols.count == 1)

        // The version decides the layout: v5's bytes are not a v4 request, and v6 (flexible) is not read.
        #expect(throws: KafkaDecodeError.self) { try Self.hex(Self.joinV5).withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 4) } }
        #expect(throws: KafkaDecodeError.self) { try Self.hex(Self.joinV5).withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 6) } }
        #expect(throws: KafkaDecodeError.self) { try Self.hex(Self.joinV0 + "00").withUnsafeBytes { try KafkaJoinGroupRequest.decode($0, version: 0) } }
        Self.everyCutThrows(Self.hex(Self.joinV0)) { _ = try KafkaJoinGroupRequest.decode($0, version: 0) }
        Self.everyCutThrows(Self.hex(Self.joinV5)) { _ = try KafkaJoinGroupRequest.decode($0, version: 5) }
    }

    @Test func joinGroupResponsesMatchKafkaPython() {
        let members: [KafkaJoinGroupRequest.Member] = [
            .init(memberID: "m-1", groupInstanceID: "inst-1", metadata: [0, 1]), .init(memberID: "m-2", groupInstanceID: nil, metadata: []),
        ]
        // kafka-python 2.0.2, JoinGroupResponse_v0(0, 1, "range", "m-1", "m-1", [("m-1", b"\x00\x01"), ("m-2", b"")]).
        #expect(KafkaJoinGroupRequest.responseBody(version: 0, errorCode: .none, generationID: 1, protocolName: "range", leader: "m-1", memberID: "m-1", members: members)
            == Self.hex("0000" + "00000001" + "000572616e6765" + "00036d2d31" + "00036d2d31" + "00000002" + "00036d2d31000000020001" + "00036d2d3200000000"))
        // kafka-python 2.0.2, JoinGroupResponse_v2(0, 27, 2, "range", "m-1", "m-2", []): a follower's answer.
        #expect(KafkaJoinGroupRequest.responseBody(version: 2, errorCode: .rebalanceInProgress, generationID: 2, protocolName: "range", leader: "m-1", memberID: "m-2", members: [])
            == Self.hex("00000000001b00000002000572616e676500036d2d3100036d2d3200000000"))
        // kafka-python 3.0.12, JoinGroupResponse_v4(0, 79, -1, "", "", "m-9", []): MEMBER_ID_REQUIRED.
        #expect(KafkaJoinGroupRequest.responseBody(version: 4, errorCode: .memberIdRequired, generationID: -1, protocolName: "", leader: "", memberID: "m-9", members: [])
            == Self.hex("00000000004fffffffff0000000000036d2d3900000000"))
        // kafka-python 3.0.12 with generation 4 and the members above: v4 leaves out the instance ids, v5 has them.
        #expect(KafkaJoinGroupRequest.responseBody(version: 4, errorCode: .none, generationID: 4, protocolName: "range", leader: "m-1", memberID: "m-1", members: members)
            == Self.hex("00000000000000000004000572616e676500036d2d3100036d2d310000000200036d2d3100000002000100036d2d3200000000"))
        #expect(KafkaJoinGroupRequest.responseBody(version: 5, errorCode: .none, generationID: 4, protocolName: "range", leader: "m-1", memberID: "m-1", members: members)
            == Self.hex("00000000000000000004000572616e676500036d2d3100036d2d310000000200036d2d310006696e73742d3100000002000100036d2d32ffff00000000"))
    }

    // MARK: SyncGroup

    /// kafka-python 2.0.2, SyncGroupRequest_v0("grp", 3, "m-1", [("m-1", b"\x00\x01\x02"), ("m-2", b"")]).
    static let syncV0 = "0003677270" + "00000003" + "00036d2d31" + "00000002" + "00036d2d3100000003000102" + "00036d2d3200000000"

    @Test func syncGroupBothWays() throws {
        let leader = try Self.hex(Self.syncV0).withUnsafeBytes { try KafkaSyncGroupRequest.decode($0, version: 0) }
        #expect(leader.groupID == "grp" && leader.generationID == 3 && leader.memberID == "m-1" && leader.groupInstanceID == nil)
        #expect(leader.assignments == [.init(memberID: "m-1", assignment: [0, 1, 2]), .init(memberID: "m-2", assignment: [])])
        // kafka-python 2.0.2, SyncGroupRequest_v1("grp", 3, "m-1", []): a follower's.
        let follower = try Self.hex("00036772700000000300036d2d3100000000").withUnsafeBytes { try KafkaSyncGroupRequest.decode($0, version: 1) }
        #expect(follower.assignments.isEmpty && follower.memberID == "m-1")
        // kafka-python 3.0.12, SyncGroupRequest_v3("grp", 3, "m-1", "inst-1", [("m-1", b"\x07")]).
        let v3Bytes = Self.hex("00036772700000000300036d2d310006696e73742d310000000100036d2d310000000107")
        let v3 = try v3Bytes.withUnsafeBytes { try KafkaSyncGroupRequest.decode($0, version: 3) }
        #expect(v3.groupInstanceID == "inst-1" && v3.assignments == [.init(memberID: "m-1", assignment: [7])])
        #expect(throws: KafkaDecodeError.self) { try v3Bytes.withUnsafeBytes { try KafkaSyncGroupRequest.decode($0, version: 2) } }
        #expect(throws: KafkaDecodeError.self) { try v3Bytes.withUnsafeBytes { try KafkaSyncGroupRequest.decode($0, version: 4) } }
        Self.everyCutThrows(Self.hex(Self.syncV0)) { _ = try KafkaSyncGroupRequest.decode($0, version: 0) }
        Self.everyCutThrows(v3Bytes) { _ = try KafkaSyncGroupRequest.decode($0, version: 3) }

        // kafka-python 2.0.2 SyncGroupResponse_v0(0, b"\x00\x01\x02") and _v1(0, 27, b""); 3.0.12 _v3(0, 0, b"\x07\x08").
        #expect(KafkaSyncGroupRequest.responseBody(version: 0, errorCode: .none, assignment: [0, 1, 2]) == Self.hex("000000000003000102"))
        #expect(KafkaSyncGroupRequest.responseBody(version: 1, errorCode: .rebalanceInProgress, assignment: []) == Self.hex("00000000001b00000000"))
        #expect(KafkaSyncGroupRequest.responseBody(version: 3, errorCode: .none, assignment: [7, 8]) == Self.hex("000000000000000000020708"))
    }

    // MARK: CreateTopics

    /// kafka-python 2.0.2, CreateTopicsRequest_v0([("orders", 3, 1, [], [("retention.ms", "60000"), ("cleanup.policy", None)]),
    /// ("manual", -1, -1, [(0, [1]), (1, [1, 2])], [])], 30000).
    static let createV0 = "00000002"
        + "00066f7264657273" + "00000003" + "0001" + "00000000"
        + "00000002" + "000c726574656e74696f6e2e6d73" + "00053630303030" + "000e636c65616e75702e706f6c696379" + "ffff"
        + "00066d616e75616c" + "ffffffff" + "ffff" + "00000002" + "00000000" + "0000000100000001" + "00000001" + "000000020000000100000002"
        + "00000000"
        + "00007530"

    static let createdTopics: [KafkaCreateTopicsRequest.Topic] = [
        .init(name: "orders", numPartitions: 3, replicationFactor: 1, configs: [.init(name: "retention.ms", value: "60000"), .init(name: "cleanup.policy", value: nil)]),
        .init(name: "manual", numPartitions: -1, replicationFactor: -1, assignments: [.init(partitionIndex: 0, brokerIDs: [1]), .init(partitionIndex: 1, brokerIDs: [1, 2])]),
    ]

    @Test func createTopicsRequestsOfEveryVersion() throws {
        let v0 = try Self.hex(Self.createV0).withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: 0) }
        #expect(v0.topics == Self.createdTopics && v0.timeoutMillis == 30_000 && !v0.validateOnly)
        // kafka-python 2.0.2's CreateTopicsRequest_v1 of the same with validate_only: v0's bytes and a true;
        // kafka-python 3.0.12 writes v2, v3 and v4 the same way.
        let v1Bytes = Self.hex(Self.createV0 + "01")
        for version: Int16 in 1...4 {
            let request = try v1Bytes.withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: version) }
            #expect(request.topics == Self.createdTopics && request.timeoutMillis == 30_000 && request.validateOnly)
        }
        // kafka-python 2.0.2, CreateTopicsRequest_v3 of "orders" alone, 5000 ms, validate_only False.
        let v3 = try Self.hex(
            "0000000100066f72646572730000000300010000000000000002000c726574656e74696f6e2e6d7300053630303030000e636c65616e75702e706f6c696379ffff0000138800"
        ).withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: 3) }
        #expect(v3.topics == [Self.createdTopics[0]] && v3.timeoutMillis == 5_000 && !v3.validateOnly)

        #expect(throws: KafkaDecodeError.self) { try Self.hex(Self.createV0).withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: 1) } }
        #expect(throws: KafkaDecodeError.self) { try v1Bytes.withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: 0) } }
        #expect(throws: KafkaDecodeError.self) { try v1Bytes.withUnsafeBytes { try KafkaCreateTopicsRequest.decode($0, version: 5) } }
        Self.everyCutThrows(v1Bytes) { _ = try KafkaCreateTopicsRequest.decode($0, version: 4) }
    }

    @Test func createTopicsResponsesMatchKafkaPython() {
        let results: [(name: String, errorCode: KafkaErrorCode, errorMessage: String?)] = [("orders", .none, nil), ("dup", .topicAlreadyExists, "exists")]
        // kafka-python 2.0.2, CreateTopicsResponse_v0([("orders", 0), ("dup", 36)]): no messages.
        #expect(KafkaCreateTopicsRequest.responseBody(version: 0, results) == Self.hex("0000000200066f7264657273000000036475700024"))
        // kafka-python 2.0.2, CreateTopicsResponse_v1([("orders", 0, None), ("dup", 36, "Topic 'dup' already exists.")]).
        #expect(KafkaCreateTopicsRequest.responseBody(version: 1, [("orders", .none, nil), ("dup", .topicAlreadyExists, "Topic 'dup' already exists.")])
            == Self.hex("0000000200066f72646572730000ffff00036475700024001b546f70696320276475702720616c7265616479206578697374732e"))
        // kafka-python 2.0.2 CreateTopicsResponse_v2(0, ...); 3.0.12 writes v3 and v4 the same.
        for version: Int16 in 2...4 {
            #expect(KafkaCreateTopicsRequest.responseBody(version: version, results)
                == Self.hex("00000000" + "00000002" + "00066f7264657273" + "0000" + "ffff" + "000364757000240006657869737473"))
        }
    }

    // MARK: DeleteTopics

    @Test func deleteTopicsBothWays() throws {
        // kafka-python 2.0.2, DeleteTopicsRequest_v0(["orders", "b"], 30000); v1-v3 are the same bytes.
        let bytes = Self.hex("00000002" + "00066f7264657273" + "000162" + "00007530")
        for version: Int16 in 0...3 {
            let request = try bytes.withUnsafeBytes { try KafkaDeleteTopicsRequest.decode($0, version: version) }
            #expect(request.topicNames == ["orders", "b"] && request.timeoutMillis == 30_000)
        }
        // kafka-python 2.0.2, DeleteTopicsRequest_v3([], 1000).
        let none = try Self.hex("00000000000003e8").withUnsafeBytes { try KafkaDeleteTopicsRequest.decode($0, version: 3) }
        #expect(none.topicNames.isEmpty && none.timeoutMillis == 1_000)
        #expect(throws: KafkaDecodeError.self) { try bytes.withUnsafeBytes { try KafkaDeleteTopicsRequest.decode($0, version: 4) } }
        Self.everyCutThrows(bytes) { _ = try KafkaDeleteTopicsRequest.decode($0, version: 1) }

        // kafka-python 2.0.2, DeleteTopicsResponse_v0([("orders", 0), ("missing", 3)]), _v1(0, the same) and _v3(0, []).
        let results: [(name: String, errorCode: KafkaErrorCode)] = [("orders", .none), ("missing", .unknownTopicOrPartition)]
        #expect(KafkaDeleteTopicsRequest.responseBody(version: 0, results) == Self.hex("0000000200066f7264657273000000076d697373696e670003"))
        #expect(KafkaDeleteTopicsRequest.responseBody(version: 1, results) == Self.hex("000000000000000200066f7264657273000000076d697373696e670003"))
        #expect(KafkaDeleteTopicsRequest.responseBody(version: 3, []) == Self.hex("0000000000000000"))
    }

    // MARK: Hostile input

    /// A count far beyond what the bytes left could hold is refused before anything is sized by
    /// it (reserving Int32.max elements would abort the test process); a null (-1) or negative
    /// count is refused where the array is not nullable; so is null BYTES.
    @Test func hostileCountsAndNullsAreRefused() {
        let joinHead = "0003677270" + "00002710" + "0000" + "0008636f6e73756d6572"
        let join: (UnsafeRawBufferPointer) throws -> Void = { _ = try KafkaJoinGroupRequest.decode($0, version: 0) }
        #expect(Self.failure(Self.hex(joinHead + "7fffffff"), join)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex(joinHead + "7fffffff" + "000572616e676500000000"), join)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex(joinHead + "ffffffff"), join) != nil, "the protocol list is not nullable")
        #expect(Self.failure(Self.hex(joinHead + "fffffffe"), join) != nil)
        #expect(Self.failure(Self.hex(joinHead + "00000001" + "000572616e6765" + "ffffffff"), join) != nil, "protocol metadata is not nullable")
        #expect(Self.failure(Self.hex(joinHead + "00000000"), join) == nil)

        let sync: (UnsafeRawBufferPointer) throws -> Void = { _ = try KafkaSyncGroupRequest.decode($0, version: 0) }
        #expect(Self.failure(Self.hex("0003677270" + "00000003" + "00036d2d31" + "7fffffff" + "00036d2d3100000000"), sync)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex("0003677270" + "00000003" + "00036d2d31" + "ffffffff"), sync) != nil)

        let create: (UnsafeRawBufferPointer) throws -> Void = { _ = try KafkaCreateTopicsRequest.decode($0, version: 0) }
        #expect(Self.failure(Self.hex("7fffffff" + "00007530"), create)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex("ffffffff" + "00007530"), create) != nil, "the topic list is not nullable")
        // One topic "a", one assignment, and Int32.max broker ids in the 12 bytes left.
        let brokerBomb = "00000001" + "000161" + "00000001" + "0001" + "00000001" + "00000000" + "7fffffff" + "00000000" + "00000000" + "00007530"
        #expect(Self.failure(Self.hex(brokerBomb), create)?.contains("cannot fit") == true)
        let configBomb = "00000001" + "000161" + "00000001" + "0001" + "00000000" + "7fffffff" + "00007530"
        #expect(Self.failure(Self.hex(configBomb), create)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex("00000001" + "000161" + "00000001" + "0001" + "ffffffff" + "00000000" + "00007530"), create) != nil)

        let delete: (UnsafeRawBufferPointer) throws -> Void = { _ = try KafkaDeleteTopicsRequest.decode($0, version: 0) }
        #expect(Self.failure(Self.hex("7fffffff" + "00007530"), delete)?.contains("cannot fit") == true)
        #expect(Self.failure(Self.hex("ffffffff" + "00007530"), delete) != nil)
        #expect(Self.failure(Self.hex("80000000" + "00007530"), delete) != nil)
    }
}
