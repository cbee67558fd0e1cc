import CLiburing
import Glibc

/// Why a ring could not be set up or used, with the fix when there is a known one.
public struct RingError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        let reason = String(cString: strerror(errno))
        switch errno {
        case ENOSYS:
            return "\(operation) failed: io_uring is not available (\(reason)). RingLog needs Linux 6.0 or newer with "
                + "io_uring compiled in (CONFIG_IO_URING)."
        case EPERM, EACCES:
            return "\(operation) failed: io_uring is not permitted (\(reason)). Check /proc/sys/kernel/io_uring_disabled "
                + "(it must be 0, or 1 with this user in the io_uring group), and in a container run with the seccomp "
                + "profile shipped in Scripts/seccomp-ringlogd.json (docker run --security-opt seccomp=...; see docs/operations.md)."
        case ENOMEM:
            return "\(operation) failed: not enough locked memory for the ring (\(reason)). Raise RLIMIT_MEMLOCK "
                + "(ulimit -l) or use a smaller ring."
        default:
            return "\(operation) failed: \(reason) (errno \(errno))"
        }
    }
}

/// A thin owner of one io_uring instance. Not thread-safe: one thread creates and drives it.
///
/// The `io_uring` struct lives at a fixed heap address so liburing's inline functions can take
/// its pointer without Swift's exclusivity checks on every access.
public final class Ring {
    public let raw: UnsafeMutablePointer<io_uring>
    /// `IORING_FEAT_*` bits the kernel reported.
    public let features: UInt32
    private let completionBatch: UnsafeMutablePointer<UnsafeMutablePointer<io_uring_cqe>?>
    private static let completionBatchSize: UInt32 = 256

    /// - Parameters:
    ///   - entries: submission queue size (the completion queue gets `completionEntries`).
    ///   - flags: `IORING_SETUP_*`; a ring with `IORING_SETUP_SINGLE_ISSUER` must be created on
    ///     the thread that submits to it.
    public init(entries: UInt32, completionEntries: UInt32? = nil, flags: UInt32 = 0) throws(RingError) {
        raw = .allocate(capacity: 1)
        var parameters = io_uring_params()
        parameters.flags = flags
        if let completionEntries {
            parameters.flags |= IORING_SETUP_CQSIZE
            parameters.cq_entries = completionEntries
        }
        let result = io_uring_queue_init_params(entries, raw, &parameters)
        if result < 0 {
            raw.deallocate()
            throw RingError(operation: "io_uring_queue_init", errno: -result)
        }
        features = parameters.features
        completionBatch = .allocate(capacity: Int(Ring.completionBatchSize))
    }

    /// A ring for an event loop: completions processed only when the loop asks for them
    /// (`IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`), without those flags on kernels
    /// that lack them. Create it on the thread that runs the loop.
    public static func forEventLoop(entries: Int, completionEntries: Int) throws(RingError) -> Ring {
        do {
            return try Ring(
                entries: UInt32(entries), completionEntries: UInt32(completionEntries), flags: IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
        } catch where error.errno == EINVAL {
            return try Ring(entries: UInt32(entries), completionEntries: UInt32(completionEntries))
        }
    }

    deinit {
        io_uring_queue_exit(raw)
        raw.deallocate()
        completionBatch.deallocate()
    }

    /// A free submission entry, submitting what is queued first when the queue is full; nil when
    /// the kernel takes nothing more right now (the caller keeps the operation and retries).
    @inline(__always)
    public func submissionEntry() -> UnsafeMutablePointer<io_uring_sqe>? {
        if let entry = io_uring_get_sqe(raw) { return entry }
        _ = submit()
        return io_uring_get_sqe(raw)
    }

    /// Submits queued entries; returns the number submitted or `-errno`.
    @discardableResult
    public func submit() -> Int32 {
        while true {
            let result = io_uring_submit(raw)
            if result == -EINTR { continue }
            return result
        }
    }

    /// Submits queued entries and waits until at least `count` completions are ready or `timeoutNanos`
    /// passes (nil waits without limit). Returns `-ETIME` on timeout.
    @discardableResult
    public func submitAndWait(count: UInt32, timeoutNanos: Int64?) -> Int32 {
        guard let timeoutNanos else { return io_uring_submit_and_wait(raw, count) }
        var timeout = __kernel_timespec(tv_sec: timeoutNanos / 1_000_000_000, tv_nsec: timeoutNanos % 1_000_000_000)
        var completion: UnsafeMutablePointer<io_uring_cqe>?
        return io_uring_submit_and_wait_timeout(raw, &completion, count, &timeout, nil)
    }

    /// Hands every ready completion to `body` as (user data, result, flags) and marks them seen.
    /// Returns how many there were.
    @inline(__always) @discardableResult
    public func drainCompletions(_ body: (UInt64, Int32, UInt32) -> Void) -> Int {
        var total = 0
        while true {
            let count = io_uring_peek_batch_cqe(raw, completionBatch, Ring.completionBatchSize)
            if count == 0 { return total }
            for index in 0..<Int(count) {
                let completion = completionBatch[index]!.pointee
                body(completion.user_data, completion.res, completion.flags)
            }
            io_uring_cq_advance(raw, count)
            total += Int(count)
        }
    }

    /// Which of `operations` this kernel's io_uring does not support.
    public func unsupportedOperations(_ operations: [(name: String, code: io_uring_op)]) -> [String] {
        guard let probe = io_uring_get_probe_ring(raw) else { return ["probe"] }
        defer { io_uring_free_probe(probe) }
        return operations.filter { io_uring_opcode_supported(probe, Int32($0.code.rawValue)) == 0 }.map(\.name)
    }
}
