import RingLogWire

/// A log's four positions, in order `start <= committed <= written <= reserved`:
/// - reserved: batches placed in the tail cache and given offsets;
/// - written: their bytes reached the segment file (the page cache);
/// - committed: covered by a successful fdatasync. Readers see only committed bytes;
/// - start: the first offset still kept (trim and retention move it).
///
/// Each changes only through a method that checks the order and the direction it may move in, in
/// release builds too (a handful of comparisons per append).
struct LogPositions {
    private(set) var start: LogOffset
    private(set) var committed: LogOffset
    private(set) var written: LogOffset
    private(set) var reserved: LogOffset

    init(start: LogOffset, end: LogOffset) {
        precondition(start <= end, "a log's start \(start) is past its end \(end)")
        self.start = start
        committed = end
        written = end
        reserved = end
    }

    /// A batch of `length` bytes was placed at the end.
    mutating func reserve(_ length: Int) -> (offset: LogOffset, end: LogOffset) {
        precondition(length > 0)
        let offset = reserved
        reserved = offset.advanced(by: length)
        return (offset, reserved)
    }

    mutating func wrote(upTo end: LogOffset) {
        precondition(end >= written && end <= reserved, "written end moves from \(written) to \(end) (reserved \(reserved))")
        written = end
    }

    mutating func committed(upTo end: LogOffset) {
        precondition(end > committed && end <= written, "committed end moves from \(committed) to \(end) (written \(written))")
        committed = end
    }

    mutating func moveStart(to offset: LogOffset) {
        precondition(offset >= start && offset <= committed, "start moves from \(start) to \(offset) (committed \(committed))")
        start = offset
    }

    /// Undoes the reservations at and after `offset`, which was never committed (a write failed
    /// for lack of space, or the log failed or is being deleted).
    mutating func rewind(to offset: LogOffset) {
        precondition(offset >= committed && offset <= reserved, "rewinding to \(offset) (committed \(committed), reserved \(reserved))")
        reserved = offset
        written = min(written, offset)
    }
}

/// What the parts of one log share (`LogWriter`, `SegmentFiles`, `LogReader`, `LogUpkeep`): who
/// it is, its segment files and its positions. Only the parts change it.
final class LogState {
    let id: LogID
    let name: String
    /// What the log is also known by (`LogMeta.label`).
    let label: String?
    let settings: LogSettings
    /// Written into every batch; one more than the previous incarnation's.
    let epoch: UInt32
    let directory: CPath
    var directoryFD: Int32
    /// Sorted by base; the last one is active.
    var segments: [Segment]
    /// Where the log's recent bytes sit in the shared tail cache.
    var tail = LogTail()
    var positions: LogPositions
    /// Set once a write or fdatasync failed; from then on nothing more commits and no append is
    /// taken, because what the disk holds past the committed end is unknown.
    var failure: StorageError?
    /// Deletion started: the log takes no more appends and its id no longer finds it.
    var deleting = false
    /// The newest append time given to a batch: the next is never older (the wall clock may
    /// step back). Recovery starts it at the newest time its segments hold.
    var lastAppendMicros: UInt64 = 0
    /// The record number the next batch placed gets (`firstRecord` in format 2): every batch, of
    /// either format, advances it by its record count.
    var nextRecord: UInt64 = 0
    /// The record number of the batch at the committed end (what a checkpoint there records).
    var committedNextRecord: UInt64 = 0
    /// Idempotent producers' latest batches in this log.
    let producers: ProducerTable

    init(
        meta: LogMeta, epoch: UInt32, directory: CPath, directoryFD: Int32, segments: [Segment], positions: LogPositions,
        producers: ProducerTable
    ) {
        precondition(!segments.isEmpty, "a log has at least one segment")
        precondition(zip(segments, segments.dropFirst()).allSatisfy { $0.base < $1.base }, "segments are sorted by base")
        id = meta.logID
        name = meta.name
        label = meta.label
        settings = meta.settings
        self.epoch = epoch
        self.directory = directory
        self.directoryFD = directoryFD
        self.segments = segments
        self.positions = positions
        self.producers = producers
    }

    var activeSegment: Segment { segments[segments.count - 1] }

    /// The segment holding `offset`, if any.
    func segment(holding offset: LogOffset) -> Segment? {
        guard let segment = segments.last(where: { $0.base <= offset }), offset < segment.dataEnd else { return nil }
        return segment
    }
}
