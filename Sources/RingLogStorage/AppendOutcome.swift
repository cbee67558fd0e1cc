import RingLogWire

/// What placing a batch came to.
public enum AppendOutcome: Equatable {
    /// Placed at `offset`; acknowledge once the log's written or committed end reaches `end`.
    case placed(offset: LogOffset, end: LogOffset)
    /// An idempotent producer's retry of the batch at `offset` (ending at `end`), which is not
    /// stored again: acknowledge it like that batch, flagged as a duplicate.
    case duplicate(offset: LogOffset, end: LogOffset)
    /// A conditional append found the log's reserved end at `reserved`, not where it expected;
    /// nothing was written.
    case endMismatch(reserved: LogOffset, committed: LogOffset)
    /// No room right now (the tail cache is full of unwritten bytes, or the next segment is not
    /// ready). Retry after a `.spaceAvailable` event. Nothing was reserved.
    case wouldBlock
    case failed(StorageError)
}
