import RingLogWire

/// What a test or a torture run throws when the behaviour it checks is not there.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// `length` bytes that differ with `seed` and position: a payload whose corruption shows.
public func payload(_ length: Int, seed: Int) -> [UInt8] {
    (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ 1) }
}

/// SplitMix64: small, fast, and the same sequence for the same seed everywhere, so a randomized
/// run that fails can be replayed from its seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}

/// The batches in `bytes` with their offsets and payloads, each checked as a client checks it
/// (header, offset, CRCs). `offset` is where the first must sit; nil trusts the first header.
public func storedBatches(_ bytes: UnsafeRawBufferPointer, from offset: LogOffset?) throws -> [(offset: LogOffset, payload: [UInt8])] {
    var found: [(offset: LogOffset, payload: [UInt8])] = []
    try StoredBatches.forEach(in: bytes, startingAt: offset, damaged: { TestFailure($0.description) }) { offset, _, payload throws(TestFailure) in
        found.append((offset, Array(payload)))
    }
    return found
}

public func storedBatches(_ bytes: [UInt8], from offset: LogOffset?) throws -> [(offset: LogOffset, payload: [UInt8])] {
    try bytes.withUnsafeBytes { try storedBatches($0, from: offset) }
}
