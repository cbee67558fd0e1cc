import Glibc
import RingLogWire

/// Everything the storage engine can refuse or fail with. Each case is something a caller can act
/// on; `description` is the sentence a person reads.
public enum StorageError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownLog(String)
    case logExists(String)
    case badLogName(String)
    /// Settings out of range; the first problem is the one a protocol error's details describe.
    case badSettings([SettingProblem])
    /// The offset is below the log's start (its low-water mark).
    case offsetBelowStart(requested: LogOffset, start: LogOffset, end: LogOffset)
    /// The offset is past the committed end.
    case offsetBeyondEnd(requested: LogOffset, start: LogOffset, end: LogOffset)
    case notBatchBoundary(LogOffset)
    /// A stored batch failed its checks. `nextOffset` is where the following batch starts when the
    /// damaged batch's header is intact, so a reader can step over it deliberately.
    case corruption(offset: LogOffset, detail: String, nextOffset: LogOffset?)
    case batchTooLarge(bytes: Int, limit: Int)
    case diskFull(String)
    /// The log stopped accepting writes after a write or fdatasync failed; committed data still serves.
    case storageFailed(String)
    case io(operation: String, errno: Int32, detail: String)
    case dataDirectoryInUse(String)
    /// A log's files could not be opened at start-up; the store does not open without it.
    case recoveryFailed(log: String, reason: String)
    case shuttingDown
    case unknownCursor(String)
    case badCursorName(String)
    case tooManyCursors(limit: Int)
    /// A conditional cursor commit found the cursor elsewhere (nil: it does not exist).
    case cursorMismatch(name: String, current: CursorPosition?)
    /// Idempotent appends (`ProducerTable`): a gap before the batch (the producer owes
    /// `expected` first), a repeat older than the remembered batches, a producer the log does
    /// not know at that sequence, an epoch older than the log's. Nothing was written.
    case outOfOrderSequence(producer: UInt64, sequence: UInt32, expected: UInt32, epoch: UInt16)
    case duplicateSequence(producer: UInt64, sequence: UInt32, expected: UInt32, epoch: UInt16)
    case unknownProducer(producer: UInt64, sequence: UInt32)
    case producerFenced(producer: UInt64, epoch: UInt16, current: UInt16)

    public var description: String {
        switch self {
        case .unknownLog(let name): "unknown log \(name)"
        case .logExists(let name): "log \(name) already exists"
        case .badLogName(let reason): "bad log name: \(reason)"
        case .badSettings(let problems): "bad settings: " + problems.map(\.description).joined(separator: "; ")
        case .offsetBelowStart(let requested, let start, let end):
            "offset \(requested) is below the log's start; valid offsets are \(start) to \(end)"
        case .offsetBeyondEnd(let requested, let start, let end):
            "offset \(requested) is past the committed end; valid offsets are \(start) to \(end)"
        case .notBatchBoundary(let offset): "offset \(offset) is not the start of a batch"
        case .corruption(let offset, let detail, let next):
            "corrupt batch at offset \(offset): \(detail)" + (next.map { "; the next batch starts at \($0)" } ?? "")
        case .batchTooLarge(let bytes, let limit): "batch of \(bytes) bytes exceeds the limit of \(limit)"
        case .diskFull(let detail): "disk full: \(detail)"
        case .storageFailed(let detail): "storage failed, log is read-only: \(detail)"
        case .io(let operation, let errno, let detail): "\(operation) failed (\(StorageError.errnoName(errno))): \(detail)"
        case .dataDirectoryInUse(let path):
            "data directory \(path) is locked by another process (is another ringlogd running on it?)"
        case .recoveryFailed(let log, let reason):
            "log \(log) cannot be recovered: \(reason). Nothing was changed; to start without this log, move "
                + "its directory (logs/\(log)) out of the data directory"
        case .shuttingDown: "the server is shutting down"
        case .unknownCursor(let name): "unknown cursor \(name)"
        case .badCursorName(let reason): "bad cursor name: \(reason)"
        case .tooManyCursors(let limit): "the log has its limit of \(limit) cursors; delete one first"
        case .cursorMismatch(let name, let current):
            "cursor \(name) is " + (current.map { "at \($0)" } ?? "not set") + ", not where the commit expected it; nothing changed"
        case .outOfOrderSequence(let producer, let sequence, let expected, let epoch):
            "producer \(producer) epoch \(epoch) sent sequence \(sequence) but owes \(expected) first; this batch was not written"
        case .duplicateSequence(let producer, let sequence, let expected, let epoch):
            "producer \(producer) epoch \(epoch) sent sequence \(sequence) again, older than the batches remembered (next is \(expected)); "
                + "it was stored once, this copy was not written"
        case .unknownProducer(let producer, let sequence):
            "producer \(producer) is not known to this log at sequence \(sequence) (never seen, expired or evicted); this batch was not written"
        case .producerFenced(let producer, let epoch, let current):
            "producer \(producer) epoch \(epoch) is fenced: epoch \(current) has written to this log; this batch was not written"
        }
    }

    /// `ENOSPC: No space left on device` style text.
    public static func errnoName(_ errno: Int32) -> String {
        let symbolic: String =
            switch errno {
            case EIO: "EIO"
            case ENOSPC: "ENOSPC"
            case ENOENT: "ENOENT"
            case EEXIST: "EEXIST"
            case EACCES: "EACCES"
            case EPERM: "EPERM"
            case EINTR: "EINTR"
            case EAGAIN: "EAGAIN"
            case EBADF: "EBADF"
            case EINVAL: "EINVAL"
            case EROFS: "EROFS"
            case EDQUOT: "EDQUOT"
            case ENOTEMPTY: "ENOTEMPTY"
            case EWOULDBLOCK: "EWOULDBLOCK"
            default: "errno \(errno)"
            }
        return "\(symbolic): \(String(cString: strerror(errno)))"
    }

    /// Maps a failed data write or allocation: out of space is a client-visible condition that
    /// passes, anything else means the disk cannot be trusted.
    static func fromWriteFailure(errno: Int32, detail: String) -> StorageError {
        errno == ENOSPC || errno == EDQUOT ? .diskFull(detail) : .storageFailed("\(detail): \(errnoName(errno))")
    }
}
