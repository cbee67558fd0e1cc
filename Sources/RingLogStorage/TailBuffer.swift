import DequeModule
import RingLogWire

/// The recent-append cache: one ring of memory, allocated once, shared by every log.
///
/// Appended batches are copied here, written to their segment from here, and served to readers
/// from here while they stay resident. Bytes are handed out in ring "sequence" order; a sequence
/// `s` lives at `s % capacity` and is overwritten once the head passes `s + capacity`. A batch is
/// always contiguous: one that would straddle the end of the ring starts at the next lap instead.
/// Bytes not yet written to disk are pinned: allocation fails rather than overwrite them.
final class TailBuffer {
    let capacity: Int
    private let memory: UnsafeMutableRawPointer
    /// Sequence of the next byte to hand out.
    private(set) var head: UInt64 = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        memory = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 4096)
        // Touch every page now so the cache's memory is committed at start-up, not mid-append.
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: capacity)
    }

    deinit { memory.deallocate() }

    /// The oldest sequence that has not been overwritten.
    var oldestResident: UInt64 { head > UInt64(capacity) ? head - UInt64(capacity) : 0 }

    /// Hands out `count` contiguous bytes, or nil when that would overwrite a sequence at or after
    /// `pinnedFloor` (the oldest byte some log has not yet written to disk).
    func allocate(_ count: Int, pinnedFloor: UInt64) -> UInt64? {
        precondition(count > 0 && count <= capacity)
        var start = head
        let position = Int(start % UInt64(capacity))
        if position + count > capacity { start += UInt64(capacity - position) }
        let end = start + UInt64(count)
        if end > UInt64(capacity), end - UInt64(capacity) > pinnedFloor { return nil }
        head = end
        return start
    }

    /// Where `sequence` sits; it must still be resident (handed out, not yet overwritten): a
    /// range the ring has moved past is never read or written again.
    @inline(__always)
    func pointer(_ sequence: UInt64) -> UnsafeMutableRawPointer {
        precondition(sequence < head && sequence >= oldestResident, "tail cache sequence \(sequence) is not resident (head \(head))")
        return memory + Int(sequence % UInt64(capacity))
    }
}

/// One log's batches in the tail buffer: runs of consecutive log bytes that are also consecutive
/// in the ring. A single busy log is one run; logs appending in turn break each other's runs.
struct LogTail {
    struct Extent: Equatable {
        var logStart: LogOffset
        var sequence: UInt64
        var length: Int
        var logEnd: LogOffset { logStart.advanced(by: length) }
    }

    private(set) var extents: Deque<Extent> = []

    /// Records `length` bytes of log starting at `logStart`, placed at `sequence`.
    mutating func record(logStart: LogOffset, sequence: UInt64, length: Int) {
        if var last = extents.last, last.logEnd == logStart, last.sequence + UInt64(last.length) == sequence {
            last.length += length
            extents[extents.count - 1] = last
        } else {
            precondition(extents.last.map { $0.logEnd <= logStart } ?? true, "log bytes are recorded in order")
            extents.append(Extent(logStart: logStart, sequence: sequence, length: length))
        }
    }

    /// The ring sequence holding `offset` and how many bytes after it stay contiguous in the ring,
    /// when the byte is still resident.
    func locate(_ offset: LogOffset, oldestResident: UInt64) -> (sequence: UInt64, contiguousBytes: Int)? {
        let low = extents.partitionPoint { $0.logStart <= offset }
        guard low > 0 else { return nil }
        let extent = extents[low - 1]
        guard offset < extent.logEnd else { return nil }
        let into = extent.logStart.distance(to: offset)
        let sequence = extent.sequence + UInt64(into)
        guard sequence >= oldestResident else { return nil }
        return (sequence, extent.length - into)
    }

    /// Drops runs that have been entirely overwritten.
    mutating func prune(oldestResident: UInt64) {
        while let first = extents.first, first.sequence + UInt64(first.length) <= oldestResident {
            extents.removeFirst()
        }
    }

    /// Forgets log bytes at and after `offset` (their reservation was undone).
    mutating func discard(from offset: LogOffset) {
        while var last = extents.last, last.logEnd > offset {
            if last.logStart >= offset {
                extents.removeLast()
            } else {
                last.length = last.logStart.distance(to: offset)
                extents[extents.count - 1] = last
            }
        }
    }
}
