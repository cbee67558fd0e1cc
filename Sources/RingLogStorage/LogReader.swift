import Glibc
import RingLogWire

/// Reads of one log and their three sources: the tail cache while the bytes are still resident,
/// the rest of the page an uncached read left over (`readTail`), and the segment file.
final class LogReader {
    enum Purpose {
        case client(context: UInt64)
        case trimCheck(context: UInt64)
    }

    /// A read of a segment file in flight.
    final class Run {
        let segment: Segment
        let runStart: LogOffset
        let target: LogOffset
        /// Reads stop here: the committed end or the segment's end, whichever comes first.
        let limit: LogOffset
        let maxBytes: Int
        let purpose: Purpose
        let startOffset: LogOffset
        /// The log's committed end when the read was planned (what the reader is told).
        let committedEnd: LogOffset
        var buffer: OwnedBytes
        /// Bytes of `buffer` read so far (a short read continues from here).
        var filled = 0
        /// The file ended before the buffer filled.
        var reachedEnd = false

        init(
            segment: Segment, runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int, purpose: Purpose,
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

    private let state: LogState
    private let context: LogContext
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

    init(state: LogState, context: LogContext) {
        self.state = state
        self.context = context
    }

    /// Reads whole committed batches from `offset`: at least one, more while they fit in
    /// `maxBytes`, never across a segment boundary.
    func read(from offset: LogOffset, maxBytes: Int, purpose: Purpose, for log: Log) -> ReadStart {
        let start = state.positions.start
        let committed = state.positions.committed
        if offset < start { return .failed(.offsetBelowStart(requested: offset, start: start, end: committed)) }
        if offset > committed { return .failed(.offsetBeyondEnd(requested: offset, start: start, end: committed)) }
        if offset == committed { return .ready(.empty(at: offset, start: start, end: committed)) }
        guard let segment = state.segment(holding: offset) else {
            return .failed(.corruption(offset: offset, detail: "no segment holds this offset", nextOffset: nil))
        }
        let walkFrom: UInt32
        switch segment.index.boundary(at: segment.relative(offset)) {
        case .impossible: return .failed(.notBatchBoundary(offset))
        case .known: walkFrom = segment.relative(offset)
        case .walk(let entry): walkFrom = recentReadEnds.contains(offset) ? segment.relative(offset) : entry
        }
        let runStart = segment.base.advanced(by: Int(walkFrom))
        let limit = min(committed, segment.dataEnd)
        if let served = readFromTail(runStart: runStart, target: offset, limit: limit, maxBytes: maxBytes) { return served }
        // At least the target's header (either format; not past the limit, where a short batch of
        // format 1 may end the data).
        let headerWindow = min(runStart.distance(to: offset) + Batch.maxHeaderBytes, runStart.distance(to: limit))
        var window = max(headerWindow, runStart.distance(to: readEnd(segment, from: offset, limit: limit, maxBytes: maxBytes)))
        if let served = readFromReadTail(segment, runStart: runStart, target: offset, limit: limit, window: window, maxBytes: maxBytes) { return served }
        let uncached = readsUncached
        if uncached {
            // Read on to the end of the page (not past the limit): see `readTail`.
            let end = segment.filePosition(of: runStart) + Int64(window)
            let pageEnd = (end + Int64(LogReader.pageBytes) - 1) & ~Int64(LogReader.pageBytes - 1)
            window = min(window + Int(pageEnd - end), runStart.distance(to: limit))
        }
        let run = Run(
            segment: segment, runStart: runStart, target: offset, limit: limit, maxBytes: maxBytes, purpose: purpose,
            startOffset: start, committedEnd: committed, buffer: context.readBuffers.take(count: window))
        if let tail = readTail, tail.segment === segment, tail.start == runStart, tail.bytes.count < window {
            tail.bytes.withUnsafeBytes { run.buffer.mutableBytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            run.filled = tail.bytes.count
        }
        readTail = nil
        context.statistics.tailReadMisses += 1
        issue(run, for: log)
        return .pending(bufferBytes: run.buffer.count)
    }

    /// Cold reads (`StoreConfiguration.uncachedColdReads`): cached pages are served and stay;
    /// pages read in for this reader are dropped once copied.
    private var readsUncached: Bool { context.configuration.uncachedColdReads && context.uncachedIOWorks }

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
        let buffer = tail.bytes.withUnsafeBytes { context.readBuffers.copy(UnsafeRawBufferPointer(rebasing: $0[range])) }
        readTail = range.upperBound < tail.bytes.count ? (segment, runStart.advanced(by: range.upperBound), Array(tail.bytes[range.upperBound...])) : nil
        return served(ReadResult(offset: target, startOffset: state.positions.start, committedEnd: state.positions.committed, buffer: buffer, range: 0..<range.count))
    }

    private func readFromTail(runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int) -> ReadStart? {
        guard let (sequence, contiguous) = state.tail.locate(runStart, oldestResident: context.tail.oldestResident) else { return nil }
        let run = UnsafeRawBufferPointer(start: context.tail.pointer(sequence), count: min(contiguous, runStart.distance(to: limit)))
        switch BatchWalk.collect(run: run, runStart: runStart, target: target, limit: limit, maxBytes: maxBytes, verifyPayloads: false) {
        case .failure(let error): return .failed(error)
        case .success(.needMore): return nil
        case .success(.batches(let range)):
            let buffer = context.readBuffers.copy(UnsafeRawBufferPointer(rebasing: run[range]))
            context.statistics.tailReadHits += 1
            return served(ReadResult(offset: target, startOffset: state.positions.start, committedEnd: state.positions.committed, buffer: buffer, range: 0..<range.count))
        }
    }

    private func issue(_ run: Run, for log: Log) {
        run.segment.readLeases += 1
        let target = UnsafeMutableRawBufferPointer(rebasing: run.buffer.mutableBytes[run.filled...])
        let uncached = readsUncached
        context.requests.issue(
            .read(fd: run.segment.fd, position: run.segment.filePosition(of: run.runStart) + Int64(run.filled), into: target, uncached: uncached),
            for: log, .segmentRead(run, uncached: uncached))
    }

    /// A disk read came back (its segment's lease is already released). Returns the read's result
    /// when it is over, nil while it continues.
    func readFinished(_ run: Run, uncached: Bool, result: DiskResult, for log: Log) -> Result<ReadResult, StorageError>? {
        if result < 0 {
            let errno = Int32(-result)
            if uncached && errno == EOPNOTSUPP { context.uncachedIOUnsupported() }
            if errno == EINTR || errno == EAGAIN || (uncached && errno == EOPNOTSUPP) { return retry(run, for: log) }
            return finished(.failure(.io(operation: "read", errno: errno, detail: "\(state.name) at offset \(run.target)")))
        }
        run.filled += Int(result)
        if result == 0 { run.reachedEnd = true }
        // A short read continues where it stopped; only the end of the file stops it early.
        if run.filled < run.buffer.count && !run.reachedEnd { return retry(run, for: log) }
        let bytes = UnsafeRawBufferPointer(rebasing: run.buffer.bytes[0..<run.filled])
        let anchors = BatchWalk.KnownStarts(segmentBase: run.segment.base, positions: run.segment.index.positions, limit: run.limit)
        let collected = BatchWalk.collect(
            run: bytes, runStart: run.runStart, target: run.target, limit: run.limit, maxBytes: run.maxBytes, verifyPayloads: true,
            anchors: anchors)
        switch collected {
        case .failure(let error):
            return finished(.failure(error))
        case .success(.batches(let range)):
            if uncached, run.filled - range.upperBound < LogReader.pageBytes, range.upperBound < run.filled {
                readTail = (run.segment, run.runStart.advanced(by: range.upperBound), Array(bytes[range.upperBound...]))
            }
            return finished(.success(ReadResult(offset: run.target, startOffset: run.startOffset, committedEnd: run.committedEnd, buffer: run.buffer, range: range)))
        case .success(.needMore(let needed)):
            // The first batch is longer than the window: grow the buffer to hold it and read the
            // rest. Committed data that the file cannot supply means the file is damaged.
            // Never more than a read, a batch and two index intervals: a walk from an index entry
            // to the next needs no more (stepping over a damaged header included), so anything
            // larger means the index itself is no help here.
            let largestUseful = run.maxBytes + context.configuration.maxBatchBytes + 2 * context.configuration.indexIntervalBytes
            guard !run.reachedEnd, !run.segment.deleted, needed > run.buffer.count, needed <= largestUseful,
                run.runStart.advanced(by: needed) <= run.limit
            else {
                let next = anchors.after(run.target)
                let detail = needed > largestUseful ? "no batch start found near it (the index does not cover this part)" : "segment data ends inside the batch"
                return finished(.failure(.corruption(offset: run.target, detail: detail, nextOffset: next > run.target ? next : nil)))
            }
            let grown = context.readBuffers.take(count: needed)
            grown.mutableBytes.baseAddress!.copyMemory(from: run.buffer.bytes.baseAddress!, byteCount: run.filled)
            run.buffer = grown
            issue(run, for: log)
            return nil
        }
    }

    /// Issues the rest of a read again, unless a trim deleted its segment meanwhile (its
    /// descriptor may be closed already): the reader is told its offset is below the start.
    private func retry(_ run: Run, for log: Log) -> Result<ReadResult, StorageError>? {
        guard !run.segment.deleted else {
            return finished(.failure(.offsetBelowStart(requested: run.target, start: state.positions.start, end: state.positions.committed)))
        }
        issue(run, for: log)
        return nil
    }

    /// A read answered from memory, its end noted like a disk read's.
    private func served(_ result: ReadResult) -> ReadStart {
        noteReadEnd(result.nextOffset)
        return .ready(result)
    }

    private func finished(_ result: Result<ReadResult, StorageError>) -> Result<ReadResult, StorageError> {
        if case .success(let read) = result { noteReadEnd(read.nextOffset) }
        return result
    }

    private func noteReadEnd(_ end: LogOffset) {
        recentReadEnds[nextReadEndSlot] = end
        nextReadEndSlot = (nextReadEndSlot + 1) % recentReadEnds.count
    }
}
