/// The stored batch, the unit RingLog appends, indexes and serves. The same bytes travel in an
/// append request, sit in a segment file and come back in a read response (docs/storage.md).
///
/// ```
///  0  u32  magic            "RLB1" (52 4C 42 31)                  set by the client
///  4  u32  headerCRC        CRC32C of bytes [8, 48)               set by the server
///  8  u64  offset           the batch's byte offset in its log    set by the server
/// 16  u64  appendTimeMicros server clock, µs since the Unix epoch set by the server
/// 24  u32  epoch            the server incarnation that wrote it  set by the server
/// 28  u32  crc              CRC32C of bytes [32, 48 + length)     set by the client
/// 32  u32  payloadLength    bytes after the header                set by the client
/// 36  u32  recordCount      records framed in the payload         set by the client
/// 40  u16  flags            must be 0 in format 1                 set by the client
/// 42  u16  reserved         must be 0                             set by the client
/// 44  u32  reserved         must be 0                             set by the client
/// 48       payload
/// ```
///
/// The client's `crc` covers everything the client controls, so the server can assign its fields
/// without touching it; `headerCRC` covers the whole header after itself, so a reader can trust a
/// header's length even when the payload is damaged, and step over the damaged batch.
public enum Batch {
    public static let headerBytes = 48
    public static let magic: UInt32 = 0x3142_4C52
    /// The client checksum covers bytes from here to the end of the payload.
    public static let clientChecksumStart = 32
    /// The header checksum covers bytes from here to the end of the header.
    public static let headerChecksumStart = 8

    @usableFromInline enum Field {
        @usableFromInline static let magic = 0
        @usableFromInline static let headerCRC = 4
        @usableFromInline static let offset = 8
        @usableFromInline static let appendTime = 16
        @usableFromInline static let epoch = 24
        @usableFromInline static let crc = 28
        @usableFromInline static let payloadLength = 32
        @usableFromInline static let recordCount = 36
        @usableFromInline static let flags = 40
        @usableFromInline static let reserved16 = 42
        @usableFromInline static let reserved32 = 44
    }

    /// Checks a batch exactly as a client sent it in an append, before the server accepts it:
    /// magic, declared length against the bytes received, the flag and reserved fields, and the
    /// client CRC. Server-assigned fields are ignored; the server overwrites them.
    public static func validateIncoming(_ bytes: UnsafeRawBufferPointer, maxPayloadBytes: Int) -> BatchError? {
        guard bytes.count >= headerBytes else {
            return .truncated(needed: headerBytes, available: bytes.count)
        }
        let header = BatchHeader(unchecked: bytes.baseAddress!)
        if header.magic != magic { return .badMagic(found: header.magic) }
        if Int(header.payloadLength) > maxPayloadBytes {
            return .payloadTooLarge(declared: Int(header.payloadLength), limit: maxPayloadBytes)
        }
        if header.totalBytes != bytes.count {
            return .lengthMismatch(declared: header.totalBytes, actual: bytes.count)
        }
        if header.flags != 0 { return .unsupportedFlags(header.flags) }
        if header.reserved16 != 0 || header.reserved32 != 0 { return .reservedNotZero }
        let computed = clientChecksum(bytes.baseAddress!, payloadLength: Int(header.payloadLength))
        if computed != header.crc { return .checksumMismatch(stored: header.crc, computed: computed) }
        return nil
    }

    /// Writes the server-assigned fields into a batch already validated by `validateIncoming`.
    @inlinable
    public static func stamp(
        _ batch: UnsafeMutableRawPointer, offset: LogOffset, appendTimeMicros: UInt64, epoch: UInt32
    ) {
        batch.storeLittleEndian(offset.rawValue, at: Field.offset)
        batch.storeLittleEndian(appendTimeMicros, at: Field.appendTime)
        batch.storeLittleEndian(epoch, at: Field.epoch)
        let crc = CRC32C.checksum(UnsafeRawPointer(batch) + headerChecksumStart, count: headerBytes - headerChecksumStart)
        batch.storeLittleEndian(crc, at: Field.headerCRC)
    }

    /// Checks a stored batch's header: magic, header CRC, that it sits where it says, and that its
    /// length is within the limit. The payload is not touched (see `verifyPayload`).
    @inlinable
    public static func verifyStoredHeader(
        _ header: UnsafeRawPointer, expectedOffset: LogOffset, maxPayloadBytes: Int
    ) -> Result<BatchHeader, BatchError> {
        let parsed = BatchHeader(unchecked: header)
        if parsed.magic != magic { return .failure(.badMagic(found: parsed.magic)) }
        let computed = CRC32C.checksum(header + headerChecksumStart, count: headerBytes - headerChecksumStart)
        if computed != parsed.headerCRC {
            return .failure(.headerChecksumMismatch(stored: parsed.headerCRC, computed: computed))
        }
        if parsed.offset != expectedOffset {
            return .failure(.offsetMismatch(stored: parsed.offset, expected: expectedOffset))
        }
        if Int(parsed.payloadLength) > maxPayloadBytes {
            return .failure(.payloadTooLarge(declared: Int(parsed.payloadLength), limit: maxPayloadBytes))
        }
        return .success(parsed)
    }

    /// Checks the client CRC of a whole stored batch whose header passed `verifyStoredHeader`.
    @inlinable
    public static func verifyPayload(_ batch: UnsafeRawPointer, header: BatchHeader) -> BatchError? {
        let computed = clientChecksum(batch, payloadLength: Int(header.payloadLength))
        return computed == header.crc ? nil : .checksumMismatch(stored: header.crc, computed: computed)
    }

    @inlinable
    public static func clientChecksum(_ batch: UnsafeRawPointer, payloadLength: Int) -> UInt32 {
        CRC32C.checksum(batch + clientChecksumStart, count: headerBytes - clientChecksumStart + payloadLength)
    }

    /// Appends a complete batch (header and payload) ready to send in an append request. The
    /// server-assigned fields are zero.
    public static func encode(payload: UnsafeRawBufferPointer, recordCount: UInt32, into output: inout [UInt8]) {
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: headerBytes))
        output.append(contentsOf: payload)
        output.withUnsafeMutableBytes { all in
            let batch = all.baseAddress! + start
            batch.storeLittleEndian(magic, at: Field.magic)
            batch.storeLittleEndian(UInt32(payload.count), at: Field.payloadLength)
            batch.storeLittleEndian(recordCount, at: Field.recordCount)
            batch.storeLittleEndian(clientChecksum(batch, payloadLength: payload.count), at: Field.crc)
        }
    }

    /// A complete batch carrying `payload`, as a client would send it.
    public static func make(payload: [UInt8], recordCount: UInt32 = 1) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(headerBytes + payload.count)
        payload.withUnsafeBytes { encode(payload: $0, recordCount: recordCount, into: &output) }
        return output
    }
}

/// The decoded fields of a batch header (see `Batch` for the layout).
public struct BatchHeader: Equatable, Sendable {
    public var magic: UInt32
    public var headerCRC: UInt32
    public var offset: LogOffset
    public var appendTimeMicros: UInt64
    public var epoch: UInt32
    public var crc: UInt32
    public var payloadLength: UInt32
    public var recordCount: UInt32
    public var flags: UInt16
    public var reserved16: UInt16
    public var reserved32: UInt32

    /// Decodes the 48 bytes at `pointer` without judging them.
    @inlinable
    public init(unchecked pointer: UnsafeRawPointer) {
        magic = pointer.loadLittleEndian(at: Batch.Field.magic)
        headerCRC = pointer.loadLittleEndian(at: Batch.Field.headerCRC)
        offset = LogOffset(pointer.loadLittleEndian(at: Batch.Field.offset, as: UInt64.self))
        appendTimeMicros = pointer.loadLittleEndian(at: Batch.Field.appendTime)
        epoch = pointer.loadLittleEndian(at: Batch.Field.epoch)
        crc = pointer.loadLittleEndian(at: Batch.Field.crc)
        payloadLength = pointer.loadLittleEndian(at: Batch.Field.payloadLength)
        recordCount = pointer.loadLittleEndian(at: Batch.Field.recordCount)
        flags = pointer.loadLittleEndian(at: Batch.Field.flags)
        reserved16 = pointer.loadLittleEndian(at: Batch.Field.reserved16)
        reserved32 = pointer.loadLittleEndian(at: Batch.Field.reserved32)
    }

    /// Header plus payload.
    @inlinable
    public var totalBytes: Int { Batch.headerBytes + Int(payloadLength) }
}

/// Why a batch was rejected or could not be trusted.
public enum BatchError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(needed: Int, available: Int)
    case badMagic(found: UInt32)
    case unsupportedFlags(UInt16)
    case reservedNotZero
    case lengthMismatch(declared: Int, actual: Int)
    case payloadTooLarge(declared: Int, limit: Int)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case headerChecksumMismatch(stored: UInt32, computed: UInt32)
    case offsetMismatch(stored: LogOffset, expected: LogOffset)

    public var description: String {
        switch self {
        case .truncated(let needed, let available): "batch truncated: needs \(needed) bytes, has \(available)"
        case .badMagic(let found): "not a batch: magic 0x\(String(found, radix: 16)) is not RLB1"
        case .unsupportedFlags(let flags): "batch flags 0x\(String(flags, radix: 16)) are not defined in format 1"
        case .reservedNotZero: "batch reserved fields must be zero"
        case .lengthMismatch(let declared, let actual): "batch declares \(declared) bytes but \(actual) were sent"
        case .payloadTooLarge(let declared, let limit): "batch payload of \(declared) bytes exceeds the limit of \(limit)"
        case .checksumMismatch(let stored, let computed):
            "batch CRC32C mismatch: header says 0x\(String(stored, radix: 16)), bytes give 0x\(String(computed, radix: 16))"
        case .headerChecksumMismatch(let stored, let computed):
            "batch header CRC32C mismatch: stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))"
        case .offsetMismatch(let stored, let expected): "batch at \(expected) claims offset \(stored)"
        }
    }
}
