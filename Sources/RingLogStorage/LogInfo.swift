import RingLogWire

/// What a log reports about itself.
public struct LogInfo: Equatable, Sendable {
    public var id: LogID
    public var name: String
    public var startOffset: LogOffset
    public var committedEnd: LogOffset
    public var segmentCount: Int
    /// Bytes of batches held, from the first segment's base to the committed end.
    public var storedBytes: Int
    /// Bytes of preallocated segment files on disk, the spare included.
    public var diskBytes: Int
    public var settings: LogSettings
    /// Why the log stopped accepting writes, if it did.
    public var failure: String?
    /// Records the log has numbered up to its committed end (the next batch's first record number).
    public var committedRecords: UInt64 = 0
    /// Idempotent producers the log remembers.
    public var producers: Int = 0
    /// What the log is also known by (`LogMeta.label`), if anything.
    public var label: String? = nil
}
