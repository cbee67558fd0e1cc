/// Builds little-endian message bodies.
public struct WireWriter: Sendable {
    public var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func u16(_ value: UInt16) { bytes.appendLittleEndian(value) }
    public mutating func u32(_ value: UInt32) { bytes.appendLittleEndian(value) }
    public mutating func u64(_ value: UInt64) { bytes.appendLittleEndian(value) }

    /// A u16 byte count, then the UTF-8 bytes (cut at 65535 bytes).
    public mutating func string(_ value: String) {
        let utf8 = Array(value.utf8.prefix(Int(UInt16.max)))
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Why a message body could not be decoded.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Reads little-endian message bodies, never past the end of the buffer.
public struct WireReader {
    public let buffer: UnsafeRawBufferPointer
    public private(set) var position = 0

    public init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    public var remaining: Int { buffer.count - position }

    private mutating func take<T: FixedWidthInteger>(_: T.Type) throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw WireError("body ends early: needs \(size) more bytes at byte \(position)") }
        defer { position += size }
        return buffer.loadLittleEndian(at: position, as: T.self)
    }

    public mutating func u8() throws(WireError) -> UInt8 { try take(UInt8.self) }
    public mutating func u16() throws(WireError) -> UInt16 { try take(UInt16.self) }
    public mutating func u32() throws(WireError) -> UInt32 { try take(UInt32.self) }
    public mutating func u64() throws(WireError) -> UInt64 { try take(UInt64.self) }

    public mutating func string() throws(WireError) -> String {
        let count = Int(try u16())
        guard remaining >= count else { throw WireError("string of \(count) bytes runs past the body") }
        defer { position += count }
        return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[position..<(position + count)]), as: UTF8.self)
    }

    /// Everything not yet read.
    public mutating func rest() -> UnsafeRawBufferPointer {
        defer { position = buffer.count }
        return UnsafeRawBufferPointer(rebasing: buffer[position...])
    }

    /// Throws unless every byte was read: a body longer than its fields is malformed.
    public func finish() throws(WireError) {
        if remaining != 0 { throw WireError("\(remaining) unexpected bytes after the last field") }
    }
}

/// A message body that both sides encode and decode.
public protocol WireMessage: Sendable {
    func encode(into writer: inout WireWriter)
    static func decode(from reader: inout WireReader) throws(WireError) -> Self
}

extension WireMessage {
    public func encoded() -> [UInt8] {
        var writer = WireWriter()
        encode(into: &writer)
        return writer.bytes
    }

    /// Decodes a whole body; bytes left over are an error.
    public static func decode(_ body: UnsafeRawBufferPointer) throws(WireError) -> Self {
        var reader = WireReader(body)
        let message = try decode(from: &reader)
        try reader.finish()
        return message
    }
}

/// Settings fields in a create request use this to mean "the server's default".
public let serverDefault = UInt64.max

public struct HelloRequest: WireMessage, Equatable {
    public var minVersion: UInt16
    public var maxVersion: UInt16

    public init(minVersion: UInt16 = 1, maxVersion: UInt16 = 1) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
    }

    public func encode(into writer: inout WireWriter) {
        writer.u16(minVersion)
        writer.u16(maxVersion)
        writer.u32(0)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> HelloRequest {
        let request = HelloRequest(minVersion: try reader.u16(), maxVersion: try reader.u16())
        guard try reader.u32() == 0 else { throw WireError("hello's reserved field must be 0") }
        return request
    }
}

/// The server's version and the limits a client must respect.
public struct HelloResponse: WireMessage, Equatable {
    /// Operations beyond version 1's first set, one bit each (a server before them sends 0).
    public struct Features: OptionSet, Sendable, Equatable {
        public let rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// APPEND_IF (conditional appends).
        public static let appendIf = Features(rawValue: 1 << 0)
        /// SEEK_TIME (the first batch appended at or after a time).
        public static let seekTime = Features(rawValue: 1 << 1)
        /// CURSOR_COMMIT, CURSOR_FETCH, CURSOR_LIST, CURSOR_DELETE.
        public static let cursors = Features(rawValue: 1 << 2)
        /// Format-2 batches (record numbers, idempotent producers) and INIT_PRODUCER.
        public static let batchFormat2 = Features(rawValue: 1 << 3)
        /// What this build of the server offers.
        public static let all: Features = [.appendIf, .seekTime, .cursors, .batchFormat2]
    }

    public var version: UInt16
    public var features: Features = []
    public var maxBatchBytes: UInt32
    public var maxReadBytes: UInt32
    public var maxInFlight: UInt32
    public var maxWaitMillis: UInt32
    public var serverName: String

    public init(version: UInt16, maxBatchBytes: UInt32, maxReadBytes: UInt32, maxInFlight: UInt32, maxWaitMillis: UInt32, serverName: String) {
        self.version = version
        self.maxBatchBytes = maxBatchBytes
        self.maxReadBytes = maxReadBytes
        self.maxInFlight = maxInFlight
        self.maxWaitMillis = maxWaitMillis
        self.serverName = serverName
    }

    public func encode(into writer: inout WireWriter) {
        writer.u16(version)
        writer.u16(features.rawValue)
        writer.u32(maxBatchBytes)
        writer.u32(maxReadBytes)
        writer.u32(maxInFlight)
        writer.u32(maxWaitMillis)
        writer.string(serverName)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> HelloResponse {
        let version = try reader.u16()
        let features = Features(rawValue: try reader.u16())
        var response = HelloResponse(
            version: version, maxBatchBytes: try reader.u32(), maxReadBytes: try reader.u32(), maxInFlight: try reader.u32(),
            maxWaitMillis: try reader.u32(), serverName: try reader.string())
        response.features = features
        return response
    }
}

public struct CreateLogRequest: WireMessage, Equatable {
    public var name: String
    /// `serverDefault` for the server's segment size.
    public var segmentBytes: UInt64
    /// 0 keeps everything; `serverDefault` for the server's setting.
    public var retentionBytes: UInt64
    public var retentionMillis: UInt64

    /// Valid values (docs/protocol.md). A server also needs a segment to hold its largest batch,
    /// and size retention, when set, to be at least one segment.
    public static let segmentBytesRange: ClosedRange<UInt64> = (64 << 10)...UInt64(UInt32.max)
    public static let maxRetentionBytes: UInt64 = 1 << 60
    /// From 1 ms to 100 years (of 365 days).
    public static let retentionMillisRange: ClosedRange<UInt64> = 1...(100 * 365 * 86_400_000)

    public init(name: String, segmentBytes: UInt64 = serverDefault, retentionBytes: UInt64 = serverDefault, retentionMillis: UInt64 = serverDefault) {
        self.name = name
        self.segmentBytes = segmentBytes
        self.retentionBytes = retentionBytes
        self.retentionMillis = retentionMillis
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(segmentBytes)
        writer.u64(retentionBytes)
        writer.u64(retentionMillis)
        writer.string(name)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> CreateLogRequest {
        let segment = try reader.u64()
        let bytes = try reader.u64()
        let millis = try reader.u64()
        return CreateLogRequest(name: try reader.string(), segmentBytes: segment, retentionBytes: bytes, retentionMillis: millis)
    }
}

/// A request naming one log: delete, and info by name.
public struct LogNameRequest: WireMessage, Equatable {
    public var name: String

    public init(name: String) { self.name = name }

    public func encode(into writer: inout WireWriter) { writer.string(name) }

    public static func decode(from reader: inout WireReader) throws(WireError) -> LogNameRequest {
        LogNameRequest(name: try reader.string())
    }
}

/// A log's state as the server reports it (create, info and list responses).
public struct LogDescription: WireMessage, Equatable {
    public var logID: LogID
    public var name: String
    public var startOffset: LogOffset
    public var committedEnd: LogOffset
    public var segmentCount: UInt32
    public var storedBytes: UInt64
    public var diskBytes: UInt64
    public var segmentBytes: UInt64
    /// 0 means no limit.
    public var retentionBytes: UInt64
    public var retentionMillis: UInt64
    /// Why the log stopped taking appends; empty while healthy.
    public var failure: String

    public init(
        logID: LogID, name: String, startOffset: LogOffset, committedEnd: LogOffset, segmentCount: UInt32, storedBytes: UInt64,
        diskBytes: UInt64, segmentBytes: UInt64, retentionBytes: UInt64, retentionMillis: UInt64, failure: String
    ) {
        self.logID = logID
        self.name = name
        self.startOffset = startOffset
        self.committedEnd = committedEnd
        self.segmentCount = segmentCount
        self.storedBytes = storedBytes
        self.diskBytes = diskBytes
        self.segmentBytes = segmentBytes
        self.retentionBytes = retentionBytes
        self.retentionMillis = retentionMillis
        self.failure = failure
    }

    public func encode(into writer: inout WireWriter) {
        writer.u32(logID.rawValue)
        writer.u64(startOffset.rawValue)
        writer.u64(committedEnd.rawValue)
        writer.u32(segmentCount)
        writer.u64(storedBytes)
        writer.u64(diskBytes)
        writer.u64(segmentBytes)
        writer.u64(retentionBytes)
        writer.u64(retentionMillis)
        writer.string(name)
        writer.string(failure)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> LogDescription {
        let id = LogID(try reader.u32())
        let start = LogOffset(try reader.u64())
        let end = LogOffset(try reader.u64())
        let segments = try reader.u32()
        let stored = try reader.u64()
        let disk = try reader.u64()
        let segmentBytes = try reader.u64()
        let retentionBytes = try reader.u64()
        let retentionMillis = try reader.u64()
        return LogDescription(
            logID: id, name: try reader.string(), startOffset: start, committedEnd: end, segmentCount: segments, storedBytes: stored,
            diskBytes: disk, segmentBytes: segmentBytes, retentionBytes: retentionBytes, retentionMillis: retentionMillis,
            failure: try reader.string())
    }
}

public struct LogList: WireMessage, Equatable {
    public var logs: [LogDescription]

    public init(logs: [LogDescription]) { self.logs = logs }

    public func encode(into writer: inout WireWriter) {
        writer.u32(UInt32(logs.count))
        for log in logs { log.encode(into: &writer) }
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> LogList {
        let count = try reader.u32()
        var logs: [LogDescription] = []
        for _ in 0..<count { logs.append(try LogDescription.decode(from: &reader)) }
        return LogList(logs: logs)
    }
}

/// The body of APPEND_IF: the end the writer expects the log to have, then one batch exactly as
/// APPEND carries it. The condition is checked against the log's end including appends placed
/// and not yet acknowledged, so a single writer can pipeline: each request expects the end the
/// one before it will leave.
public struct AppendIfRequest {
    public static let prefixBytes = 8
    /// Request header flag (beside the acknowledgement mode): the writer has seen the answers to
    /// all its earlier APPEND_IF requests for this log on this connection and starts a new chain.
    /// After an END_MISMATCH, the connection refuses every APPEND_IF for that log without it, so a
    /// pipelined request that counted on the refused one is never written.
    public static let newChainFlag: UInt32 = 1 << 31
    public var expectedEnd: LogOffset
    /// The batch, inside the body it was decoded from.
    public var batch: UnsafeRawBufferPointer

    /// Splits a body; throws when it is too short to hold the expected end.
    public static func decode(_ body: UnsafeRawBufferPointer) throws(WireError) -> AppendIfRequest {
        guard body.count >= prefixBytes else { throw WireError("APPEND_IF body of \(body.count) bytes has no expected end (8 bytes)") }
        return AppendIfRequest(
            expectedEnd: LogOffset(body.loadLittleEndian(at: 0, as: UInt64.self)), batch: UnsafeRawBufferPointer(rebasing: body[prefixBytes...]))
    }

    /// The body for `batch` (a complete batch as built for APPEND).
    public static func encode(expectedEnd: LogOffset, batch: UnsafeRawBufferPointer) -> [UInt8] {
        var body = [UInt8](repeating: 0, count: prefixBytes)
        body.withUnsafeMutableBytes { $0.storeLittleEndian(expectedEnd.rawValue, at: 0) }
        body.append(contentsOf: batch)
        return body
    }
}

public struct AppendResponse: WireMessage, Equatable {
    /// The batch's offset: its id from now on.
    public var offset: LogOffset
    /// The log's committed end when the acknowledgement was sent.
    public var committedEnd: LogOffset
    /// The batch was an idempotent producer's retry of one already in the log, at `offset`, and
    /// was not stored again. It travels in the response header's flags (`ResponseHeader.duplicate`).
    public var duplicate: Bool

    public init(offset: LogOffset, committedEnd: LogOffset, duplicate: Bool = false) {
        self.offset = offset
        self.committedEnd = committedEnd
        self.duplicate = duplicate
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(offset.rawValue)
        writer.u64(committedEnd.rawValue)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> AppendResponse {
        AppendResponse(offset: LogOffset(try reader.u64()), committedEnd: LogOffset(try reader.u64()))
    }
}

/// INIT_PRODUCER: an idempotent producer's id and epoch. With `producerId` 0 the server hands out
/// a new id at epoch 0; with an id it issued, the same id at the next epoch (the producer then
/// numbers its batches from sequence 0 again, and batches of the older epoch are fenced).
public struct InitProducerRequest: WireMessage, Equatable {
    public var producerId: UInt64
    public var epoch: UInt16

    public init(producerId: UInt64 = 0, epoch: UInt16 = 0) {
        self.producerId = producerId
        self.epoch = epoch
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(producerId)
        writer.u16(epoch)
        writer.u16(0)
        writer.u32(0)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> InitProducerRequest {
        let request = InitProducerRequest(producerId: try reader.u64(), epoch: try reader.u16())
        guard try reader.u16() == 0, try reader.u32() == 0 else { throw WireError("INIT_PRODUCER's reserved fields must be 0") }
        if request.producerId == 0 && request.epoch != 0 { throw WireError("a new producer (producerId 0) asks for epoch 0") }
        return request
    }
}

public struct InitProducerResponse: WireMessage, Equatable {
    public var producerId: UInt64
    public var epoch: UInt16
    /// How many of a producer's latest batches per log the server remembers: a retry of one of
    /// them is answered with its offset. A producer keeps at most this many in flight per log.
    public var window: UInt32

    public init(producerId: UInt64, epoch: UInt16, window: UInt32) {
        self.producerId = producerId
        self.epoch = epoch
        self.window = window
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(producerId)
        writer.u16(epoch)
        writer.u16(0)
        writer.u32(window)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> InitProducerResponse {
        let id = try reader.u64()
        let epoch = try reader.u16()
        _ = try reader.u16()
        return InitProducerResponse(producerId: id, epoch: epoch, window: try reader.u32())
    }
}

public struct ReadRequest: WireMessage, Equatable {
    public var offset: LogOffset
    /// Whole batches are returned while they fit; at least one even when it alone is larger.
    public var maxBytes: UInt32
    /// At the committed end, wait up to this long for new batches (0: answer at once).
    public var maxWaitMillis: UInt32

    public init(offset: LogOffset, maxBytes: UInt32, maxWaitMillis: UInt32 = 0) {
        self.offset = offset
        self.maxBytes = maxBytes
        self.maxWaitMillis = maxWaitMillis
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(offset.rawValue)
        writer.u32(maxBytes)
        writer.u32(maxWaitMillis)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> ReadRequest {
        ReadRequest(offset: LogOffset(try reader.u64()), maxBytes: try reader.u32(), maxWaitMillis: try reader.u32())
    }
}

/// The fixed part of a read response; the batches follow it to the end of the body.
public struct ReadResponseHead: WireMessage, Equatable {
    public static let encodedBytes = 16
    public var startOffset: LogOffset
    public var committedEnd: LogOffset

    public init(startOffset: LogOffset, committedEnd: LogOffset) {
        self.startOffset = startOffset
        self.committedEnd = committedEnd
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(startOffset.rawValue)
        writer.u64(committedEnd.rawValue)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> ReadResponseHead {
        ReadResponseHead(startOffset: LogOffset(try reader.u64()), committedEnd: LogOffset(try reader.u64()))
    }
}

/// Trim request (the offset to trim to) and response (the log's new start).
public struct OffsetMessage: WireMessage, Equatable {
    public var offset: LogOffset

    public init(offset: LogOffset) { self.offset = offset }

    public func encode(into writer: inout WireWriter) { writer.u64(offset.rawValue) }

    public static func decode(from reader: inout WireReader) throws(WireError) -> OffsetMessage {
        OffsetMessage(offset: LogOffset(try reader.u64()))
    }
}

/// CURSOR_COMMIT: set cursor `name` to (`offset`, `index`), optionally only if it is now at an
/// expected position or does not exist yet.
public struct CursorCommitRequest: WireMessage, Equatable {
    public enum Condition: Equatable, Sendable {
        case none
        case at(offset: UInt64, index: UInt32)
        case absent
    }

    public var offset: UInt64
    public var index: UInt32
    public var condition: Condition
    public var name: String

    public init(name: String, offset: UInt64, index: UInt32 = 0, condition: Condition = .none) {
        self.name = name
        self.offset = offset
        self.index = index
        self.condition = condition
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(offset)
        writer.u32(index)
        switch condition {
        case .none:
            writer.u32(0)
            writer.u64(0)
            writer.u32(0)
        case .at(let expectedOffset, let expectedIndex):
            writer.u32(1)
            writer.u64(expectedOffset)
            writer.u32(expectedIndex)
        case .absent:
            writer.u32(2)
            writer.u64(0)
            writer.u32(0)
        }
        writer.string(name)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> CursorCommitRequest {
        let offset = try reader.u64()
        let index = try reader.u32()
        let kind = try reader.u32()
        let expectedOffset = try reader.u64()
        let expectedIndex = try reader.u32()
        let condition: Condition
        switch kind {
        case 0: condition = .none
        case 1: condition = .at(offset: expectedOffset, index: expectedIndex)
        case 2: condition = .absent
        default: throw WireError("unknown cursor condition \(kind)")
        }
        if kind != 1 && (expectedOffset != 0 || expectedIndex != 0) { throw WireError("expected position must be 0 without condition 1") }
        return CursorCommitRequest(name: try reader.string(), offset: offset, index: index, condition: condition)
    }
}

/// A cursor's position: the answer of CURSOR_COMMIT and CURSOR_FETCH.
public struct CursorPositionMessage: WireMessage, Equatable {
    public var offset: UInt64
    public var index: UInt32

    public init(offset: UInt64, index: UInt32) {
        self.offset = offset
        self.index = index
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(offset)
        writer.u32(index)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> CursorPositionMessage {
        CursorPositionMessage(offset: try reader.u64(), index: try reader.u32())
    }
}

/// CURSOR_LIST: every cursor of a log, by name, with how far behind the committed end it is.
public struct CursorList: WireMessage, Equatable {
    public struct Entry: Equatable, Sendable {
        public var name: String
        public var offset: UInt64
        public var index: UInt32
        /// Bytes from the cursor's offset to the committed end (0 when at or past it).
        public var lagBytes: UInt64

        public init(name: String, offset: UInt64, index: UInt32, lagBytes: UInt64) {
            self.name = name
            self.offset = offset
            self.index = index
            self.lagBytes = lagBytes
        }
    }

    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    public func encode(into writer: inout WireWriter) {
        writer.u32(UInt32(entries.count))
        for entry in entries {
            writer.string(entry.name)
            writer.u64(entry.offset)
            writer.u32(entry.index)
            writer.u64(entry.lagBytes)
        }
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> CursorList {
        let count = try reader.u32()
        // Each entry takes at least 22 bytes: a count larger than the body could hold is refused
        // before anything is reserved for it.
        guard Int(count) <= reader.remaining / 22 else { throw WireError("cursor list claims \(count) entries") }
        var entries: [Entry] = []
        for _ in 0..<count {
            entries.append(Entry(name: try reader.string(), offset: try reader.u64(), index: try reader.u32(), lagBytes: try reader.u64()))
        }
        return CursorList(entries: entries)
    }
}

/// The body of SEEK_TIME: a time in µs since the Unix epoch.
public struct SeekTimeRequest: WireMessage, Equatable {
    public var timeMicros: UInt64

    public init(timeMicros: UInt64) { self.timeMicros = timeMicros }

    public func encode(into writer: inout WireWriter) { writer.u64(timeMicros) }

    public static func decode(from reader: inout WireReader) throws(WireError) -> SeekTimeRequest {
        SeekTimeRequest(timeMicros: try reader.u64())
    }
}

/// The body of every error response. The meaning of the two details depends on the code
/// (docs/protocol.md): OFFSET_OUT_OF_RANGE carries the valid start and end, CORRUPT_BATCH the
/// damaged offset and the next batch's offset (`UInt64.max` when unknown), NOT_BATCH_BOUNDARY the
/// offset, limit errors the limit.
public struct ErrorBody: WireMessage, Equatable {
    public var detail1: UInt64
    public var detail2: UInt64
    public var message: String

    public init(detail1: UInt64 = 0, detail2: UInt64 = 0, message: String) {
        self.detail1 = detail1
        self.detail2 = detail2
        self.message = message
    }

    public func encode(into writer: inout WireWriter) {
        writer.u64(detail1)
        writer.u64(detail2)
        writer.string(message)
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> ErrorBody {
        ErrorBody(detail1: try reader.u64(), detail2: try reader.u64(), message: try reader.string())
    }
}

/// Server-wide counters for `ringlog info` without a log name.
public struct ServerStats: WireMessage, Equatable {
    public var entries: [(name: String, value: UInt64)]

    public init(entries: [(name: String, value: UInt64)]) { self.entries = entries }

    public static func == (lhs: ServerStats, rhs: ServerStats) -> Bool {
        lhs.entries.map(\.name) == rhs.entries.map(\.name) && lhs.entries.map(\.value) == rhs.entries.map(\.value)
    }

    public func encode(into writer: inout WireWriter) {
        writer.u32(UInt32(entries.count))
        for entry in entries {
            writer.string(entry.name)
            writer.u64(entry.value)
        }
    }

    public static func decode(from reader: inout WireReader) throws(WireError) -> ServerStats {
        let count = try reader.u32()
        var entries: [(String, UInt64)] = []
        for _ in 0..<count { entries.append((try reader.string(), try reader.u64())) }
        return ServerStats(entries: entries)
    }
}
