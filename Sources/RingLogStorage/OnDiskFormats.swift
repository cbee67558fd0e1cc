import RingLogWire

// The small files beside the segments (layouts in docs/storage.md). Each ends with a CRC32C of
// everything before it, so a torn or damaged file is recognised rather than half-believed.

/// File names inside a log's directory.
public enum LogFileNames {
    public static let meta = "log.meta"
    public static let checkpoint = "checkpoint"
    public static let checkpointTemporary = "checkpoint.tmp"
    /// Consumers' cursors (CursorsFile): two slot files, written in turn.
    public static func cursorSlot(_ slot: Int) -> String { "cursors.\(slot)" }
    /// The next segment, preallocated before its base offset is known, and renamed when it becomes
    /// active. Each preparation gets its own name: a rename of the previous spare and the creation
    /// of the next may be in flight at once, and must never meet on one name.
    public static func spare(_ number: UInt64) -> String { "next-\(number).seg.prealloc" }

    /// True for spare file names (removed at start-up: a spare is not part of the log yet).
    public static func isSpare(_ name: String) -> Bool { name.hasPrefix("next-") && name.hasSuffix(".seg.prealloc") }

    /// `00000000000000004096.seg`: twenty decimal digits so `ls` sorts segments by offset.
    public static func segment(_ base: LogOffset) -> String { padded(base) + ".seg" }
    public static func index(_ base: LogOffset) -> String { padded(base) + ".idx" }

    /// The base offset named by a segment file name, or nil when `name` is not one.
    public static func segmentBase(fromFileName name: String) -> LogOffset? {
        guard name.utf8.count == 24, name.hasSuffix(".seg") else { return nil }
        let digits = name.utf8.prefix(20)
        guard digits.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
            let value = UInt64(String(decoding: digits, as: UTF8.self))
        else { return nil }
        return LogOffset(value)
    }

    private static func padded(_ offset: LogOffset) -> String {
        let digits = String(offset.rawValue)
        return String(repeating: "0", count: 20 - digits.count) + digits
    }
}

/// Reads fixed little-endian fields from a byte array and checks a trailing CRC.
struct FieldReader {
    let bytes: [UInt8]

    func u16(_ at: Int) -> UInt16 { bytes.withUnsafeBytes { $0.loadLittleEndian(at: at) } }
    func u32(_ at: Int) -> UInt32 { bytes.withUnsafeBytes { $0.loadLittleEndian(at: at) } }
    func u64(_ at: Int) -> UInt64 { bytes.withUnsafeBytes { $0.loadLittleEndian(at: at) } }

    /// True when the u32 at `at` is the CRC32C of bytes [0, at).
    func checksumHolds(at: Int) -> Bool {
        guard at + 4 <= bytes.count else { return false }
        return bytes.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<at])) } == u32(at)
    }
}

extension Array where Element == UInt8 {
    mutating func appendChecksum() {
        let crc = withUnsafeBytes { CRC32C.checksum($0) }
        appendLittleEndian(crc)
    }
}

/// The durable facts recovery starts from, replaced atomically (write, fsync, rename, fsync dir).
/// Format 2 ("RLC2") adds the record number and the idempotent producers as of the checkpoint
/// offset; format 1 ("RLC1", 44 bytes) is still read.
public struct Checkpoint: Equatable, Sendable {
    public static let magic: UInt32 = 0x3143_4C52 // "RLC1"
    public static let magic2: UInt32 = 0x3243_4C52 // "RLC2"
    static let version1Bytes = 44
    /// The most bytes a checkpoint may take (its producers are bounded well below this).
    public static let maxBytes = 16 << 20

    public var logID: LogID
    /// Incremented at every open; batches carry the epoch that wrote them, so bytes left over from
    /// an earlier incarnation past a cut can never be mistaken for new batches.
    public var epoch: UInt32
    /// True when written by a clean shutdown.
    public var clean: Bool
    /// The low-water mark: reads below it are out of range.
    public var startOffset: LogOffset
    /// Every batch below this offset was verified and fdatasynced, and so were the sparse index
    /// entries for it; recovery scans only from here.
    public var checkpointOffset: LogOffset
    public var writtenAtMicros: UInt64
    /// The record number the batch at `checkpointOffset` gets (nil: a format-1 checkpoint, from
    /// before record numbers; recovery then counts from 0 there).
    public var nextRecord: UInt64?
    /// The producers' state as of `checkpointOffset` (`ProducerTable`), and those it forgot.
    var producers: [UInt64: ProducerState] = [:]
    var forgottenProducers: [ForgottenProducer] = []

    public init(
        logID: LogID, epoch: UInt32, clean: Bool, startOffset: LogOffset, checkpointOffset: LogOffset, writtenAtMicros: UInt64,
        nextRecord: UInt64? = 0
    ) {
        self.logID = logID
        self.epoch = epoch
        self.clean = clean
        self.startOffset = startOffset
        self.checkpointOffset = checkpointOffset
        self.writtenAtMicros = writtenAtMicros
        self.nextRecord = nextRecord
    }

    /// Format 2 (format 1 when `nextRecord` is nil, which tests use to write an older checkpoint).
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Checkpoint.version1Bytes + 12)
        bytes.appendLittleEndian(nextRecord == nil ? Checkpoint.magic : Checkpoint.magic2)
        bytes.appendLittleEndian(logID.rawValue)
        bytes.appendLittleEndian(epoch)
        bytes.appendLittleEndian(UInt32(clean ? 1 : 0))
        bytes.appendLittleEndian(startOffset.rawValue)
        bytes.appendLittleEndian(checkpointOffset.rawValue)
        bytes.appendLittleEndian(writtenAtMicros)
        if let nextRecord {
            bytes.appendLittleEndian(nextRecord)
            ProducerTable.encode(producers, into: &bytes)
            ProducerTable.encode(forgotten: forgottenProducers, into: &bytes)
        }
        bytes.appendChecksum()
        return bytes
    }

    /// Nil when the bytes are not an intact checkpoint.
    public init?(decoding bytes: [UInt8]) {
        let reader = FieldReader(bytes: bytes)
        guard bytes.count >= Checkpoint.version1Bytes, reader.checksumHolds(at: bytes.count - 4) else { return nil }
        let magic = reader.u32(0)
        guard (magic == Checkpoint.magic && bytes.count == Checkpoint.version1Bytes) || magic == Checkpoint.magic2 else { return nil }
        logID = LogID(reader.u32(4))
        epoch = reader.u32(8)
        clean = reader.u32(12) & 1 == 1
        startOffset = LogOffset(reader.u64(16))
        checkpointOffset = LogOffset(reader.u64(24))
        writtenAtMicros = reader.u64(32)
        guard startOffset <= checkpointOffset else { return nil }
        if magic == Checkpoint.magic2 {
            guard bytes.count >= 48 + 4 + 4 + 4 else { return nil }
            nextRecord = reader.u64(40)
            guard let decoded = ProducerTable.decode(reader, at: 48, end: bytes.count - 4),
                let forgotten = ProducerTable.decodeForgotten(reader, at: decoded.end, end: bytes.count - 4)
            else { return nil }
            producers = decoded.producers
            forgottenProducers = forgotten
        } else {
            nextRecord = nil
        }
    }
}

/// A log's identity and settings, written once when the log is created.
public struct LogMeta: Equatable, Sendable {
    public static let magic: UInt32 = 0x314D_4C52 // "RLM1"
    /// Format 2 adds a label after the name (written only for a log that has one).
    public static let magic2: UInt32 = 0x324D_4C52 // "RLM2"
    public static let maxLabelBytes = 255

    public var logID: LogID
    public var name: String
    public var createdMicros: UInt64
    public var settings: LogSettings
    /// A name the log is also known by, kept with it for good: the Kafka listener's topic name
    /// when the log's own name cannot carry it (docs/kafka.md).
    public var label: String?

    public init(logID: LogID, name: String, createdMicros: UInt64, settings: LogSettings, label: String? = nil) {
        self.logID = logID
        self.name = name
        self.createdMicros = createdMicros
        self.settings = settings
        self.label = label
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(label == nil ? LogMeta.magic : LogMeta.magic2)
        bytes.appendLittleEndian(logID.rawValue)
        bytes.appendLittleEndian(createdMicros)
        bytes.appendLittleEndian(UInt64(settings.segmentBytes))
        bytes.appendLittleEndian(UInt64(settings.retentionBytes ?? 0))
        bytes.appendLittleEndian(settings.retentionMicros ?? 0)
        let name = Array(self.name.utf8)
        bytes.appendLittleEndian(UInt16(name.count))
        bytes.append(contentsOf: name)
        if let label {
            let label = Array(label.utf8.prefix(LogMeta.maxLabelBytes))
            bytes.appendLittleEndian(UInt16(label.count))
            bytes.append(contentsOf: label)
        }
        bytes.appendChecksum()
        return bytes
    }

    public init?(decoding bytes: [UInt8]) {
        let reader = FieldReader(bytes: bytes)
        guard bytes.count >= 46, reader.u32(0) == LogMeta.magic || reader.u32(0) == LogMeta.magic2 else { return nil }
        let nameLength = Int(reader.u16(40))
        var end = 42 + nameLength
        label = nil
        if reader.u32(0) == LogMeta.magic2 {
            guard bytes.count >= end + 2 + 4 else { return nil }
            let labelLength = Int(reader.u16(end))
            guard labelLength <= LogMeta.maxLabelBytes, bytes.count >= end + 2 + labelLength + 4 else { return nil }
            label = String(decoding: bytes[(end + 2)..<(end + 2 + labelLength)], as: UTF8.self)
            end += 2 + labelLength
        }
        guard bytes.count == end + 4, reader.checksumHolds(at: end) else { return nil }
        logID = LogID(reader.u32(4))
        createdMicros = reader.u64(8)
        let retentionBytes = reader.u64(24)
        let retentionMicros = reader.u64(32)
        settings = LogSettings(
            segmentBytes: Int(reader.u64(16)),
            retentionBytes: retentionBytes == 0 ? nil : Int(retentionBytes),
            retentionMicros: retentionMicros == 0 ? nil : retentionMicros
        )
        name = String(decoding: bytes[42..<(42 + nameLength)], as: UTF8.self)
    }
}

/// The header of a segment's `.idx` file; the sparse index entries (u32 positions) follow it.
public struct IndexFileHeader: Equatable, Sendable {
    public static let magic: UInt32 = 0x3149_4C52 // "RLI1"
    public static let encodedBytes = 48

    public var segmentBase: LogOffset
    /// Set once the segment is sealed and every entry is in the file.
    public var sealed: Bool
    /// One past the segment's last batch; meaningful when sealed.
    public var dataEnd: LogOffset
    /// The newest append time among the batches the entries cover (the whole segment when sealed).
    public var maxAppendTimeMicros: UInt64
    /// Entries that follow the header and were synced with it.
    public var entryCount: UInt32
    /// The interval the entries were chosen with; boundary checks depend on it.
    public var intervalBytes: UInt32

    public init(
        segmentBase: LogOffset, sealed: Bool, dataEnd: LogOffset, maxAppendTimeMicros: UInt64, entryCount: UInt32,
        intervalBytes: UInt32
    ) {
        self.segmentBase = segmentBase
        self.sealed = sealed
        self.dataEnd = dataEnd
        self.maxAppendTimeMicros = maxAppendTimeMicros
        self.entryCount = entryCount
        self.intervalBytes = intervalBytes
    }

    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(IndexFileHeader.encodedBytes)
        bytes.appendLittleEndian(IndexFileHeader.magic)
        bytes.appendLittleEndian(UInt32(sealed ? 1 : 0))
        bytes.appendLittleEndian(segmentBase.rawValue)
        bytes.appendLittleEndian(dataEnd.rawValue)
        bytes.appendLittleEndian(maxAppendTimeMicros)
        bytes.appendLittleEndian(entryCount)
        bytes.appendLittleEndian(intervalBytes)
        bytes.appendChecksum()
        bytes.appendLittleEndian(UInt32(0))
        return bytes
    }

    public init?(decoding bytes: [UInt8]) {
        let reader = FieldReader(bytes: bytes)
        guard bytes.count >= IndexFileHeader.encodedBytes, reader.u32(0) == IndexFileHeader.magic, reader.checksumHolds(at: 40)
        else { return nil }
        sealed = reader.u32(4) & 1 == 1
        segmentBase = LogOffset(reader.u64(8))
        dataEnd = LogOffset(reader.u64(16))
        maxAppendTimeMicros = reader.u64(24)
        entryCount = reader.u32(32)
        intervalBytes = reader.u32(36)
        guard intervalBytes > 0 else { return nil }
    }
}
