import Glibc
import RingLogWire

/// The life of one log's segment files: the next segment prepared ahead (a spare, created and
/// fallocated off the append path), rotation into it when the active segment is full, deleting
/// segments below the start, closing descriptors once nothing reads them.
final class SegmentFiles {
    enum Spare {
        case none
        case preparing
        case ready(fd: Int32, name: String)
        case failed(StorageError, atMicros: UInt64)
    }

    private let state: LogState
    private let context: LogContext
    private(set) var spare = Spare.none
    /// Numbers each spare's file name (see `LogFileNames.spare`).
    private var spareNumber: UInt64 = 0
    /// An append waits for the next segment.
    private(set) var awaitingSpace = false
    /// A spare that failed (usually ENOSPC) is retried no sooner than this after the failure.
    static let spareRetryMicros: UInt64 = 1_000_000

    init(state: LogState, context: LogContext) {
        self.state = state
        self.context = context
    }

    /// Bytes allocated to segment files, the spare included.
    var diskBytes: Int {
        var bytes = state.segments.reduce(0) { $0 + $1.allocatedEnd }
        if case .ready = spare { bytes += spareBytes }
        return bytes
    }

    /// What a spare is allocated with: the first step of a segment, not all of it.
    private var spareBytes: Int { context.configuration.initialAllocation(segmentBytes: state.settings.segmentBytes) }

    /// Makes room for a batch of `length` bytes: nothing to do while the active segment holds it;
    /// otherwise rotates into the spare (once everything reserved is written, so undoing a failed
    /// write never reaches back across a segment boundary). Returns nil when the batch can go in,
    /// else why it must wait or fail.
    @inline(__always)
    func makeRoom(for length: Int, fullyWritten: Bool, nowMicros: UInt64, for log: Log) -> AppendOutcome? {
        let active = state.activeSegment
        guard active.base.distance(to: state.positions.reserved) + length > active.fileBytes else { return nil }
        return rotate(fullyWritten: fullyWritten, nowMicros: nowMicros, for: log)
    }

    /// The active segment is full: rotate into the spare, or wait for one.
    private func rotate(fullyWritten: Bool, nowMicros: UInt64, for log: Log) -> AppendOutcome? {
        let active = state.activeSegment
        guard fullyWritten else { return waitForSpace() }
        switch spare {
        case .ready(let fd, let spareName):
            spare = .none
            active.sealed = true
            let reserved = state.positions.reserved
            let segment = Segment(
                base: reserved, fileBytes: state.settings.segmentBytes, allocatedBytes: spareBytes, fd: fd, dataEnd: reserved, syncedEnd: reserved,
                nameDurable: false, index: SparseIndex(intervalBytes: UInt32(context.configuration.indexIntervalBytes)))
            state.segments.append(segment)
            let script = DiskScript([
                .rename(from: state.directory.appending(spareName), to: state.directory.appending(LogFileNames.segment(segment.base))),
                .fsync(.fd(state.directoryFD)),
            ])
            context.requests.start(script, for: .log(log, .rotate(segment)))
            return nil
        case .preparing:
            return waitForSpace()
        case .none:
            prepareSpare(for: log)
            return waitForSpace()
        case .failed(let error, let failedAt):
            if nowMicros < failedAt + SegmentFiles.spareRetryMicros { return .failed(error) }
            prepareSpare(for: log)
            return waitForSpace()
        }
    }

    private func waitForSpace() -> AppendOutcome {
        awaitingSpace = true
        return .wouldBlock
    }

    /// Starts preparing the spare once the active segment is filled past `preallocateAtFill`.
    @inline(__always)
    func prepareSpareIfDue(for log: Log) {
        guard case .none = spare else { return }
        let active = state.activeSegment
        let filled = Double(active.base.distance(to: state.positions.reserved)) / Double(active.fileBytes)
        if filled >= context.configuration.preallocateAtFill { prepareSpare(for: log) }
    }

    private func prepareSpare(for log: Log) {
        spare = .preparing
        spareNumber += 1
        let script = DiskScript([
            .open(state.directory.appending(LogFileNames.spare(spareNumber)), flags: O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o644, as: "spare"),
            .fallocate(.opened("spare"), length: Int64(spareBytes)),
            .fsync(.opened("spare")),
        ])
        context.requests.start(script, for: .log(log, .prepareSpare))
    }

    func spareFinished(_ script: DiskScript, _ result: Result<Void, StorageError>, nowMicros: UInt64, for log: Log) {
        let spareName = LogFileNames.spare(spareNumber)
        switch result {
        case .success:
            let fd = script.openedDescriptor("spare")
            if state.deleting || state.failure != nil {
                context.requests.close(fd)
                spare = .none
            } else {
                spare = .ready(fd: fd, name: spareName)
            }
        case .failure(let error):
            if case .io(_, let errno, let detail) = error {
                spare = .failed(
                    StorageError.fromWriteFailure(errno: errno, detail: "preallocating the next segment of \(state.name): \(detail)"), atMicros: nowMicros)
            } else {
                spare = .failed(error, atMicros: nowMicros)
            }
            context.requests.start(DiskScript([.unlink(state.directory.appending(spareName), isDirectory: false, ignoreMissing: true)]), for: .log(log, .cleanup))
        }
    }

    /// The renamed segment's name is durable: its batches may commit.
    func rotationFinished(_ segment: Segment, _ result: Result<Void, StorageError>) -> StorageError? {
        switch result {
        case .success:
            segment.nameDurable = true
            return nil
        case .failure(let error):
            return .storageFailed("could not rename the preallocated segment into place: \(error)")
        }
    }

    /// Appends waiting for the next segment may try again: returns whether any was.
    func takeAwaitingSpace() -> Bool {
        defer { awaitingSpace = false }
        return awaitingSpace
    }

    /// Deletes the sealed segments wholly below the start (made durable by a checkpoint): their
    /// descriptors close once nothing reads them, their files and index files go.
    func deleteSegmentsBelowStart(for log: Log) {
        var doomed: [Segment] = []
        while state.segments.count > 1, state.segments[0].sealed, state.segments[0].dataEnd <= state.positions.start {
            doomed.append(state.segments.removeFirst())
        }
        guard !doomed.isEmpty else { return }
        var steps: [DiskScript.Step] = []
        for segment in doomed {
            segment.deleted = true
            if segment.readLeases == 0 { close(segment) }
            steps.append(.unlink(state.directory.appending(LogFileNames.segment(segment.base)), isDirectory: false, ignoreMissing: true))
            steps.append(.unlink(state.directory.appending(LogFileNames.index(segment.base)), isDirectory: false, ignoreMissing: true))
        }
        steps.append(.fsync(.fd(state.directoryFD)))
        context.requests.start(DiskScript(steps), for: .log(log, .cleanup))
    }

    /// An operation on `segment` (a read, a zero chunk) finished; a deleted segment closes with
    /// its last one.
    func releaseLease(_ segment: Segment) {
        precondition(segment.readLeases > 0, "a lease released twice")
        segment.readLeases -= 1
        if segment.deleted && segment.readLeases == 0 { close(segment) }
    }

    private func close(_ segment: Segment) {
        guard segment.fd >= 0 else { return }
        context.requests.close(segment.fd)
        segment.fd = -1
    }

    /// Descriptors to close once the log's directory is gone (or the store closes).
    func descriptorsToClose() -> [Int32] {
        var fds: [Int32] = []
        for segment in state.segments where segment.fd >= 0 && segment.readLeases == 0 {
            fds.append(segment.fd)
            segment.fd = -1
            segment.deleted = true
        }
        for segment in state.segments where segment.fd >= 0 { segment.deleted = true }
        if case .ready(let fd, _) = spare { fds.append(fd) }
        spare = .none
        if state.directoryFD >= 0 { fds.append(state.directoryFD) }
        state.directoryFD = -1
        return fds
    }

    /// File names a deleted log's directory may hold.
    func fileNames() -> [String] {
        var names = [LogFileNames.meta, LogFileNames.checkpoint, LogFileNames.checkpointTemporary, LogFileNames.cursorSlot(0), LogFileNames.cursorSlot(1)]
        if case .ready(_, let spareName) = spare { names.append(spareName) }
        if spareNumber > 0 { names.append(LogFileNames.spare(spareNumber)) }
        for segment in state.segments {
            names.append(LogFileNames.segment(segment.base))
            names.append(LogFileNames.index(segment.base))
        }
        return names
    }
}
