/// Fetch (key 1), v4-v11: a consumer asks for batches from an offset per partition, waiting up
/// to `maxWaitMillis` for `minBytes`. RingLog answers without fetch sessions (session id 0) and
/// with the last stable offset equal to the high watermark (no transactions).
public struct KafkaFetchRequest: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        public var fetchOffset: Int64
        public var maxBytes: Int32
        public init(index: Int32, fetchOffset: Int64, maxBytes: Int32) {
            self.index = index
            self.fetchOffset = fetchOffset
            self.maxBytes = maxBytes
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var maxWaitMillis: Int32
    public var minBytes: Int32
    public var maxBytes: Int32
    public var isolationLevel: Int8
    public var topics: [Topic]

    public static let versions: ClosedRange<Int16> = 4...11

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaFetchRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("Fetch v\(version) requests are not read (v4-v11 are)") }
        var reader = KafkaReader(body)
        _ = try reader.int32()  // replica id: -1 from consumers
        let maxWait = try reader.int32()
        let minBytes = try reader.int32()
        let maxBytes = try reader.int32()
        let isolation = try reader.int8()
        if version >= 7 {
            _ = try reader.int32()  // session id
            _ = try reader.int32()  // session epoch
        }
        let topics = try reader.topics(partitionBytes: 16) { (reader: inout KafkaReader) throws(KafkaDecodeError) in
            let index = try reader.int32()
            if version >= 9 { _ = try reader.int32() }  // current leader epoch
            let offset = try reader.int64()
            if version >= 5 { _ = try reader.int64() }  // the follower's log start offset
            return Partition(index: index, fetchOffset: offset, maxBytes: try reader.int32())
        } ?? []
        if version >= 7 {
            // Forgotten topics (fetch sessions, which RingLog does not keep): read past.
            _ = try reader.topics(partitionBytes: 4) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.int32() }
        }
        if version >= 11 { _ = try reader.string() }  // rack id
        try reader.finish()
        return KafkaFetchRequest(maxWaitMillis: maxWait, minBytes: minBytes, maxBytes: maxBytes, isolationLevel: isolation, topics: topics)
    }
}

public struct KafkaFetchResponse: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var highWatermark: Int64
        public var logStartOffset: Int64
        /// Whole record batches (never null on the wire: an empty answer is zero bytes, which
        /// librdkafka requires).
        public var records: [UInt8]

        public init(index: Int32, errorCode: KafkaErrorCode = .none, highWatermark: Int64 = -1, logStartOffset: Int64 = -1, records: [UInt8] = []) {
            self.index = index
            self.errorCode = errorCode
            self.highWatermark = highWatermark
            self.logStartOffset = logStartOffset
            self.records = records
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var topics: [Topic]
    public init(topics: [Topic]) { self.topics = topics }

    public func encode(version: Int16) -> [UInt8] {
        var writer = KafkaWriter()
        Self.writeHead(version: version, into: &writer)
        writer.topics(topics) { writer, partition in
            Self.writePartitionHead(partition, recordBytes: partition.records.count, version: version, into: &writer)
            writer.raw(partition.records)
        }
        return writer.bytes
    }

    /// What comes before the topics: throttle time, and from v7 the error code and the fetch
    /// session (none).
    public static func writeHead(version: Int16, into writer: inout KafkaWriter) {
        writer.int32(0)
        if version >= 7 {
            writer.int16(KafkaErrorCode.none.rawValue)
            writer.int32(0)
        }
    }

    /// A partition's fields up to and including the length of its records (`recordBytes`),
    /// which follow: a server that sends stored batches without copying writes them after this.
    public static func writePartitionHead(_ partition: Partition, recordBytes: Int, version: Int16, into writer: inout KafkaWriter) {
        writer.int32(partition.index)
        writer.int16(partition.errorCode.rawValue)
        writer.int64(partition.highWatermark)
        writer.int64(partition.highWatermark)  // last stable offset: no transactions
        if version >= 5 { writer.int64(partition.logStartOffset) }
        writer.arrayCount(0)  // aborted transactions
        if version >= 11 { writer.int32(-1) }  // no preferred read replica
        writer.int32(Int32(clamping: recordBytes))  // never null: librdkafka needs empty records
    }
}

/// ListOffsets (key 2), v1-v2: the offset of the first record at or after a time per partition,
/// or the earliest (-2) or latest (-1).
public struct KafkaListOffsetsRequest: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        /// -1: latest (the high watermark), -2: earliest, else milliseconds since the epoch.
        public var timestamp: Int64
        public init(index: Int32, timestamp: Int64) {
            self.index = index
            self.timestamp = timestamp
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var topics: [Topic]

    public static let versions: ClosedRange<Int16> = 1...2

    public static func decode(_ body: UnsafeRawBufferPointer, version: Int16) throws(KafkaDecodeError) -> KafkaListOffsetsRequest {
        guard versions.contains(version) else { throw KafkaDecodeError("ListOffsets v\(version) requests are not read (v1-v2 are)") }
        var reader = KafkaReader(body)
        _ = try reader.int32()  // replica id
        if version >= 2 { _ = try reader.int8() }  // isolation level
        let topics = try reader.topics(partitionBytes: 12) { (reader: inout KafkaReader) throws(KafkaDecodeError) in
            Partition(index: try reader.int32(), timestamp: try reader.int64())
        } ?? []
        try reader.finish()
        return KafkaListOffsetsRequest(topics: topics)
    }
}

public struct KafkaListOffsetsResponse: Equatable, Sendable {
    public struct Partition: Equatable, Sendable {
        public var index: Int32
        public var errorCode: KafkaErrorCode
        public var timestamp: Int64
        public var offset: Int64
        public init(index: Int32, errorCode: KafkaErrorCode = .none, timestamp: Int64 = -1, offset: Int64 = -1) {
            self.index = index
            self.errorCode = errorCode
            self.timestamp = timestamp
            self.offset = offset
        }
    }

    public typealias Topic = KafkaTopic<Partition>

    public var topics: [Topic]
    public init(topics: [Topic]) { self.topics = topics }

    public func encode(version: Int16) -> [UInt8] {
        var writer = KafkaWriter()
        if version >= 2 { writer.int32(0) }
        writer.topics(topics) { writer, partition in
            writer.int32(partition.index)
            writer.int16(partition.errorCode.rawValue)
            writer.int64(partition.timestamp)
            writer.int64(partition.offset)
        }
        return writer.bytes
    }
}
