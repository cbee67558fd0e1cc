/// How the client library puts records into a batch's payload (docs/protocol.md, "Records"):
/// each record is a `u32` little-endian length followed by that many bytes. The server never
/// looks at this; it is shared by every client so they can read each other's logs.
public enum RecordFraming {
    public static let overheadBytes = 4

    /// Bytes a batch holding `recordBytes` of records in `count` records takes.
    public static func batchBytes(recordBytes: Int, count: Int, format: Batch.Format = .v2) -> Int {
        format.headerBytes + recordBytes + count * overheadBytes
    }

    /// A complete batch (header and framed records) ready to append.
    public static func batch<Records: Sequence>(
        _ records: Records, format: Batch.Format = .v2, producer: ProducerStamp = .none
    ) -> [UInt8] where Records.Element: Collection, Records.Element.Element == UInt8 {
        var builder = BatchBuilder(format: format)
        for record in records { builder.add(record) }
        return builder.finish(producer: producer)
    }

    /// The records of a batch's payload, as ranges of `payload`. Throws when the framing does not
    /// add up (a record running past the payload, or a count different from `expectedCount`).
    public static func records(in payload: UnsafeRawBufferPointer, expectedCount: Int) throws(WireError) -> [Range<Int>] {
        guard expectedCount >= 0, expectedCount <= payload.count / overheadBytes else {
            throw WireError("batch header says \(expectedCount) records; a \(payload.count)-byte payload holds at most \(payload.count / overheadBytes)")
        }
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(expectedCount)
        var index = 0
        while index < payload.count {
            guard payload.count - index >= overheadBytes else { throw WireError("record length cut off at byte \(index) of the payload") }
            let length = Int(payload.loadLittleEndian(at: index, as: UInt32.self))
            index += overheadBytes
            guard length <= payload.count - index else {
                throw WireError("record of \(length) bytes at payload byte \(index - overheadBytes) runs past the payload")
            }
            ranges.append(index..<(index + length))
            index += length
        }
        guard ranges.count == expectedCount else {
            throw WireError("batch header says \(expectedCount) records, the payload holds \(ranges.count)")
        }
        return ranges
    }
}

/// Accumulates records into one batch without intermediate copies.
public struct BatchBuilder: Sendable {
    public private(set) var bytes: [UInt8]
    public private(set) var recordCount = 0
    public let format: Batch.Format

    /// Format 2 unless told otherwise: a server that announces it (HELLO's `batchFormat2`)
    /// numbers its records, and an idempotent producer needs it.
    public init(reservingCapacity capacity: Int = 256, format: Batch.Format = .v2) {
        self.format = format
        bytes = [UInt8](repeating: 0, count: format.headerBytes)
        bytes.reserveCapacity(max(capacity, format.headerBytes))
    }

    /// Bytes the batch would take with one more record of `recordBytes`.
    public func sizeAdding(recordBytes: Int) -> Int { bytes.count + RecordFraming.overheadBytes + recordBytes }

    public var isEmpty: Bool { recordCount == 0 }
    public var batchBytes: Int { bytes.count }

    public mutating func add<Record: Collection>(_ record: Record) where Record.Element == UInt8 {
        bytes.appendLittleEndian(UInt32(record.count))
        bytes.append(contentsOf: record)
        recordCount += 1
    }

    public mutating func add(_ record: UnsafeRawBufferPointer) {
        bytes.appendLittleEndian(UInt32(record.count))
        bytes.append(contentsOf: record)
        recordCount += 1
    }

    /// Fills in the header (magic, length, count, the producer's fields, CRC) and returns the
    /// batch; the builder is empty afterwards and keeps its capacity.
    public mutating func finish(producer: ProducerStamp = .none) -> [UInt8] {
        let payloadLength = bytes.count - format.headerBytes
        let count = recordCount
        let format = format
        bytes.withUnsafeMutableBytes { batch in
            Batch.fillHeader(batch.baseAddress!, format: format, payloadLength: payloadLength, recordCount: UInt32(count), producer: producer)
        }
        var finished = [UInt8](repeating: 0, count: format.headerBytes)
        finished.reserveCapacity(bytes.capacity)
        swap(&finished, &bytes)
        recordCount = 0
        return finished
    }
}
