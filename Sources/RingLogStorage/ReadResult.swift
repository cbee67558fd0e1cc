import RingLogWire

/// Whole stored batches returned by a read, exactly as they sit on disk.
public struct ReadResult {
    /// The offset the read asked for; the first batch in `bytes` starts here.
    public let offset: LogOffset
    /// The log's start and committed end when the read was planned.
    public let startOffset: LogOffset
    public let committedEnd: LogOffset
    /// Holds the batches; nil when the read found nothing (the offset is the committed end).
    public let buffer: OwnedBytes?
    public let range: Range<Int>

    /// A read that found nothing: the offset is the committed end.
    public static func empty(at offset: LogOffset, start: LogOffset, end: LogOffset) -> ReadResult {
        ReadResult(offset: offset, startOffset: start, committedEnd: end, buffer: nil, range: 0..<0)
    }

    /// Calls `body` with the batches' bytes; the pointer is valid only inside `body`.
    public func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        guard let buffer else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        return try withExtendedLifetime(buffer) { try body(UnsafeRawBufferPointer(rebasing: buffer.bytes[range])) }
    }

    public var isEmpty: Bool { range.isEmpty }

    /// Where the next read continues.
    public var nextOffset: LogOffset { offset.advanced(by: range.count) }
}

/// How a lookup by time or record began (`LogStore.seek`).
public enum SeekStart {
    /// Answered at once: the offset of the batch found.
    case ready(LogOffset)
    /// Reading the segments; a `.sought` event with the same context answers.
    case pending
    case failed(StorageError)
}

public enum ReadStart {
    /// Served at once (from the tail cache, or empty at the committed end).
    case ready(ReadResult)
    /// Reading from the segment file into a buffer of `bufferBytes` (it may grow if the first
    /// batch turns out larger); a `.readCompleted` event with the same context follows.
    case pending(bufferBytes: Int)
    case failed(StorageError)
}
