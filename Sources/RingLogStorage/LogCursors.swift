import Glibc
import RingLogWire

/// A consumer's place in a log: a batch offset and the index of the next record in that batch
/// (0: the whole batch is still to read). The record index is what lets a reader that stopped in
/// the middle of a batch, and a Kafka consumer committing record offsets, resume exactly.
public struct CursorPosition: Equatable, Sendable, CustomStringConvertible {
    public var offset: LogOffset
    public var index: UInt32

    public init(offset: LogOffset, index: UInt32 = 0) {
        self.offset = offset
        self.index = index
    }

    public var description: String { "\(offset)/\(index)" }
}

/// How a cursor commit or delete began.
public enum CursorStart {
    /// Refused at once (nothing changes).
    case failed(StorageError)
    /// Accepted; a `.cursorUpdated` event with the same context answers once it is durable.
    case pending
}

/// A log's cursors file (docs/storage.md, "Cursors"): `magic "RLK1"`, `u32 count`, then per
/// cursor `u16 nameLength, name, u64 offset, u32 index`, then a CRC32C of everything before.
enum CursorsFile {
    static let magic: UInt32 = 0x314B_4C52 // "RLK1"

    static func encode(_ cursors: [String: CursorPosition]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(magic)
        bytes.appendLittleEndian(UInt32(cursors.count))
        for (name, position) in cursors.sorted(by: { $0.key < $1.key }) {
            bytes.appendLittleEndian(UInt16(name.utf8.count))
            bytes.append(contentsOf: name.utf8)
            bytes.appendLittleEndian(position.offset.rawValue)
            bytes.appendLittleEndian(position.index)
        }
        bytes.appendChecksum()
        return bytes
    }

    /// The cursors, or nil when the bytes are not a whole, intact cursors file.
    static func decode(_ bytes: [UInt8]) -> [String: CursorPosition]? {
        let reader = FieldReader(bytes: bytes)
        guard bytes.count >= 12, reader.u32(0) == magic, reader.checksumHolds(at: bytes.count - 4) else { return nil }
        let count = Int(reader.u32(4))
        var cursors: [String: CursorPosition] = [:]
        var at = 8
        for _ in 0..<count {
            guard at + 2 <= bytes.count - 4 else { return nil }
            let length = Int(reader.u16(at))
            at += 2
            guard at + length + 12 <= bytes.count - 4, let name = String(validating: bytes[at..<(at + length)], as: UTF8.self) else { return nil }
            at += length
            cursors[name] = CursorPosition(offset: LogOffset(reader.u64(at)), index: reader.u32(at + 8))
            at += 12
        }
        return at == bytes.count - 4 ? cursors : nil
    }
}

/// The named positions consumers keep in one log (CURSOR_COMMIT and friends): set, fetched,
/// listed, deleted, and made durable the way appends are: a change is acknowledged once the
/// cursors file holding it is written, fdatasynced and renamed into place (and the directory
/// synced). Changes arriving while one file is being written wait and go out together in the
/// next (group commit), so a thousand commits cost two fsyncs, not a thousand.
final class LogCursors {
    enum Change {
        case set(String, CursorPosition)
        case delete(String)
    }

    /// Changes accepted and not yet durable, with whom to answer.
    private var waiting: [(change: Change, requester: UInt64)] = []
    /// The changes the file being written carries.
    private var writing: [(change: Change, requester: UInt64)] = []
    private(set) var writeInFlight = false
    /// Every accepted change applied, durable or not: what fetches, lists and conditions see.
    private(set) var current: [String: CursorPosition]
    private let state: LogState
    private let context: LogContext

    init(state: LogState, context: LogContext, durable: [String: CursorPosition]) {
        self.state = state
        self.context = context
        current = durable
    }

    var hasWork: Bool { !waiting.isEmpty }

    /// Sets `name` to `position`; with `expected`, only if the cursor is now at that position
    /// (`.some(nil)`: only if it does not exist).
    func commit(_ name: String, _ position: CursorPosition, expected: CursorPosition??, requester: UInt64, for log: Log) -> CursorStart {
        if let problem = LogName.problem(with: name) { return .failed(.badCursorName(problem.replacingLogName())) }
        if let expected, current[name] != expected { return .failed(.cursorMismatch(name: name, current: current[name])) }
        if current[name] == nil && current.count >= context.configuration.maxCursorsPerLog {
            return .failed(.tooManyCursors(limit: context.configuration.maxCursorsPerLog))
        }
        guard position.offset <= state.positions.committed else {
            return .failed(.offsetBeyondEnd(requested: position.offset, start: state.positions.start, end: state.positions.committed))
        }
        current[name] = position
        waiting.append((.set(name, position), requester))
        context.markDirty(log)
        return .pending
    }

    func delete(_ name: String, requester: UInt64, for log: Log) -> CursorStart {
        if let problem = LogName.problem(with: name) { return .failed(.badCursorName(problem.replacingLogName())) }
        guard current[name] != nil else { return .failed(.unknownCursor(name)) }
        current[name] = nil
        waiting.append((.delete(name), requester))
        context.markDirty(log)
        return .pending
    }

    /// Writes every waiting change in one new cursors file, unless one is being written.
    func issueWrite(for log: Log) {
        guard !writeInFlight, !waiting.isEmpty, state.directoryFD >= 0 else { return }
        writing = waiting
        waiting = []
        writeInFlight = true
        // The file holds everything accepted so far; what is accepted while it is written goes
        // in the next one.
        let temporary = state.directory.appending(LogFileNames.cursorsTemporary)
        let script = DiskScript([
            .open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644, as: "cursors"),
            .write(.opened("cursors"), position: 0, OwnedBytes(CursorsFile.encode(current))),
            .fdatasync(.opened("cursors")),
            .close(.opened("cursors")),
            .rename(from: temporary, to: state.directory.appending(LogFileNames.cursors)),
            .fsync(.fd(state.directoryFD)),
        ])
        context.requests.start(script, for: .log(log, .cursors))
    }

    /// The file is durable (or failed): the changes it carried are answered.
    func writeFinished(_ result: Result<Void, StorageError>) {
        writeInFlight = false
        let answered = writing
        writing = []
        for (change, requester) in answered {
            switch result {
            case .success:
                switch change {
                case .set(_, let position): context.emit(.cursorUpdated(context: requester, .success(position)))
                case .delete: context.emit(.cursorUpdated(context: requester, .success(nil)))
                }
            case .failure(let error):
                context.emit(.cursorUpdated(context: requester, .failure(error)))
            }
        }
        if case .failure = result {
            // What the failed file carried may or may not be on disk: the in-memory view keeps
            // it (a later file will carry it again), and its committers were told it failed.
            context.logger.warning("writing the cursors file failed", metadata: ["log": "\(state.name)"])
        }
    }

    /// Every change not yet being written fails (the log is going away); one being written is
    /// answered when its write finishes (deletion waits for it).
    func abandon(_ error: StorageError) {
        for (_, requester) in waiting { context.emit(.cursorUpdated(context: requester, .failure(error))) }
        waiting = []
    }
}

extension String {
    /// LogName's messages speak of a log name; for a cursor, say cursor.
    fileprivate func replacingLogName() -> String {
        hasPrefix("log name") ? "cursor name" + dropFirst("log name".count) : self
    }
}
