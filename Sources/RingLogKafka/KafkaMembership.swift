/// Joining a consumer group: JoinGroup (11) v0-v5 and SyncGroup (14) v0-v3, the two rounds of a
/// rebalance. Every version here is non-flexible (JoinGroup turns flexible at v6, SyncGroup at
/// v4). The protocol metadata and the assignments are opaque bytes to the coordinator: they are
/// copied out of the request, since the coordinator holds on to them across requests.
public struct KafkaJoinGroupRequest: Equatable, Sendable {
    /// One assignment protocol the member supports ("range", "roundrobin", ...) and its
    /// subscription metadata.
    public struct GroupProtocol: Equatable, Sendable {
        public var name: String
        public var metadata: [UInt8]
        public init(name: String, metadata: [UInt8]) {
            self.name = name
            self.metadata = metadata
        }
    }

    /// One member of the group, as the leader's JoinGroup response lists it.
    public struct Member: Equatable, Sendable {
        public var memberID: String
        /// v5+ (static membership); dropped from older responses.
        public var groupInstanceID: String?
        public var metadata: [UInt8]
        public init(memberID: String, groupInstanceID: String? = nil, metadata: [UInt8]) {
            self.memberID = memberID
            self.groupInstanceID = groupInstanceID
            self.metadata = metadata
        }
    }

    public var groupID: String
    public var sessionTimeoutMillis: Int32
    /// v1+; a v0 request has none, and the session timeout stands in for it (as in Kafka).
    public var rebalanceTimeoutMillis: Int32
    /// Empty for a member joining for the first time.
    public var memberID: String
    /// v5+ (static membership); nil before.
    public var groupInstanceID: String?
    /// "consumer" for consumer groups.
    public var protocolType: String
    public var protocols: [GroupProtocol]

    public static let versions: ClosedRange<Int16> = 0...5

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaJoinGroupRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("JoinGroup v\(version) requests are not read (v0-v5 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let session = try reader.int32()
        let rebalance = version >= 1 ? try reader.int32() : session
        let member = try reader.string()
        let instance = version >= 5 ? try reader.nullableString() : nil
        let protocolType = try reader.string()
        // Each protocol: a STRING name (2 bytes at least) and BYTES metadata (4 at least).
        let count = try reader.requiredArrayCount(minimumElementBytes: 6, "JoinGroup protocols")
        var protocols: [GroupProtocol] = []
        protocols.reserveCapacity(count)
        for _ in 0..<count {
            let name = try reader.string()
            protocols.append(GroupProtocol(name: name, metadata: Array(try reader.requiredBytes())))
        }
        try reader.finish()
        return KafkaJoinGroupRequest(
            groupID: group, sessionTimeoutMillis: session, rebalanceTimeoutMillis: rebalance, memberID: member,
            groupInstanceID: instance, protocolType: protocolType, protocols: protocols)
    }

    /// The throttle time (always 0) from v2; each member's group instance id from v5. `members`
    /// is empty except in the leader's response.
    public static func responseBody(
        version: Int16, errorCode: KafkaErrorCode, generationID: Int32, protocolName: String, leader: String, memberID: String,
        members: [Member]
    ) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 2 { writer.int32(0) }
        writer.int16(errorCode.rawValue)
        writer.int32(generationID)
        writer.nullableString(protocolName)
        writer.nullableString(leader)
        writer.nullableString(memberID)
        writer.arrayCount(members.count)
        for member in members {
            writer.nullableString(member.memberID)
            if version >= 5 { writer.nullableString(member.groupInstanceID) }
            writer.nullableBytes(member.metadata)
        }
        return writer.bytes
    }
}

public struct KafkaSyncGroupRequest: Equatable, Sendable {
    /// What the leader assigned one member (empty from every other member).
    public struct Assignment: Equatable, Sendable {
        public var memberID: String
        public var assignment: [UInt8]
        public init(memberID: String, assignment: [UInt8]) {
            self.memberID = memberID
            self.assignment = assignment
        }
    }

    public var groupID: String
    public var generationID: Int32
    public var memberID: String
    /// v3+ (static membership); nil before.
    public var groupInstanceID: String?
    public var assignments: [Assignment]

    public static let versions: ClosedRange<Int16> = 0...3

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaSyncGroupRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("SyncGroup v\(version) requests are not read (v0-v3 are)") }
        var reader = KafkaReader(body)
        let group = try reader.string()
        let generation = try reader.int32()
        let member = try reader.string()
        let instance = version >= 3 ? try reader.nullableString() : nil
        // Each assignment: a STRING member id (2 bytes at least) and BYTES (4 at least).
        let count = try reader.requiredArrayCount(minimumElementBytes: 6, "SyncGroup assignments")
        var assignments: [Assignment] = []
        assignments.reserveCapacity(count)
        for _ in 0..<count {
            let to = try reader.string()
            assignments.append(Assignment(memberID: to, assignment: Array(try reader.requiredBytes())))
        }
        try reader.finish()
        return KafkaSyncGroupRequest(groupID: group, generationID: generation, memberID: member, groupInstanceID: instance, assignments: assignments)
    }

    /// The throttle time (always 0) from v1, the error, then this member's assignment.
    public static func responseBody(version: Int16, errorCode: KafkaErrorCode, assignment: [UInt8]) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 1 { writer.int32(0) }
        writer.int16(errorCode.rawValue)
        writer.nullableBytes(assignment)
        return writer.bytes
    }
}
