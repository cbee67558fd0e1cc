import RingLogIO
import RingLogWire
import Synchronization

/// What a cursor commit requires of the cursor's current position.
public enum CursorExpectation: Sendable, Equatable {
    /// Nothing: set it wherever it is.
    case any
    /// Only if it is at this position now (two workers cannot silently overwrite each other).
    case at(RecordPosition)
    /// Only if it does not exist yet.
    case absent
}

extension RingLogClient {
    /// Sets cursor `name` of `log` to `position` (the next record to read: a batch offset and
    /// the index of a record in it; index 0 for a whole batch). Returns once the commit is durable.
    /// A failed condition throws the server's CURSOR_MISMATCH, whose details are where it is.
    @discardableResult
    public func commitCursor(_ name: String, in log: LogID, at position: RecordPosition, expecting: CursorExpectation = .any)
        async throws(RingLogError) -> RecordPosition
    {
        let condition: CursorCommitRequest.Condition =
            switch expecting {
            case .any: .none
            case .absent: .absent
            case .at(let current): .at(offset: current.batchOffset.rawValue, index: UInt32(clamping: current.index))
            }
        let request = CursorCommitRequest(name: name, offset: position.batchOffset.rawValue, index: UInt32(clamping: position.index), condition: condition)
        let answer = try await call(.cursorCommit, request.encoded(), logID: log, as: CursorPositionMessage.self)
        return RecordPosition(batchOffset: LogOffset(answer.offset), index: Int(answer.index))
    }

    /// Where cursor `name` of `log` is; throws UNKNOWN_CURSOR when it does not exist.
    public func cursor(_ name: String, in log: LogID) async throws(RingLogError) -> RecordPosition {
        let answer = try await call(.cursorFetch, LogNameRequest(name: name).encoded(), logID: log, as: CursorPositionMessage.self)
        return RecordPosition(batchOffset: LogOffset(answer.offset), index: Int(answer.index))
    }

    /// Every cursor of `log`, by name, with how far behind the committed end each is.
    public func cursors(in log: LogID) async throws(RingLogError) -> [CursorList.Entry] {
        try await call(.cursorList, [], logID: log, as: CursorList.self).entries
    }

    /// Deletes cursor `name` of `log` (durably).
    public func deleteCursor(_ name: String, in log: LogID) async throws(RingLogError) {
        _ = try await request(.cursorDelete, LogNameRequest(name: name).encoded(), logID: log) { _ in () }
    }
}

/// When `records(of:cursor:)` moves its cursor.
public enum CursorCommitPolicy: Sendable, Equatable {
    /// Once every record of a batch has been handled (the caller asked for the record after it).
    case afterEachBatch
    /// At most this often, to the record after the last one handled.
    case every(milliseconds: Int)
}

/// Records of a log from where a cursor stands, moving the cursor as the caller handles them: a
/// record counts as handled when the caller asks for the next one. Commits go out in order on
/// the client's connection without waiting; a failed one is thrown from the next `next()`.
/// Iteration waits at the end of the log for more, like `RecordStream`.
///
/// ```swift
/// for try await record in client.records(of: log, cursor: "billing") {
///     try handle(record)   // the cursor moves past it once this returns and the loop asks again
/// }
/// ```
public struct CursorRecordStream: AsyncSequence, Sendable {
    public typealias Element = Record

    let client: RingLogClient
    let log: LogID
    let cursor: String
    let policy: CursorCommitPolicy
    let whenNew: LogOffset?
    let waitMillis: Int

    public func makeAsyncIterator() -> Iterator {
        Iterator(stream: self)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let stream: CursorRecordStream
        private var records: RecordStream.Iterator?
        /// Where the cursor stood: records of its batch before its index were handled already.
        private var start = RecordPosition(batchOffset: .zero, index: 0)
        private var previous: Record?
        private var lastCommitNanos: UInt64 = 0
        private let failure = CommitFailure()

        init(stream: CursorRecordStream) { self.stream = stream }

        public mutating func next() async throws(RingLogError) -> Record? {
            if let error = failure.error { throw error }
            if records == nil {
                var start: RecordPosition
                do {
                    start = try await stream.client.cursor(stream.cursor, in: stream.log)
                } catch {
                    guard error.serverCode == .unknownCursor else { throw error }
                    let offset: LogOffset
                    if let whenNew = stream.whenNew { offset = whenNew } else { offset = try await stream.client.info(stream.log).startOffset }
                    start = RecordPosition(batchOffset: offset, index: 0)
                }
                records = stream.client.records(of: stream.log, from: start.batchOffset, waitMillis: stream.waitMillis).makeAsyncIterator()
                self.start = start
            }
            // Asking for the next record says the previous one is handled: the cursor may move
            // past it now, before any wait for more.
            commitIfDue()
            while true {
                guard let record = try await records!.next() else { return nil }
                if record.position.batchOffset == start.batchOffset && record.position.index < start.index { continue }
                previous = record
                return record
            }
        }

        /// Moves the cursor past the previous (handled) record when the policy says so: after the
        /// last record of a batch, or once the interval has passed. Past a batch's last record is
        /// (batch, count), which a reader resumes from at the next batch.
        private mutating func commitIfDue() {
            guard let previous else { return }
            let now = MonotonicClock.nanos()
            let due: Bool =
                switch stream.policy {
                case .afterEachBatch: previous.position.index + 1 >= previous.batchRecordCount
                case .every(let milliseconds): now - lastCommitNanos >= UInt64(milliseconds) * 1_000_000
                }
            guard due else { return }
            lastCommitNanos = now
            let position = RecordPosition(batchOffset: previous.position.batchOffset, index: previous.position.index + 1)
            stream.client.sendCursorCommit(stream.cursor, in: stream.log, at: position, failure: failure)
            self.previous = nil
        }
    }
}

/// The first failed commit of a stream, seen by its next `next()`.
final class CommitFailure: Sendable {
    private let stored = Mutex<RingLogError?>(nil)
    var error: RingLogError? { stored.withLock { $0 } }
    func record(_ error: RingLogError) { stored.withLock { if $0 == nil { $0 = error } } }
}

extension RingLogClient {
    /// The records of `log` from where cursor `cursor` stands (a new cursor: from `whenNew`, or
    /// the log's start), moving the cursor by `commit` as the caller handles them.
    public func records(
        of log: LogID, cursor: String, commit: CursorCommitPolicy = .afterEachBatch, whenNew: LogOffset? = nil, waitMillis: Int = 1_000
    ) -> CursorRecordStream {
        CursorRecordStream(client: self, log: log, cursor: cursor, policy: commit, whenNew: whenNew, waitMillis: waitMillis)
    }

    /// Sends a cursor commit without waiting (in order with this connection's other requests).
    func sendCursorCommit(_ name: String, in log: LogID, at position: RecordPosition, failure: CommitFailure) {
        let body = CursorCommitRequest(name: name, offset: position.batchOffset.rawValue, index: UInt32(clamping: position.index)).encoded()
        let handle = socket
        loop.execute { core in
            guard let socket = core.socket(handle) else {
                failure.record(.connectionClosed("the connection is closed"))
                return
            }
            body.withUnsafeBytes { bytes in
                socket.send(.cursorCommit, body: bytes, logID: log) { result in
                    if case .failure(let error) = decodeResponse(result, as: CursorPositionMessage.self) { failure.record(error) }
                }
            }
        }
    }
}
