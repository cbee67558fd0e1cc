import Glibc
import RingLogWire

/// Finding the first batch appended at or after a time (docs/storage.md, "Seeking by time").
///
/// Append times never go back within a log (`LogWriter.place`), so batches are in time order and
/// the structures that find offsets find times too: each segment knows its newest append time,
/// which picks the segment, and its sparse index entries are batch starts whose headers hold their
/// times, which a binary search probes, one 48-byte read each. The last step reads from the entry
/// before the answer to the entry after it (less than an index interval plus one batch) and walks
/// the headers. A lookup is log2(entries) + 1 small reads; the index itself holds no times, so
/// nothing new is kept in memory or on disk and recovery has nothing more to rebuild.
final class LogTimeSeek {
    /// A lookup in flight.
    final class Seek {
        let target: UInt64
        let requester: UInt64
        let segment: Segment
        /// Index entries below the committed end; the answer's entry is in `low...high`
        /// (`high == count`: after the last entry).
        let count: Int
        var low: Int
        var high: Int
        /// Where the final walk stops: the next entry, or the committed end in this segment.
        var scanLimit: LogOffset = .zero
        var scanning = false
        var buffer: OwnedBytes
        var filled = 0
        var readPosition: Int64 = 0

        init(target: UInt64, requester: UInt64, segment: Segment, count: Int) {
            self.target = target
            self.requester = requester
            self.segment = segment
            self.count = count
            low = 0
            high = count
            buffer = OwnedBytes(uninitializedCount: Batch.minHeaderBytes)
        }
    }

    private let state: LogState
    private let context: LogContext

    init(state: LogState, context: LogContext) {
        self.state = state
        self.context = context
    }

    /// The offset of the first committed batch appended at or after `timeMicros`: the log's start
    /// when every kept batch is that recent, its committed end when none is.
    func seek(atOrAfter timeMicros: UInt64, requester: UInt64, for log: Log) -> TimeSeekStart {
        if state.deleting { return .failed(.unknownLog(state.name)) }
        let start = state.positions.start
        let committed = state.positions.committed
        guard start < committed else { return .ready(committed) }
        // The first segment holding kept data whose newest batch is recent enough holds the answer.
        guard
            let segment = state.segments.first(where: { $0.dataEnd > start && $0.base < committed && $0.maxAppendTimeMicros >= timeMicros }),
            segment.fd >= 0
        else { return .ready(committed) }
        let limit = min(committed, segment.dataEnd)
        let positions = segment.index.positions
        let count = positions.partitionPoint { segment.base.advanced(by: Int($0)) < limit }
        guard count > 0 else { return .ready(max(start, segment.base)) }
        let seek = Seek(target: timeMicros, requester: requester, segment: segment, count: count)
        return step(seek, for: log)
    }

    /// The next read of `seek`, or its answer.
    private func step(_ seek: Seek, for log: Log) -> TimeSeekStart {
        let positions = seek.segment.index.positions
        if seek.low < seek.high {
            // Probe the middle entry's header.
            let middle = (seek.low + seek.high) / 2
            seek.scanning = false
            seek.readPosition = Int64(positions[middle])
            seek.buffer = OwnedBytes(uninitializedCount: Batch.minHeaderBytes)
            seek.filled = 0
            issue(seek, for: log)
            return .pending
        }
        // `low` is the first entry at or after the time (or `count`). The answer lies between the
        // entry before it and it; with no entry before, it is the segment's first batch.
        let found = seek.low
        if found == 0 { return .ready(answer(seek.segment.base)) }
        let from = Int64(positions[found - 1])
        let limit = found < seek.count ? seek.segment.base.advanced(by: Int(positions[found])) : min(state.positions.committed, seek.segment.dataEnd)
        seek.scanning = true
        seek.scanLimit = limit
        seek.readPosition = from
        let bytes = Int(Int64(seek.segment.base.distance(to: limit)) - from)
        guard bytes > 0 else { return .ready(answer(limit)) }
        seek.buffer = context.readBuffers.take(count: bytes)
        seek.filled = 0
        issue(seek, for: log)
        return .pending
    }

    private func issue(_ seek: Seek, for log: Log) {
        seek.segment.readLeases += 1
        let target = UnsafeMutableRawBufferPointer(rebasing: seek.buffer.mutableBytes[seek.filled...])
        context.requests.issue(
            .read(fd: seek.segment.fd, position: seek.readPosition + Int64(seek.filled), into: target, uncached: false), for: log, .timeSeek(seek))
    }

    /// A read of `seek` came back (its segment's lease already released). Returns the answer once
    /// there is one, nil while the lookup goes on.
    func readFinished(_ seek: Seek, result: DiskResult, for log: Log) -> Result<LogOffset, StorageError>? {
        if seek.segment.deleted {
            // A trim removed the segment meanwhile: look again in what is left.
            return finish(self.seek(atOrAfter: seek.target, requester: seek.requester, for: log))
        }
        if result < 0 {
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN {
                issue(seek, for: log)
                return nil
            }
            return .failure(.io(operation: "read", errno: errno, detail: "\(state.name): seeking by time"))
        }
        seek.filled += Int(result)
        if result > 0 && seek.filled < seek.buffer.count {
            issue(seek, for: log)
            return nil
        }
        guard seek.filled == seek.buffer.count else {
            return .failure(.corruption(offset: seek.segment.base.advanced(by: Int(seek.readPosition)), detail: "segment data ends early", nextOffset: nil))
        }
        if !seek.scanning {
            let middle = (seek.low + seek.high) / 2
            // A probe reads the first 48 bytes: offset and time sit there in both formats.
            let probe = seek.buffer.bytes.baseAddress!
            let offset = seek.segment.base.advanced(by: Int(seek.readPosition))
            guard Batch.Format.of(magic: probe.loadLittleEndian(at: 0, as: UInt32.self)) != nil,
                probe.loadLittleEndian(at: 8, as: UInt64.self) == offset.rawValue
            else {
                return .failure(.corruption(offset: offset, detail: "no batch header at an index entry", nextOffset: nil))
            }
            if probe.loadLittleEndian(at: 16, as: UInt64.self) >= seek.target { seek.high = middle } else { seek.low = middle + 1 }
            return finish(step(seek, for: log))
        }
        // Walk the headers from the entry before the answer.
        var position = 0
        let bytes = seek.buffer.bytes
        var offset = seek.segment.base.advanced(by: Int(seek.readPosition))
        while position + Batch.minHeaderBytes <= bytes.count,
            position + Batch.headerLength(at: bytes.baseAddress! + position, available: bytes.count - position) <= bytes.count
        {
            let header = BatchHeader(unchecked: bytes.baseAddress! + position)
            guard Batch.Format.of(magic: header.magic) != nil, header.offset == offset, header.totalBytes > 0 else {
                return .failure(.corruption(offset: offset, detail: "batch headers do not chain while seeking by time", nextOffset: nil))
            }
            if header.appendTimeMicros >= seek.target { return .success(answer(offset)) }
            position += header.totalBytes
            offset = offset.advanced(by: header.totalBytes)
        }
        return .success(answer(seek.scanLimit))
    }

    /// Never below the start: a batch that recent may have been trimmed, and every kept batch
    /// after it is at least as recent.
    private func answer(_ offset: LogOffset) -> LogOffset { max(offset, state.positions.start) }

    private func finish(_ start: TimeSeekStart) -> Result<LogOffset, StorageError>? {
        switch start {
        case .ready(let offset): .success(offset)
        case .pending: nil
        case .failed(let error): .failure(error)
        }
    }
}
