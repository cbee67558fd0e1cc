import RingLogWire

/// One segment file of a log: whole batches back to back from `base`, up to `fileBytes`.
final class Segment {
    let base: LogOffset
    /// The segment's capacity: a batch never crosses it. The file itself is allocated in steps
    /// up to it (`allocatedEnd`).
    let fileBytes: Int
    /// File bytes allocated (fallocated or written): the file's size.
    var allocatedEnd: Int
    /// An allocation step is in flight.
    var allocating = false
    /// A step failed: the writes grow the file from here on.
    var allocationStopped = false
    /// -1 once closed.
    var fd: Int32
    /// One past the last batch placed in this segment (reserved, not necessarily written).
    var dataEnd: LogOffset
    /// No more batches go here; the next segment has started.
    var sealed = false
    var index: SparseIndex
    /// Index entries already in the `.idx` file and synced, and whether its header says sealed.
    var persistedEntryCount = 0
    var persistedSealed = false
    /// The data end the `.idx` header records: its entries cover the segment up to here.
    var persistedDataEnd: LogOffset
    /// Bytes of this segment covered by a successful fdatasync.
    var syncedEnd: LogOffset
    var syncInFlight = false
    var syncIssuedEnd: LogOffset
    var syncIssuedNanos: UInt64 = 0
    /// The file's name is durable in the directory. A segment starts life as the preallocated spare
    /// and is renamed when it becomes active; its batches commit only after the rename is synced.
    var nameDurable: Bool
    var maxAppendTimeMicros: UInt64 = 0
    /// Zero-ahead: every file position below this has been written (with data or zeros) and
    /// written back, so an fdatasync covering it changes no extents.
    var preparedEnd: Int
    /// The zero chunk being written or written back; data writes into it wait.
    var zeroing: Range<Int>?
    /// Operations in flight against `fd` (reads, zero chunks); a deleted segment is closed when the
    /// last one finishes.
    var readLeases = 0
    var deleted = false

    init(
        base: LogOffset, fileBytes: Int, allocatedBytes: Int, fd: Int32, dataEnd: LogOffset, syncedEnd: LogOffset, nameDurable: Bool, index: SparseIndex
    ) {
        self.base = base
        self.fileBytes = fileBytes
        allocatedEnd = allocatedBytes
        self.fd = fd
        self.dataEnd = dataEnd
        self.syncedEnd = syncedEnd
        self.syncIssuedEnd = syncedEnd
        self.nameDurable = nameDurable
        self.index = index
        persistedDataEnd = base
        preparedEnd = base.distance(to: dataEnd)
    }

    /// The offset one past the file's last byte.
    var capacityEnd: LogOffset { base.advanced(by: fileBytes) }

    func contains(_ offset: LogOffset) -> Bool { offset >= base && offset < dataEnd }

    func filePosition(of offset: LogOffset) -> Int64 { Int64(base.distance(to: offset)) }

    func relative(_ offset: LogOffset) -> UInt32 { UInt32(base.distance(to: offset)) }
}

extension SparseIndex {
    /// Entries at positions below `position`.
    func count(below position: UInt32) -> Int {
        positions.partitionPoint { $0 < position }
    }
}
