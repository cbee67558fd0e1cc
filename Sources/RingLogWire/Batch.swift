/// The stored batch, the unit RingLog appends, indexes and serves. The same bytes travel in an
/// append request, sit in a segment file and come back in a read response (docs/storage.md).
/// Two header formats exist; the magic says which. A log may hold both.
///
/// Format 1 (48 bytes):
/// ```
///  0  u32  magic            "RLB1" (52 4C 42 31)                  set by the client
///  4  u32  headerCRC        CRC32C of bytes [8, 48)               set by the server
///  8  u64  offset           the batch's byte offset in its log    set by the server
/// 16  u64  appendTimeMicros server clock, µs since the Unix epoch set by the server
/// 24  u32  epoch            the log incarnation that wrote it     set by the server
/// 28  u32  crc              CRC32C of bytes [32, 48 + length)     set by the client
/// 32  u32  payloadLength    bytes after the header                set by the client
/// 36  u32  recordCount      records framed in the payload         set by the client
/// 40  u16  flags            must be 0                             set by the client
/// 42  u16  reserved         must be 0                             set by the client
/// 44  u32  reserved         must be 0                             set by the client
/// 48       payload
/// ```
///
/// Format 2 (64 bytes) adds the record number of the batch's first record (Kafka's record
/// offsets map onto it) and the idempotent producer's id, epoch and sequence:
/// ```
///  0  u32  magic            "RLB2" (52 4C 42 32)                  set by the client
///  4  u32  headerCRC        CRC32C of bytes [8, 64)               set by the server
///  8  u64  offset           the batch's byte offset in its log    set by the server
/// 16  u64  appendTimeMicros server clock, µs since the Unix epoch set by the server
/// 24  u64  firstRecord      the log's number of its first record  set by the server
/// 32  u32  epoch            the log incarnation (leader epoch)    set by the server
/// 36  u32  crc              CRC32C of bytes [40, 64 + length)     set by the client
/// 40  u32  payloadLength    bytes after the header                set by the client
/// 44  u32  recordCount      records in the payload, at least 1    set by the client
/// 48  u64  producerId       0: not an idempotent append           set by the client
/// 56  u32  baseSequence     the first record's sequence (< 2^31)  set by the client
/// 60  u16  producerEpoch                                          set by the client
/// 62  u16  flags            must be 0                             set by the client
/// 64       payload
/// ```
///
/// The client's `crc` covers everything the client controls, so the server can assign its fields
/// without touching it; `headerCRC` covers the whole header after itself, so a reader can trust a
/// header's length even when the payload is damaged, and step over the damaged batch.
public enum Batch {
    /// The header of format 1, the smallest.
    public static let minHeaderBytes = 48
    /// The header of format 2, the largest.
    public static let maxHeaderBytes = 64
    /// "RLB1"
    public static let magic: UInt32 = 0x3142_4C52
    /// "RLB2"
    public static let magic2: UInt32 = 0x3242_4C52
    /// The header checksum covers bytes from here to the end of the header (both formats).
    public static let headerChecksumStart = 8
    /// Format-2 `flags` bit 0: the payload is a Kafka record batch (Kafka's CRC, then everything
    /// from `attributes` on), stored by the Kafka listener. Only the server sets it; an append
    /// carrying it is refused (docs/kafka.md).
    public static let kafkaFlag: UInt16 = 1
    /// Batch sequences count modulo 2^31, as Kafka's do.
    public static let sequenceModulus: UInt32 = 1 << 31

    /// Where a format keeps the fields whose place differs. One integer: everything else is
    /// computed from it, so the hot paths compare and branch on a byte, not a table.
    public struct Format: Equatable, Sendable {
        public let version: Int

        @inlinable init(version: Int) { self.version = version }

        @inlinable public static var v1: Format { Format(version: 1) }
        @inlinable public static var v2: Format { Format(version: 2) }

        @inlinable var isV2: Bool { version == 2 }
        @inlinable public var magic: UInt32 { isV2 ? Batch.magic2 : Batch.magic }
        @inlinable public var headerBytes: Int { isV2 ? 64 : 48 }
        /// The client checksum covers bytes from here to the end of the payload.
        @inlinable public var clientChecksumStart: Int { isV2 ? 40 : 32 }
        @inlinable var epoch: Int { isV2 ? 32 : 24 }
        @inlinable var crc: Int { isV2 ? 36 : 28 }
        @inlinable var payloadLength: Int { isV2 ? 40 : 32 }
        @inlinable var recordCount: Int { isV2 ? 44 : 36 }
        @inlinable var flags: Int { isV2 ? 62 : 40 }

        /// The format a magic names, or nil.
        @inlinable
        public static func of(magic: UInt32) -> Format? {
            magic == Batch.magic ? .v1 : magic == Batch.magic2 ? .v2 : nil
        }
    }

    /// The record count of a batch (either format) whose header is in memory.
    @inlinable
    public static func recordCount(_ batch: UnsafeRawPointer) -> UInt32 {
        let format = Format(version: batch.loadLittleEndian(at: Field.magic, as: UInt32.self) == magic2 ? 2 : 1)
        return batch.loadLittleEndian(at: format.recordCount, as: UInt32.self)
    }

    @usableFromInline enum Field {
        @usableFromInline static let magic = 0
        @usableFromInline static let headerCRC = 4
        @usableFromInline static let offset = 8
        @usableFromInline static let appendTime = 16
        // Format 2 only.
        @usableFromInline static let firstRecord = 24
        @usableFromInline static let producerId = 48
        @usableFromInline static let baseSequence = 56
        @usableFromInline static let producerEpoch = 60
        // Format 1 only.
        @usableFromInline static let reserved16 = 42
        @usableFromInline static let reserved32 = 44
    }

    /// How many bytes the header starting at `pointer` takes, judging by its magic when at least
    /// 4 bytes are `available` (an unknown magic counts as format 1, whose checks then refuse it).
    @inlinable
    public static func headerLength(at pointer: UnsafeRawPointer, available: Int) -> Int {
        guard available >= 4 else { return minHeaderBytes }
        return pointer.loadLittleEndian(at: Field.magic, as: UInt32.self) == magic2 ? maxHeaderBytes : minHeaderBytes
    }

    /// Checks a batch exactly as a client sent it in an append, before the server accepts it:
    /// magic, declared length against the bytes received and the limit, the flag and reserved
    /// fields, the producer fields, and the client CRC. Server-assigned fields are ignored; the
    /// server overwrites them.
    public static func validateIncoming(_ bytes: UnsafeRawBufferPointer, maxBatchBytes: Int) -> BatchError? {
        guard bytes.count >= 4 else { return .truncated(needed: minHeaderBytes, available: bytes.count) }
        let base = bytes.baseAddress!
        let found: UInt32 = base.loadLittleEndian(at: Field.magic)
        guard let format = Format.of(magic: found) else { return .badMagic(found: found) }
        guard bytes.count >= format.headerBytes else { return .truncated(needed: format.headerBytes, available: bytes.count) }
        // Field by field (this runs for every append): only what is checked is loaded.
        let payloadLength = Int(base.loadLittleEndian(at: format.payloadLength, as: UInt32.self))
        let totalBytes = format.headerBytes + payloadLength
        if totalBytes > maxBatchBytes {
            return .payloadTooLarge(declared: payloadLength, limit: maxBatchBytes - format.headerBytes)
        }
        if totalBytes != bytes.count { return .lengthMismatch(declared: totalBytes, actual: bytes.count) }
        let flags: UInt16 = base.loadLittleEndian(at: format.flags)
        if flags != 0 { return .unsupportedFlags(flags, format: format.version) }
        if !format.isV2 {
            if base.loadLittleEndian(at: Field.reserved16, as: UInt16.self) != 0 || base.loadLittleEndian(at: Field.reserved32, as: UInt32.self) != 0 {
                return .reservedNotZero
            }
        } else {
            if base.loadLittleEndian(at: format.recordCount, as: UInt32.self) == 0 { return .noRecords }
            let sequence: UInt32 = base.loadLittleEndian(at: Field.baseSequence)
            if sequence >= sequenceModulus { return .badProducerFields("baseSequence \(sequence) is not below 2^31") }
            if base.loadLittleEndian(at: Field.producerId, as: UInt64.self) == 0
                && (base.loadLittleEndian(at: Field.producerEpoch, as: UInt16.self) != 0 || sequence != 0)
            {
                return .badProducerFields("producerEpoch and baseSequence must be 0 without a producerId")
            }
        }
        let stored: UInt32 = base.loadLittleEndian(at: format.crc)
        let computed = clientChecksum(base, format: format, payloadLength: payloadLength)
        if computed != stored { return .checksumMismatch(stored: stored, computed: computed) }
        return nil
    }

    /// The producer fields of a batch (either format; `.none` for format 1) whose header is in memory.
    @inlinable @inline(__always)
    public static func producer(_ batch: UnsafeRawPointer) -> ProducerStamp {
        guard batch.loadLittleEndian(at: Field.magic, as: UInt32.self) == magic2 else { return .none }
        let id: UInt64 = batch.loadLittleEndian(at: Field.producerId)
        guard id != 0 else { return .none }
        return ProducerStamp(id: id, epoch: batch.loadLittleEndian(at: Field.producerEpoch), baseSequence: batch.loadLittleEndian(at: Field.baseSequence))
    }

    /// Writes the server-assigned fields into a batch already validated by `validateIncoming`.
    /// `firstRecord` is kept by format 2 only.
    @inlinable
    public static func stamp(
        _ batch: UnsafeMutableRawPointer, offset: LogOffset, appendTimeMicros: UInt64, epoch: UInt32, firstRecord: UInt64
    ) {
        let format = Format(version: batch.loadLittleEndian(at: Field.magic, as: UInt32.self) == magic2 ? 2 : 1)
        batch.storeLittleEndian(offset.rawValue, at: Field.offset)
        batch.storeLittleEndian(appendTimeMicros, at: Field.appendTime)
        batch.storeLittleEndian(epoch, at: format.epoch)
        if format.isV2 { batch.storeLittleEndian(firstRecord, at: Field.firstRecord) }
        let crc = CRC32C.checksum(UnsafeRawPointer(batch) + headerChecksumStart, count: format.headerBytes - headerChecksumStart)
        batch.storeLittleEndian(crc, at: Field.headerCRC)
    }

    /// Checks a stored batch's header: magic, header CRC, that it sits where it says, and that its
    /// length is within the limit. The caller has made `headerLength(at:available:)` bytes
    /// available. The payload is not touched (see `verifyPayload`).
    @inlinable
    public static func verifyStoredHeader(
        _ header: UnsafeRawPointer, expectedOffset: LogOffset, maxPayloadBytes: Int
    ) -> Result<BatchHeader, BatchError> {
        let found: UInt32 = header.loadLittleEndian(at: Field.magic)
        guard let format = Format.of(magic: found) else { return .failure(.badMagic(found: found)) }
        let parsed = BatchHeader(unchecked: header)
        let computed = CRC32C.checksum(header + headerChecksumStart, count: format.headerBytes - headerChecksumStart)
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
        let computed = clientChecksum(batch, header: header)
        return computed == header.crc ? nil : .checksumMismatch(stored: header.crc, computed: computed)
    }

    @inlinable
    public static func clientChecksum(_ batch: UnsafeRawPointer, header: BatchHeader) -> UInt32 {
        clientChecksum(batch, format: header.format, payloadLength: Int(header.payloadLength))
    }

    @inlinable
    public static func clientChecksum(_ batch: UnsafeRawPointer, format: Format, payloadLength: Int) -> UInt32 {
        CRC32C.checksum(batch + format.clientChecksumStart, count: format.headerBytes - format.clientChecksumStart + payloadLength)
    }

    /// The client checksum a damaged header's own fields claim, and the length they give, when the
    /// magic names a format: used to prove a length after the server's fields were damaged.
    @inlinable
    public static func claimedLength(_ batch: UnsafeRawPointer) -> (format: Format, payloadLength: Int, crc: UInt32)? {
        guard let format = Format.of(magic: batch.loadLittleEndian(at: Field.magic, as: UInt32.self)) else { return nil }
        return (format, Int(batch.loadLittleEndian(at: format.payloadLength, as: UInt32.self)), batch.loadLittleEndian(at: format.crc, as: UInt32.self))
    }

    /// Writes a client's fields of a header into the `format.headerBytes` bytes at `batch`, whose
    /// payload follows them: magic, length, count, the producer's fields (format 2) and the CRC.
    /// The server-assigned fields are zero.
    @inlinable
    public static func fillHeader(
        _ batch: UnsafeMutableRawPointer, format: Format, payloadLength: Int, recordCount: UInt32, producer: ProducerStamp = .none,
        flags: UInt16 = 0
    ) {
        (batch).initializeMemory(as: UInt8.self, repeating: 0, count: format.headerBytes)
        batch.storeLittleEndian(format.magic, at: Field.magic)
        batch.storeLittleEndian(UInt32(payloadLength), at: format.payloadLength)
        batch.storeLittleEndian(recordCount, at: format.recordCount)
        if format.isV2 {
            batch.storeLittleEndian(producer.id, at: Field.producerId)
            batch.storeLittleEndian(producer.baseSequence, at: Field.baseSequence)
            batch.storeLittleEndian(producer.epoch, at: Field.producerEpoch)
            batch.storeLittleEndian(flags, at: format.flags)
        }
        batch.storeLittleEndian(clientChecksum(UnsafeRawPointer(batch), format: format, payloadLength: payloadLength), at: format.crc)
    }

    /// Appends a complete batch (header and payload) ready to send in an append request.
    public static func encode(
        payload: UnsafeRawBufferPointer, recordCount: UInt32, format: Format = .v1, producer: ProducerStamp = .none, into output: inout [UInt8]
    ) {
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: format.headerBytes))
        output.append(contentsOf: payload)
        output.withUnsafeMutableBytes { all in
            fillHeader(all.baseAddress! + start, format: format, payloadLength: payload.count, recordCount: recordCount, producer: producer)
        }
    }

    /// A complete batch carrying `payload`, as a client would send it.
    public static func make(payload: [UInt8], recordCount: UInt32 = 1, format: Format = .v1, producer: ProducerStamp = .none) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(format.headerBytes + payload.count)
        payload.withUnsafeBytes { encode(payload: $0, recordCount: recordCount, format: format, producer: producer, into: &output) }
        return output
    }
}

/// An idempotent producer's fields in a format-2 batch (`none`: a plain append).
public struct ProducerStamp: Equatable, Hashable, Sendable {
    public var id: UInt64
    public var epoch: UInt16
    public var baseSequence: UInt32

    public init(id: UInt64, epoch: UInt16, baseSequence: UInt32) {
        self.id = id
        self.epoch = epoch
        self.baseSequence = baseSequence
    }

    @inlinable public static var none: ProducerStamp { ProducerStamp(id: 0, epoch: 0, baseSequence: 0) }
}

/// The decoded fields of a batch header (see `Batch` for the layouts). Fields format 1 does not
/// have are 0.
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
    public var firstRecord: UInt64
    public var producer: ProducerStamp
    /// 48 or 64.
    public var headerBytes: Int

    /// Decodes the header at `pointer` (`Batch.headerLength(at:available:)` bytes) without judging
    /// it. An unknown magic is decoded as format 1.
    @inlinable
    public init(unchecked pointer: UnsafeRawPointer) {
        magic = pointer.loadLittleEndian(at: Batch.Field.magic)
        let format = Batch.Format(version: magic == Batch.magic2 ? 2 : 1)
        headerBytes = format.headerBytes
        headerCRC = pointer.loadLittleEndian(at: Batch.Field.headerCRC)
        offset = LogOffset(pointer.loadLittleEndian(at: Batch.Field.offset, as: UInt64.self))
        appendTimeMicros = pointer.loadLittleEndian(at: Batch.Field.appendTime)
        epoch = pointer.loadLittleEndian(at: format.epoch)
        crc = pointer.loadLittleEndian(at: format.crc)
        payloadLength = pointer.loadLittleEndian(at: format.payloadLength)
        recordCount = pointer.loadLittleEndian(at: format.recordCount)
        flags = pointer.loadLittleEndian(at: format.flags)
        if format.isV2 {
            firstRecord = pointer.loadLittleEndian(at: Batch.Field.firstRecord)
            producer = ProducerStamp(
                id: pointer.loadLittleEndian(at: Batch.Field.producerId), epoch: pointer.loadLittleEndian(at: Batch.Field.producerEpoch),
                baseSequence: pointer.loadLittleEndian(at: Batch.Field.baseSequence))
        } else {
            firstRecord = 0
            producer = .none
        }
    }

    @inlinable
    public var format: Batch.Format { Batch.Format(version: headerBytes == Batch.maxHeaderBytes ? 2 : 1) }

    /// Header plus payload.
    @inlinable
    public var totalBytes: Int { headerBytes + Int(payloadLength) }
}

/// Why a batch was rejected or could not be trusted.
public enum BatchError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(needed: Int, available: Int)
    case badMagic(found: UInt32)
    case unsupportedFlags(UInt16, format: Int)
    case reservedNotZero
    case noRecords
    case badProducerFields(String)
    case lengthMismatch(declared: Int, actual: Int)
    case payloadTooLarge(declared: Int, limit: Int)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case headerChecksumMismatch(stored: UInt32, computed: UInt32)
    case offsetMismatch(stored: LogOffset, expected: LogOffset)

    public var description: String {
        switch self {
        case .truncated(let needed, let available): "batch truncated: needs \(needed) bytes, has \(available)"
        case .badMagic(let found): "not a batch: magic 0x\(String(found, radix: 16)) is neither RLB1 nor RLB2"
        case .unsupportedFlags(let flags, let format): "batch flags 0x\(String(flags, radix: 16)) are not defined in format \(format)"
        case .reservedNotZero: "batch reserved fields must be zero"
        case .noRecords: "a format-2 batch holds at least one record (recordCount is 0)"
        case .badProducerFields(let detail): "batch producer fields: \(detail)"
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
