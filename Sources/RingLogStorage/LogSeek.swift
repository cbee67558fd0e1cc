import Glibc
import RingLogWire

/// Finding a batch by a key that grows along the log: its append time (SEEK_TIME, docs/storage.md
/// "Seeking by time") or its record numbers (Kafka offsets, docs/kafka.md).
///
/// Both keys never go back within a log: append times are non-decreasing (`LogWriter.place`) and
/// record numbers count up by each batch's record count. So the structures that find offsets find
/// keys too. Each segment's sparse index entries are batch starts whose headers hold both keys; a
/// binary search probes them, one 48-byte read each, and the last step reads from the entry before
/// the answer to the entry after it (less than an index interval plus one batch) and walks the
/// headers. The segment is picked first: by time from each segment's newest append time (kept in
/// memory), by record by probing the first header of each segment in a binary search. A lookup is
/// log2(segments) + log2(entries) + 1 small reads; nothing new is kept in memory or on disk and
/// recovery has nothing more to rebuild.
final class LogSeek {
    /// What a lookup looks for.
    enum Key: Equatable {
        /// The first batch appended at or after this time (µs since the Unix epoch).
        case time(UInt64)
        /// The batch holding this record number, or the first after it. Format-1 batches carry no
        /// record number and never match: a log that has format-1 batches after format-2 ones
        /// cannot be searched by record (docs/kafka.md).
        case record(UInt64)

        /// Whether the batch whose header is at `header` (at least 48 bytes) is at or past the key.
        func isReached(by header: UnsafeRawPointer) -> Bool {
            switch self {
            case .time(let target):
                return header.loadLittleEndian(at: 16, as: UInt64.self) >= target
            case .record(let target):
                guard header.loadLittleEndian(at: 0, as: UInt32.self) == Batch.magic2 else { return false }
                let first: UInt64 = header.loadLittleEndian(at: 24)
                let count: UInt32 = header.loadLittleEndian(at: 44)
                return first &+ UInt64(count) > target
            }
        }
    }

    /// A lookup in flight.
    final class Seek {
        let key: Key
        let requester: UInt64
        /// While picking the segment by record: the kept segments, and the range of them whose
        /// first batch may be the first to reach the key (`segmentHigh == count`: none of them).
        var candidates: [Segment] = []
        var segmentLow = 0
        var segmentHigh = 0
        var pickingSegment = false
        var segment: Segment
        /// Index entries below the committed end; the answer's entry is in `low...high`
        /// (`high == count`: after the last entry).
        var count = 0
        var low = 0
        var high = 0
        /// Where the final walk stops: the next entry, or the committed end in this segment.
        var scanLimit: LogOffset = .zero
        var scanning = false
        var buffer: OwnedBytes
        var filled = 0
        var readPosition: Int64 = 0

        init(key: Key, requester: UInt64, segment: Segment) {
            self.key = key
            self.requester = requester
            self.segment = segment
            buffer = OwnedBytes(uninitializedCount: Batch.minHeaderBytes)
        }
    }

    private let state: LogState
    private let context: LogContext

    init(state: LogState, context: LogContext) {
        self.state = state
        self.context = context
    }

    /// The offset of the first committed batch that reaches `key`: the log's start when every kept
    /// batch does, its committed end when none does.
    func seek(_ key: Key, requester: UInt64, for log: Log) -> SeekStart {
        if state.deleting { return .failed(.unknownLog(state.name)) }
        let start = state.positions.start
        let committed = state.positions.committed
        guard start < committed else { return .ready(committed) }
        let kept = state.segments.filter { $0.dataEnd > start && $0.base < committed }
        switch key {
        case .time(let target):
            // The first segment holding kept data whose newest batch is recent enough holds the answer.
            guard let segment = kept.first(where: { $0.maxAppendTimeMicros >= target }), segment.fd >= 0 else { return .ready(committed) }
            return searchSegment(Seek(key: key, requester: requester, segment: segment), for: log)
        case .record(let target):
            if target >= state.committedNextRecord { return .ready(committed) }
            guard let first = kept.first, kept.allSatisfy({ $0.fd >= 0 }) else { return .ready(committed) }
            let seek = Seek(key: key, requester: requester, segment: first)
            guard kept.count > 1 else { return searchSegment(seek, for: log) }
            // The segment before the first whose first batch reaches the record holds the answer
            // (or that first batch is it). Segment 0 need not be probed.
            seek.candidates = kept
            seek.segmentLow = 1
            seek.segmentHigh = kept.count
            seek.pickingSegment = true
            return step(seek, for: log)
        }
    }

    /// Starts the search inside `seek.segment`.
    private func searchSegment(_ seek: Seek, for log: Log) -> SeekStart {
        let segment = seek.segment
        seek.pickingSegment = false
        seek.candidates = []
        let limit = min(state.positions.committed, segment.dataEnd)
        seek.count = segment.index.positions.partitionPoint { segment.base.advanced(by: Int($0)) < limit }
        guard seek.count > 0 else { return .ready(answer(segment.base)) }
        seek.low = 0
        seek.high = seek.count
        return step(seek, for: log)
    }

    /// The next read of `seek`, or its answer.
    private func step(_ seek: Seek, for log: Log) -> SeekStart {
        if seek.pickingSegment {
            guard seek.segmentLow < seek.segmentHigh else {
                seek.segment = seek.candidates[seek.segmentLow - 1]
                return searchSegment(seek, for: log)
            }
            let middle = (seek.segmentLow + seek.segmentHigh) / 2
            probe(seek, at: 0, in: seek.candidates[middle], for: log)
            return .pending
        }
        let positions = seek.segment.index.positions
        if seek.low < seek.high {
            probe(seek, at: Int64(positions[(seek.low + seek.high) / 2]), in: seek.segment, for: log)
            return .pending
        }
        // `low` is the first entry that reaches the key (or `count`). The answer lies between the
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
        issue(seek, in: seek.segment, for: log)
        return .pending
    }

    /// Reads the header at `position` of `segment` (a probe).
    private func probe(_ seek: Seek, at position: Int64, in segment: Segment, for log: Log) {
        seek.scanning = false
        seek.readPosition = position
        seek.buffer = OwnedBytes(uninitializedCount: Batch.minHeaderBytes)
        seek.filled = 0
        issue(seek, in: segment, for: log)
    }

    /// The segment a read of `seek` is in flight for.
    func reading(_ seek: Seek) -> Segment {
        seek.pickingSegment ? seek.candidates[(seek.segmentLow + seek.segmentHigh) / 2] : seek.segment
    }

    private func issue(_ seek: Seek, in segment: Segment, for log: Log) {
        segment.readLeases += 1
        let target = UnsafeMutableRawBufferPointer(rebasing: seek.buffer.mutableBytes[seek.filled...])
        context.requests.issue(
            .read(fd: segment.fd, position: seek.readPosition + Int64(seek.filled), into: target, uncached: false), for: log, .seek(seek))
    }

    /// A read of `seek` came back (its segment's lease already released). Returns the answer once
    /// there is one, nil while the lookup goes on.
    func readFinished(_ seek: Seek, result: DiskResult, for log: Log) -> Result<LogOffset, StorageError>? {
        let segment = reading(seek)
        if segment.deleted {
            // A trim removed the segment meanwhile: look again in what is left.
            return finish(self.seek(seek.key, requester: seek.requester, for: log))
        }
        if result < 0 {
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN {
                issue(seek, in: segment, for: log)
                return nil
            }
            return .failure(.io(operation: "read", errno: errno, detail: "\(state.name): seeking"))
        }
        seek.filled += Int(result)
        if result > 0 && seek.filled < seek.buffer.count {
            issue(seek, in: segment, for: log)
            return nil
        }
        guard seek.filled == seek.buffer.count else {
            return .failure(.corruption(offset: segment.base.advanced(by: Int(seek.readPosition)), detail: "segment data ends early", nextOffset: nil))
        }
        if !seek.scanning {
            // A probe reads the first 48 bytes: offset, time, and a format-2 batch's record number
            // and count sit there.
            let probe = seek.buffer.bytes.baseAddress!
            let offset = segment.base.advanced(by: Int(seek.readPosition))
            guard Batch.Format.of(magic: probe.loadLittleEndian(at: 0, as: UInt32.self)) != nil,
                probe.loadLittleEndian(at: 8, as: UInt64.self) == offset.rawValue
            else {
                return .failure(.corruption(offset: offset, detail: "no batch header at an index entry", nextOffset: nil))
            }
            let reached = seek.key.isReached(by: probe)
            if seek.pickingSegment {
                let middle = (seek.segmentLow + seek.segmentHigh) / 2
                if reached { seek.segmentHigh = middle } else { seek.segmentLow = middle + 1 }
            } else {
                let middle = (seek.low + seek.high) / 2
                if reached { seek.high = middle } else { seek.low = middle + 1 }
            }
            return finish(step(seek, for: log))
        }
        // Walk the headers from the entry before the answer.
        var position = 0
        let bytes = seek.buffer.bytes
        var offset = segment.base.advanced(by: Int(seek.readPosition))
        while position + Batch.minHeaderBytes <= bytes.count,
            position + Batch.headerLength(at: bytes.baseAddress! + position, available: bytes.count - position) <= bytes.count
        {
            let header = BatchHeader(unchecked: bytes.baseAddress! + position)
            guard Batch.Format.of(magic: header.magic) != nil, header.offset == offset, header.totalBytes > 0 else {
                return .failure(.corruption(offset: offset, detail: "batch headers do not chain while seeking", nextOffset: nil))
            }
            if seek.key.isReached(by: bytes.baseAddress! + position) { return .success(answer(offset)) }
            position += header.totalBytes
            offset = offset.advanced(by: header.totalBytes)
        }
        return .success(answer(seek.scanLimit))
    }

    /// Never below the start: a batch that reaches the key may have been trimmed, and every kept
    /// batch after it reaches it too.
    private func answer(_ offset: LogOffset) -> LogOffset { max(offset, state.positions.start) }

    private func finish(_ start: SeekStart) -> Result<LogOffset, StorageError>? {
        switch start {
        case .ready(let offset): .success(offset)
        case .pending: nil
        case .failed(let error): .failure(error)
        }
    }
}
