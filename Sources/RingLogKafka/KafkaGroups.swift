/// The consumer-group and producer-id messages: FindCoordinator (10) v0-v2, Heartbeat (12)
/// v0-v3, LeaveGroup (13) v0-v1, OffsetCommit (8) v2-v7, OffsetFetch (9) v1-v5 and
/// InitProducerId (22) v0-v1. On one node the coordinator is always this broker.
public struct KafkaFindCoordinatorRequest: Equatable, Sendable {
    public var key: String
    /// 0: a group, 1: a transactional id.
    public var keyType: Int8

    public static let versions: ClosedRange<Int16> = 0...2

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaFindCoordinatorRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("FindCoordinator v\(version) requests are not read (v0-v2 are)") }
        var reader = KafkaReader(body)
        let key = try reader.string()
        let keyType = version >= 1 ? try reader.int8() : 0
        try reader.finish()
        return KafkaFindCoordinatorRequest(key: key, keyType: keyType)
    }

    public static func responseBody(version: Int16, errorCode: KafkaErrorCode, nodeID: Int32, host: String, port: Int32) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 1 { writer.int32(0) }
        writer.int16(errorCode.rawValue)
        if version >= 1 { writer.nullableString(nil) }
        writer.int32(nodeID)
        writer.nullableString(host)
        writer.int32(port)
        return writer.bytes
    }
}

/// Heartbeat and LeaveGroup: who is asking, and an error code back.
public struct KafkaMembershipRequest: Equatable, Sendable {
    public var groupID: String
    /// Heartbeat only (LeaveGroup carries none): the generation the member believes in.
    public var generationID: Int32?
    public var memberID: String

    public static func decodeHeartbeat(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaMembershipRequest {
        guard (0...3).contains(version) else { throw KafkaDecodeError("Heartbeat v\(version) requests are not read (v0-v3 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let generation = try reader.int32()
        let member = try reader.string()
        if version >= 3 { _ = try reader.nullableString() }  // group instance id (static membership)
        try reader.finish()
        return KafkaMembershipRequest(groupID: group, generationID: generation, memberID: member)
    }

    public static func decodeLeaveGroup(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaMembershipRequest {
        guard (0...1).contains(version) else { throw KafkaDecodeError("LeaveGroup v\(version) requests are not read (v0-v1 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let member = try reader.string()
        try reader.finish()
        return KafkaMembershipRequest(groupID: group, generationID: nil, memberID: member)
    }

    /// Heartbeat and LeaveGroup answers: the throttle time from v1, then the error.
    public static func responseBody(version: Int16, errorCode: KafkaErrorCode) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 1 { writer.int32(0) }
        writer.int16(errorCode.rawValue)
        return writer.bytes
    }
}

public struct KafkaOffsetCommitRequest: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        public var offset: Int64
        public var metadata: String?
        public init(index: Int32, offset: Int64, metadata: String?) {
            self.index = index
            self.offset = offset
            self.metadata = metadata
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    public var topics: [Topic]

    public static let versions: ClosedRange<Int16> = 2...7

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaOffsetCommitRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("OffsetCommit v\(version) requests are not read (v2-v7 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let generation = try reader.int32()
        let member = try reader.string()
        if version >= 7 { _ = try reader.nullableString() }  // group instance id
        if version <= 4 { _ = try reader.int64() }  // retention time
        let topics = try reader.topics(partitionBytes: 14) { (reader: inout KafkaReader) throws(KafkaDecodeError) in
            let index = try reader.int32()
            let offset = try reader.int64()
            if version >= 6 { _ = try reader.int32() }  // committed leader epoch
            return Partition(index: index, offset: offset, metadata: try reader.nullableString())
        } ?? []
        try reader.finish()
        return KafkaOffsetCommitRequest(groupID: group, generationID: generation, memberID: member, topics: topics)
    }

    /// Per topic and partition, its error: the throttle time from v3.
    public static func responseBody(version: Int16, _ results: [(topic: String, partitions: [(index: Int32, errorCode: KafkaErrorCode)])]) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 3 { writer.int32(0) }
        writer.topics(results.map { KafkaTopic(name: $0.topic, partitions: $0.partitions) }) { writer, partition in
            writer.int32(partition.index)
            writer.int16(partition.errorCode.rawValue)
        }
        return writer.bytes
    }
}

public struct KafkaOffsetFetchRequest: Equatable, Sendable {
    public var groupID: String
    /// Partition indexes by topic; nil (v2+): every partition the group committed.
    public var topics: [KafkaTopic<Int32>]?

    public static let versions: ClosedRange<Int16> = 1...5

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaOffsetFetchRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("OffsetFetch v\(version) requests are not read (v1-v5 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let topics = try reader.topics(partitionBytes: 4) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.int32() }
        if topics == nil && version < 2 { throw KafkaDecodeError("OffsetFetch v\(version) has no null topic list") }
        try reader.finish()
        return KafkaOffsetFetchRequest(groupID: group, topics: topics)
    }

    /// A partition with no commit answers offset -1, empty metadata, no error (Kafka's rule).
    public static func responseBody(
        version: Int16, _ results: [(topic: String, partitions: [(index: Int32, offset: Int64, metadata: String?, errorCode: KafkaErrorCode)])],
        errorCode: KafkaErrorCode = .none
    ) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 3 { writer.int32(0) }
        writer.topics(results.map { KafkaTopic(name: $0.topic, partitions: $0.partitions) }) { writer, partition in
            writer.int32(partition.index)
            writer.int64(partition.offset)
            if version >= 5 { writer.int32(-1) }  // committed leader epoch
            writer.nullableString(partition.metadata ?? "")
            writer.int16(partition.errorCode.rawValue)
        }
        if version >= 2 { writer.int16(errorCode.rawValue) }
        return writer.bytes
    }
}

public struct KafkaInitProducerIdRequest: Equatable, Sendable {
    public var transactionalID: String?
    public var transactionTimeoutMillis: Int32

    public static let versions: ClosedRange<Int16> = 0...1

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaInitProducerIdRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("InitProducerId v\(version) requests are not read (v0-v1 are)") }
        var reader = KafkaReader(body)
        let id = try reader.nullableString()
        let timeout = try reader.int32()
        try reader.finish()
        return KafkaInitProducerIdRequest(transactionalID: id, transactionTimeoutMillis: timeout)
    }

    public static func responseBody(errorCode: KafkaErrorCode, producerID: Int64, producerEpoch: Int16) -> [UInt8] {
        var writer = KafkaWriter()
        writer.int32(0)
        writer.int16(errorCode.rawValue)
        writer.int64(producerID)
        writer.int16(producerEpoch)
        return writer.bytes
    }
}
