/// Produce (key 0) requests, v3-v7 (record batches of magic 2; v3-v7 share one request layout),
/// and responses for v0-v7 (v0-v2 are advertised so librdkafka keeps compressing; KAFKA-18659).
public struct KafkaProduceRequest: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        /// Where the partition's record batch sits in the request body (nil: null records).
        public var records: Range<Int>?
    }

    public typealias Topic = KafkaTopic<Partition>

    public var transactionalID: String?
    /// 0 (no response), 1 (the leader wrote it), -1 (all replicas: durable, for RingLog).
    public var acks: Int16
    public var timeoutMillis: Int32
    public var topics: [Topic]

    public static let versions: ClosedRange<Int16> = 3...7

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaProduceRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("Produce v\(version) requests are not read (v3-v7 are)") }
        var reader = KafkaReader(body)
        let transactionalID = try reader.nullableString()
        let acks = try reader.int16()
        let timeout = try reader.int32()
        let topics = try reader.topics(partitionBytes: 8) { (reader: inout KafkaReader) throws(KafkaDecodeError) in
            Partition(index: try reader.int32(), records: try reader.nullableBytesRange())
        } ?? []
        try reader.finish()
        return KafkaProduceRequest(transactionalID: transactionalID, acks: acks, timeoutMillis: timeout, topics: topics)
    }
}

public struct KafkaProduceResponse: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var baseOffset: Int64
        public var logAppendTimeMillis: Int64
        public var logStartOffset: Int64

        public init(index: Int32, errorCode: KafkaErrorCode, baseOffset: Int64 = -1, logAppendTimeMillis: Int64 = -1, logStartOffset: Int64 = -1) {
            self.index = index
            self.errorCode = errorCode
            self.baseOffset = baseOffset
            self.logAppendTimeMillis = logAppendTimeMillis
            self.logStartOffset = logStartOffset
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var topics: [Topic]
    public var throttleTimeMillis: Int32 = 0

    public init(topics: [Topic]) { self.topics = topics }

    /// v0: index, error, base offset; v2+ adds the append time, v5+ the log start offset; v1+
    /// ends with the throttle time.
    public func encode(version: Int16) -> [UInt8] {
        var writer = KafkaWriter()
        writer.topics(topics) { writer, partition in
            writer.int32(partition.index)
            writer.int16(partition.errorCode.rawValue)
            writer.int64(partition.baseOffset)
            if version >= 2 { writer.int64(partition.logAppendTimeMillis) }
            if version >= 5 { writer.int64(partition.logStartOffset) }
        }
        if version >= 1 { writer.int32(throttleTimeMillis) }
        return writer.bytes
    }
}
