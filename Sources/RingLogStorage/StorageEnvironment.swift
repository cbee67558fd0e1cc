/// What the storage engine reads from outside itself: two clocks and a source of random numbers.
/// They are handed in (the server passes the system's, `RingLogDiskIO`'s `StorageEnvironment.system`;
/// a simulation passes a clock it moves and a generator seeded from its seed), so a simulated run
/// repeats exactly from its seed.
public struct StorageEnvironment: Sendable {
    /// Wall-clock microseconds since the Unix epoch: append times, checkpoint times, retention by
    /// age.
    public var wallMicros: @Sendable () -> UInt64
    /// Monotonic nanoseconds: how long fdatasyncs and recovery took.
    public var monotonicNanos: @Sendable () -> UInt64
    /// A random number (new log ids).
    public var random: @Sendable () -> UInt64

    public init(
        wallMicros: @escaping @Sendable () -> UInt64, monotonicNanos: @escaping @Sendable () -> UInt64, random: @escaping @Sendable () -> UInt64
    ) {
        self.wallMicros = wallMicros
        self.monotonicNanos = monotonicNanos
        self.random = random
    }
}
