import Glibc

/// The one monotonic clock: nanoseconds since some fixed point, never going back.
public enum MonotonicClock {
    @inline(__always)
    public static func nanos() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    public static func micros() -> UInt64 { nanos() / 1000 }
    public static func millis() -> Int { Int(nanos() / 1_000_000) }
    public static func seconds() -> Double { Double(nanos()) / 1e9 }
}

/// The wall clock: microseconds since the Unix epoch. It can jump; nothing that measures a
/// duration reads it.
public enum WallClock {
    public static func micros() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1000
    }
}
