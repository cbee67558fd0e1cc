/// Kafka's wire primitives (the Kafka protocol guide, "Protocol Primitive Types"): big-endian
/// fixed-width integers, unsigned varints, zig-zag varints, strings and byte arrays in their
/// classic (`i16`/`i32` length) and compact (varint length + 1) shapes, and tagged-field
/// sections. The Kafka listener (issue 17) parses requests and builds responses with these; every
/// read is bounds-checked and throws, since the bytes come from the network.
public struct KafkaDecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Reads Kafka primitives from a byte buffer, front to back.
public struct KafkaReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    private mutating func take(_ count: Int, _ what: @autoclosure () -> String) throws(KafkaDecodeError) -> Int {
        guard count >= 0, count <= remaining else {
            throw KafkaDecodeError("\(what()) needs \(count) bytes at byte \(position); \(remaining) remain")
        }
        defer { position += count }
        return position
    }

    private mutating func bigEndian<T: FixedWidthInteger>(_: T.Type) throws(KafkaDecodeError) -> T {
        let at = try take(MemoryLayout<T>.size, "\(T.self)")
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value = value << 8 | T(truncatingIfNeeded: bytes[at + index]) }
        return value
    }

    public mutating func int8() throws(KafkaDecodeError) -> Int8 { Int8(bitPattern: bytes[try take(1, "INT8")]) }
    public mutating func int16() throws(KafkaDecodeError) -> Int16 { try bigEndian(Int16.self) }
    public mutating func int32() throws(KafkaDecodeError) -> Int32 { try bigEndian(Int32.self) }
    public mutating func int64() throws(KafkaDecodeError) -> Int64 { try bigEndian(Int64.self) }
    public mutating func uint32() throws(KafkaDecodeError) -> UInt32 { try bigEndian(UInt32.self) }
    public mutating func boolean() throws(KafkaDecodeError) -> Bool { try int8() != 0 }

    /// Little-endian base 128, at most `maxBytes` bytes (5 for 32 bits, 10 for 64).
    private mutating func unsignedVarint(maxBytes: Int) throws(KafkaDecodeError) -> UInt64 {
        var value: UInt64 = 0
        for index in 0..<maxBytes {
            let byte = bytes[try take(1, "a varint")]
            value |= UInt64(byte & 0x7F) << (7 * UInt64(index))
            if byte & 0x80 == 0 { return value }
        }
        throw KafkaDecodeError("a varint runs past \(maxBytes) bytes")
    }

    public mutating func unsignedVarint() throws(KafkaDecodeError) -> UInt32 {
        let value = try unsignedVarint(maxBytes: 5)
        guard value <= UInt64(UInt32.max) else { throw KafkaDecodeError("an unsigned varint of \(value) does not fit 32 bits") }
        return UInt32(value)
    }

    /// Zig-zag encoded 32-bit varint.
    public mutating func varint() throws(KafkaDecodeError) -> Int32 {
        let raw = try unsignedVarint()
        return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Zig-zag encoded 64-bit varint.
    public mutating func varlong() throws(KafkaDecodeError) -> Int64 {
        let raw = try unsignedVarint(maxBytes: 10)
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    public mutating func raw(_ count: Int) throws(KafkaDecodeError) -> UnsafeRawBufferPointer {
        let at = try take(count, "\(count) bytes")
        return UnsafeRawBufferPointer(rebasing: bytes[at..<(at + count)])
    }

    private mutating func text(_ count: Int) throws(KafkaDecodeError) -> String {
        let raw = try raw(count)
        guard let text = String(validating: raw, as: UTF8.self) else { throw KafkaDecodeError("a string is not UTF-8") }
        return text
    }

    /// STRING / NULLABLE_STRING: `i16` length (-1: null).
    public mutating func nullableString() throws(KafkaDecodeError) -> String? {
        let length = try int16()
        if length == -1 { return nil }
        guard length >= 0 else { throw KafkaDecodeError("a string length of \(length)") }
        return try text(Int(length))
    }

    public mutating func string() throws(KafkaDecodeError) -> String {
        guard let value = try nullableString() else { throw KafkaDecodeError("a null string where one is required") }
        return value
    }

    /// COMPACT_STRING / COMPACT_NULLABLE_STRING: unsigned varint length + 1 (0: null).
    public mutating func compactNullableString() throws(KafkaDecodeError) -> String? {
        let lengthPlusOne = try unsignedVarint()
        if lengthPlusOne == 0 { return nil }
        return try text(Int(lengthPlusOne - 1))
    }

    public mutating func compactString() throws(KafkaDecodeError) -> String {
        guard let value = try compactNullableString() else { throw KafkaDecodeError("a null compact string where one is required") }
        return value
    }

    /// BYTES / NULLABLE_BYTES: `i32` length (-1: null).
    public mutating func nullableBytes() throws(KafkaDecodeError) -> UnsafeRawBufferPointer? {
        try nullableBytesRange().map { UnsafeRawBufferPointer(rebasing: bytes[$0]) }
    }

    /// NULLABLE_BYTES as a range of `bytes` (so a large value, a record batch, is not copied).
    public mutating func nullableBytesRange() throws(KafkaDecodeError) -> Range<Int>? {
        let length = try int32()
        if length == -1 { return nil }
        guard length >= 0 else { throw KafkaDecodeError("a byte-array length of \(length)") }
        let start = try take(Int(length), "\(length) bytes")
        return start..<(start + Int(length))
    }

    /// BYTES: as NULLABLE_BYTES, but a null (-1 length) is an error.
    public mutating func requiredBytes() throws(KafkaDecodeError) -> UnsafeRawBufferPointer {
        guard let value = try nullableBytes() else { throw KafkaDecodeError("null bytes where a byte array is required") }
        return value
    }

    /// COMPACT_NULLABLE_BYTES: unsigned varint length + 1 (0: null).
    public mutating func compactNullableBytes() throws(KafkaDecodeError) -> UnsafeRawBufferPointer? {
        let lengthPlusOne = try unsignedVarint()
        if lengthPlusOne == 0 { return nil }
        return try raw(Int(lengthPlusOne - 1))
    }

    /// ARRAY: `i32` count (-1: null), checked against the bytes left (each element takes at least
    /// `minimumElementBytes`), so a hostile count cannot size an allocation.
    public mutating func arrayCount(minimumElementBytes: Int = 1) throws(KafkaDecodeError) -> Int? {
        let count = try int32()
        if count == -1 { return nil }
        return try checked(Int(count), minimumElementBytes)
    }

    /// A non-nullable ARRAY: as `arrayCount`, but a null (-1) count is an error too.
    public mutating func requiredArrayCount(
        minimumElementBytes: Int = 1, _ what: @autoclosure () -> String = "an array"
    ) throws(KafkaDecodeError) -> Int {
        guard let count = try arrayCount(minimumElementBytes: minimumElementBytes) else {
            throw KafkaDecodeError("\(what()) is null where an array is required")
        }
        return count
    }

    /// COMPACT_ARRAY: unsigned varint count + 1 (0: null).
    public mutating func compactArrayCount(minimumElementBytes: Int = 1) throws(KafkaDecodeError) -> Int? {
        let countPlusOne = try unsignedVarint()
        if countPlusOne == 0 { return nil }
        return try checked(Int(countPlusOne - 1), minimumElementBytes)
    }

    private func checked(_ count: Int, _ minimumElementBytes: Int) throws(KafkaDecodeError) -> Int {
        guard count >= 0, count <= remaining / max(1, minimumElementBytes) else {
            throw KafkaDecodeError("an array of \(count) elements cannot fit in the \(remaining) bytes left")
        }
        return count
    }

    /// A tagged-field section (flexible versions): every field skipped; tags must ascend.
    public mutating func skipTaggedFields() throws(KafkaDecodeError) {
        let count = try unsignedVarint()
        var previous: Int64 = -1
        for _ in 0..<count {
            let tag = Int64(try unsignedVarint())
            guard tag > previous else { throw KafkaDecodeError("tagged fields out of order (\(tag) after \(previous))") }
            previous = tag
            _ = try raw(Int(try unsignedVarint()))
        }
    }

    /// Nothing may be left over.
    public func finish() throws(KafkaDecodeError) {
        guard remaining == 0 else { throw KafkaDecodeError("\(remaining) bytes left over") }
    }
}

/// Writes Kafka primitives into a growing byte array.
public struct KafkaWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(reservingCapacity capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    private mutating func bigEndian<T: FixedWidthInteger>(_ value: T) {
        for index in (0..<MemoryLayout<T>.size).reversed() { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    public mutating func int8(_ value: Int8) { bytes.append(UInt8(bitPattern: value)) }
    public mutating func int16(_ value: Int16) { bigEndian(value) }
    public mutating func int32(_ value: Int32) { bigEndian(value) }
    public mutating func int64(_ value: Int64) { bigEndian(value) }
    public mutating func uint32(_ value: UInt32) { bigEndian(value) }
    public mutating func boolean(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func unsignedVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    public mutating func varint(_ value: Int32) { unsignedVarint(UInt64(UInt32(bitPattern: (value << 1) ^ (value >> 31)))) }
    public mutating func varlong(_ value: Int64) { unsignedVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63))) }

    public mutating func raw<Bytes: Sequence>(_ value: Bytes) where Bytes.Element == UInt8 { bytes.append(contentsOf: value) }

    public mutating func nullableString(_ value: String?) {
        guard let value else { return int16(-1) }
        let utf8 = Array(value.utf8)
        int16(Int16(clamping: utf8.count))
        raw(utf8.prefix(Int(Int16.max)))
    }

    public mutating func compactNullableString(_ value: String?) {
        guard let value else { return unsignedVarint(0) }
        unsignedVarint(UInt64(value.utf8.count) + 1)
        raw(value.utf8)
    }

    public mutating func nullableBytes(_ value: [UInt8]?) {
        guard let value else { return int32(-1) }
        int32(Int32(clamping: value.count))
        raw(value)
    }

    public mutating func arrayCount(_ count: Int?) { int32(count.map { Int32(clamping: $0) } ?? -1) }
    public mutating func compactArrayCount(_ count: Int?) { unsignedVarint(count.map { UInt64($0) + 1 } ?? 0) }

    /// An empty tagged-field section.
    public mutating func noTaggedFields() { bytes.append(0) }
}

/// One topic's entries in a request or response: nearly every Kafka API lists its work as topics,
/// each a name and an array of per-partition entries.
extension Array {
    /// How many partitions a request's topics name in all (what the listener bounds).
    public func partitionCount<Partition>() -> Int where Element == KafkaTopic<Partition> {
        reduce(0) { $0 + $1.partitions.count }
    }
}

public struct KafkaTopic<Partition> {
    public var name: String
    public var partitions: [Partition]

    public init(name: String, partitions: [Partition]) {
        self.name = name
        self.partitions = partitions
    }
}

extension KafkaTopic: Equatable where Partition: Equatable {}
extension KafkaTopic: Sendable where Partition: Sendable {}

extension KafkaReader {
    /// An ARRAY of topics (nil: a null array): each a STRING name, then an ARRAY of partition
    /// entries read by `partition`, each at least `partitionBytes` long.
    public mutating func topics<Partition>(
        partitionBytes: Int, _ partition: (inout KafkaReader) throws(KafkaDecodeError) -> Partition
    ) throws(KafkaDecodeError) -> [KafkaTopic<Partition>]? {
        guard let count = try arrayCount(minimumElementBytes: 6) else { return nil }
        var topics: [KafkaTopic<Partition>] = []
        for _ in 0..<count {
            let name = try string()
            var partitions: [Partition] = []
            for _ in 0..<(try arrayCount(minimumElementBytes: partitionBytes) ?? 0) { partitions.append(try partition(&self)) }
            topics.append(KafkaTopic(name: name, partitions: partitions))
        }
        return topics
    }
}

extension KafkaWriter {
    /// An ARRAY of topics, each its name and its partition entries written by `partition`.
    public mutating func topics<Partition>(_ topics: [KafkaTopic<Partition>], _ partition: (inout KafkaWriter, Partition) -> Void) {
        arrayCount(topics.count)
        for topic in topics {
            nullableString(topic.name)
            arrayCount(topic.partitions.count)
            for entry in topic.partitions { partition(&self, entry) }
        }
    }
}
