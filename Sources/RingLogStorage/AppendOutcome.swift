import RingLogWire

/// What placing a batch came to.
public enum AppendOutcome: Equatable {
    /// Placed at `offset`; acknowledge once the log's written or committed end reaches `end`.
    case placed(offset: LogOffset, end: LogOffset)
    /// No room right now (the tail cache is full of unwritten bytes, or the next segment is not
    /// ready). Retry after a `.spaceAvailable` event. Nothing was reserved.
    case wouldBlock
    case failed(StorageError)
}
