import CLiburing
import Glibc
import RingLogIO
import RingLogStorage
import Synchronization

/// The real disk for start-up work: each operation goes through its own small io_uring and is
/// waited for. The server's data path does not use this; it submits to its event loop's ring.
public final class RingDisk: DiskIO {
    private let ring: Ring

    public init() throws(RingError) {
        ring = try Ring(entries: 8)
    }

    public func perform(_ operation: DiskOperation) -> DiskResult {
        // One operation at a time on its own ring: the queue has room unless the kernel is
        // refusing submissions, which is reported like any failed operation.
        guard let entry = ring.submissionEntry() else { return -Int64(EBUSY) }
        operation.ringOperation.prepare(entry)
        io_uring_sqe_set_data64(entry, 1)
        var result: DiskResult = -Int64(EIO)
        while true {
            let waited = ring.submitAndWait(count: 1, timeoutNanos: nil)
            if waited < 0 && waited != -EINTR { return DiskResult(waited) }
            if ring.drainCompletions({ _, value, _ in result = DiskResult(value) }) > 0 { return result }
        }
    }

    public func listDirectory(_ path: CPath) -> Result<[String], StorageError> {
        guard let directory = opendir(path.pointer) else {
            return .failure(.io(operation: "opendir", errno: errno, detail: path.string))
        }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return .success(names)
    }

    public func fileSize(fd: Int32) -> Result<Int64, StorageError> {
        var status = stat()
        guard fstat(fd, &status) == 0 else { return .failure(.io(operation: "fstat", errno: errno, detail: "fd \(fd)")) }
        return .success(Int64(status.st_size))
    }

    public func lockExclusively(_ path: CPath) -> Result<Int32, StorageError> {
        let fd = open(path.pointer, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return .failure(.io(operation: "open", errno: errno, detail: path.string)) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let failure = errno
            close(fd)
            if failure == EWOULDBLOCK { return .failure(.dataDirectoryInUse(path.string)) }
            return .failure(.io(operation: "flock", errno: failure, detail: path.string))
        }
        return .success(fd)
    }
}

/// Carries a store's disk requests out on the loop core, asynchronously: the server's loop and
/// the storage benchmark use it. Each request in flight has its own handle on the loop whose
/// context is the store's token; the store, not this, remembers the request (and so keeps the
/// paths and buffers it points at alive) until the completion hands the result back.
public final class DiskExecutor: IOHandler {
    private let loop: IOLoop
    private let store: LogStore
    /// Results to report instead of the kernel's, by the store's token: failures `DiskFaults`
    /// injected. Empty unless a test set faults.
    private var injected: [UInt64: Int32] = [:]
    /// Requests kept back by `DiskFaults.hold`, submitted once released.
    private var held: [DiskRequest] = []
    private let faults: DiskFaults?

    public init(loop: IOLoop, store: LogStore, faults: DiskFaults? = nil) {
        self.loop = loop
        self.store = store
        self.faults = faults
    }

    /// Submits every request the store has queued.
    public func submitQueued() {
        if !held.isEmpty, let faults {
            let released = held.filter { !faults.isHeld($0.operation) }
            held.removeAll { !faults.isHeld($0.operation) }
            for request in released { submit(request) }
        }
        while let request = store.takeRequest() {
            if let faults, faults.isHeld(request.operation) {
                held.append(request)
                continue
            }
            submit(request)
        }
    }

    private func submit(_ request: DiskRequest) {
        let handle = loop.register(self, context: request.token)
        switch faults?.injection(for: request.operation) {
        case .fail(let errno)?:
            injected[request.token] = -errno
            // Still one ring operation, so the failure arrives in its turn like a real one.
            loop.submit(.nop, for: handle)
        case .shorten?:
            loop.submit(request.operation.halved().ringOperation, for: handle)
        case nil:
            loop.submit(request.operation.ringOperation, for: handle)
        }
        loop.release(handle)
    }

    public func completed(_ completion: IOCompletion) {
        let result = injected.isEmpty ? completion.result : injected.removeValue(forKey: completion.context) ?? completion.result
        store.complete(token: completion.context, result: DiskResult(result))
    }
}

/// Failures to inject into a real server's disk operations, for testing its failure paths: an
/// operation named here (`fdatasync`, `write`, `fallocate`, ...) completes with the errno given
/// instead of running. Changes take effect for operations issued afterwards. Safe from any thread.
public final class DiskFaults: Sendable {
    private let heldOperations = Mutex<Set<String>>([])

    /// Keeps operations named `operation` from reaching the disk until `release`: a stalled disk,
    /// so that tests can hold acknowledgements pending for as long as they need.
    public func hold(_ operation: String) { heldOperations.withLock { _ = $0.insert(operation) } }

    public func release(_ operation: String) { heldOperations.withLock { _ = $0.remove(operation) } }

    func isHeld(_ operation: DiskOperation) -> Bool {
        heldOperations.withLock { !$0.isEmpty && $0.contains(operation.name) }
    }

    private struct Rule {
        var errno: Int32?
        /// Carry out the operation, but ask for only half the bytes (a real short write or read).
        var shorten = false
        var remaining: Int
    }

    private let rules = Mutex<[String: Rule]>([:])

    public init() {}

    /// Makes the next `times` operations named `operation` fail with `errno`.
    public func fail(_ operation: String, with errno: Int32, times: Int = .max) {
        rules.withLock { $0[operation] = Rule(errno: errno, remaining: times) }
    }

    /// Makes the next `times` writes or reads transfer only half of what they ask for.
    public func shorten(_ operation: String, times: Int = .max) {
        rules.withLock { $0[operation] = Rule(errno: nil, shorten: true, remaining: times) }
    }

    public func clear() { rules.withLock { $0.removeAll() } }

    enum Injection {
        case fail(Int32)
        case shorten
    }

    func injection(for operation: DiskOperation) -> Injection? {
        rules.withLock { rules in
            guard var rule = rules[operation.name], rule.remaining > 0 else { return nil }
            rule.remaining -= 1
            rules[operation.name] = rule
            if let errno = rule.errno { return .fail(errno) }
            return rule.shorten ? .shorten : nil
        }
    }
}
