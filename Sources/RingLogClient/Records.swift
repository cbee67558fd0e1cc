import RingLogIO
import RingLogWire

/// Where a record is: its batch's offset and its index in the batch.
public struct RecordPosition: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let batchOffset: LogOffset
    public let index: Int

    public init(batchOffset: LogOffset, index: Int) {
        self.batchOffset = batchOffset
        self.index = index
    }

    public static func < (lhs: RecordPosition, rhs: RecordPosition) -> Bool {
        (lhs.batchOffset, lhs.index) < (rhs.batchOffset, rhs.index)
    }

    public var description: String { "\(batchOffset)/\(index)" }
}

/// One record read back from a log.
public struct Record: Sendable, Equatable {
    public let position: RecordPosition
    /// When the server appended the record's batch (µs since the Unix epoch, server clock).
    public let appendTimeMicros: UInt64
    public let bytes: [UInt8]
    /// Records in this record's batch (the last one's index is one less).
    public var batchRecordCount: Int = 1
}

/// Walks stored batches, checking each as docs/protocol.md says a reader must.
public enum BatchReader {
    /// Calls `body` with each batch's offset, header and payload, in order. Throws
    /// `corruptBatch` naming the first batch that fails a check; nothing after it is delivered.
    public static func forEachBatch(
        in bytes: UnsafeRawBufferPointer, startingAt offset: LogOffset,
        _ body: (LogOffset, BatchHeader, UnsafeRawBufferPointer) throws(RingLogError) -> Void
    ) throws(RingLogError) {
        try StoredBatches.forEach(in: bytes, startingAt: offset, damaged: { RingLogError.corruptBatch(offset: $0.offset, next: $0.next, reason: $0.reason) }, body)
    }

    /// The records of one verified batch's payload.
    public static func records(
        of payload: UnsafeRawBufferPointer, header: BatchHeader, at offset: LogOffset
    ) throws(RingLogError) -> [Range<Int>] {
        do { return try RecordFraming.records(in: payload, expectedCount: Int(header.recordCount)) } catch {
            throw .corruptBatch(offset: offset, next: offset.advanced(by: header.totalBytes), reason: "record framing: \(error)")
        }
    }
}

/// The batches one read returned, still in their wire form.
public struct FetchedBatches: Sendable {
    /// The offset the read asked for; the first batch starts here.
    public let offset: LogOffset
    /// The log's start and committed end when the server answered.
    public let startOffset: LogOffset
    public let committedEnd: LogOffset
    private let storage: OwnedBytes?
    private let range: Range<Int>

    init(offset: LogOffset, response: ClientResponse) throws(RingLogError) {
        guard response.body.count >= ReadResponseHead.encodedBytes else {
            throw .protocolViolation("read response of \(response.body.count) bytes is shorter than its head")
        }
        let head = try decodeBody(UnsafeRawBufferPointer(rebasing: response.body[0..<ReadResponseHead.encodedBytes]), as: ReadResponseHead.self)
        self.offset = offset
        startOffset = head.startOffset
        committedEnd = head.committedEnd
        let batches = UnsafeRawBufferPointer(rebasing: response.body[ReadResponseHead.encodedBytes...])
        if batches.isEmpty {
            storage = nil
            range = 0..<0
        } else if let owner = response.owner {
            let start = batches.baseAddress! - owner.bytes.baseAddress!
            storage = owner
            range = start..<(start + batches.count)
        } else {
            storage = OwnedBytes(copying: batches)
            range = 0..<batches.count
        }
    }

    public var byteCount: Int { range.count }
    public var isEmpty: Bool { range.isEmpty }
    /// Where the next read continues.
    public var nextOffset: LogOffset { offset.advanced(by: range.count) }

    /// The raw batches (exactly as stored); valid only inside `body`.
    public func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        guard let storage else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try withExtendedLifetime(storage) { try body(UnsafeRawBufferPointer(rebasing: storage.bytes[range])) }
    }

    /// Every record, after checking every batch. Throws `corruptBatch` at the first damaged one.
    public func records() throws(RingLogError) -> [Record] {
        let (records, damage) = recordsBeforeDamage()
        if let damage { throw damage }
        return records
    }

    /// The records of the batches before the first damaged one, and the damage (`corruptBatch`)
    /// if there is one: a reader that steps over a damaged batch loses nothing before it.
    public func recordsBeforeDamage() -> (records: [Record], damage: RingLogError?) {
        var records: [Record] = []
        let bytes = storage.map { UnsafeRawBufferPointer(rebasing: $0.bytes[range]) } ?? UnsafeRawBufferPointer(start: nil, count: 0)
        do {
            try withExtendedLifetime(storage) { () throws(RingLogError) in
                try BatchReader.forEachBatch(in: bytes, startingAt: offset) { batchOffset, header, payload throws(RingLogError) in
                    // A batch's records are taken only once all of its framing checked out.
                    let ranges = try BatchReader.records(of: payload, header: header, at: batchOffset)
                    for (index, record) in ranges.enumerated() {
                        records.append(
                            Record(
                                position: RecordPosition(batchOffset: batchOffset, index: index), appendTimeMicros: header.appendTimeMicros,
                                bytes: Array(payload[record]), batchRecordCount: ranges.count))
                    }
                }
            }
            return (records, nil)
        } catch {
            return (records, error)
        }
    }
}
