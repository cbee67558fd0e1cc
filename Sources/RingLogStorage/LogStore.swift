import DequeModule
import Glibc
import Logging
import RingLogWire

/// A data directory of named logs: which logs there are, creating and deleting them, stopping,
/// and the one place their I/O requests leave from and their results come back to.
///
/// Driving it: call the data-path and admin methods; then take the requests it queued
/// (`takeRequest`), carry them out, and report each result with `complete(token:result:)`; call
/// `flush()` after each batch of completions and `maintain()` a few times a second; drain the
/// events (`nextEvent`). Everything happens on one thread; nothing here blocks except `open`.
public final class LogStore {
    public let configuration: StoreConfiguration
    private var directory: DataDirectory
    private let context: LogContext

    private var logsByID: [LogID: Log] = [:]
    private var logsByName: [String: Log] = [:]
    /// Names being created or deleted: not free, not usable.
    private var reservedNames: Set<String> = []
    private var deletingLogs: [LogID: (log: Log, context: UInt64, started: Bool)] = [:]
    private var creationsInFlight = 0
    private var shutdownAnnounced = false

    public private(set) var recoveryReports: [RecoveryReport] = []

    private init(configuration: StoreConfiguration, directory: DataDirectory, environment: StorageEnvironment, logger: Logger) {
        self.configuration = configuration
        self.directory = directory
        context = LogContext(configuration: configuration, environment: environment, logger: logger)
        context.unwrittenFloor = { [unowned self] in unwrittenFloor() }
    }

    public var rootPath: String { directory.root }
    public var statistics: StoreStatistics { context.statistics }
    /// Read buffers, recycled: a catch-up reader's multi-megabyte reads reuse the same pages.
    public var readBuffers: BufferPool { context.readBuffers }
    /// Cleared the first time the kernel refuses uncached I/O; every write and read is cached after.
    public var uncachedIOWorks: Bool { context.uncachedIOWorks }

    // MARK: Opening

    /// Opens (creating if needed) the data directory at `path`, locks it, finishes interrupted
    /// creations and deletions, and recovers every log. Blocking; runs before serving.
    public static func open(
        path: String, configuration: StoreConfiguration, disk: DiskIO, environment: StorageEnvironment,
        logger: Logger = Logger(label: "ringlog.storage")
    ) -> Result<LogStore, StorageError> {
        let problems = configuration.problems()
        if !problems.isEmpty { return .failure(.badSettings(problems)) }
        return DataDirectory.open(path: path, disk: disk, logger: logger).flatMap { directory in
            let store = LogStore(configuration: configuration, directory: directory, environment: environment, logger: logger)
            return store.recoverLogs(disk: disk).map { store }
        }
    }

    private func recoverLogs(disk: DiskIO) -> Result<Void, StorageError> {
        let names: [String]
        switch directory.logNames(disk: disk) {
        case .failure(let error): return .failure(error)
        case .success(let listed): names = listed
        }
        for name in names {
            switch LogRecovery.recover(directory: directory.logs.appending(name), context: context, disk: disk) {
            case .failure(.storageFailed(let reason)):
                return .failure(.recoveryFailed(log: name, reason: reason))
            case .failure(let error):
                return .failure(.recoveryFailed(log: name, reason: error.description))
            case .success(let (log, report)):
                register(log)
                recoveryReports.append(report)
            }
        }
        return .success(())
    }

    private func register(_ log: Log) {
        logsByID[log.id] = log
        logsByName[log.name] = log
    }

    // MARK: The data path

    public func log(_ id: LogID) -> Log? { logsByID[id] }
    public func log(named name: String) -> Log? { logsByName[name] }

    /// All logs, sorted by name.
    public var logs: [LogInfo] { logsByName.values.map(\.info).sorted { $0.name < $1.name } }

    /// Places a batch that passed `Batch.validateIncoming` at the end of the log.
    public func append(to id: LogID, batch: UnsafeRawBufferPointer, expectedEnd: LogOffset? = nil) -> AppendOutcome {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return append(to: log, batch: batch, expectedEnd: expectedEnd)
    }

    /// The same, for a log the caller looked up earlier (a deleted log refuses the batch as
    /// unknown), which spares a dictionary lookup per append.
    /// With `expectedEnd`, only if the log's reserved end is there (`.endMismatch` otherwise).
    public func append(to log: Log, batch: UnsafeRawBufferPointer, expectedEnd: LogOffset? = nil) -> AppendOutcome {
        if context.shuttingDown { return .failed(.shuttingDown) }
        return log.append(batch, expectedEnd: expectedEnd, nowMicros: context.environment.wallMicros())
    }

    /// Reads whole committed batches from `offset`. See `LogReader.read`.
    public func read(from id: LogID, offset: LogOffset, maxBytes: Int, context requester: UInt64) -> ReadStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return log.read(from: offset, maxBytes: max(1, maxBytes), purpose: .client(context: requester))
    }

    /// The offset of the first committed batch appended at or after `timeMicros` (µs since the
    /// Unix epoch): the start when all kept batches are that recent, the committed end when none
    /// is. May read the segment: then a `.sought` event answers.
    public func seek(_ id: LogID, atOrAfter timeMicros: UInt64, context requester: UInt64) -> SeekStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return log.seek(.time(timeMicros), requester: requester)
    }

    /// The offset of the committed batch holding record number `record` (or of the first one
    /// after it, when the batches holding it were trimmed): the committed end when `record` is
    /// not below `Log.committedRecords`. Format-1 batches have no record numbers and are passed
    /// over. May read the segments: then a `.sought` event answers.
    public func seek(_ id: LogID, record: UInt64, context requester: UInt64) -> SeekStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return log.seek(.record(record), requester: requester)
    }

    // MARK: Idempotent producers

    private var producersIssued: UInt32 = 0

    /// INIT_PRODUCER: with `id` 0, a new producer id (this run's incarnation in the high half, a
    /// count in the low half: no two runs of the data directory hand out the same id) at epoch 0;
    /// with an id this data directory issued, the same id at `epoch + 1`. Logs learn a producer
    /// from its batches; nothing is written here.
    public func initProducer(id: UInt64, epoch: UInt16) -> Result<(id: UInt64, epoch: UInt16), StorageError> {
        if context.shuttingDown { return .failure(.shuttingDown) }
        if id == 0 {
            guard producersIssued < UInt32.max else {
                return .failure(.storageFailed("this run has issued 2^32-1 producer ids; restart the server for more"))
            }
            producersIssued += 1
            return .success((UInt64(directory.incarnation) << 32 | UInt64(producersIssued), 0))
        }
        let issuedBy = UInt32(id >> 32)
        guard issuedBy >= 1, issuedBy < directory.incarnation || (issuedBy == directory.incarnation && UInt32(truncatingIfNeeded: id) <= producersIssued),
            UInt32(truncatingIfNeeded: id) != 0
        else { return .failure(.unknownProducer(producer: id, sequence: 0)) }
        guard epoch < UInt16.max else {
            return .failure(.producerFenced(producer: id, epoch: epoch, current: epoch))
        }
        return .success((id, epoch + 1))
    }

    /// How many of a producer's latest batches each log remembers.
    public var producerWindow: Int { configuration.producerWindow }

    // MARK: Cursors

    /// Sets cursor `name` of the log to `position` (with `expected`, only if it is now there;
    /// `.some(nil)`: only if it does not exist). A `.cursorUpdated` event answers once durable.
    public func commitCursor(
        _ id: LogID, name: String, position: CursorPosition, expected: CursorPosition??, context requester: UInt64
    ) -> CursorStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        if context.shuttingDown { return .failed(.shuttingDown) }
        return log.cursors.commit(name, position, expected: expected, requester: requester, for: log)
    }

    /// Deletes cursor `name`; a `.cursorUpdated` event (nil) answers once durable.
    public func deleteCursor(_ id: LogID, name: String, context requester: UInt64) -> CursorStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        if context.shuttingDown { return .failed(.shuttingDown) }
        return log.cursors.delete(name, requester: requester, for: log)
    }

    /// Cursor `name`'s position: the last commit accepted (acknowledged, or about to be).
    public func cursor(_ id: LogID, name: String) -> Result<CursorPosition, StorageError> {
        guard let log = logsByID[id] else { return .failure(.unknownLog("id \(id)")) }
        if let problem = LogName.problem(with: name) { return .failure(.badCursorName(problem)) }
        guard let position = log.cursors.current[name] else { return .failure(.unknownCursor(name)) }
        return .success(position)
    }

    /// Every cursor of the log, by name, with its lag: the bytes from it to the committed end
    /// (0 at or past it).
    public func cursors(_ id: LogID) -> Result<[(name: String, position: CursorPosition, lagBytes: UInt64)], StorageError> {
        guard let log = logsByID[id] else { return .failure(.unknownLog("id \(id)")) }
        let end = log.committedEnd
        return .success(
            log.cursors.current.sorted { $0.key < $1.key }.map { name, position in
                (name, position, position.offset < end ? UInt64(position.offset.distance(to: end)) : 0)
            })
    }

    /// Advances the log's start; a `.trimmed` event answers.
    public func trim(_ id: LogID, to offset: LogOffset, context requester: UInt64) {
        guard let log = logsByID[id] else {
            context.emit(.trimmed(context: requester, .failure(.unknownLog("id \(id)"))))
            return
        }
        log.trim(to: offset, context: requester)
    }

    // MARK: Creating and deleting logs

    /// Creates a log; a `.created` event answers. The log appears only once its directory, metadata,
    /// first segment and checkpoint are all durable.
    public func createLog(named name: String, settings: LogSettings? = nil, label: String? = nil, context requester: UInt64) {
        let settings = settings ?? configuration.defaultLogSettings
        if let problem = LogName.problem(with: name) {
            context.emit(.created(context: requester, .failure(.badLogName(problem))))
            return
        }
        if let label, label.utf8.count > LogMeta.maxLabelBytes || label.isEmpty {
            context.emit(.created(context: requester, .failure(.badLogName("a log's label is 1 to \(LogMeta.maxLabelBytes) bytes"))))
            return
        }
        if context.shuttingDown {
            context.emit(.created(context: requester, .failure(.shuttingDown)))
            return
        }
        if logsByName[name] != nil || reservedNames.contains(name) {
            context.emit(.created(context: requester, .failure(.logExists(name))))
            return
        }
        let problems = settings.problems(maxBatchBytes: configuration.maxBatchBytes)
        if !problems.isEmpty {
            context.emit(.created(context: requester, .failure(.badSettings(problems))))
            return
        }
        var id = newLogID()
        while logsByID[id] != nil || deletingLogs[id] != nil { id = newLogID() }
        let now = context.environment.wallMicros()
        let meta = LogMeta(logID: id, name: name, createdMicros: now, settings: settings, label: label)
        let staging = directory.staging.appending("\(name).\(id)")
        let checkpoint = Checkpoint(logID: id, epoch: 1, clean: false, startOffset: .zero, checkpointOffset: .zero, writtenAtMicros: now)
        let create = O_CREAT | O_EXCL | O_CLOEXEC
        let script = DiskScript([
            .mkdir(staging, ignoreExisting: false),
            .open(staging.appending(LogFileNames.meta), flags: O_WRONLY | create, mode: 0o644, as: "meta"),
            .write(.opened("meta"), position: 0, OwnedBytes(meta.encoded())),
            .fdatasync(.opened("meta")),
            .close(.opened("meta")),
            .open(staging.appending(LogFileNames.segment(.zero)), flags: O_RDWR | create, mode: 0o644, as: "segment"),
            .fallocate(.opened("segment"), length: Int64(configuration.initialAllocation(segmentBytes: settings.segmentBytes))),
            .fsync(.opened("segment")),
            .open(staging.appending(LogFileNames.checkpoint), flags: O_WRONLY | create, mode: 0o644, as: "checkpoint"),
            .write(.opened("checkpoint"), position: 0, OwnedBytes(checkpoint.encoded())),
            .fdatasync(.opened("checkpoint")),
            .close(.opened("checkpoint")),
            .open(staging, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0, as: "directory"),
            .fsync(.opened("directory")),
            .rename(from: staging, to: directory.logs.appending(name)),
            .fsync(.fd(directory.logsFD)),
        ])
        reservedNames.insert(name)
        creationsInFlight += 1
        context.requests.start(script, for: .createLog(meta: meta, staging: staging, context: requester))
    }

    /// A log id: random, never 0 (which means "no log" on the wire).
    private func newLogID() -> LogID {
        LogID(UInt32(truncatingIfNeeded: context.environment.random() % UInt64(UInt32.max)) + 1)
    }

    private func creationFinished(meta: LogMeta, staging: CPath, requester: UInt64, script: DiskScript, _ result: Result<Void, StorageError>) {
        reservedNames.remove(meta.name)
        creationsInFlight -= 1
        switch result {
        case .failure(let error):
            var reported = error
            if case .io(let operation, let errno, let detail) = error {
                reported = errno == ENOSPC || errno == EDQUOT ? .diskFull("creating log \(meta.name): \(operation) \(detail)") : error
            }
            var cleanup: [DiskScript.Step] = [LogFileNames.meta, LogFileNames.segment(.zero), LogFileNames.checkpoint].map {
                .unlink(staging.appending($0), isDirectory: false, ignoreMissing: true)
            }
            cleanup.append(.unlink(staging, isDirectory: true, ignoreMissing: true))
            context.requests.start(DiskScript(cleanup), for: .cleanup)
            context.emit(.created(context: requester, .failure(reported)))
        case .success:
            let segment = Segment(
                base: .zero, fileBytes: meta.settings.segmentBytes,
                allocatedBytes: configuration.initialAllocation(segmentBytes: meta.settings.segmentBytes), fd: script.openedDescriptor("segment"), dataEnd: .zero,
                syncedEnd: .zero, nameDurable: true, index: SparseIndex(intervalBytes: UInt32(configuration.indexIntervalBytes)))
            let state = LogState(
                meta: meta, epoch: 1, directory: directory.logs.appending(meta.name), directoryFD: script.openedDescriptor("directory"),
                segments: [segment], positions: LogPositions(start: .zero, end: .zero), producers: configuration.makeProducerTable())
            let log = Log(state: state, context: context, checkpointOffset: .zero, nowMicros: context.environment.wallMicros())
            register(log)
            if context.shuttingDown { log.wantCleanCheckpoint() }
            context.logger.info("created log", metadata: ["log": "\(meta.name)", "id": "\(meta.logID)"])
            context.emit(.created(context: requester, .success(log.info)))
        }
    }

    /// Deletes a log; a `.deleted` event answers once its directory has left `logs/` durably.
    /// Appends not yet committed are failed at once (an `.appendsRewound` event).
    public func deleteLog(named name: String, context requester: UInt64) {
        if let problem = LogName.problem(with: name) {
            context.emit(.deleted(context: requester, .failure(.badLogName(problem))))
            return
        }
        guard let log = logsByName[name] else {
            context.emit(.deleted(context: requester, .failure(.unknownLog(name))))
            return
        }
        logsByName[name] = nil
        logsByID[log.id] = nil
        reservedNames.insert(name)
        deletingLogs[log.id] = (log, requester, false)
        context.emit(.appendsRewound(log.id, from: log.committedEnd, .unknownLog(name)))
        log.beginDeleting()
        continueDeleting(log)
    }

    private func continueDeleting(_ log: Log) {
        guard let entry = deletingLogs[log.id], !entry.started, log.operationsInFlight == 0 else { return }
        deletingLogs[log.id]?.started = true
        let script = DiskScript([
            .rename(from: log.directory, to: directory.trash.appending("\(log.name).\(log.id)")),
            .fsync(.fd(directory.logsFD)),
            .fsync(.fd(directory.trashFD)),
        ])
        context.requests.start(script, for: .deleteLog(log, context: entry.context))
    }

    private func deletionFinished(_ log: Log, requester: UInt64, _ result: Result<Void, StorageError>) {
        deletingLogs[log.id] = nil
        reservedNames.remove(log.name)
        switch result {
        case .failure(let error):
            context.logger.error("deleting log failed; its directory stays in place", metadata: ["log": "\(log.name)", "error": "\(error)"])
            context.emit(.deleted(context: requester, .failure(error)))
        case .success:
            for fd in log.descriptorsToClose() { context.requests.close(fd) }
            let trashed = directory.trash.appending("\(log.name).\(log.id)")
            var steps: [DiskScript.Step] = log.fileNames().map { .unlink(trashed.appending($0), isDirectory: false, ignoreMissing: true) }
            steps.append(.unlink(trashed, isDirectory: true, ignoreMissing: true))
            context.requests.start(DiskScript(steps), for: .cleanup)
            context.logger.info("deleted log", metadata: ["log": "\(log.name)", "id": "\(log.id)"])
            context.emit(.deleted(context: requester, .success(log.id)))
        }
    }

    // MARK: Shutdown

    /// Refuses new appends and logs, lets in-flight writes and syncs finish, and writes a clean
    /// checkpoint for every log; `.shutdownComplete` follows. A restart after it scans nothing.
    public func beginShutdown() {
        context.beginShutdown()
        for log in logsByID.values { log.wantCleanCheckpoint() }
        checkShutdownProgress()
    }

    private func checkShutdownProgress() {
        guard context.shuttingDown, !shutdownAnnounced else { return }
        var done = creationsInFlight == 0 && deletingLogs.isEmpty
        for log in logsByID.values where log.failure == nil && !log.cleanCheckpointDone {
            log.checkpointIfDue(nowMicros: context.environment.wallMicros())
            done = false
        }
        if done {
            shutdownAnnounced = true
            context.emit(.shutdownComplete(clean: logsByID.values.allSatisfy { $0.failure == nil && $0.cleanCheckpointWritten }))
        }
    }

    /// Every descriptor the store holds, for closing at exit (the data directory's lock goes with
    /// it). The store must not be used afterwards.
    public func closeAllDescriptors() -> [Int32] {
        var fds: [Int32] = []
        for log in logsByID.values { fds.append(contentsOf: log.descriptorsToClose()) }
        for entry in deletingLogs.values { fds.append(contentsOf: entry.log.descriptorsToClose()) }
        fds.append(contentsOf: directory.takeDescriptors())
        logsByID.removeAll()
        logsByName.removeAll()
        return fds
    }

    // MARK: Driving

    /// The next queued disk request, in issue order.
    public func takeRequest() -> DiskRequest? { context.requests.take() }

    public var hasQueuedRequests: Bool { context.requests.hasQueued }

    /// Requests issued and not yet completed.
    public var requestsInFlight: Int { context.requests.count }

    /// The next event for the driver, oldest first.
    public func nextEvent() -> StoreEvent? { context.events.popFirst() }

    /// Drops the events not yet taken (for drivers that only count on the store's state).
    public func discardEvents() { context.events.removeAll(keepingCapacity: true) }

    /// Reports the result of a request taken with `takeRequest`.
    public func complete(token: UInt64, result: DiskResult) {
        switch context.requests.complete(token: token, result: result) {
        case .operation(let log, let operation, let result):
            log.completed(operation, result: result)
            if log.deleting { continueDeleting(log) }
        case .script(let run, let result):
            scriptFinished(run, result)
        case .nothing:
            break
        }
    }

    private func scriptFinished(_ run: DiskRequests.ScriptRun, _ result: Result<Void, StorageError>) {
        switch run.purpose {
        case .log(let log, let script):
            log.scriptFinished(script, run.script, result, nowMicros: context.environment.wallMicros())
            if log.deleting { continueDeleting(log) }
        case .createLog(let meta, let staging, let requester):
            creationFinished(meta: meta, staging: staging, requester: requester, script: run.script, result)
        case .deleteLog(let log, let requester):
            deletionFinished(log, requester: requester, result)
        case .cleanup:
            if case .failure(let error) = result { context.logger.warning("cleanup step failed", metadata: ["error": "\(error)"]) }
        }
        checkShutdownProgress()
    }

    /// Issues the writes and fdatasyncs that appends and completions made possible.
    public func flush() {
        for log in context.takeDirtyLogs() {
            log.isDirty = false
            _ = log.issueIO()
        }
        checkShutdownProgress()
    }

    /// Time-driven work: checkpoints, retention, pruning the cache index. Call a few times a second.
    public func maintain() {
        let now = context.environment.wallMicros()
        let oldestResident = context.tail.oldestResident
        for log in logsByID.values {
            log.state.tail.prune(oldestResident: oldestResident)
            log.retryCursorsIfWanted()
            guard log.failure == nil else { continue }
            log.applyRetention(nowMicros: now)
            log.checkpointIfDue(nowMicros: now)
        }
    }

    /// The oldest tail-cache sequence some log has not written to disk yet.
    private func unwrittenFloor() -> UInt64 {
        var floor = UInt64.max
        for log in logsByID.values { if let sequence = log.unwrittenSequence { floor = min(floor, sequence) } }
        for entry in deletingLogs.values { if let sequence = entry.log.unwrittenSequence { floor = min(floor, sequence) } }
        return floor
    }

    /// Latency and group-commit samples gathered since the last call.
    public func takeSamples() -> (fdatasyncNanos: [UInt64], batchesPerCommit: [Int]) {
        defer {
            context.statistics.fdatasyncNanos.removeAll(keepingCapacity: true)
            context.statistics.batchesPerCommit.removeAll(keepingCapacity: true)
        }
        return (context.statistics.fdatasyncNanos, context.statistics.batchesPerCommit)
    }
}
