import CRingLogSupport
import Glibc

/// Starts a detached-from-Swift-concurrency OS thread running `body`; join it with `joinThread`.
public func spawnThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    final class Box: @unchecked Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let created = pthread_create(&thread, nil, { context in
        Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
        return nil
    }, box)
    precondition(created == 0, "pthread_create failed: \(created)")
    return thread
}

public func joinThread(_ thread: pthread_t) {
    pthread_join(thread, nil)
}

/// Raises this process's open-file limit (RLIMIT_NOFILE) to its hard limit: every segment file
/// of every log is held open. Returns the soft limit in force afterwards.
@discardableResult
public func raiseOpenFileLimit() -> UInt64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
    }
    return UInt64(limit.rlim_cur)
}

/// Makes the allocator give large buffers back: blocks of 128 KiB and more come from their own
/// mappings and are unmapped when freed. glibc otherwise raises that threshold to the largest
/// block freed so far, after which multi-megabyte read and request buffers come from the heap,
/// and a heap fragmented by an attack stays resident after it ends (issue 12: 860 MiB kept).
/// Setting it once turns that adjustment off. Process-wide: the daemon calls it at start.
public func keepLargeAllocationsReturnable() {
    _ = ringlog_set_mmap_threshold(128 << 10)
}
