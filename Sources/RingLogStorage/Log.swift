import Glibc
import RingLogWire

/// Work of one log on its files, in flight (what `DiskRequests` remembers for it).
enum LogOperation {
    case segmentWrite(start: LogOffset, length: Int, uncached: Bool)
    case segmentSync(Segment)
    case segmentRead(LogReader.Run, uncached: Bool)
    /// Zero-ahead: writing a chunk of zeros, then writing it back.
    case zeroWrite(Segment, Range<Int>)
    case zeroWriteback(Segment, Range<Int>)
    /// Allocate-ahead: one fallocate step of the active segment.
    case allocate(Segment, Range<Int>)
    /// A read of a lookup by time or record (`LogSeek`).
    case seek(LogSeek.Seek)
}

/// Multi-step work of one log (`DiskScript`s).
enum LogScript {
    case prepareSpare
    case rotate(Segment)
    case checkpoint(CheckpointPlan)
    /// Writing a version of the cursors.
    case cursors(DiskScript)
    /// Removing files inside the log's directory: counted as the log's work, so deleting the log
    /// (and perhaps creating another under its name) waits for it.
    case cleanup
}

/// One named log: its identity and positions, and the four parts that decide its I/O, each with
/// its own state: `LogWriter` (appending and group commit), `SegmentFiles` (segment lifecycle),
/// `LogReader` (reads and their three sources), `LogUpkeep` (retention, trim, checkpoints). They
/// share `LogState` (segments and positions) and the store's `LogContext`; this type routes
/// requests and completions to them and carries out what one part's outcome means for another.
///
/// The log never performs I/O. It queues operations and reacts to their results, so the same
/// decisions run over io_uring in the server and over a simulated disk in tests.
public final class Log {
    let state: LogState
    private let context: LogContext
    private let writer: LogWriter
    private let files: SegmentFiles
    private let reader: LogReader
    private let upkeep: LogUpkeep
    private let seeker: LogSeek
    let cursors: LogCursors
    /// Operations issued for this log and not yet completed (deletion waits for zero).
    var operationsInFlight = 0
    var isDirty = false

    init(
        state: LogState, context: LogContext, checkpointOffset: LogOffset, nowMicros: UInt64,
        cursors durable: (cursors: [String: CursorPosition], sequence: UInt64) = ([:], 0)
    ) {
        self.state = state
        self.context = context
        writer = LogWriter(state: state, context: context)
        files = SegmentFiles(state: state, context: context)
        reader = LogReader(state: state, context: context)
        upkeep = LogUpkeep(state: state, context: context, checkpointOffset: checkpointOffset, nowMicros: nowMicros)
        seeker = LogSeek(state: state, context: context)
        cursors = LogCursors(state: state, context: context, durable: durable.cursors, sequence: durable.sequence)
    }

    public var id: LogID { state.id }
    public var name: String { state.name }
    /// What the log is also known by: the Kafka topic it holds a partition of, when its name cannot say.
    public var label: String? { state.label }
    public var settings: LogSettings { state.settings }
    public var startOffset: LogOffset { state.positions.start }
    public var reservedEnd: LogOffset { state.positions.reserved }
    public var writtenEnd: LogOffset { state.positions.written }
    public var committedEnd: LogOffset { state.positions.committed }
    /// Why the log stopped accepting writes, if it did.
    public var failure: StorageError? { state.failure }
    /// Deletion started: the log takes no more appends and its id no longer finds it.
    public var deleting: Bool { state.deleting }
    var segments: [Segment] { state.segments }
    var epoch: UInt32 { state.epoch }
    var directory: CPath { state.directory }
    var checkpointOffset: LogOffset { upkeep.checkpointOffset }
    var desiredStart: LogOffset { upkeep.desiredStart }

    public var info: LogInfo {
        LogInfo(
            id: id, name: name, startOffset: startOffset, committedEnd: committedEnd, segmentCount: state.segments.count,
            storedBytes: state.segments[0].base.distance(to: committedEnd), diskBytes: files.diskBytes, settings: settings,
            failure: failure?.description, committedRecords: state.committedNextRecord, producers: state.producers.count, label: state.label)
    }

    // MARK: Appending

    /// Places a validated batch (see `Batch.validateIncoming`) at the end of the log: copies it into
    /// the tail cache, stamps the server fields, and schedules its write. An idempotent producer's
    /// batch is judged first (`ProducerTable`): a retry is answered with the batch it repeats, even
    /// when `expectedEnd` (a conditional append) no longer holds.
    func append(_ batch: UnsafeRawBufferPointer, expectedEnd: LogOffset? = nil, nowMicros: UInt64) -> AppendOutcome {
        if let failure = state.failure { return .failed(failure) }
        if state.deleting { return .failed(.unknownLog(name)) }
        let length = batch.count
        // The server's limit, and the log's segment size: a log made with small segments under a
        // smaller max-batch-bytes keeps them after a restart with a larger one.
        let limit = min(context.configuration.maxBatchBytes, state.settings.segmentBytes)
        guard length <= limit else { return .failed(.batchTooLarge(bytes: length, limit: limit)) }
        let recordCount = Batch.recordCount(batch.baseAddress!)
        let producer = Batch.producer(batch.baseAddress!)
        if producer.id != 0 && !state.producers.isNext(producer) {
            switch state.producers.check(producer, recordCount: recordCount) {
            case .write: break
            case .duplicate(let earlier): return .duplicate(offset: earlier.offset, end: earlier.end)
            case .refused(let error): return .failed(error)
            }
        }
        if let expectedEnd, state.positions.reserved != expectedEnd {
            return .endMismatch(reserved: state.positions.reserved, committed: state.positions.committed)
        }
        if let blocked = files.makeRoom(for: length, fullyWritten: writer.fullyWritten, nowMicros: nowMicros, for: self) { return blocked }
        guard let placed = writer.place(batch, recordCount: recordCount, nowMicros: nowMicros) else { return .wouldBlock }
        if producer.id != 0 {
            state.producers.record(producer, recordCount: recordCount, offset: placed.offset, length: length, appendMicros: placed.appendMicros)
        }
        context.markDirty(self)
        files.prepareSpareIfDue(for: self)
        return .placed(offset: placed.offset, end: placed.end)
    }

    /// Appends that were told to wait (for a spare segment, or for room in the shared tail
    /// cache, which every log's writes free) may try again.
    private func wakeBlockedAppends() {
        let waitingForSegment = files.takeAwaitingSpace()
        if waitingForSegment || context.appendsWaitingForCache {
            context.appendsWaitingForCache = false
            context.emit(.spaceAvailable)
        }
    }

    // MARK: Writing and committing

    /// Issues the write and fdatasyncs the log's state allows. Returns true while work remains.
    func issueIO() -> Bool {
        guard !state.deleting else { return false }
        // Cursors live in their own file: a log whose segment writes failed still keeps them.
        cursors.issueWrite(for: self)
        guard state.failure == nil else { return cursors.hasWork }
        return writer.issueIO(for: self) || cursors.hasWork
    }

    /// The ring sequence of this log's oldest unwritten byte; the tail cache must not overwrite it.
    var unwrittenSequence: UInt64? { writer.unwrittenSequence }

    /// Stops accepting writes for good (until restart). Committed data keeps serving.
    func fail(_ error: StorageError) {
        guard state.failure == nil else { return }
        state.failure = error
        context.logger.critical("log stopped accepting writes", metadata: ["log": "\(name)", "committed": "\(committedEnd)", "error": "\(error)"])
        context.emit(.logFailed(id, error))
        writer.abandonUnwritten()
        wakeBlockedAppends()
    }

    private func advanceCommitted() {
        if writer.advanceCommitted() { context.emit(.committed(id)) }
    }

    // MARK: Completions

    /// An operation of this log came back.
    func completed(_ operation: LogOperation, result: DiskResult) {
        switch operation {
        case .segmentWrite(let start, let length, let uncached):
            switch writer.writeFinished(start: start, length: length, uncached: uncached, result: result) {
            case .wrote:
                context.emit(.written(id))
                context.markDirty(self)
                wakeBlockedAppends()
            case .retry:
                context.markDirty(self)
            case .diskFull(let offset, let error):
                writer.rewind(to: offset)
                context.emit(.appendsRewound(id, from: offset, error))
                wakeBlockedAppends()
            case .failed(let error):
                fail(error)
            case .abandoned:
                break
            }
        case .segmentSync(let segment):
            switch writer.syncFinished(segment, result: result) {
            case .synced:
                advanceCommitted()
                context.markDirty(self)
            case .retry:
                context.markDirty(self)
            case .failed(let error):
                fail(error)
            }
        case .segmentRead(let run, let uncached):
            files.releaseLease(run.segment)
            if let result = reader.readFinished(run, uncached: uncached, result: result, for: self) { readDone(run.purpose, target: run.target, result) }
        case .zeroWrite(let segment, let range):
            if !writer.zeroWriteFinished(segment, range, result: result, for: self) {
                writer.zeroingStopped(segment)
                files.releaseLease(segment)
                context.markDirty(self)
            }
        case .zeroWriteback(let segment, let range):
            writer.zeroWritebackFinished(segment, range, result: result)
            files.releaseLease(segment)
            context.markDirty(self)
        case .allocate(let segment, let range):
            writer.allocateFinished(segment, range, result: result)
            files.releaseLease(segment)
            context.markDirty(self)
        case .seek(let seek):
            files.releaseLease(seeker.reading(seek))
            if let answer = seeker.readFinished(seek, result: result, for: self) { context.emit(.sought(context: seek.requester, answer)) }
        }
    }

    /// A script of this log finished.
    func scriptFinished(_ script: LogScript, _ run: DiskScript, _ result: Result<Void, StorageError>, nowMicros: UInt64) {
        switch script {
        case .prepareSpare:
            files.spareFinished(run, result, nowMicros: nowMicros, for: self)
            wakeBlockedAppends()
        case .rotate(let segment):
            if let error = files.rotationFinished(segment, result) {
                fail(error)
            } else {
                advanceCommitted()
                context.markDirty(self)
            }
        case .checkpoint(let plan):
            checkpointFinished(plan, result)
        case .cursors:
            cursors.writeFinished(run, result)
            // Waiting changes go out now; a failed version is retried by maintenance instead,
            // not in a loop against a failing disk.
            if cursors.hasWork { context.markDirty(self) }
        case .cleanup:
            if case .failure(let error) = result { context.logger.warning("cleanup step failed", metadata: ["log": "\(name)", "error": "\(error)"]) }
        }
    }

    // MARK: Reading

    /// The first committed batch appended at or after a time, or holding a record. See `LogSeek`.
    func seek(_ key: LogSeek.Key, requester: UInt64) -> SeekStart {
        seeker.seek(key, requester: requester, for: self)
    }

    /// Records numbered up to the committed end: the next committed batch's first record number
    /// (Kafka's high watermark).
    public var committedRecords: UInt64 { state.committedNextRecord }
    /// The record number the next batch placed gets (its `firstRecord`).
    public var nextRecord: UInt64 { state.nextRecord }

    /// Reads whole committed batches from `offset`. See `LogReader.read`.
    func read(from offset: LogOffset, maxBytes: Int, purpose: LogReader.Purpose) -> ReadStart {
        reader.read(from: offset, maxBytes: maxBytes, purpose: purpose, for: self)
    }

    private func readDone(_ purpose: LogReader.Purpose, target: LogOffset, _ result: Result<ReadResult, StorageError>) {
        switch purpose {
        case .client(let requester): context.emit(.readCompleted(context: requester, result))
        case .trimCheck(let requester):
            switch result {
            case .success: upkeep.requestStart(target, context: requester, quiescent: isQuiescent, for: self)
            case .failure(let error): context.emit(.trimmed(context: requester, .failure(error)))
            }
        }
    }

    // MARK: Trimming, retention and checkpoints

    /// Advances the start to `offset` (a batch boundary at or below the committed end). Segments
    /// wholly below the new start are deleted once a checkpoint has made the start durable.
    func trim(to offset: LogOffset, context requester: UInt64) {
        if offset > committedEnd {
            context.emit(.trimmed(context: requester, .failure(.offsetBeyondEnd(requested: offset, start: startOffset, end: committedEnd))))
            return
        }
        if upkeep.trimNeedsNoCheck(offset) {
            upkeep.requestStart(offset, context: requester, quiescent: isQuiescent, for: self)
            return
        }
        // Reading one batch there proves it is a batch start.
        switch reader.read(from: offset, maxBytes: 1, purpose: .trimCheck(context: requester), for: self) {
        case .ready: upkeep.requestStart(offset, context: requester, quiescent: isQuiescent, for: self)
        case .pending: break
        case .failed(let error): context.emit(.trimmed(context: requester, .failure(error)))
        }
    }

    /// Moves the start past whole sealed segments that retention no longer keeps.
    func applyRetention(nowMicros: UInt64) {
        if let start = upkeep.retainedStart(nowMicros: nowMicros) { upkeep.requestStart(start, context: nil, quiescent: isQuiescent, for: self) }
    }

    /// Writes a checkpoint when one is due (`LogUpkeep.checkpointIfDue`).
    func checkpointIfDue(nowMicros: UInt64) {
        upkeep.checkpointIfDue(nowMicros: nowMicros, quiescent: isQuiescent, for: self)
    }

    func checkpointFinished(_ plan: CheckpointPlan, _ result: Result<Void, StorageError>) {
        if let error = upkeep.checkpointFinished(plan, result) {
            if case .diskFull = error {} else { fail(error) }
            return
        }
        files.deleteSegmentsBelowStart(for: self)
        if upkeep.startStillWanted {
            upkeep.checkpointIfDue(nowMicros: plan.checkpoint.writtenAtMicros, force: true, quiescent: isQuiescent, for: self)
        }
    }

    /// Nothing reserved that is not committed, nothing in flight that changes the data.
    var isQuiescent: Bool {
        writer.isIdle && state.segments.allSatisfy { !$0.syncInFlight && $0.zeroing == nil && ($0.nameDurable || $0.deleted) }
    }

    /// The store is stopping: a clean checkpoint is written once the log is quiescent.
    func wantCleanCheckpoint() { upkeep.cleanCheckpointWanted = true }
    /// The clean checkpoint was attempted, and whether it was written.
    var cleanCheckpointDone: Bool { upkeep.cleanCheckpointDone }
    var cleanCheckpointWritten: Bool { upkeep.cleanCheckpointWritten }

    /// Maintenance: a cursors version that failed is written again (about once per maintenance).
    func retryCursorsIfWanted() {
        guard !state.deleting, cursors.rewriteWanted else { return }
        cursors.issueWrite(for: self)
    }

    // MARK: Deleting

    /// Stops all new work; the store deletes the directory once nothing is in flight.
    func beginDeleting() {
        state.deleting = true
        cursors.abandon(.unknownLog(name))
        writer.abandonUnwritten()
        upkeep.abandonTrims()
        wakeBlockedAppends()
    }

    /// Descriptors to close once the log's directory is gone.
    func descriptorsToClose() -> [Int32] { files.descriptorsToClose() + cursors.descriptorsToClose() }

    /// File names a deleted log's directory may hold.
    func fileNames() -> [String] { files.fileNames() }
}
