import DequeModule
import Glibc
import RingLogWire

/// Appending and group commit for one log: placing batches in the tail cache, writing them to the
/// active segment, one fdatasync in flight per segment covering everything written before it, and
/// moving the committed end; zero-ahead keeps the space just past the appends written.
final class LogWriter {
    private let state: LogState
    private let context: LogContext
    private var writeIssuedEnd: LogOffset
    private(set) var writeInFlight = false
    /// Where each batch above the committed end ends, oldest first. Writes are split at size and
    /// cache boundaries, so the written and synced positions can fall inside a batch; the
    /// committed end only ever moves to one of these.
    /// Beside each end, the record number after that batch (the checkpoint's record count when
    /// the committed end reaches it).
    private var uncommittedBatchEnds: Deque<(end: LogOffset, nextRecord: UInt64)> = []
    /// A moving average of the bytes each fdatasync covered (zero-ahead runs while it is small).
    private var recentSyncBytes = 0

    init(state: LogState, context: LogContext) {
        self.state = state
        self.context = context
        writeIssuedEnd = state.positions.reserved
    }

    /// Whether everything reserved has been written (a segment is rotated only then, so undoing a
    /// failed write never reaches back across a segment boundary).
    var fullyWritten: Bool { state.positions.written == state.positions.reserved }

    /// Copies a validated batch into the tail cache at the end of the active segment, which has
    /// room for it, and stamps its server fields. Nil when the tail cache has no room.
    func place(_ batch: UnsafeRawBufferPointer, recordCount: UInt32, nowMicros: UInt64) -> (offset: LogOffset, end: LogOffset, appendMicros: UInt64)? {
        let length = batch.count
        let segment = state.activeSegment
        precondition(segment.base.distance(to: state.positions.reserved) + length <= segment.fileBytes, "a batch never crosses a segment's end")
        guard let sequence = context.allocateTail(length) else {
            // Any log's write can make room in the shared cache: the store wakes this one.
            context.appendsWaitingForCache = true
            return nil
        }
        let target = context.tail.pointer(sequence)
        target.copyMemory(from: batch.baseAddress!, byteCount: length)
        let (offset, end) = state.positions.reserve(length)
        // Append times never go back within a log, whatever the wall clock does, so they can be
        // searched in order.
        let appendTime = max(nowMicros, state.lastAppendMicros)
        state.lastAppendMicros = appendTime
        let firstRecord = state.nextRecord
        state.nextRecord = firstRecord &+ UInt64(recordCount)
        Batch.stamp(target, offset: offset, appendTimeMicros: appendTime, epoch: state.epoch, firstRecord: firstRecord)
        state.tail.record(logStart: offset, sequence: sequence, length: length)
        segment.index.noteBatch(at: segment.relative(offset))
        segment.maxAppendTimeMicros = max(segment.maxAppendTimeMicros, appendTime)
        segment.dataEnd = end
        uncommittedBatchEnds.append((end, state.nextRecord))
        return (offset, end, appendTime)
    }

    // MARK: Issuing

    /// Issues the write and fdatasyncs the log's state allows. Returns true while work remains.
    func issueIO(for log: Log) -> Bool {
        issueWrite(for: log)
        issueSyncs(for: log)
        issueAllocateAhead(for: log)
        issueZeroAhead(for: log)
        return writeIssuedEnd < state.positions.reserved || state.positions.written > state.positions.committed
    }

    private func issueWrite(for log: Log) {
        guard !writeInFlight, writeIssuedEnd < state.positions.reserved else { return }
        guard let segment = state.segments.last(where: { $0.base <= writeIssuedEnd }) else { preconditionFailure("no segment") }
        guard let (sequence, contiguous) = state.tail.locate(writeIssuedEnd, oldestResident: context.tail.oldestResident) else {
            preconditionFailure("unwritten bytes at \(writeIssuedEnd) left the tail cache")
        }
        let length = min(contiguous, writeIssuedEnd.distance(to: segment.dataEnd), context.configuration.maxWriteBytes)
        // io_uring does not order writes in flight: data never overlaps a zero chunk still in flight.
        if let zeroing = segment.zeroing, Int(segment.filePosition(of: writeIssuedEnd)) + length > zeroing.lowerBound {
            return
        }
        let bytes = UnsafeRawBufferPointer(start: context.tail.pointer(sequence), count: length)
        let uncached = context.uncachedIOWorks && startsInLargeBatch(writeIssuedEnd)
        context.requests.issue(
            .write(fd: segment.fd, position: segment.filePosition(of: writeIssuedEnd), bytes: bytes, uncached: uncached),
            for: log, .segmentWrite(start: writeIssuedEnd, length: length, uncached: uncached))
        writeInFlight = true
        writeIssuedEnd = writeIssuedEnd.advanced(by: length)
    }

    /// Whether the batch holding `offset` (an unwritten byte) is large enough that its write should
    /// not stay in the page cache (`StoreConfiguration.uncachedBatchBytes`).
    private func startsInLargeBatch(_ offset: LogOffset) -> Bool {
        let threshold = context.configuration.uncachedBatchBytes
        guard threshold > 0 else { return false }
        // The batch ends are sorted: find the first one past `offset`; the batch starts at the end
        // before it (or at the committed end).
        let low = uncommittedBatchEnds.partitionPoint { $0.end <= offset }
        guard low < uncommittedBatchEnds.count else { return false }
        let start = low > 0 ? uncommittedBatchEnds[low - 1].end : state.positions.committed
        return start.distance(to: uncommittedBatchEnds[low].end) >= threshold
    }

    /// Group commit: one fdatasync in flight per segment, covering everything written before it.
    private func issueSyncs(for log: Log) {
        for segment in state.segments.reversed() {
            if segment.sealed && segment.syncedEnd == segment.dataEnd { break }
            let written = min(state.positions.written, segment.dataEnd)
            guard !segment.syncInFlight, written > segment.syncedEnd else { continue }
            recentSyncBytes = (recentSyncBytes * 7 + segment.syncedEnd.distance(to: written)) / 8
            segment.syncInFlight = true
            segment.syncIssuedEnd = written
            segment.syncIssuedNanos = context.environment.monotonicNanos()
            context.requests.issue(.fdatasync(fd: segment.fd), for: log, .segmentSync(segment))
        }
    }

    // MARK: Allocate-ahead

    /// Keeps the active segment allocated (fallocate, mode 0: the file grows) at least a quarter
    /// of `allocateAheadBytes` past the appends, topping it up to the whole distance when it runs
    /// short (so in steps of at least three quarters of it), instead of allocating a whole
    /// segment when it is made: disk use follows the data (docs/storage.md, "Allocation"). The
    /// step runs off the append path, ahead of the writes that will land in it; a write that
    /// overtakes it simply grows the file itself.
    private func issueAllocateAhead(for log: Log) {
        let ahead = context.configuration.allocateAheadBytes
        guard ahead > 0, !context.shuttingDown else { return }
        let segment = state.activeSegment
        guard !segment.sealed, !segment.allocating, !segment.allocationStopped, segment.fd >= 0, segment.allocatedEnd < segment.fileBytes else { return }
        let reserved = Int(segment.filePosition(of: state.positions.reserved))
        guard segment.allocatedEnd < reserved + ahead / 4 else { return }
        // From the allocated end, or from the page the appends reached when they overtook it.
        let start = max(segment.allocatedEnd, reserved & ~4095)
        let end = min(segment.fileBytes, reserved + ahead)
        guard end > start else { return }
        segment.allocating = true
        segment.readLeases += 1
        context.requests.issue(.fallocate(fd: segment.fd, offset: Int64(start), length: Int64(end - start)), for: log, .allocate(segment, start..<end))
    }

    /// An allocation step finished. An interrupted one is tried again; a failure (a full disk, a
    /// file system without fallocate) stops stepping for this segment: the writes grow the file
    /// themselves, and report a full disk.
    func allocateFinished(_ segment: Segment, _ range: Range<Int>, result: DiskResult) {
        segment.allocating = false
        if result >= 0 {
            segment.allocatedEnd = max(segment.allocatedEnd, range.upperBound)
            context.statistics.allocationSteps += 1
        } else if result != -DiskResult(EINTR) && result != -DiskResult(EAGAIN) {
            context.logger.warning(
                "allocating ahead failed; appends grow the file instead",
                metadata: ["log": "\(state.name)", "error": "\(StorageError.errnoName(Int32(-result)))"])
            segment.allocationStopped = true
        }
    }

    // MARK: Zero-ahead

    /// Keeps the active segment written with zeros a little past the reservation point, one chunk
    /// at a time, each written back with sync_file_range once written. ext4 (like most file
    /// systems) records fallocated space as unwritten extents; the first write into one turns it
    /// into a written extent, a metadata change, so the fdatasync that follows must also commit
    /// the journal. Over zeros already written back, an fdatasync is one data flush. PostgreSQL
    /// zero-fills its WAL segments for the same reason; zeroing just ahead, in small chunks,
    /// spreads that cost out instead of writing a whole segment of zeros at once (which, measured
    /// here, hurt tail latency). Figures in docs/benchmarks.md.
    ///
    /// It runs only while recent fdatasyncs are small (`zeroAheadMaxSyncBytes`): large syncs pay
    /// the journal commit once per many bytes, and zeroing would double the bytes written.
    private func issueZeroAhead(for log: Log) {
        let configuration = context.configuration
        guard configuration.zeroAheadBytes > 0, let zeros = context.zeroChunk, !context.shuttingDown,
            recentSyncBytes < configuration.zeroAheadMaxSyncBytes
        else { return }
        let segment = state.activeSegment
        guard !segment.sealed, segment.zeroing == nil, segment.fd >= 0 else { return }
        let chunk = configuration.zeroChunkBytes
        let reserved = Int(segment.filePosition(of: state.positions.reserved))
        var start = segment.preparedEnd
        if start < reserved {
            // Appends overtook the zeros (or none were written yet): start a chunk boundary ahead,
            // leaving the appends arriving meanwhile some room before they would have to wait.
            start = (reserved + chunk / 4 + chunk - 1) / chunk * chunk
            segment.preparedEnd = start
        }
        // Zeros go only where the file is allocated: they turn allocated extents into written
        // ones, and never grow the file past what allocate-ahead decided.
        let allocated = configuration.allocateAheadBytes > 0 ? min(segment.fileBytes, segment.allocatedEnd) : segment.fileBytes
        guard start < allocated, start < reserved + configuration.zeroAheadBytes else { return }
        let range = start..<min(start + chunk, allocated)
        segment.zeroing = range
        segment.readLeases += 1
        context.requests.issue(
            .write(fd: segment.fd, position: Int64(range.lowerBound), bytes: UnsafeRawBufferPointer(rebasing: zeros.bytes[0..<range.count]), uncached: false),
            for: log, .zeroWrite(segment, range))
    }

    /// A zero chunk was written: write it back. False when zero-ahead stops for this segment.
    func zeroWriteFinished(_ segment: Segment, _ range: Range<Int>, result: DiskResult, for log: Log) -> Bool {
        // Zeros are an optimization, never data: on any failure, stop preparing this segment (the
        // appends themselves will report a failing disk).
        guard result == DiskResult(range.count), !segment.deleted else { return false }
        context.requests.issue(
            .syncFileRange(fd: segment.fd, position: Int64(range.lowerBound), length: Int64(range.count)),
            for: log, .zeroWriteback(segment, range))
        return true
    }

    func zeroWritebackFinished(_ segment: Segment, _ range: Range<Int>, result: DiskResult) {
        segment.zeroing = nil
        segment.preparedEnd = result >= 0 ? max(segment.preparedEnd, range.upperBound) : segment.fileBytes
        if result >= 0 { context.statistics.zeroChunks += 1 }
    }

    /// Zero-ahead stopped for `segment` after a failed chunk.
    func zeroingStopped(_ segment: Segment) {
        segment.zeroing = nil
        segment.preparedEnd = segment.fileBytes
    }

    // MARK: Completions

    enum WriteOutcome {
        /// Bytes reached the file (all or some; the rest is issued again).
        case wrote
        /// Nothing was written; the same bytes go out again.
        case retry
        /// No room left on the disk: reservations from `offset` (a batch boundary) are undone.
        case diskFull(from: LogOffset, StorageError)
        case failed(StorageError)
        /// The log had failed meanwhile: what was not written never will be.
        case abandoned
    }

    func writeFinished(start: LogOffset, length: Int, uncached: Bool, result: DiskResult) -> WriteOutcome {
        writeInFlight = false
        precondition(start == state.positions.written, "writes complete in order")
        context.statistics.writes += 1
        if state.failure != nil {
            abandonUnwritten()
            return .abandoned
        }
        if result < 0 {
            let errno = Int32(-result)
            if uncached && errno == EOPNOTSUPP {
                // A kernel before 6.14, or a file system without uncached buffered writes: write
                // the same bytes the ordinary way, from now on for every log.
                context.uncachedIOUnsupported()
            }
            if errno == EINTR || errno == EAGAIN || (uncached && errno == EOPNOTSUPP) {
                writeIssuedEnd = state.positions.written
                return .retry
            }
            let error = StorageError.fromWriteFailure(errno: errno, detail: "writing \(state.name) at offset \(start)")
            if case .diskFull = error { return .diskFull(from: batchBoundary(atOrBelow: state.positions.written), error) }
            return .failed(error)
        }
        if result == 0 { return .failed(.storageFailed("writing \(state.name) at offset \(start) wrote 0 bytes")) }
        if uncached { context.statistics.uncachedWrites += 1 }
        let end = start.advanced(by: Int(result))
        if let segment = state.segments.last(where: { $0.base < end }) {
            segment.allocatedEnd = max(segment.allocatedEnd, segment.base.distance(to: end))
        }
        state.positions.wrote(upTo: end)
        if Int(result) < length { writeIssuedEnd = state.positions.written }
        return .wrote
    }

    enum SyncOutcome {
        case synced
        case retry
        case failed(StorageError)
    }

    func syncFinished(_ segment: Segment, result: DiskResult) -> SyncOutcome {
        segment.syncInFlight = false
        context.statistics.noteSync(nanos: context.environment.monotonicNanos() &- segment.syncIssuedNanos)
        if result < 0 {
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN { return .retry }
            return .failed(
                .storageFailed(
                    "fdatasync of \(LogFileNames.segment(segment.base)) in \(state.name) failed (\(StorageError.errnoName(errno))); "
                        + "bytes after offset \(state.positions.committed) may not be on disk"))
        }
        precondition(segment.syncIssuedEnd >= segment.syncedEnd, "a segment's synced end never moves back")
        segment.syncedEnd = segment.syncIssuedEnd
        return .synced
    }

    /// Moves the committed end to the last batch end covered by synced bytes in segments whose
    /// names are durable, stopping at the first segment still holding unsynced bytes. Returns
    /// whether it moved.
    func advanceCommitted() -> Bool {
        guard state.failure == nil else { return false }
        let committed = state.positions.committed
        var synced = committed
        for segment in state.segments where segment.dataEnd > synced {
            guard segment.base <= synced, segment.nameDurable else { break }
            synced = max(synced, segment.syncedEnd)
            if segment.syncedEnd < segment.dataEnd { break }
        }
        var end = committed
        var batches = 0
        while let next = uncommittedBatchEnds.first, next.end <= synced {
            end = next.end
            state.committedNextRecord = next.nextRecord
            uncommittedBatchEnds.removeFirst()
            batches += 1
        }
        guard end > committed else { return false }
        state.positions.committed(upTo: end)
        context.statistics.noteCommit(batches: batches)
        return true
    }

    /// The start of the batch holding `offset` (or `offset` itself when a batch starts there).
    private func batchBoundary(atOrBelow offset: LogOffset) -> LogOffset {
        var boundary = state.positions.committed
        for (end, _) in uncommittedBatchEnds {
            if end > offset { break }
            boundary = end
        }
        return boundary
    }

    /// Undoes reservations at and after `offset` (a batch boundary) after their write failed for
    /// lack of space. Bytes of a partly written batch stay in the file until overwritten; they are
    /// above the committed end, so no reader sees them, and recovery would cut them.
    func rewind(to offset: LogOffset) {
        let active = state.activeSegment
        precondition(!writeInFlight && offset >= active.base, "rewinding to \(offset) with a write in flight or below the active segment")
        state.positions.rewind(to: offset)
        writeIssuedEnd = offset
        while let last = uncommittedBatchEnds.last, last.end > offset { uncommittedBatchEnds.removeLast() }
        state.nextRecord = uncommittedBatchEnds.last?.nextRecord ?? state.committedNextRecord
        state.producers.rewind(to: offset)
        active.dataEnd = offset
        active.index.removeEntries(from: active.relative(offset))
        state.tail.discard(from: offset)
    }

    /// Unpins bytes that will never be written (the log failed or is being deleted), so they
    /// cannot fill the shared cache. Waits for a write in flight to come back first.
    func abandonUnwritten() {
        guard !writeInFlight else { return }
        let written = state.positions.written
        state.tail.discard(from: written)
        state.positions.rewind(to: written)
        writeIssuedEnd = written
        uncommittedBatchEnds.removeAll()
    }

    /// The ring sequence of this log's oldest unwritten byte; the tail cache must not overwrite it.
    var unwrittenSequence: UInt64? {
        let written = state.positions.written
        guard written < state.positions.reserved || writeInFlight else { return nil }
        return state.tail.locate(written, oldestResident: 0)?.sequence
    }

    /// No write in flight and nothing reserved that is not committed.
    var isIdle: Bool { state.positions.reserved == state.positions.committed && !writeInFlight }
}
