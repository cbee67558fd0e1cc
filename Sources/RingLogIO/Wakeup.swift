import CRingLogSupport
import Glibc

/// An eventfd another thread writes to so the event loop's pending read of it completes.
public final class Wakeup: @unchecked Sendable {
    public let fd: Int32

    public init() {
        fd = ringlog_eventfd()
        precondition(fd >= 0, "eventfd: \(String(cString: strerror(errno)))")
    }

    /// Safe from any thread.
    public func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    deinit { close(fd) }
}
