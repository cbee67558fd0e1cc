import RingLogIO
import DequeModule
import Glibc
import Logging
import RingLogWire

/// A data directory of named logs, and the one place their I/O requests come from.
///
/// Layout (docs/storage.md): `LOCK`, `logs/<name>/` for each log, `staging/` for logs being
/// created, `trash/` for logs being deleted.
///
/// Driving it: call the data-path and admin methods; then take the requests it queued
/// (`takeRequest`), carry them out, and report each result with `complete(token:result:)`; call
/// `flush()` after each batch of completions and `maintain()` a few times a second; drain `events`.
/// Everything happens on one thread; nothing here blocks except `open`.
public final class LogStore {
    public let configuration: StoreConfiguration
    public let rootPath: String
    let logsDirectory: CPath
    let trashDirectory: CPath
    let stagingDirectory: CPath
    let tail: TailBuffer
    /// The zeros zero-ahead writes (one chunk, allocated once; nil when zero-ahead is off).
    let zeroChunk: OwnedBytes?
    /// Read buffers, recycled: a catch-up reader's multi-megabyte reads reuse the same pages.
    public let readBuffers = BufferPool(maxPooledBytes: 16 << 20)
    /// Cleared the first time the kernel refuses uncached I/O; every write and read is cached after.
    private(set) var uncachedIOWorks = true
    let logger: Logger
    /// Wall-clock microseconds since the Unix epoch (injectable for tests).
    let clock: () -> UInt64

    private var logsByID: [LogID: Log] = [:]
    private var logsByName: [String: Log] = [:]
    /// Names being created or deleted: not free, not usable.
    private var reservedNames: Set<String> = []
    private var deletingLogs: [LogID: (log: Log, context: UInt64, started: Bool)] = [:]
    private var creationsInFlight = 0
    private var lockFD: Int32 = -1
    private var logsDirectoryFD: Int32 = -1
    private var trashDirectoryFD: Int32 = -1

    private var outbox: Deque<DiskRequest> = []
    private var inFlight: [UInt64: Purpose] = [:]
    private var nextToken: UInt64 = 1
    public var events: Deque<StoreEvent> = []
    private var dirtyLogs: [Log] = []
    private var pinnedFloor: UInt64 = 0
    /// An append was refused for lack of room in the tail cache; the next write of any log wakes it.
    var appendsWaitingForCache = false
    private(set) var shuttingDown = false
    private var shutdownAnnounced = false

    public private(set) var recoveryReports: [RecoveryReport] = []
    public private(set) var statistics = StoreStatistics()

    enum Purpose {
        case segmentWrite(Log, start: LogOffset, length: Int, uncached: Bool)
        case segmentSync(Log, Segment)
        case segmentRead(Log, Log.ReadRun, uncached: Bool)
        /// Zero-ahead: writing a chunk of zeros, then writing it back.
        case zeroWrite(Log, Segment, Range<Int>)
        case zeroWriteback(Log, Segment, Range<Int>)
        case script(ScriptRun)
        case close
    }

    enum ScriptPurpose {
        case prepareSpare(Log)
        case rotate(Log, Segment)
        case checkpoint(Log, CheckpointPlan)
        case createLog(meta: LogMeta, staging: CPath, context: UInt64)
        case deleteLog(Log, context: UInt64)
        /// Removing files inside a log's directory: counted as the log's work, so deleting the log
        /// (and perhaps creating another under its name) waits for it.
        case logCleanup(Log)
        case cleanup
    }

    final class ScriptRun {
        let script: DiskScript
        let purpose: ScriptPurpose
        init(script: DiskScript, purpose: ScriptPurpose) {
            self.script = script
            self.purpose = purpose
        }
    }

    private init(configuration: StoreConfiguration, rootPath: String, clock: @escaping () -> UInt64, logger: Logger) {
        self.configuration = configuration
        self.rootPath = rootPath
        logsDirectory = CPath(rootPath + "/logs")
        trashDirectory = CPath(rootPath + "/trash")
        stagingDirectory = CPath(rootPath + "/staging")
        tail = TailBuffer(capacity: configuration.tailCacheBytes)
        zeroChunk = configuration.zeroAheadBytes > 0 ? OwnedBytes(zeroedCount: configuration.zeroChunkBytes) : nil
        self.clock = clock
        self.logger = logger
    }

    // MARK: Opening

    /// Opens (creating if needed) the data directory at `path`, locks it, finishes interrupted
    /// creations and deletions, and recovers every log. Blocking; runs before serving.
    public static func open(
        path: String, configuration: StoreConfiguration, disk: DiskIO, clock: @escaping () -> UInt64 = wallClockMicros,
        logger: Logger = Logger(label: "ringlog.storage")
    ) -> Result<LogStore, StorageError> {
        let problems = configuration.problems()
        if !problems.isEmpty { return .failure(.badSettings(problems)) }
        let root = absolutePath(path)
        let store = LogStore(configuration: configuration, rootPath: root, clock: clock, logger: logger)
        return store.openDirectories(disk: disk).flatMap { store.recoverLogs(disk: disk) }.map { store }
    }

    private func openDirectories(disk: DiskIO) -> Result<Void, StorageError> {
        let root = CPath(rootPath)
        var ancestors: [String] = []
        var prefix = ""
        for component in rootPath.split(separator: "/") {
            prefix += "/" + component
            ancestors.append(prefix)
        }
        let wanted = ancestors.map(CPath.init) + [logsDirectory, trashDirectory, stagingDirectory]
        for (index, directory) in wanted.enumerated() {
            let made = disk.perform(.mkdir(path: directory, mode: 0o755))
            if made < 0 && made != -Int64(EEXIST) {
                return .failure(.io(operation: "mkdir", errno: Int32(-made), detail: directory.string))
            }
            // A new directory's entry is durable only once its parent is fsynced.
            guard made == 0 else { continue }
            let parent = index == 0 ? CPath("/") : (index < ancestors.count ? CPath(ancestors[index - 1]) : root)
            if case .failure(let error) = syncDirectory(parent, disk: disk) { return .failure(error) }
        }
        switch disk.lockExclusively(root.appending("LOCK")) {
        case .failure(let error): return .failure(error)
        case .success(let fd): lockFD = fd
        }
        for directory in [stagingDirectory, trashDirectory] {
            guard case .success(let names) = disk.listDirectory(directory) else { continue }
            for name in names {
                logger.notice("removing leftover \(directory.string)/\(name) from an interrupted create or delete")
                if case .failure(let error) = removeDirectory(directory.appending(name), disk: disk) { return .failure(error) }
            }
        }
        let directoryFlags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
        logsDirectoryFD = Int32(truncatingIfNeeded: disk.perform(.open(path: logsDirectory, flags: directoryFlags, mode: 0)))
        trashDirectoryFD = Int32(truncatingIfNeeded: disk.perform(.open(path: trashDirectory, flags: directoryFlags, mode: 0)))
        guard logsDirectoryFD >= 0, trashDirectoryFD >= 0 else {
            return .failure(.io(operation: "open", errno: EIO, detail: "could not open \(logsDirectory) or \(trashDirectory)"))
        }
        return .success(())
    }

    private func recoverLogs(disk: DiskIO) -> Result<Void, StorageError> {
        let names: [String]
        switch disk.listDirectory(logsDirectory) {
        case .failure(let error): return .failure(error)
        case .success(let listed): names = listed.sorted()
        }
        for name in names {
            switch LogRecovery.recover(directory: logsDirectory.appending(name), store: self, disk: disk) {
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

    private func syncDirectory(_ directory: CPath, disk: DiskIO) -> Result<Void, StorageError> {
        disk.run(.open(path: directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0)).flatMap { fd in
            defer { _ = disk.perform(.close(fd: Int32(fd))) }
            return disk.run(.fsync(fd: Int32(fd))).map { _ in () }
        }
    }

    private func removeDirectory(_ directory: CPath, disk: DiskIO) -> Result<Void, StorageError> {
        if case .success(let names) = disk.listDirectory(directory) {
            for name in names {
                let removed = disk.perform(.unlink(path: directory.appending(name), isDirectory: false))
                if removed < 0 && removed != -Int64(ENOENT) {
                    return .failure(.io(operation: "unlink", errno: Int32(-removed), detail: "\(directory)/\(name)"))
                }
            }
        }
        let removed = disk.perform(.unlink(path: directory, isDirectory: true))
        if removed < 0 && removed != -Int64(ENOENT) {
            return .failure(.io(operation: "rmdir", errno: Int32(-removed), detail: directory.string))
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
    public func append(to id: LogID, batch: UnsafeRawBufferPointer) -> AppendOutcome {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return append(to: log, batch: batch)
    }

    /// The same, for a log the caller looked up earlier (a deleted log refuses the batch as
    /// unknown), which spares a dictionary lookup per append.
    public func append(to log: Log, batch: UnsafeRawBufferPointer) -> AppendOutcome {
        if shuttingDown { return .failed(.shuttingDown) }
        return log.append(batch, nowMicros: clock())
    }

    /// Reads whole committed batches from `offset`. See `Log.read`.
    public func read(from id: LogID, offset: LogOffset, maxBytes: Int, context: UInt64) -> ReadStart {
        guard let log = logsByID[id] else { return .failed(.unknownLog("id \(id)")) }
        return log.read(from: offset, maxBytes: max(1, maxBytes), purpose: .client(context: context))
    }

    /// Advances the log's start; a `.trimmed` event answers.
    public func trim(_ id: LogID, to offset: LogOffset, context: UInt64) {
        guard let log = logsByID[id] else {
            emit(.trimmed(context: context, .failure(.unknownLog("id \(id)"))))
            return
        }
        log.trim(to: offset, context: context)
    }

    // MARK: Creating and deleting logs

    /// Creates a log; a `.created` event answers. The log appears only once its directory, metadata,
    /// first segment and checkpoint are all durable.
    public func createLog(named name: String, settings: LogSettings? = nil, context: UInt64) {
        let settings = settings ?? configuration.defaultLogSettings
        if let problem = LogName.problem(with: name) {
            emit(.created(context: context, .failure(.badLogName(problem))))
            return
        }
        if shuttingDown {
            emit(.created(context: context, .failure(.shuttingDown)))
            return
        }
        if logsByName[name] != nil || reservedNames.contains(name) {
            emit(.created(context: context, .failure(.logExists(name))))
            return
        }
        let problems = settings.problems(maxBatchBytes: configuration.maxBatchBytes)
        if !problems.isEmpty {
            emit(.created(context: context, .failure(.badSettings(problems))))
            return
        }
        var id = LogID(UInt32.random(in: 1...UInt32.max))
        while logsByID[id] != nil || deletingLogs[id] != nil { id = LogID(UInt32.random(in: 1...UInt32.max)) }
        let now = clock()
        let meta = LogMeta(logID: id, name: name, createdMicros: now, settings: settings)
        let staging = stagingDirectory.appending("\(name).\(id)")
        let checkpoint = Checkpoint(logID: id, epoch: 1, clean: false, startOffset: .zero, checkpointOffset: .zero, writtenAtMicros: now)
        let create = O_CREAT | O_EXCL | O_CLOEXEC
        let script = DiskScript([
            .mkdir(staging, ignoreExisting: false),
            .open(staging.appending(LogFileNames.meta), flags: O_WRONLY | create, mode: 0o644),
            .write(.openedBy(step: 1), position: 0, OwnedBytes(meta.encoded())),
            .fdatasync(.openedBy(step: 1)),
            .close(.openedBy(step: 1)),
            .open(staging.appending(LogFileNames.segment(.zero)), flags: O_RDWR | create, mode: 0o644),
            .fallocate(.openedBy(step: 5), length: Int64(settings.segmentBytes)),
            .fsync(.openedBy(step: 5)),
            .open(staging.appending(LogFileNames.checkpoint), flags: O_WRONLY | create, mode: 0o644),
            .write(.openedBy(step: 8), position: 0, OwnedBytes(checkpoint.encoded())),
            .fdatasync(.openedBy(step: 8)),
            .close(.openedBy(step: 8)),
            .open(staging, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0),
            .fsync(.openedBy(step: 12)),
            .rename(from: staging, to: logsDirectory.appending(name)),
            .fsync(.fd(logsDirectoryFD)),
        ])
        reservedNames.insert(name)
        creationsInFlight += 1
        start(script, for: .createLog(meta: meta, staging: staging, context: context))
    }

    private func creationFinished(meta: LogMeta, staging: CPath, context: UInt64, script: DiskScript, _ result: Result<Void, StorageError>) {
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
            start(DiskScript(cleanup), for: .cleanup)
            emit(.created(context: context, .failure(reported)))
        case .success:
            let index = SparseIndex(intervalBytes: UInt32(configuration.indexIntervalBytes))
            let segment = Segment(
                base: .zero, fileBytes: meta.settings.segmentBytes, fd: script.openedDescriptor(step: 5), dataEnd: .zero,
                syncedEnd: .zero, nameDurable: true, index: index)
            let log = Log(
                meta: meta, directory: logsDirectory.appending(meta.name), directoryFD: script.openedDescriptor(step: 12),
                store: self, segments: [segment], epoch: 1, startOffset: .zero, end: .zero, checkpointOffset: .zero,
                nowMicros: clock())
            register(log)
            if shuttingDown { log.cleanCheckpointWanted = true }
            logger.info("created log", metadata: ["log": "\(meta.name)", "id": "\(meta.logID)"])
            emit(.created(context: context, .success(log.info)))
        }
        checkShutdownProgress()
    }

    /// Deletes a log; a `.deleted` event answers once its directory has left `logs/` durably.
    /// Appends not yet committed are failed at once (an `.appendsRewound` event).
    public func deleteLog(named name: String, context: UInt64) {
        if let problem = LogName.problem(with: name) {
            emit(.deleted(context: context, .failure(.badLogName(problem))))
            return
        }
        guard let log = logsByName[name] else {
            emit(.deleted(context: context, .failure(.unknownLog(name))))
            return
        }
        logsByName[name] = nil
        logsByID[log.id] = nil
        reservedNames.insert(name)
        deletingLogs[log.id] = (log, context, false)
        emit(.appendsRewound(log.id, from: log.committedEnd, .unknownLog(name)))
        log.beginDeleting()
        continueDeleting(log)
    }

    private func continueDeleting(_ log: Log) {
        guard let entry = deletingLogs[log.id], !entry.started, log.operationsInFlight == 0 else { return }
        deletingLogs[log.id]?.started = true
        let script = DiskScript([
            .rename(from: log.directory, to: trashDirectory.appending("\(log.name).\(log.id)")),
            .fsync(.fd(logsDirectoryFD)),
            .fsync(.fd(trashDirectoryFD)),
        ])
        start(script, for: .deleteLog(log, context: entry.context))
    }

    private func deletionFinished(_ log: Log, context: UInt64, _ result: Result<Void, StorageError>) {
        deletingLogs[log.id] = nil
        reservedNames.remove(log.name)
        switch result {
        case .failure(let error):
            logger.error("deleting log failed; its directory stays in place", metadata: ["log": "\(log.name)", "error": "\(error)"])
            emit(.deleted(context: context, .failure(error)))
        case .success:
            for fd in log.descriptorsToClose() { issueClose(fd) }
            let trashed = trashDirectory.appending("\(log.name).\(log.id)")
            var steps: [DiskScript.Step] = log.fileNames().map { .unlink(trashed.appending($0), isDirectory: false, ignoreMissing: true) }
            steps.append(.unlink(trashed, isDirectory: true, ignoreMissing: true))
            start(DiskScript(steps), for: .cleanup)
            logger.info("deleted log", metadata: ["log": "\(log.name)", "id": "\(log.id)"])
            emit(.deleted(context: context, .success(log.id)))
        }
        checkShutdownProgress()
    }

    // MARK: Shutdown

    /// Refuses new appends and logs, lets in-flight writes and syncs finish, and writes a clean
    /// checkpoint for every log; `.shutdownComplete` follows. A restart after it scans nothing.
    public func beginShutdown() {
        shuttingDown = true
        for log in logsByID.values { log.cleanCheckpointWanted = true }
        checkShutdownProgress()
    }

    func checkShutdownProgress() {
        guard shuttingDown, !shutdownAnnounced else { return }
        var done = creationsInFlight == 0 && deletingLogs.isEmpty
        for log in logsByID.values where log.failure == nil && !log.cleanCheckpointDone {
            log.checkpointIfDue(nowMicros: clock())
            done = false
        }
        if done {
            shutdownAnnounced = true
            emit(.shutdownComplete(clean: logsByID.values.allSatisfy { $0.failure == nil && $0.cleanCheckpointWritten }))
        }
    }

    /// Every descriptor the store holds, for closing at exit (the data directory's lock goes with
    /// it). The store must not be used afterwards.
    public func closeAllDescriptors() -> [Int32] {
        var fds: [Int32] = []
        for log in logsByID.values { fds.append(contentsOf: log.descriptorsToClose()) }
        for entry in deletingLogs.values { fds.append(contentsOf: entry.log.descriptorsToClose()) }
        fds.append(contentsOf: [logsDirectoryFD, trashDirectoryFD, lockFD].filter { $0 >= 0 })
        logsDirectoryFD = -1
        trashDirectoryFD = -1
        lockFD = -1
        logsByID.removeAll()
        logsByName.removeAll()
        return fds
    }

    // MARK: Driving

    /// The next queued disk request, in issue order.
    public func takeRequest() -> DiskRequest? { outbox.popFirst() }

    public var hasQueuedRequests: Bool { !outbox.isEmpty }

    /// Requests issued and not yet completed.
    public var requestsInFlight: Int { inFlight.count }

    /// Reports the result of a request taken with `takeRequest`.
    public func complete(token: UInt64, result: DiskResult) {
        guard let purpose = inFlight.removeValue(forKey: token) else { preconditionFailure("unknown disk request token \(token)") }
        switch purpose {
        case .segmentWrite(let log, let start, let length, let uncached):
            log.operationsInFlight -= 1
            statistics.writes += 1
            if uncached && result > 0 { statistics.uncachedWrites += 1 }
            log.writeFinished(start: start, length: length, uncached: uncached, result: result)
            afterOperation(on: log)
        case .segmentSync(let log, let segment):
            log.operationsInFlight -= 1
            statistics.noteSync(nanos: MonotonicClock.nanos() &- segment.syncIssuedNanos)
            log.syncFinished(segment, result: result)
            afterOperation(on: log)
        case .segmentRead(let log, let run, let uncached):
            log.operationsInFlight -= 1
            log.readFinished(run, uncached: uncached, result: result)
            afterOperation(on: log)
        case .zeroWrite(let log, let segment, let range):
            log.operationsInFlight -= 1
            log.zeroWriteFinished(segment, range, result: result)
            afterOperation(on: log)
        case .zeroWriteback(let log, let segment, let range):
            log.operationsInFlight -= 1
            if result >= 0 { statistics.zeroChunks += 1 }
            log.zeroWritebackFinished(segment, range, result: result)
            afterOperation(on: log)
        case .script(let run):
            switch run.script.complete(result) {
            case .next(let operation): enqueue(operation, for: .script(run))
            case .finished: scriptFinished(run, .success(()))
            case .failed(let error, _):
                for fd in run.script.descriptorsLeftOpen() { issueClose(fd) }
                scriptFinished(run, .failure(error))
            }
        case .close:
            break
        }
    }

    /// Issues the writes and fdatasyncs that appends and completions made possible.
    public func flush() {
        let logs = dirtyLogs
        dirtyLogs.removeAll(keepingCapacity: true)
        for log in logs {
            log.isDirty = false
            _ = log.issueIO()
        }
        checkShutdownProgress()
    }

    /// Time-driven work: checkpoints, retention, pruning the cache index. Call a few times a second.
    public func maintain() {
        let now = clock()
        let oldestResident = tail.oldestResident
        for log in logsByID.values {
            log.tail.prune(oldestResident: oldestResident)
            guard log.failure == nil else { continue }
            log.applyRetention(nowMicros: now)
            log.checkpointIfDue(nowMicros: now)
        }
    }

    // MARK: Used by logs

    func issue(_ operation: DiskOperation, for purpose: Purpose) {
        switch purpose {
        case .segmentWrite(let log, _, _, _), .segmentSync(let log, _), .segmentRead(let log, _, _), .zeroWrite(let log, _, _),
            .zeroWriteback(let log, _, _):
            log.operationsInFlight += 1
        case .script, .close: break
        }
        enqueue(operation, for: purpose)
    }

    private func enqueue(_ operation: DiskOperation, for purpose: Purpose) {
        let token = nextToken
        nextToken += 1
        inFlight[token] = purpose
        outbox.append(DiskRequest(token: token, operation: operation))
    }

    func start(_ script: DiskScript, for purpose: ScriptPurpose) {
        if let log = purpose.log { log.operationsInFlight += 1 }
        let run = ScriptRun(script: script, purpose: purpose)
        switch script.start() {
        case .next(let operation): enqueue(operation, for: .script(run))
        case .finished: scriptFinished(run, .success(()))
        case .failed(let error, _): scriptFinished(run, .failure(error))
        }
    }

    func issueClose(_ fd: Int32) {
        enqueue(.close(fd: fd), for: .close)
    }

    private func scriptFinished(_ run: ScriptRun, _ result: Result<Void, StorageError>) {
        if let log = run.purpose.log { log.operationsInFlight -= 1 }
        switch run.purpose {
        case .prepareSpare(let log): log.spareFinished(run.script, result, nowMicros: clock())
        case .rotate(let log, let segment): log.rotationFinished(segment, result)
        case .checkpoint(let log, let plan): log.checkpointFinished(plan, result)
        case .createLog(let meta, let staging, let context):
            creationFinished(meta: meta, staging: staging, context: context, script: run.script, result)
        case .deleteLog(let log, let context): deletionFinished(log, context: context, result)
        case .cleanup, .logCleanup:
            if case .failure(let error) = result { logger.warning("cleanup step failed", metadata: ["error": "\(error)"]) }
        }
        if let log = run.purpose.log { afterOperation(on: log) }
    }

    private func afterOperation(on log: Log) {
        if log.deleting { continueDeleting(log) }
    }

    func markDirty(_ log: Log) {
        guard !log.isDirty else { return }
        log.isDirty = true
        dirtyLogs.append(log)
    }

    func emit(_ event: StoreEvent) { events.append(event) }

    func logFailed(_ log: Log, _ error: StorageError) {
        logger.critical(
            "log stopped accepting writes", metadata: ["log": "\(log.name)", "committed": "\(log.committedEnd)", "error": "\(error)"])
        emit(.logFailed(log.id, error))
    }

    /// Room for `count` bytes in the tail cache, or nil while unwritten bytes fill it.
    func allocateTail(_ count: Int) -> UInt64? {
        if let sequence = tail.allocate(count, pinnedFloor: pinnedFloor) { return sequence }
        pinnedFloor = tail.head
        for log in logsByID.values { if let sequence = log.unwrittenSequence { pinnedFloor = min(pinnedFloor, sequence) } }
        for entry in deletingLogs.values { if let sequence = entry.log.unwrittenSequence { pinnedFloor = min(pinnedFloor, sequence) } }
        return tail.allocate(count, pinnedFloor: pinnedFloor)
    }

    /// Latency and group-commit samples gathered since the last call.
    public func takeSamples() -> (fdatasyncNanos: [UInt64], batchesPerCommit: [Int]) {
        defer {
            statistics.fdatasyncNanos.removeAll(keepingCapacity: true)
            statistics.batchesPerCommit.removeAll(keepingCapacity: true)
        }
        return (statistics.fdatasyncNanos, statistics.batchesPerCommit)
    }

    func uncachedIOUnsupported() {
        guard uncachedIOWorks else { return }
        uncachedIOWorks = false
        logger.notice("uncached I/O (RWF_DONTCACHE, Linux 6.14+) is not supported here; large batches and cold reads go through the page cache")
    }

    func noteCommit(batches: Int) { statistics.noteCommit(batches: batches) }

    func noteTailRead(hit: Bool) {
        if hit { statistics.tailReadHits += 1 } else { statistics.tailReadMisses += 1 }
    }

    /// Wall-clock microseconds since the Unix epoch.
    public static func wallClockMicros() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }

    private static func absolutePath(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.hasPrefix("/") { return trimmed }
        guard let cwd = getcwd(nil, 0) else { return trimmed }
        defer { free(cwd) }
        let base = String(cString: cwd)
        return trimmed == "." ? base : base + "/" + trimmed
    }
}

extension LogStore.ScriptPurpose {
    var log: Log? {
        switch self {
        case .prepareSpare(let log), .rotate(let log, _), .checkpoint(let log, _), .logCleanup(let log): log
        case .createLog, .deleteLog, .cleanup: nil
        }
    }
}

/// Counters for metrics and tests.
public struct StoreStatistics: Sendable {
    public var writes = 0
    /// Segment writes that went out uncached (`StoreConfiguration.uncachedBatchBytes`).
    public var uncachedWrites = 0
    /// Zero-ahead chunks written and written back.
    public var zeroChunks = 0
    public var fdatasyncs = 0
    public var tailReadHits = 0
    public var tailReadMisses = 0
    /// How long each fdatasync took, and how many batches each advance of a committed end covered
    /// (group commit), since the last `takeSamples`. Bounded: samples past the cap are dropped.
    public var fdatasyncNanos: [UInt64] = []
    public var batchesPerCommit: [Int] = []
    static let sampleCap = 1 << 16

    public init() {}

    mutating func noteSync(nanos: UInt64) {
        fdatasyncs += 1
        if fdatasyncNanos.count < StoreStatistics.sampleCap { fdatasyncNanos.append(nanos) }
    }

    mutating func noteCommit(batches: Int) {
        if batchesPerCommit.count < StoreStatistics.sampleCap { batchesPerCommit.append(batches) }
    }
}
