import RingLogWire

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
