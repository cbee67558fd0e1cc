/// A run of stored batches as a read returns them (or as they sit in a segment): header, payload,
/// header, payload, each at the offset its header names.
public enum StoredBatches {
    /// Why a walk stopped: the batch at `offset` failed a check. `next` is where the following
    /// batch starts when the header held (only the payload is bad), else nil.
    public struct Damage: Error, Sendable, CustomStringConvertible {
        public var offset: LogOffset
        public var next: LogOffset?
        public var reason: String
        public var description: String { "batch at \(offset): \(reason)" }

        public init(offset: LogOffset, next: LogOffset?, reason: String) {
            self.offset = offset
            self.next = next
            self.reason = reason
        }
    }

    /// Calls `body` with each batch's offset, verified header and payload, in order, checking
    /// every header (magic, header CRC, offset, length) and payload CRC before handing it on.
    /// `offset` is where the first batch must sit; nil takes it from the first header. The first
    /// damaged batch ends the walk with `damaged(...)` thrown; nothing after it is delivered.
    @inlinable
    public static func forEach<E: Error>(
        in bytes: UnsafeRawBufferPointer, startingAt offset: LogOffset?,
        damaged: (Damage) -> E,
        _ body: (LogOffset, BatchHeader, UnsafeRawBufferPointer) throws(E) -> Void
    ) throws(E) {
        var index = 0
        var position = offset
        while index < bytes.count {
            let batch = bytes.baseAddress! + index
            let available = bytes.count - index
            let headerLength = Batch.headerLength(at: batch, available: available)
            guard available >= headerLength else {
                throw damaged(Damage(offset: position ?? .zero, next: nil, reason: "the bytes end inside a batch header"))
            }
            let expected = position ?? BatchHeader(unchecked: batch).offset
            let header: BatchHeader
            switch Batch.verifyStoredHeader(batch, expectedOffset: expected, maxPayloadBytes: available - headerLength) {
            case .failure(let error): throw damaged(Damage(offset: expected, next: nil, reason: error.description))
            case .success(let verified): header = verified
            }
            let next = expected.advanced(by: header.totalBytes)
            // The header verified, so its length is right: the next batch follows it.
            if let error = Batch.verifyPayload(batch, header: header) { throw damaged(Damage(offset: expected, next: next, reason: error.description)) }
            try body(expected, header, UnsafeRawBufferPointer(start: batch + headerLength, count: Int(header.payloadLength)))
            index += header.totalBytes
            position = next
        }
    }
}
