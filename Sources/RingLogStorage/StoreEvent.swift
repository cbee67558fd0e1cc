import RingLogWire

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
    /// A cursor commit (the position) or delete (nil) is durable, or failed.
    case cursorUpdated(context: UInt64, Result<CursorPosition?, StorageError>)
    /// The answer of a lookup by time or record that had to read the segments.
    case sought(context: UInt64, Result<LogOffset, StorageError>)
    /// Nothing more is in flight after `beginShutdown`. `clean` says every log is written, synced and
    /// clean-checkpointed (a restart will scan nothing); false when some log had failed or its clean
    /// checkpoint could not be written.
    case shutdownComplete(clean: Bool)
}
