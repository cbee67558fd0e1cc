import RingLogWire

/// Retention, trim and checkpoints for one log: moving the start forward (asked by a client, or
/// by the size and age limits), and the checkpoints that make the start, the committed end and
/// the sparse indexes durable, so a restart scans only what came after the last one.
final class LogUpkeep {
    private let state: LogState
    private let context: LogContext
    private(set) var checkpointOffset: LogOffset
    private var checkpointInFlight = false
    private var lastCheckpointMicros: UInt64
    /// The start a pending trim or retention wants; made durable by the next checkpoint.
    private(set) var desiredStart: LogOffset
    private var trimWaiters: [(context: UInt64, target: LogOffset)] = []
    /// The store is stopping: write a clean checkpoint once the log is quiescent.
    var cleanCheckpointWanted = false
    /// The shutdown's clean checkpoint was attempted (successfully when `cleanCheckpointWritten`).
    private(set) var cleanCheckpointDone = false
    private(set) var cleanCheckpointWritten = false

    init(state: LogState, context: LogContext, checkpointOffset: LogOffset, nowMicros: UInt64) {
        self.state = state
        self.context = context
        self.checkpointOffset = checkpointOffset
        lastCheckpointMicros = nowMicros
        desiredStart = state.positions.start
    }

    /// Whether a trim to `offset` needs no check that `offset` is a batch start: it is at or
    /// below a start already wanted, or it is the committed end.
    func trimNeedsNoCheck(_ offset: LogOffset) -> Bool {
        offset <= desiredStart || offset == state.positions.committed
    }

    /// Asks for the start to move to `offset` (a batch boundary at or below the committed end);
    /// `context`, if any, is answered once a checkpoint has made it durable.
    func requestStart(_ offset: LogOffset, context requester: UInt64?, quiescent: @autoclosure () -> Bool, for log: Log) {
        if offset <= state.positions.start {
            if let requester { context.emit(.trimmed(context: requester, .success(state.positions.start))) }
            return
        }
        desiredStart = max(desiredStart, offset)
        if let requester { trimWaiters.append((requester, offset)) }
        checkpointIfDue(nowMicros: lastCheckpointMicros, force: true, quiescent: quiescent(), for: log)
    }

    /// The start that the size and age limits allow: past whole sealed, committed segments that
    /// retention no longer keeps. Nil when it would not move.
    func retainedStart(nowMicros: UInt64) -> LogOffset? {
        let committed = state.positions.committed
        var newStart = desiredStart
        var index = 0
        while index < state.segments.count - 1 {
            let segment = state.segments[index]
            guard segment.sealed, segment.dataEnd <= committed else { break }
            // What remains after dropping this segment must still hold the size limit's worth,
            // and everything in it must be older than the age limit (checked arithmetic: a
            // retention longer than the clock has run deletes nothing).
            let tooBig = state.settings.retentionBytes.map { segment.dataEnd.distance(to: committed) >= $0 } ?? false
            let tooOld = state.settings.retentionMicros.map { retention in
                let (cutoff, beforeEpoch) = nowMicros.subtractingReportingOverflow(retention)
                return !beforeEpoch && segment.maxAppendTimeMicros < cutoff
            } ?? false
            guard tooBig || tooOld else { break }
            newStart = max(newStart, segment.dataEnd)
            index += 1
        }
        return newStart > desiredStart ? newStart : nil
    }

    /// Writes a checkpoint when enough has committed or enough time has passed since the last one
    /// (or the start must move, or the store is stopping and the log is `quiescent`).
    func checkpointIfDue(nowMicros: UInt64, force: Bool = false, quiescent: @autoclosure () -> Bool, for log: Log) {
        guard !checkpointInFlight, !state.deleting else { return }
        let configuration = context.configuration
        let committedSince = checkpointOffset.distance(to: state.positions.committed)
        let due =
            force || desiredStart > state.positions.start || committedSince >= configuration.checkpointIntervalBytes
            || (committedSince > 0 && nowMicros >= lastCheckpointMicros + configuration.checkpointIntervalMicros)
        let cleanDue = cleanCheckpointWanted && !cleanCheckpointDone && quiescent()
        guard due || cleanDue else { return }
        let plan = CheckpointPlan(state: state, desiredStart: desiredStart, nowMicros: nowMicros, clean: cleanDue)
        checkpointInFlight = true
        context.requests.start(plan.script, for: .log(log, .checkpoint(plan)))
    }

    /// A checkpoint finished. On success the start moves (the caller deletes the segments below it
    /// and checkpoints again if a later start is wanted); on failure the error, which fails the
    /// log unless the disk is merely full.
    func checkpointFinished(_ plan: CheckpointPlan, _ result: Result<Void, StorageError>) -> StorageError? {
        checkpointInFlight = false
        switch result {
        case .failure(let error):
            let waiters = trimWaiters.filter { $0.target <= plan.checkpoint.startOffset }
            trimWaiters.removeAll { $0.target <= plan.checkpoint.startOffset }
            var reported = error
            if case .io(_, let errno, let detail) = error { reported = StorageError.fromWriteFailure(errno: errno, detail: "checkpoint of \(state.name): \(detail)") }
            for waiter in waiters { context.emit(.trimmed(context: waiter.context, .failure(reported))) }
            if cleanCheckpointWanted { cleanCheckpointDone = true }
            return reported
        case .success:
            plan.apply()
            precondition(plan.checkpoint.checkpointOffset >= checkpointOffset, "checkpoints move forward")
            checkpointOffset = plan.checkpoint.checkpointOffset
            lastCheckpointMicros = plan.checkpoint.writtenAtMicros
            if plan.checkpoint.startOffset > state.positions.start { state.positions.moveStart(to: plan.checkpoint.startOffset) }
            if plan.checkpoint.clean {
                cleanCheckpointDone = true
                cleanCheckpointWritten = true
            }
            let start = state.positions.start
            let answered = trimWaiters.filter { $0.target <= start }
            trimWaiters.removeAll { $0.target <= start }
            for waiter in answered { context.emit(.trimmed(context: waiter.context, .success(start))) }
            return nil
        }
    }

    /// A later start is wanted than the last checkpoint made durable.
    var startStillWanted: Bool { desiredStart > state.positions.start }

    var lastCheckpointTime: UInt64 { lastCheckpointMicros }

    /// The log is being deleted: trims waiting for a checkpoint fail.
    func abandonTrims() {
        for waiter in trimWaiters { context.emit(.trimmed(context: waiter.context, .failure(.unknownLog(state.name)))) }
        trimWaiters.removeAll()
    }
}
