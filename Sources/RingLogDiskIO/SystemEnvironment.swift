import RingLogIO
import RingLogStorage

extension StorageEnvironment {
    /// The system's clocks and random numbers: what the server and the tools run with.
    public static let system = StorageEnvironment(
        wallMicros: { WallClock.micros() }, monotonicNanos: { MonotonicClock.nanos() }, random: { UInt64.random(in: 0...UInt64.max) })
}
