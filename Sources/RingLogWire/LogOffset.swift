/// A position in a log, counted in bytes from the first byte the log ever held.
///
/// A batch's id is the offset of its first byte. Offsets never change and are never reused, so a
/// reader can resume from any offset it was given by an append acknowledgement or a read.
public struct LogOffset: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static let zero = LogOffset(0)

    /// The offset `bytes` further on. Precondition: the result fits in 64 bits and is not negative.
    @inlinable
    public func advanced(by bytes: Int) -> LogOffset {
        LogOffset(bytes >= 0 ? rawValue + UInt64(bytes) : rawValue - UInt64(-bytes))
    }

    /// Bytes from `self` to `other` (negative when `other` comes first).
    @inlinable
    public func distance(to other: LogOffset) -> Int {
        other.rawValue >= rawValue ? Int(other.rawValue - rawValue) : -Int(rawValue - other.rawValue)
    }

    @inlinable
    public static func < (lhs: LogOffset, rhs: LogOffset) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(rawValue) }
}

/// A log's numeric id. Requests name a log by id so the fixed-length request header stays fixed;
/// a log deleted and created again under the same name gets a new id, so a stale id cannot reach
/// the new log.
public struct LogID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Id 0 means "no log" in request headers of operations that do not target one.
    public static let none = LogID(0)

    public static func < (lhs: LogID, rhs: LogID) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { String(rawValue) }
}
