/// Topic administration: CreateTopics (19) v0-v4 and DeleteTopics (20) v0-v3, all non-flexible
/// (CreateTopics turns flexible at v5, DeleteTopics at v4). The codecs only read and write; what
/// a one-node broker accepts (a replication factor of 1, no manual assignment onto other brokers)
/// is the listener's call.
public struct KafkaCreateTopicsRequest: Equatable, Sendable {
    /// A manual placement of one partition's replicas.
    public struct Assignment: Equatable, Sendable {
        public var partitionIndex: Int32
        public var brokerIDs: [Int32]
        public init(partitionIndex: Int32, brokerIDs: [Int32]) {
            self.partitionIndex = partitionIndex
            self.brokerIDs = brokerIDs
        }
    }

    /// A topic configuration override ("retention.ms", ...); a null value asks for the default.
    public struct Config: Equatable, Sendable {
        public var name: String
        public var value: String?
        public init(name: String, value: String?) {
            self.name = name
            self.value = value
        }
    }

    public struct Topic: Equatable, Sendable {
        public var name: String
        /// -1 with manual `assignments` (or, v4+, for the broker's default).
        public var numPartitions: Int32
        /// -1 with manual `assignments` (or, v4+, for the broker's default).
        public var replicationFactor: Int16
        /// Empty for the broker to place the partitions itself.
        public var assignments: [Assignment]
        public var configs: [Config]
        public init(name: String, numPartitions: Int32, replicationFactor: Int16, assignments: [Assignment] = [], configs: [Config] = []) {
            self.name = name
            self.numPartitions = numPartitions
            self.replicationFactor = replicationFactor
            self.assignments = assignments
            self.configs = configs
        }
    }

    public var topics: [Topic]
    public var timeoutMillis: Int32
    /// v1+: check the request but create nothing; false for v0.
    public var validateOnly: Bool

    public static let versions: ClosedRange<Int16> = 0...4

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaCreateTopicsRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("CreateTopics v\(version) requests are not read (v0-v4 are)") }
        var reader = KafkaReader(body)
        // Each topic: a STRING name (2), partitions (4), replication factor (2), two ARRAYs (4 + 4).
        let topicCount = try reader.requiredArrayCount(minimumElementBytes: 16, "CreateTopics topics")
        var topics: [Topic] = []
        topics.reserveCapacity(topicCount)
        for _ in 0..<topicCount {
            let name = try reader.string()
            let partitions = try reader.int32()
            let replication = try reader.int16()
            // Each assignment: a partition index (4) and an ARRAY of broker ids (4).
            let assignmentCount = try reader.requiredArrayCount(minimumElementBytes: 8, "a CreateTopics assignment list")
            var assignments: [Assignment] = []
            assignments.reserveCapacity(assignmentCount)
            for _ in 0..<assignmentCount {
                let index = try reader.int32()
                let brokerCount = try reader.requiredArrayCount(minimumElementBytes: 4, "a CreateTopics broker id list")
                var brokers: [Int32] = []
                brokers.reserveCapacity(brokerCount)
                for _ in 0..<brokerCount { brokers.append(try reader.int32()) }
                assignments.append(Assignment(partitionIndex: index, brokerIDs: brokers))
            }
            // Each config: a STRING name (2) and a NULLABLE_STRING value (2).
            let configCount = try reader.requiredArrayCount(minimumElementBytes: 4, "a CreateTopics config list")
            var configs: [Config] = []
            configs.reserveCapacity(configCount)
            for _ in 0..<configCount {
                let key = try reader.string()
                configs.append(Config(name: key, value: try reader.nullableString()))
            }
            topics.append(Topic(name: name, numPartitions: partitions, replicationFactor: replication, assignments: assignments, configs: configs))
        }
        let timeout = try reader.int32()
        let validateOnly = version >= 1 ? try reader.boolean() : false
        try reader.finish()
        return KafkaCreateTopicsRequest(topics: topics, timeoutMillis: timeout, validateOnly: validateOnly)
    }

    /// Per topic, its error: the throttle time (always 0) from v2, each topic's error message
    /// (nil: none) from v1.
    public static func responseBody(version: Int16, _ results: [(name: String, errorCode: KafkaErrorCode, errorMessage: String?)]) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 2 { writer.int32(0) }
        writer.arrayCount(results.count)
        for result in results {
            writer.nullableString(result.name)
            writer.int16(result.errorCode.rawValue)
            if version >= 1 { writer.nullableString(result.errorMessage) }
        }
        return writer.bytes
    }
}

public struct KafkaDeleteTopicsRequest: Equatable, Sendable {
    public var topicNames: [String]
    public var timeoutMillis: Int32

    public static let versions: ClosedRange<Int16> = 0...3

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaDeleteTopicsRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("DeleteTopics v\(version) requests are not read (v0-v3 are)") }
        var reader = KafkaReader(body)
        let count = try reader.requiredArrayCount(minimumElementBytes: 2, "DeleteTopics topic names")
        var names: [String] = []
        names.reserveCapacity(count)
        for _ in 0..<count { names.append(try reader.string()) }
        let timeout = try reader.int32()
        try reader.finish()
        return KafkaDeleteTopicsRequest(topicNames: names, timeoutMillis: timeout)
    }

    /// Per topic, its error: the throttle time (always 0) from v1.
    public static func responseBody(version: Int16, _ results: [(name: String, errorCode: KafkaErrorCode)]) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 1 { writer.int32(0) }
        writer.arrayCount(results.count)
        for result in results {
            writer.nullableString(result.name)
            writer.int16(result.errorCode.rawValue)
        }
        return writer.bytes
    }
}
