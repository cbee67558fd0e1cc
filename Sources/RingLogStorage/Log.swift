import RingLogIO
import DequeModule
import Glibc
import RingLogWire

/// One named log: its segments, its three positions, and every decision about its I/O.
///
/// Positions, in order: `committedEnd <= writtenEnd <= reservedEnd`.
/// - reserved: batches placed in the tail cache and given offsets;
/// - written: their bytes reached the segment file (the page cache);
/// - committed: covered by a successful fdatasync. Readers see only committed bytes.
///
/// The log never performs I/O. It asks its store to issue operations and reacts to their results,
/// so the same decisions run over io_uring in the server and over a simulated disk in tests.
public final class Log {
    public let id: LogID
    public let name: String
    public let settings: LogSettings
    let directory: CPath
    var directoryFD: Int32
    /// The store owns every log and everything that refers to one (its outbox, its events), so a
    /// log is never used after its store is gone; `unowned(unsafe)` spares the reference count
    /// that a checked `unowned` pays on every use (several per append).
    unowned(unsafe) let store: LogStore
    /// Sorted by base; the last one is active.
    var segments: [Segment]
    var tail = LogTail()
    /// Written into every batch; one more than the previous incarnation's.
    let epoch: UInt32

    public private(set) var startOffset: LogOffset
    public private(set) var reservedEnd: LogOffset
    public private(set) var writtenEnd: LogOffset
    public private(set) var committedEnd: LogOffset
    private var writeIssuedEnd: LogOffset
    private var writeInFlight = false
    /// Where each batch above the committed end ends, oldest first. Writes are split at size and
    /// cache boundaries, so the written and synced positions can fall inside a batch; the
    /// committed end only ever moves to one of these.
    private var uncommittedBatchEnds: Deque<LogOffset> = []

    private(set) var checkpointOffset: LogOffset
    private var checkpointInFlight = false
    private var lastCheckpointMicros: UInt64
    /// The start a pending trim or retention wants; made durable by the next checkpoint.
    private(set) var desiredStart: LogOffset
    private var trimWaiters: [(context: UInt64, target: LogOffset)] = []
    var cleanCheckpointWanted = false
    /// The shutdown's clean checkpoint was attempted (successfully when `clean` is set).
    private(set) var cleanCheckpointDone = false
    private(set) var cleanCheckpointWritten = false

    enum Spare {
        case none
        case preparing
        case ready(fd: Int32, name: String)
        case failed(StorageError, atMicros: UInt64)
    }
    private(set) var spare = Spare.none
    /// A moving average of the bytes each fdatasync covered (zero-ahead runs while it is small).
    private var recentSyncBytes = 0
    /// Numbers each spare's file name (see `LogFileNames.spare`).
    private var spareNumber: UInt64 = 0
    /// A spare that failed (usually ENOSPC) is retried no sooner than this after the failure.
    static let spareRetryMicros: UInt64 = 1_000_000

    /// Set once a write or fdatasync failed; from then on nothing more commits and no append is
    /// taken, because what the disk holds past the committed end is unknown.
    public private(set) var failure: StorageError?
    /// Deletion started: the log takes no more appends and its id no longer finds it.
    public private(set) var deleting = false
    /// Operations issued for this log and not yet completed (deletion waits for zero).
    var operationsInFlight = 0
    var isDirty = false
    private var awaitingSpace = false
    /// Where recent reads ended: batch boundaries the sparse index may not hold. A consumer's next
    /// read starts at one, and starts exactly there instead of walking from the index entry before
    /// it, which would read up to an index interval twice (from the disk, for uncached reads).
    private var recentReadEnds = [LogOffset](repeating: .zero, count: 8)
    private var nextReadEndSlot = 0
    /// The rest of the page an uncached disk read ended in, read with it but past the batches it
    /// returned. The kernel hands out whole pages and an uncached read drops each one it brought
    /// in, so the reader's next read, which starts inside that page, would bring it back from the
    /// disk (and, measured, lose the readahead that was streaming ahead of it). It takes these
    /// bytes from here instead, and its disk read starts on the next page.
    private var readTail: (segment: Segment, start: LogOffset, bytes: [UInt8])?
    static let pageBytes = 4096

    init(
        meta: LogMeta, directory: CPath, directoryFD: Int32, store: LogStore, segments: [Segment], epoch: UInt32,
        startOffset: LogOffset, end: LogOffset, checkpointOffset: LogOffset, nowMicros: UInt64
    ) {
        precondition(!segments.isEmpty)
        id = meta.logID
        name = meta.name
        settings = meta.settings
        self.directory = directory
        self.directoryFD = directoryFD
        self.store = store
        self.segments = segments
        self.epoch = epoch
        self.startOffset = startOffset
        reservedEnd = end
        writtenEnd = end
        committedEnd = end
        writeIssuedEnd = end
        self.checkpointOffset = checkpointOffset
        desiredStart = startOffset
        lastCheckpointMicros = nowMicros
    }

    var activeSegment: Segment { segments[segments.count - 1] }

    public var info: LogInfo {
        var diskBytes = segments.reduce(0) { $0 + $1.fileBytes }
        if case .ready = spare { diskBytes += settings.segmentBytes }
        return LogInfo(
            id: id, name: name, startOffset: startOffset, committedEnd: committedEnd, segmentCount: segments.count,
            storedBytes: segments[0].base.distance(to: committedEnd), diskBytes: diskBytes, settings: settings,
            failure: failure?.description)
    }

    // MARK: Appending

    /// Places a validated batch (see `Batch.validateIncoming`) at the end of the log: copies it into
    /// the tail cache, stamps the server fields, and schedules its write.
    func append(_ batch: UnsafeRawBufferPointer, nowMicros: UInt64) -> AppendOutcome {
        if let failure { return .failed(failure) }
        if deleting { return .failed(.unknownLog(name)) }
        let length = batch.count
        guard length <= store.configuration.maxBatchBytes else {
            return .failed(.batchTooLarge(bytes: length, limit: store.configuration.maxBatchBytes))
        }
        var segment = activeSegment
        if segment.base.distance(to: reservedEnd) + length > segment.fileBytes {
            if let blocked = rotate(nowMicros: nowMicros) { return blocked }
            segment = activeSegment
        }
        guard let sequence = store.allocateTail(length) else {
            // Any log's write can make room in the shared cache: the store wakes this one.
            store.appendsWaitingForCache = true
            return .wouldBlock
        }
        let target = store.tail.pointer(sequence)
        target.copyMemory(from: batch.baseAddress!, byteCount: length)
        let offset = reservedEnd
        Batch.stamp(target, offset: offset, appendTimeMicros: nowMicros, epoch: epoch)
        tail.record(logStart: offset, sequence: sequence, length: length)
        segment.index.noteBatch(at: segment.relative(offset))
        segment.maxAppendTimeMicros = max(segment.maxAppendTimeMicros, nowMicros)
        reservedEnd = offset.advanced(by: length)
        segment.dataEnd = reservedEnd
        uncommittedBatchEnds.append(reservedEnd)
        store.markDirty(self)
        let filled = Double(segment.base.distance(to: reservedEnd)) / Double(segment.fileBytes)
        if case .none = spare, filled >= store.configuration.preallocateAtFill { prepareSpare() }
        return .placed(offset: offset, end: reservedEnd)
    }

    /// Starts the next segment, or says why the append must wait or fail. Returns nil on success.
    private func rotate(nowMicros: UInt64) -> AppendOutcome? {
        // Rotate only once the old segment is fully written, so undoing a failed write never has
        // to reach back across a segment boundary.
        guard writtenEnd == reservedEnd else {
            awaitingSpace = true
            return .wouldBlock
        }
        switch spare {
        case .ready(let fd, let spareName):
            spare = .none
            activeSegment.sealed = true
            let segment = Segment(
                base: reservedEnd, fileBytes: settings.segmentBytes, fd: fd, dataEnd: reservedEnd, syncedEnd: reservedEnd,
                nameDurable: false, index: SparseIndex(intervalBytes: UInt32(store.configuration.indexIntervalBytes)))
            segments.append(segment)
            let script = DiskScript([
                .rename(from: directory.appending(spareName), to: directory.appending(LogFileNames.segment(segment.base))),
                .fsync(.fd(directoryFD)),
            ])
            store.start(script, for: .rotate(self, segment))
            return nil
        case .preparing:
            awaitingSpace = true
            return .wouldBlock
        case .none:
            prepareSpare()
            awaitingSpace = true
            return .wouldBlock
        case .failed(let error, let failedAt):
            if nowMicros < failedAt + Log.spareRetryMicros { return .failed(error) }
            prepareSpare()
            awaitingSpace = true
            return .wouldBlock
        }
    }

    private func prepareSpare() {
        spare = .preparing
        spareNumber += 1
        let script = DiskScript([
            .open(directory.appending(LogFileNames.spare(spareNumber)), flags: O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o644),
            .fallocate(.openedBy(step: 0), length: Int64(settings.segmentBytes)),
            .fsync(.openedBy(step: 0)),
        ])
        store.start(script, for: .prepareSpare(self))
    }

    func rotationFinished(_ segment: Segment, _ result: Result<Void, StorageError>) {
        switch result {
        case .success:
            segment.nameDurable = true
            advanceCommitted()
            store.markDirty(self)
        case .failure(let error):
            fail(.storageFailed("could not rename the preallocated segment into place: \(error)"))
        }
    }

    func spareFinished(_ script: DiskScript, _ result: Result<Void, StorageError>, nowMicros: UInt64) {
        let spareName = LogFileNames.spare(spareNumber)
        switch result {
        case .success:
            let fd = script.openedDescriptor(step: 0)
            if deleting || failure != nil {
                store.issueClose(fd)
                spare = .none
            } else {
                spare = .ready(fd: fd, name: spareName)
            }
        case .failure(let error):
            if case .io(_, let errno, let detail) = error {
                spare = .failed(StorageError.fromWriteFailure(errno: errno, detail: "preallocating the next segment of \(name): \(detail)"), atMicros: nowMicros)
            } else {
                spare = .failed(error, atMicros: nowMicros)
            }
            store.start(DiskScript([.unlink(directory.appending(spareName), isDirectory: false, ignoreMissing: true)]), for: .logCleanup(self))
        }
        wakeBlockedAppends()
    }

    /// Appends that were told to wait (for a spare segment, or for room in the shared tail
    /// cache, which every log's writes free) may try again.
    private func wakeBlockedAppends() {
        if awaitingSpace || store.appendsWaitingForCache {
            awaitingSpace = false
            store.appendsWaitingForCache = false
            store.emit(.spaceAvailable)
        }
    }

    // MARK: Writing and committing

    /// Issues the write and fdatasyncs the log's state allows. Returns true while work remains.
    func issueIO() -> Bool {
        guard !deleting, failure == nil else { return false }
        issueWrite()
        issueSyncs()
        issueZeroAhead()
        return writeIssuedEnd < reservedEnd || writtenEnd > committedEnd
    }

    private func issueWrite() {
        guard !writeInFlight, writeIssuedEnd < reservedEnd else { return }
        guard let segment = segments.last(where: { $0.base <= writeIssuedEnd }) else { preconditionFailure("no segment") }
        guard let (sequence, contiguous) = tail.locate(writeIssuedEnd, oldestResident: store.tail.oldestResident) else {
            preconditionFailure("unwritten bytes at \(writeIssuedEnd) left the tail cache")
        }
        let length = min(contiguous, writeIssuedEnd.distance(to: segment.dataEnd), store.configuration.maxWriteBytes)
        // io_uring does not order writes in flight: data never overlaps a zero chunk still in flight.
        if let zeroing = segment.zeroing, Int(segment.filePosition(of: writeIssuedEnd)) + length > zeroing.lowerBound {
            return
        }
        let bytes = UnsafeRawBufferPointer(start: store.tail.pointer(sequence), count: length)
        let uncached = store.uncachedIOWorks && startsInLargeBatch(writeIssuedEnd)
        store.issue(
            .write(fd: segment.fd, position: segment.filePosition(of: writeIssuedEnd), bytes: bytes, uncached: uncached),
            for: .segmentWrite(self, start: writeIssuedEnd, length: length, uncached: uncached))
        writeInFlight = true
        writeIssuedEnd = writeIssuedEnd.advanced(by: length)
    }

    /// Whether the batch holding `offset` (an unwritten byte) is large enough that its write should
    /// not stay in the page cache (`StoreConfiguration.uncachedBatchBytes`).
    private func startsInLargeBatch(_ offset: LogOffset) -> Bool {
        let threshold = store.configuration.uncachedBatchBytes
        guard threshold > 0 else { return false }
        // The batch ends are sorted: find the first one past `offset`; the batch starts at the end
        // before it (or at the committed end).
        let low = uncommittedBatchEnds.partitionPoint { $0 <= offset }
        guard low < uncommittedBatchEnds.count else { return false }
        let start = low > 0 ? uncommittedBatchEnds[low - 1] : committedEnd
        return start.distance(to: uncommittedBatchEnds[low]) >= threshold
    }

    /// Group commit: one fdatasync in flight per segment, covering everything written before it.
    private func issueSyncs() {
        for segment in segments.reversed() {
            if segment.sealed && segment.syncedEnd == segment.dataEnd { break }
            let written = min(writtenEnd, segment.dataEnd)
            guard !segment.syncInFlight, written > segment.syncedEnd else { continue }
            recentSyncBytes = (recentSyncBytes * 7 + segment.syncedEnd.distance(to: written)) / 8
            segment.syncInFlight = true
            segment.syncIssuedEnd = written
            segment.syncIssuedNanos = MonotonicClock.nanos()
            store.issue(.fdatasync(fd: segment.fd), for: .segmentSync(self, segment))
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
    private func issueZeroAhead() {
        let configuration = store.configuration
        guard configuration.zeroAheadBytes > 0, let zeros = store.zeroChunk, !store.shuttingDown,
            recentSyncBytes < configuration.zeroAheadMaxSyncBytes
        else { return }
        let segment = activeSegment
        guard !segment.sealed, segment.zeroing == nil, segment.fd >= 0 else { return }
        let chunk = configuration.zeroChunkBytes
        let reserved = Int(segment.filePosition(of: reservedEnd))
        var start = segment.preparedEnd
        if start < reserved {
            // Appends overtook the zeros (or none were written yet): start a chunk boundary ahead,
            // leaving the appends arriving meanwhile some room before they would have to wait.
            start = (reserved + chunk / 4 + chunk - 1) / chunk * chunk
            segment.preparedEnd = start
        }
        guard start < segment.fileBytes, start < reserved + configuration.zeroAheadBytes else { return }
        let range = start..<min(start + chunk, segment.fileBytes)
        segment.zeroing = range
        segment.readLeases += 1
        store.issue(
            .write(fd: segment.fd, position: Int64(range.lowerBound), bytes: UnsafeRawBufferPointer(rebasing: zeros.bytes[0..<range.count]), uncached: false),
            for: .zeroWrite(self, segment, range))
    }

    func zeroWriteFinished(_ segment: Segment, _ range: Range<Int>, result: DiskResult) {
        guard result == DiskResult(range.count), !segment.deleted else {
            // Zeros are an optimization, never data: on any failure, stop preparing this segment
            // (the appends themselves will report a failing disk).
            zeroingStopped(segment)
            return
        }
        store.issue(
            .syncFileRange(fd: segment.fd, position: Int64(range.lowerBound), length: Int64(range.count)),
            for: .zeroWriteback(self, segment, range))
    }

    func zeroWritebackFinished(_ segment: Segment, _ range: Range<Int>, result: DiskResult) {
        guard result >= 0 else {
            zeroingStopped(segment)
            return
        }
        segment.zeroing = nil
        segment.preparedEnd = max(segment.preparedEnd, range.upperBound)
        releaseLease(segment)
        store.markDirty(self)
    }

    private func zeroingStopped(_ segment: Segment) {
        segment.zeroing = nil
        segment.preparedEnd = segment.fileBytes
        releaseLease(segment)
        store.markDirty(self)
    }

    func writeFinished(start: LogOffset, length: Int, uncached: Bool, result: DiskResult) {
        writeInFlight = false
        precondition(start == writtenEnd, "writes complete in order")
        if failure != nil {
            releaseAbandonedTail()
            return
        }
        if result < 0 {
            let errno = Int32(-result)
            if uncached && errno == EOPNOTSUPP {
                // A kernel before 6.14, or a file system without uncached buffered writes: write
                // the same bytes the ordinary way, from now on for every log.
                store.uncachedIOUnsupported()
            }
            if errno == EINTR || errno == EAGAIN || (uncached && errno == EOPNOTSUPP) {
                writeIssuedEnd = writtenEnd
                store.markDirty(self)
                return
            }
            let error = StorageError.fromWriteFailure(errno: errno, detail: "writing \(name) at offset \(start)")
            if case .diskFull = error { rewind(to: batchBoundary(atOrBelow: writtenEnd), error) } else { fail(error) }
            return
        }
        if result == 0 {
            fail(.storageFailed("writing \(name) at offset \(start) wrote 0 bytes"))
            return
        }
        writtenEnd = start.advanced(by: Int(result))
        if Int(result) < length { writeIssuedEnd = writtenEnd }
        store.emit(.written(id))
        store.markDirty(self)
        wakeBlockedAppends()
    }

    func syncFinished(_ segment: Segment, result: DiskResult) {
        segment.syncInFlight = false
        if result < 0 {
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN {
                store.markDirty(self)
                return
            }
            fail(
                .storageFailed(
                    "fdatasync of \(LogFileNames.segment(segment.base)) in \(name) failed (\(StorageError.errnoName(errno))); "
                        + "bytes after offset \(committedEnd) may not be on disk"))
            return
        }
        segment.syncedEnd = max(segment.syncedEnd, segment.syncIssuedEnd)
        advanceCommitted()
        store.markDirty(self)
    }

    /// Moves the committed end to the last batch end covered by synced bytes in segments whose
    /// names are durable, stopping at the first segment still holding unsynced bytes.
    private func advanceCommitted() {
        guard failure == nil else { return }
        var synced = committedEnd
        for segment in segments where segment.dataEnd > synced {
            guard segment.base <= synced, segment.nameDurable else { break }
            synced = max(synced, segment.syncedEnd)
            if segment.syncedEnd < segment.dataEnd { break }
        }
        var end = committedEnd
        var batches = 0
        while let next = uncommittedBatchEnds.first, next <= synced {
            end = next
            uncommittedBatchEnds.removeFirst()
            batches += 1
        }
        if end > committedEnd {
            committedEnd = end
            store.noteCommit(batches: batches)
            store.emit(.committed(id))
        }
    }

    /// The start of the batch holding `offset` (or `offset` itself when a batch starts there).
    private func batchBoundary(atOrBelow offset: LogOffset) -> LogOffset {
        var boundary = committedEnd
        for end in uncommittedBatchEnds {
            if end > offset { break }
            boundary = end
        }
        return boundary
    }

    /// Undoes reservations at and after `offset` (a batch boundary) after their write failed for
    /// lack of space. Bytes of a partly written batch stay in the file until overwritten; they are
    /// above the committed end, so no reader sees them, and recovery would cut them.
    private func rewind(to offset: LogOffset, _ error: StorageError) {
        precondition(!writeInFlight && offset >= activeSegment.base)
        reservedEnd = offset
        writtenEnd = offset
        writeIssuedEnd = offset
        while let last = uncommittedBatchEnds.last, last > offset { uncommittedBatchEnds.removeLast() }
        activeSegment.dataEnd = offset
        activeSegment.index.removeEntries(from: activeSegment.relative(offset))
        tail.discard(from: offset)
        store.emit(.appendsRewound(id, from: offset, error))
        wakeBlockedAppends()
    }

    /// Stops accepting writes for good (until restart). Committed data keeps serving.
    func fail(_ error: StorageError) {
        guard failure == nil else { return }
        failure = error
        store.logFailed(self, error)
        if !writeInFlight { releaseAbandonedTail() }
        wakeBlockedAppends()
    }

    /// Unpins bytes that will never be written, so a failed log cannot fill the shared cache.
    private func releaseAbandonedTail() {
        tail.discard(from: writtenEnd)
        writeIssuedEnd = writtenEnd
        reservedEnd = writtenEnd
        uncommittedBatchEnds.removeAll()
    }

    /// The ring sequence of this log's oldest unwritten byte; the tail cache must not overwrite it.
    var unwrittenSequence: UInt64? {
        guard writtenEnd < reservedEnd || writeInFlight else { return nil }
        return tail.locate(writtenEnd, oldestResident: 0)?.sequence
    }

    // MARK: Reading

    enum ReadPurpose {
        case client(context: UInt64)
        case trimCheck(context: UInt64)
    }

    final class ReadRun {
        let segment: Segment
        let runStart: LogOffset
        let target: LogOffset
        /// Reads stop here: the committed end or the segment's end, whichever comes first.
        let limit: LogOffset
        let maxBytes: Int
        let purpose: ReadPurpose
        let startOffset: LogOffset
        /// The log's committed end when the read was planned (what the reader is told).
        let committedEnd: LogOffset
        var buffer: OwnedBytes
        /// Bytes of `buffer` read so far (a short read continues from here).
        var filled = 0
        /// The file ended before the buffer filled.
        var reachedEnd = false

        init(
            segment: Segment, runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int, purpose: ReadPurpose,
            startOffset: LogOffset, committedEnd: LogOffset, buffer: OwnedBytes
        ) {
            self.segment = segment
            self.runStart = runStart
            self.target = target
            self.limit = limit
            self.maxBytes = maxBytes
            self.purpose = purpose
            self.startOffset = startOffset
            self.committedEnd = committedEnd
            self.buffer = buffer
        }
    }

    /// Reads whole committed batches from `offset`: at least one, more while they fit in
    /// `maxBytes`, never across a segment boundary.
    func read(from offset: LogOffset, maxBytes: Int, purpose: ReadPurpose) -> ReadStart {
        if offset < startOffset { return .failed(.offsetBelowStart(requested: offset, start: startOffset, end: committedEnd)) }
        if offset > committedEnd { return .failed(.offsetBeyondEnd(requested: offset, start: startOffset, end: committedEnd)) }
        if offset == committedEnd { return .ready(.empty(at: offset, start: startOffset, end: committedEnd)) }
        guard let segment = segments.last(where: { $0.base <= offset }), offset < segment.dataEnd else {
            return .failed(.corruption(offset: offset, detail: "no segment holds this offset", nextOffset: nil))
        }
        let walkFrom: UInt32
        switch segment.index.boundary(at: segment.relative(offset)) {
        case .impossible: return .failed(.notBatchBoundary(offset))
        case .known: walkFrom = segment.relative(offset)
        case .walk(let entry): walkFrom = recentReadEnds.contains(offset) ? segment.relative(offset) : entry
        }
        let runStart = segment.base.advanced(by: Int(walkFrom))
        let limit = min(committedEnd, segment.dataEnd)
        if let served = readFromTail(runStart: runStart, target: offset, limit: limit, maxBytes: maxBytes) { return served }
        var window = max(runStart.distance(to: offset) + Batch.headerBytes, runStart.distance(to: readEnd(segment, from: offset, limit: limit, maxBytes: maxBytes)))
        if let served = readFromReadTail(segment, runStart: runStart, target: offset, limit: limit, window: window, maxBytes: maxBytes) { return served }
        let uncached = readsUncached
        if uncached {
            // Read on to the end of the page (not past the limit): see `readTail`.
            let end = segment.filePosition(of: runStart) + Int64(window)
            let pageEnd = (end + Int64(Log.pageBytes) - 1) & ~Int64(Log.pageBytes - 1)
            window = min(window + Int(pageEnd - end), runStart.distance(to: limit))
        }
        let run = ReadRun(
            segment: segment, runStart: runStart, target: offset, limit: limit, maxBytes: maxBytes, purpose: purpose,
            startOffset: startOffset, committedEnd: committedEnd, buffer: store.readBuffers.take(count: window))
        if let tail = readTail, tail.segment === segment, tail.start == runStart, tail.bytes.count < window {
            tail.bytes.withUnsafeBytes { run.buffer.mutableBytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            run.filled = tail.bytes.count
        }
        readTail = nil
        store.noteTailRead(hit: false)
        issueRead(run)
        return .pending(bufferBytes: run.buffer.count)
    }

    /// Cold reads (`StoreConfiguration.uncachedColdReads`): cached pages are served and stay;
    /// pages read in for this reader are dropped once copied.
    private var readsUncached: Bool { store.configuration.uncachedColdReads && store.uncachedIOWorks }

    /// Where a disk read from `offset` stops: `maxBytes` on (or at `limit`), pulled back to the last
    /// indexed batch start before that, so the read holds whole batches only, all of them are
    /// returned, and the reader's next read starts exactly where this one's bytes end. Without
    /// that, the bytes of the batch cut at the end were read twice, and for uncached reads the
    /// second time came from the disk.
    private func readEnd(_ segment: Segment, from offset: LogOffset, limit: LogOffset, maxBytes: Int) -> LogOffset {
        let end = offset.advanced(by: min(maxBytes, offset.distance(to: limit)))
        if end == limit { return limit }
        guard let entry = segment.index.floor(segment.relative(end)) else { return end }
        let indexed = segment.base.advanced(by: Int(entry))
        return indexed > offset ? indexed : end
    }

    /// Serves a read from `readTail` when the bytes kept there hold all of what the disk read would
    /// have covered (`window` bytes from `runStart`: reads smaller than a page). They came from the
    /// disk and were not returned, so their checksums are checked here; anything short of whole
    /// good batches is left to the disk read.
    private func readFromReadTail(_ segment: Segment, runStart: LogOffset, target: LogOffset, limit: LogOffset, window: Int, maxBytes: Int) -> ReadStart? {
        guard let tail = readTail, tail.segment === segment, tail.start == runStart, tail.bytes.count >= window else { return nil }
        let collected = tail.bytes.withUnsafeBytes {
            BatchWalk.collect(run: UnsafeRawBufferPointer(rebasing: $0[0..<window]), runStart: runStart, target: target, limit: limit, maxBytes: maxBytes, verifyPayloads: true)
        }
        guard case .success(.batches(let range)) = collected else { return nil }
        let buffer = tail.bytes.withUnsafeBytes { store.readBuffers.copy(UnsafeRawBufferPointer(rebasing: $0[range])) }
        readTail = range.upperBound < tail.bytes.count ? (segment, runStart.advanced(by: range.upperBound), Array(tail.bytes[range.upperBound...])) : nil
        return served(ReadResult(offset: target, startOffset: startOffset, committedEnd: committedEnd, buffer: buffer, range: 0..<range.count))
    }

    private func readFromTail(runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int) -> ReadStart? {
        guard let (sequence, contiguous) = tail.locate(runStart, oldestResident: store.tail.oldestResident) else { return nil }
        let run = UnsafeRawBufferPointer(start: store.tail.pointer(sequence), count: min(contiguous, runStart.distance(to: limit)))
        switch BatchWalk.collect(run: run, runStart: runStart, target: target, limit: limit, maxBytes: maxBytes, verifyPayloads: false) {
        case .failure(let error): return .failed(error)
        case .success(.needMore): return nil
        case .success(.batches(let range)):
            let buffer = store.readBuffers.copy(UnsafeRawBufferPointer(rebasing: run[range]))
            store.noteTailRead(hit: true)
            return served(ReadResult(offset: target, startOffset: startOffset, committedEnd: committedEnd, buffer: buffer, range: 0..<range.count))
        }
    }

    private func issueRead(_ run: ReadRun) {
        run.segment.readLeases += 1
        let target = UnsafeMutableRawBufferPointer(rebasing: run.buffer.mutableBytes[run.filled...])
        let uncached = readsUncached
        store.issue(
            .read(fd: run.segment.fd, position: run.segment.filePosition(of: run.runStart) + Int64(run.filled), into: target, uncached: uncached),
            for: .segmentRead(self, run, uncached: uncached))
    }

    func readFinished(_ run: ReadRun, uncached: Bool, result: DiskResult) {
        releaseLease(run.segment)
        if result < 0 {
            let errno = Int32(-result)
            if uncached && errno == EOPNOTSUPP { store.uncachedIOUnsupported() }
            if errno == EINTR || errno == EAGAIN || (uncached && errno == EOPNOTSUPP) {
                retryRead(run)
                return
            }
            finishRead(run, .failure(.io(operation: "read", errno: errno, detail: "\(name) at offset \(run.target)")))
            return
        }
        run.filled += Int(result)
        if result == 0 { run.reachedEnd = true }
        // A short read continues where it stopped; only the end of the file stops it early.
        if run.filled < run.buffer.count && !run.reachedEnd {
            retryRead(run)
            return
        }
        let bytes = UnsafeRawBufferPointer(rebasing: run.buffer.bytes[0..<run.filled])
        let anchors = BatchWalk.KnownStarts(segmentBase: run.segment.base, positions: run.segment.index.positions, limit: run.limit)
        let collected = BatchWalk.collect(
            run: bytes, runStart: run.runStart, target: run.target, limit: run.limit, maxBytes: run.maxBytes, verifyPayloads: true,
            anchors: anchors)
        switch collected {
        case .failure(let error):
            finishRead(run, .failure(error))
        case .success(.batches(let range)):
            if uncached, run.filled - range.upperBound < Log.pageBytes, range.upperBound < run.filled {
                readTail = (run.segment, run.runStart.advanced(by: range.upperBound), Array(bytes[range.upperBound...]))
            }
            finishRead(
                run,
                .success(ReadResult(offset: run.target, startOffset: run.startOffset, committedEnd: run.committedEnd, buffer: run.buffer, range: range)))
        case .success(.needMore(let needed)):
            // The first batch is longer than the window: grow the buffer to hold it and read the
            // rest. Committed data that the file cannot supply means the file is damaged.
            // Never more than a read, a batch and two index intervals: a walk from an index entry
            // to the next needs no more (stepping over a damaged header included), so anything
            // larger means the index itself is no help here.
            let largestUseful = run.maxBytes + store.configuration.maxBatchBytes + 2 * store.configuration.indexIntervalBytes
            guard !run.reachedEnd, !run.segment.deleted, needed > run.buffer.count, needed <= largestUseful,
                run.runStart.advanced(by: needed) <= run.limit
            else {
                let next = anchors.after(run.target)
                let detail = needed > largestUseful ? "no batch start found near it (the index does not cover this part)" : "segment data ends inside the batch"
                finishRead(run, .failure(.corruption(offset: run.target, detail: detail, nextOffset: next > run.target ? next : nil)))
                return
            }
            let grown = store.readBuffers.take(count: needed)
            grown.mutableBytes.baseAddress!.copyMemory(from: run.buffer.bytes.baseAddress!, byteCount: run.filled)
            run.buffer = grown
            issueRead(run)
        }
    }

    /// Issues the rest of a read again, unless a trim deleted its segment meanwhile (its
    /// descriptor may be closed already): the reader is told its offset is below the start.
    private func retryRead(_ run: ReadRun) {
        guard !run.segment.deleted else {
            finishRead(run, .failure(.offsetBelowStart(requested: run.target, start: startOffset, end: committedEnd)))
            return
        }
        issueRead(run)
    }

    /// A read answered from memory, its end noted like a disk read's.
    private func served(_ result: ReadResult) -> ReadStart {
        noteReadEnd(result.nextOffset)
        return .ready(result)
    }

    private func noteReadEnd(_ end: LogOffset) {
        recentReadEnds[nextReadEndSlot] = end
        nextReadEndSlot = (nextReadEndSlot + 1) % recentReadEnds.count
    }

    private func finishRead(_ run: ReadRun, _ result: Result<ReadResult, StorageError>) {
        if case .success(let read) = result { noteReadEnd(read.nextOffset) }
        switch run.purpose {
        case .client(let context): store.emit(.readCompleted(context: context, result))
        case .trimCheck(let context):
            switch result {
            case .success: requestStart(run.target, context: context)
            case .failure(let error): store.emit(.trimmed(context: context, .failure(error)))
            }
        }
    }

    private func releaseLease(_ segment: Segment) {
        segment.readLeases -= 1
        if segment.deleted && segment.readLeases == 0 { closeSegment(segment) }
    }

    // MARK: Trimming, retention and checkpoints

    /// Advances the start to `offset` (a batch boundary at or below the committed end). Segments
    /// wholly below the new start are deleted once a checkpoint has made the start durable.
    func trim(to offset: LogOffset, context: UInt64) {
        if offset > committedEnd {
            store.emit(.trimmed(context: context, .failure(.offsetBeyondEnd(requested: offset, start: startOffset, end: committedEnd))))
            return
        }
        if offset <= desiredStart || offset == committedEnd {
            requestStart(offset, context: context)
            return
        }
        switch read(from: offset, maxBytes: 1, purpose: .trimCheck(context: context)) {
        case .ready: requestStart(offset, context: context)
        case .pending: break
        case .failed(let error): store.emit(.trimmed(context: context, .failure(error)))
        }
    }

    private func requestStart(_ offset: LogOffset, context: UInt64?) {
        if offset <= startOffset {
            if let context { store.emit(.trimmed(context: context, .success(startOffset))) }
            return
        }
        desiredStart = max(desiredStart, offset)
        if let context { trimWaiters.append((context, offset)) }
        checkpointIfDue(nowMicros: lastCheckpointMicros, force: true)
    }

    /// Moves the start past whole sealed segments that retention no longer keeps.
    func applyRetention(nowMicros: UInt64) {
        var newStart = desiredStart
        var index = 0
        while index < segments.count - 1 {
            let segment = segments[index]
            guard segment.sealed, segment.dataEnd <= committedEnd else { break }
            // What remains after dropping this segment must still hold the size limit's worth,
            // and everything in it must be older than the age limit (checked arithmetic: a
            // retention longer than the clock has run deletes nothing).
            let tooBig = settings.retentionBytes.map { segment.dataEnd.distance(to: committedEnd) >= $0 } ?? false
            let tooOld = settings.retentionMicros.map { retention in
                let (cutoff, beforeEpoch) = nowMicros.subtractingReportingOverflow(retention)
                return !beforeEpoch && segment.maxAppendTimeMicros < cutoff
            } ?? false
            guard tooBig || tooOld else { break }
            newStart = max(newStart, segment.dataEnd)
            index += 1
        }
        if newStart > desiredStart { requestStart(newStart, context: nil) }
    }

    /// Writes a checkpoint when enough has committed or enough time has passed since the last one.
    func checkpointIfDue(nowMicros: UInt64, force: Bool = false) {
        guard !checkpointInFlight, !deleting else { return }
        let configuration = store.configuration
        let committedSince = checkpointOffset.distance(to: committedEnd)
        let due =
            force || desiredStart > startOffset || committedSince >= configuration.checkpointIntervalBytes
            || (committedSince > 0 && nowMicros >= lastCheckpointMicros + configuration.checkpointIntervalMicros)
        let cleanDue = cleanCheckpointWanted && !cleanCheckpointDone && isQuiescent
        guard due || cleanDue else { return }
        let plan = CheckpointPlan(log: self, nowMicros: nowMicros, clean: cleanDue)
        checkpointInFlight = true
        store.start(plan.script, for: .checkpoint(self, plan))
    }

    func checkpointFinished(_ plan: CheckpointPlan, _ result: Result<Void, StorageError>) {
        checkpointInFlight = false
        switch result {
        case .failure(let error):
            let waiters = trimWaiters.filter { $0.target <= plan.checkpoint.startOffset }
            trimWaiters.removeAll { $0.target <= plan.checkpoint.startOffset }
            var reported = error
            if case .io(_, let errno, let detail) = error { reported = StorageError.fromWriteFailure(errno: errno, detail: "checkpoint of \(name): \(detail)") }
            for waiter in waiters { store.emit(.trimmed(context: waiter.context, .failure(reported))) }
            if case .diskFull = reported {} else { fail(reported) }
            if cleanCheckpointWanted { cleanCheckpointDone = true }
        case .success:
            plan.apply()
            checkpointOffset = plan.checkpoint.checkpointOffset
            lastCheckpointMicros = plan.checkpoint.writtenAtMicros
            startOffset = max(startOffset, plan.checkpoint.startOffset)
            if plan.checkpoint.clean {
                cleanCheckpointDone = true
                cleanCheckpointWritten = true
            }
            let answered = trimWaiters.filter { $0.target <= startOffset }
            trimWaiters.removeAll { $0.target <= startOffset }
            for waiter in answered { store.emit(.trimmed(context: waiter.context, .success(startOffset))) }
            deleteSegmentsBelowStart()
            if desiredStart > startOffset { checkpointIfDue(nowMicros: plan.checkpoint.writtenAtMicros, force: true) }
        }
        store.checkShutdownProgress()
    }

    /// Nothing reserved that is not committed, nothing in flight that changes the data.
    var isQuiescent: Bool {
        reservedEnd == committedEnd && !writeInFlight
            && segments.allSatisfy { !$0.syncInFlight && $0.zeroing == nil && ($0.nameDurable || $0.deleted) }
    }

    private func deleteSegmentsBelowStart() {
        var doomed: [Segment] = []
        while segments.count > 1, segments[0].sealed, segments[0].dataEnd <= startOffset {
            doomed.append(segments.removeFirst())
        }
        guard !doomed.isEmpty else { return }
        var steps: [DiskScript.Step] = []
        for segment in doomed {
            segment.deleted = true
            if segment.readLeases == 0 { closeSegment(segment) }
            steps.append(.unlink(directory.appending(LogFileNames.segment(segment.base)), isDirectory: false, ignoreMissing: true))
            steps.append(.unlink(directory.appending(LogFileNames.index(segment.base)), isDirectory: false, ignoreMissing: true))
        }
        steps.append(.fsync(.fd(directoryFD)))
        store.start(DiskScript(steps), for: .logCleanup(self))
    }

    private func closeSegment(_ segment: Segment) {
        guard segment.fd >= 0 else { return }
        store.issueClose(segment.fd)
        segment.fd = -1
    }

    // MARK: Deleting

    /// Stops all new work; the store deletes the directory once nothing is in flight.
    func beginDeleting() {
        deleting = true
        if !writeInFlight { releaseAbandonedTail() }
        for waiter in trimWaiters { store.emit(.trimmed(context: waiter.context, .failure(.unknownLog(name)))) }
        trimWaiters.removeAll()
        wakeBlockedAppends()
    }

    /// Descriptors to close once the log's directory is gone.
    func descriptorsToClose() -> [Int32] {
        var fds: [Int32] = []
        for segment in segments where segment.fd >= 0 && segment.readLeases == 0 {
            fds.append(segment.fd)
            segment.fd = -1
            segment.deleted = true
        }
        for segment in segments where segment.fd >= 0 { segment.deleted = true }
        if case .ready(let fd, _) = spare { fds.append(fd) }
        spare = .none
        if directoryFD >= 0 { fds.append(directoryFD) }
        directoryFD = -1
        return fds
    }

    /// File names a deleted log's directory may hold.
    func fileNames() -> [String] {
        var names = [LogFileNames.meta, LogFileNames.checkpoint, LogFileNames.checkpointTemporary]
        if case .ready(_, let spareName) = spare { names.append(spareName) }
        if spareNumber > 0 { names.append(LogFileNames.spare(spareNumber)) }
        for segment in segments {
            names.append(LogFileNames.segment(segment.base))
            names.append(LogFileNames.index(segment.base))
        }
        return names
    }
}

/// One checkpoint: what it will write and what it changes once durable.
final class CheckpointPlan {
    let checkpoint: Checkpoint
    let script: DiskScript
    private let indexUpdates: [(segment: Segment, entries: Int, sealed: Bool, dataEnd: LogOffset)]

    /// Persists the index entries below the committed end (and sealed headers), then replaces the
    /// checkpoint file atomically.
    init(log: Log, nowMicros: UInt64, clean: Bool) {
        let target = log.committedEnd
        var steps: [DiskScript.Step] = []
        var updates: [(Segment, Int, Bool, LogOffset)] = []
        for segment in log.segments where segment.base < target {
            let below = segment.index.count(below: UInt32(min(segment.base.distance(to: target), Int(UInt32.max))))
            let sealed = segment.sealed && segment.dataEnd <= target
            let dataEnd = sealed ? segment.dataEnd : target
            // New entries or a seal always go out. A header merely behind the data goes out with a
            // clean checkpoint, so a clean restart scans nothing; otherwise recovery extends the
            // index over the few bytes past the header instead (less than one index interval plus
            // one batch, since no entry was added there).
            let stale = clean && dataEnd > segment.persistedDataEnd
            guard below > segment.persistedEntryCount || sealed != segment.persistedSealed || stale else { continue }
            let open = steps.count
            steps.append(.open(log.directory.appending(LogFileNames.index(segment.base)), flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o644))
            if below > segment.persistedEntryCount {
                var entries: [UInt8] = []
                entries.reserveCapacity((below - segment.persistedEntryCount) * 4)
                for position in segment.index.positions[segment.persistedEntryCount..<below] { entries.appendLittleEndian(position) }
                let position = Int64(IndexFileHeader.encodedBytes + segment.persistedEntryCount * 4)
                steps.append(.write(.openedBy(step: open), position: position, OwnedBytes(entries)))
            }
            let header = IndexFileHeader(
                segmentBase: segment.base, sealed: sealed, dataEnd: dataEnd,
                maxAppendTimeMicros: segment.maxAppendTimeMicros, entryCount: UInt32(below), intervalBytes: segment.index.intervalBytes)
            steps.append(.write(.openedBy(step: open), position: 0, OwnedBytes(header.encoded())))
            steps.append(.fdatasync(.openedBy(step: open)))
            steps.append(.close(.openedBy(step: open)))
            updates.append((segment, below, sealed, dataEnd))
        }
        checkpoint = Checkpoint(
            logID: log.id, epoch: log.epoch, clean: clean, startOffset: max(log.startOffset, min(log.desiredStart, target)),
            checkpointOffset: target, writtenAtMicros: nowMicros)
        let temporary = log.directory.appending(LogFileNames.checkpointTemporary)
        let open = steps.count
        steps.append(.open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644))
        steps.append(.write(.openedBy(step: open), position: 0, OwnedBytes(checkpoint.encoded())))
        steps.append(.fdatasync(.openedBy(step: open)))
        steps.append(.close(.openedBy(step: open)))
        steps.append(.rename(from: temporary, to: log.directory.appending(LogFileNames.checkpoint)))
        steps.append(.fsync(.fd(log.directoryFD)))
        script = DiskScript(steps)
        indexUpdates = updates
    }

    func apply() {
        for update in indexUpdates {
            update.segment.persistedEntryCount = max(update.segment.persistedEntryCount, update.entries)
            update.segment.persistedSealed = update.sealed
            update.segment.persistedDataEnd = max(update.segment.persistedDataEnd, update.dataEnd)
        }
    }
}
