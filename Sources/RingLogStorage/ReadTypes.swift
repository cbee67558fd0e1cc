import RingLogIO
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

public enum ReadStart {
    /// Served at once (from the tail cache, or empty at the committed end).
    case ready(ReadResult)
    /// Reading from the segment file into a buffer of `bufferBytes` (it may grow if the first
    /// batch turns out larger); a `.readCompleted` event with the same context follows.
    case pending(bufferBytes: Int)
    case failed(StorageError)
}

public enum AppendOutcome: Equatable {
    /// Placed at `offset`; acknowledge once the log's written or committed end reaches `end`.
    case placed(offset: LogOffset, end: LogOffset)
    /// No room right now (the tail cache is full of unwritten bytes, or the next segment is not
    /// ready). Retry after a `.spaceAvailable` event. Nothing was reserved.
    case wouldBlock
    case failed(StorageError)
}

/// What a log reports about itself.
public struct LogInfo: Equatable, Sendable {
    public var id: LogID
    public var name: String
    public var startOffset: LogOffset
    public var committedEnd: LogOffset
    public var segmentCount: Int
    /// Bytes of batches held, from the first segment's base to the committed end.
    public var storedBytes: Int
    /// Bytes of preallocated segment files on disk, the spare included.
    public var diskBytes: Int
    public var settings: LogSettings
    /// Why the log stopped accepting writes, if it did.
    public var failure: String?
}

/// Notifications from the store to whoever drives it, drained after each batch of completions.
public enum StoreEvent {
    /// The log's written end advanced (acknowledge `written`-mode appends).
    case written(LogID)
    /// The log's committed end advanced (acknowledge `durable` appends, wake waiting readers).
    case committed(LogID)
    /// Appends at or after `from` were undone and will never be written; fail their acknowledgements.
    case appendsRewound(LogID, from: LogOffset, StorageError)
    /// The log stopped accepting writes; appends past its committed end will never be acknowledged.
    case logFailed(LogID, StorageError)
    /// Room appeared; appends that got `.wouldBlock` may retry.
    case spaceAvailable
    case readCompleted(context: UInt64, Result<ReadResult, StorageError>)
    case created(context: UInt64, Result<LogInfo, StorageError>)
    case deleted(context: UInt64, Result<LogID, StorageError>)
    case trimmed(context: UInt64, Result<LogOffset, StorageError>)
    /// Nothing more is in flight after `beginShutdown`. `clean` says every log is written, synced and
    /// clean-checkpointed (a restart will scan nothing); false when some log had failed or its clean
    /// checkpoint could not be written.
    case shutdownComplete(clean: Bool)
}
