import RingLogWire

/// One record of a Kafka batch, as an uncompressed batch carries it.
public struct KafkaRecord: Equatable, Sendable {
    public var offsetDelta: Int32
    public var timestampDelta: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    public var headers: [(key: String, value: [UInt8]?)]

    public init(offsetDelta: Int32, timestampDelta: Int64, key: [UInt8]?, value: [UInt8]?, headers: [(key: String, value: [UInt8]?)] = []) {
        self.offsetDelta = offsetDelta
        self.timestampDelta = timestampDelta
        self.key = key
        self.value = value
        self.headers = headers
    }

    public static func == (lhs: KafkaRecord, rhs: KafkaRecord) -> Bool {
        lhs.offsetDelta == rhs.offsetDelta && lhs.timestampDelta == rhs.timestampDelta && lhs.key == rhs.key && lhs.value == rhs.value
            && lhs.headers.count == rhs.headers.count && zip(lhs.headers, rhs.headers).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

/// Kafka's record batch, magic 2 (the only format RingLog takes or serves). Big-endian:
///
/// ```
///  0 i64 baseOffset            4.3: the broker's; producers send 0
///  8 i32 batchLength           bytes after this field
/// 12 i32 partitionLeaderEpoch  the broker's
/// 16 i8  magic                 2
/// 17 u32 crc                   CRC32C of bytes [21, end)
/// 21 i16 attributes            bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control
/// 23 i32 lastOffsetDelta       recordsCount - 1
/// 27 i64 baseTimestamp
/// 35 i64 maxTimestamp
/// 43 i64 producerId            -1 when not idempotent
/// 51 i16 producerEpoch
/// 53 i32 baseSequence
/// 57 i32 recordsCount
/// 61     records (compressed as one blob when the codec bits say so)
/// ```
///
/// Kafka's CRC leaves out the fields before `attributes`, which a broker assigns. RingLog stores
/// a Kafka batch as the payload of a format-2 batch holding Kafka's `crc` and everything from
/// `attributes` on, untouched; a Fetch puts the first 17 bytes back in front of it
/// (`fetchPrefix`) from the RingLog header's record number and epoch, so compressed batches pass
/// through unread and the producer's CRC still checks at the consumer.
public enum KafkaRecordBatch {
    public static let headerBytes = 61
    /// Where Kafka's CRC coverage, and RingLog's stored payload after the CRC, begins.
    public static let crcStart = 21
    /// The bytes a Fetch puts in front of a stored payload.
    public static let prefixBytes = 17

    public struct Header: Equatable, Sendable {
        public var baseOffset: Int64
        public var batchLength: Int32
        public var partitionLeaderEpoch: Int32
        public var magic: Int8
        public var crc: UInt32
        public var attributes: Int16
        public var lastOffsetDelta: Int32
        public var baseTimestamp: Int64
        public var maxTimestamp: Int64
        public var producerId: Int64
        public var producerEpoch: Int16
        public var baseSequence: Int32
        public var recordsCount: Int32

        /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
        public var compression: Int { Int(attributes & 0x7) }
        public var isTransactional: Bool { attributes & 0x10 != 0 }
        public var isControl: Bool { attributes & 0x20 != 0 }
    }

    /// Why a produced batch is refused, with the Kafka error code to answer.
    public enum Problem: Error, Equatable, Sendable, CustomStringConvertible {
        case truncated(Int)
        case lengthMismatch(declared: Int, actual: Int)
        case unsupportedMagic(Int8)
        case checksumMismatch(stored: UInt32, computed: UInt32)
        case invalid(String)

        /// CORRUPT_MESSAGE (2) for a failed CRC, UNSUPPORTED_FOR_MESSAGE_FORMAT (43) for an old
        /// magic, INVALID_RECORD (87) for the rest.
        public var kafkaErrorCode: Int16 {
            switch self {
            case .checksumMismatch: 2
            case .unsupportedMagic: 43
            default: 87
            }
        }

        public var description: String {
            switch self {
            case .truncated(let count): "a record batch of \(count) bytes is shorter than its \(KafkaRecordBatch.headerBytes)-byte header"
            case .lengthMismatch(let declared, let actual): "the record batch declares \(declared) bytes, \(actual) arrived"
            case .unsupportedMagic(let magic): "record batch magic \(magic): only magic 2 is taken"
            case .checksumMismatch(let stored, let computed):
                "record batch CRC32C mismatch: 0x\(String(stored, radix: 16)) stored, 0x\(String(computed, radix: 16)) computed"
            case .invalid(let reason): reason
            }
        }
    }

    /// Decodes the 61-byte header without judging it.
    public static func header(_ bytes: UnsafeRawBufferPointer) throws(KafkaDecodeError) -> Header {
        var reader = KafkaReader(bytes)
        return Header(
            baseOffset: try reader.int64(), batchLength: try reader.int32(), partitionLeaderEpoch: try reader.int32(), magic: try reader.int8(),
            crc: try reader.uint32(), attributes: try reader.int16(), lastOffsetDelta: try reader.int32(), baseTimestamp: try reader.int64(),
            maxTimestamp: try reader.int64(), producerId: try reader.int64(), producerEpoch: try reader.int16(), baseSequence: try reader.int32(),
            recordsCount: try reader.int32())
    }

    /// Checks one batch exactly as a producer sent it (all of `bytes`), as a broker must before
    /// storing it: length, magic 2, CRC, base offset 0, at least one record and a matching last
    /// offset delta, no control or transactional batch (transactions are not supported), and
    /// producer fields that agree with each other.
    public static func validateProduced(_ bytes: UnsafeRawBufferPointer) -> Result<Header, Problem> {
        guard bytes.count >= headerBytes, let header = try? header(bytes) else { return .failure(.truncated(bytes.count)) }
        if Int(header.batchLength) + 12 != bytes.count { return .failure(.lengthMismatch(declared: Int(header.batchLength) + 12, actual: bytes.count)) }
        if header.magic != 2 { return .failure(.unsupportedMagic(header.magic)) }
        let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[crcStart...]))
        if computed != header.crc { return .failure(.checksumMismatch(stored: header.crc, computed: computed)) }
        if header.baseOffset != 0 { return .failure(.invalid("a produced batch has base offset \(header.baseOffset), not 0")) }
        if header.recordsCount <= 0 { return .failure(.invalid("a record batch holds \(header.recordsCount) records")) }
        if header.lastOffsetDelta != header.recordsCount - 1 {
            return .failure(.invalid("last offset delta \(header.lastOffsetDelta) does not match \(header.recordsCount) records"))
        }
        if header.isControl { return .failure(.invalid("control batches are the broker's")) }
        if header.isTransactional { return .failure(.invalid("transactions are not supported")) }
        if header.compression > 4 { return .failure(.invalid("compression codec \(header.compression) is not defined")) }
        if header.producerId >= 0 && (header.baseSequence < 0 || header.producerEpoch < 0) {
            return .failure(.invalid("an idempotent batch needs a base sequence and an epoch"))
        }
        return .success(header)
    }

    /// The bytes RingLog stores for a validated batch: Kafka's CRC, then everything from
    /// `attributes` on.
    public static func storedPayload(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Array(bytes[17...])
    }

    /// What a Fetch puts in front of a stored payload to make it a Kafka batch again.
    public static func fetchPrefix(baseOffset: Int64, partitionLeaderEpoch: Int32, storedPayloadBytes: Int) -> [UInt8] {
        var writer = KafkaWriter(reservingCapacity: prefixBytes)
        writer.int64(baseOffset)
        writer.int32(Int32(clamping: storedPayloadBytes + prefixBytes - 12))
        writer.int32(partitionLeaderEpoch)
        writer.int8(2)
        return writer.bytes
    }

    /// The records of an uncompressed batch (a compressed one throws: RingLog never decompresses).
    public static func records(_ bytes: UnsafeRawBufferPointer) throws(KafkaDecodeError) -> [KafkaRecord] {
        let header = try header(bytes)
        guard header.compression == 0 else { throw KafkaDecodeError("the records are compressed (codec \(header.compression))") }
        var reader = KafkaReader(UnsafeRawBufferPointer(rebasing: bytes[headerBytes...]))
        var records: [KafkaRecord] = []
        guard header.recordsCount >= 0, Int(header.recordsCount) <= reader.remaining / 7 else {
            throw KafkaDecodeError("\(header.recordsCount) records cannot fit")
        }
        records.reserveCapacity(Int(header.recordsCount))
        for _ in 0..<header.recordsCount {
            let length = try reader.varint()
            guard length >= 0 else { throw KafkaDecodeError("a record length of \(length)") }
            var record = KafkaReader(try reader.raw(Int(length)))
            _ = try record.int8()
            let timestampDelta = try record.varlong()
            let offsetDelta = try record.varint()
            func bytes(_ reader: inout KafkaReader) throws(KafkaDecodeError) -> [UInt8]? {
                let length = try reader.varint()
                if length == -1 { return nil }
                guard length >= 0 else { throw KafkaDecodeError("a field length of \(length)") }
                return Array(try reader.raw(Int(length)))
            }
            let key = try bytes(&record)
            let value = try bytes(&record)
            let headerCount = try record.varint()
            guard headerCount >= 0, Int(headerCount) <= record.remaining / 2 else { throw KafkaDecodeError("\(headerCount) headers cannot fit") }
            var headers: [(key: String, value: [UInt8]?)] = []
            for _ in 0..<headerCount {
                guard let name = try bytes(&record), let text = String(validating: name, as: UTF8.self) else {
                    throw KafkaDecodeError("a header key is null or not UTF-8")
                }
                headers.append((text, try bytes(&record)))
            }
            try record.finish()
            records.append(KafkaRecord(offsetDelta: offsetDelta, timestampDelta: timestampDelta, key: key, value: value, headers: headers))
        }
        try reader.finish()
        return records
    }

    /// An uncompressed batch of `records` as a producer would send it (base offset 0).
    public static func build(
        _ records: [KafkaRecord], baseTimestamp: Int64, producerId: Int64 = -1, producerEpoch: Int16 = -1, baseSequence: Int32 = -1,
        partitionLeaderEpoch: Int32 = -1
    ) -> [UInt8] {
        var body = KafkaWriter()
        for record in records {
            var item = KafkaWriter()
            item.int8(0)
            item.varlong(record.timestampDelta)
            item.varint(record.offsetDelta)
            for field in [record.key, record.value] {
                if let field {
                    item.varint(Int32(field.count))
                    item.raw(field)
                } else {
                    item.varint(-1)
                }
            }
            item.varint(Int32(record.headers.count))
            for header in record.headers {
                item.varint(Int32(header.key.utf8.count))
                item.raw(header.key.utf8)
                if let value = header.value {
                    item.varint(Int32(value.count))
                    item.raw(value)
                } else {
                    item.varint(-1)
                }
            }
            body.varint(Int32(item.bytes.count))
            body.raw(item.bytes)
        }
        var covered = KafkaWriter()
        covered.int16(0)
        covered.int32(Int32(records.count) - 1)
        covered.int64(baseTimestamp)
        covered.int64(baseTimestamp + (records.map(\.timestampDelta).max() ?? 0))
        covered.int64(producerId)
        covered.int16(producerEpoch)
        covered.int32(baseSequence)
        covered.int32(Int32(records.count))
        covered.raw(body.bytes)
        var batch = KafkaWriter()
        batch.int64(0)
        batch.int32(Int32(covered.bytes.count + 9))
        batch.int32(partitionLeaderEpoch)
        batch.int8(2)
        batch.uint32(CRC32C.checksum(covered.bytes))
        batch.raw(covered.bytes)
        return batch.bytes
    }
}
