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
