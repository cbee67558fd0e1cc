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

/// A log's cursors, as one slot file holds them (docs/storage.md, "Cursors"): `magic "RLK1"`,
/// `u32 count`, `u64 sequence`, then per cursor `u16 nameLength, name, u64 offset, u32 index`,
/// then a CRC32C of everything before. Bytes after the CRC (left by a longer earlier version) are
/// ignored.
enum CursorsFile {
    static let magic: UInt32 = 0x314B_4C52 // "RLK1"

    static func encode(_ cursors: [String: CursorPosition], sequence: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(magic)
        bytes.appendLittleEndian(UInt32(cursors.count))
        bytes.appendLittleEndian(sequence)
        for (name, position) in cursors.sorted(by: { $0.key < $1.key }) {
            bytes.appendLittleEndian(UInt16(name.utf8.count))
            bytes.append(contentsOf: name.utf8)
            bytes.appendLittleEndian(position.offset.rawValue)
            bytes.appendLittleEndian(position.index)
        }
        bytes.appendChecksum()
        return bytes
    }

    /// The cursors and the version's sequence, or nil when the bytes do not start with a whole,
    /// intact version (a write torn by a crash, or an empty file).
    static func decode(_ bytes: [UInt8]) -> (cursors: [String: CursorPosition], sequence: UInt64)? {
        let reader = FieldReader(bytes: bytes)
        guard bytes.count >= 20, reader.u32(0) == magic else { return nil }
        let count = Int(reader.u32(4))
        let sequence = reader.u64(8)
        var cursors: [String: CursorPosition] = [:]
        var at = 16
        for _ in 0..<count {
            guard at + 2 <= bytes.count else { return nil }
            let length = Int(reader.u16(at))
            at += 2
            guard at + length + 12 <= bytes.count, let name = String(validating: bytes[at..<(at + length)], as: UTF8.self) else { return nil }
            at += length
            cursors[name] = CursorPosition(offset: LogOffset(reader.u64(at)), index: reader.u32(at + 8))
            at += 12
        }
        guard reader.checksumHolds(at: at) else { return nil }
        return (cursors, sequence)
    }
}

/// The named positions consumers keep in one log (CURSOR_COMMIT and friends): set, fetched,
/// listed, deleted, and made durable the way appends are. Every version of the cursors goes,
/// whole, into one of two slot files in turn (`cursors.0`, `cursors.1`), overwriting the older
/// version: one write and one fdatasync, no rename. A change is acknowledged once its version is
/// synced; a version torn by a crash fails its checksum and the other slot, the version before,
/// stands. Changes arriving while a version is being written wait and go out together in the next
/// (group commit), so a thousand commits cost one fdatasync, not a thousand.
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
    /// The newest version's sequence on disk; the next goes to slot `(sequence + 1) % 2`.
    private var sequence: UInt64
    /// The two slot files' descriptors, once opened (the first write opens them).
    private var slots: [Int32] = []
    private let state: LogState
    private let context: LogContext

    init(state: LogState, context: LogContext, durable: [String: CursorPosition], sequence: UInt64) {
        self.state = state
        self.context = context
        current = durable
        self.sequence = sequence
    }

    var hasWork: Bool { !waiting.isEmpty }
    /// The last version failed to be written: what it carried is in `current` (it may or may not
    /// be on disk) and goes into the next version; maintenance writes one if no change comes.
    private(set) var rewriteWanted = false

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
        guard !writeInFlight, !waiting.isEmpty || rewriteWanted, state.directoryFD >= 0 else { return }
        rewriteWanted = false
        writing = waiting
        waiting = []
        writeInFlight = true
        // The version holds everything accepted so far; what is accepted while it is written
        // goes in the next one.
        let bytes = OwnedBytes(CursorsFile.encode(current, sequence: sequence + 1))
        let target = Int((sequence + 1) % 2)
        let script: DiskScript
        if slots.count == 2 {
            script = DiskScript([.write(.fd(slots[target]), position: 0, bytes), .fdatasync(.fd(slots[target]))])
        } else {
            // The first write since the log opened: open (create) both slots and make their
            // names durable, then write.
            let flags = O_RDWR | O_CREAT | O_CLOEXEC
            script = DiskScript([
                .open(state.directory.appending(LogFileNames.cursorSlot(0)), flags: flags, mode: 0o644, as: "slot0"),
                .open(state.directory.appending(LogFileNames.cursorSlot(1)), flags: flags, mode: 0o644, as: "slot1"),
                .fsync(.fd(state.directoryFD)),
                .write(.opened("slot\(target)"), position: 0, bytes),
                .fdatasync(.opened("slot\(target)")),
            ])
        }
        context.requests.start(script, for: .log(log, .cursors(script)))
    }

    /// The slot files' descriptors, for closing with the log.
    func descriptorsToClose() -> [Int32] {
        defer { slots = [] }
        return slots
    }

    /// The version is durable (or failed): the changes it carried are answered.
    func writeFinished(_ script: DiskScript, _ result: Result<Void, StorageError>) {
        writeInFlight = false
        if slots.isEmpty, case .success = result { slots = [script.openedDescriptor("slot0"), script.openedDescriptor("slot1")] }
        if case .success = result { sequence += 1 }
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
            // What the failed version carried may or may not be on disk: the in-memory view
            // keeps it (the next version carries it again, to the same slot, since the sequence
            // did not move), and its committers were told it failed. Maintenance tries again.
            rewriteWanted = true
            context.logger.warning("writing the cursors failed; trying again", metadata: ["log": "\(state.name)"])
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
