/// Metadata (key 3), v0-v4: which topics and partitions exist, and which broker leads them (on
/// one node, always this one).
public struct KafkaMetadataRequest: Equatable, Sendable {
    /// nil: every topic (v0 sends an empty array for that; v1+ a null one). Empty (v1+): none.
    public var topics: [String]?
    /// v4+; earlier versions always allow it.
    public var allowAutoTopicCreation: Bool

    public static let versions: ClosedRange<Int16> = 0...4

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaMetadataRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("Metadata v\(version) requests are not read (v0-v4 are)") }
        var reader = KafkaReader(body)
        var topics: [String]?
        if let count = try reader.arrayCount(minimumElementBytes: 2) {
            var names: [String] = []
            for _ in 0..<count { names.append(try reader.string()) }
            topics = names
        } else if version == 0 {
            throw KafkaDecodeError("Metadata v0 has no null topic list")
        }
        if version == 0, topics?.isEmpty == true { topics = nil }
        let allow = version >= 4 ? try reader.boolean() : true
        try reader.finish()
        return KafkaMetadataRequest(topics: topics, allowAutoTopicCreation: allow)
    }
}

public struct KafkaMetadataResponse: Equatable, Sendable {
    public struct Broker: Equatable, Sendable {
        public var nodeID: Int32
        public var host: String
        public var port: Int32
        public init(nodeID: Int32, host: String, port: Int32) {
            self.nodeID = nodeID
            self.host = host
            self.port = port
        }
    }

    public struct Partition: Equatable, Sendable {
        public var errorCode: KafkaErrorCode
        public var index: Int32
        /// The leader, and the only replica and in-sync replica.
        public var leader: Int32
        public init(errorCode: KafkaErrorCode = .none, index: Int32, leader: Int32) {
            self.errorCode = errorCode
            self.index = index
            self.leader = leader
        }
    }

    public struct Topic: Equatable, Sendable {
        public var errorCode: KafkaErrorCode
        public var name: String
        public var partitions: [Partition]
        public init(errorCode: KafkaErrorCode = .none, name: String, partitions: [Partition]) {
            self.errorCode = errorCode
            self.name = name
            self.partitions = partitions
        }
    }

    public var brokers: [Broker]
    public var clusterID: String?
    public var controllerID: Int32
    public var topics: [Topic]

    public init(brokers: [Broker], clusterID: String?, controllerID: Int32, topics: [Topic]) {
        self.brokers = brokers
        self.clusterID = clusterID
        self.controllerID = controllerID
        self.topics = topics
    }

    public func encode(version: Int16) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 3 { writer.int32(0) }
        writer.arrayCount(brokers.count)
        for broker in brokers {
            writer.int32(broker.nodeID)
            writer.nullableString(broker.host)
            writer.int32(broker.port)
            if version >= 1 { writer.nullableString(nil) }
        }
        if version >= 2 { writer.nullableString(clusterID) }
        if version >= 1 { writer.int32(controllerID) }
        writer.arrayCount(topics.count)
        for topic in topics {
            writer.int16(topic.errorCode.rawValue)
            writer.nullableString(topic.name)
            if version >= 1 { writer.boolean(false) }
            writer.arrayCount(topic.partitions.count)
            for partition in topic.partitions {
                writer.int16(partition.errorCode.rawValue)
                writer.int32(partition.index)
                writer.int32(partition.leader)
                for _ in 0..<2 {
                    writer.arrayCount(1)
                    writer.int32(partition.leader)
                }
            }
        }
        return writer.bytes
    }
}
