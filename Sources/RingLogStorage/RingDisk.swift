import CLiburing
import Glibc
import RingLogIO
import Synchronization

extension DiskOperation {
    /// Fills a submission entry with this operation. Pointers inside must stay valid until the
    /// completion arrives.
    public func prepare(_ entry: UnsafeMutablePointer<io_uring_sqe>) {
        switch self {
        case .open(let path, let flags, let mode):
            io_uring_prep_openat(entry, AT_FDCWD, path.pointer, flags, mode)
        case .close(let fd):
            io_uring_prep_close(entry, fd)
        case .read(let fd, let position, let buffer, let uncached):
            io_uring_prep_read(entry, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(position))
            if uncached { entry.pointee.rw_flags = RINGLOG_RWF_DONTCACHE }
        case .write(let fd, let position, let bytes, let uncached):
            io_uring_prep_write(entry, fd, bytes.baseAddress, UInt32(bytes.count), UInt64(position))
            if uncached { entry.pointee.rw_flags = RINGLOG_RWF_DONTCACHE }
        case .fdatasync(let fd):
            io_uring_prep_fsync(entry, fd, IORING_FSYNC_DATASYNC)
        case .fsync(let fd):
            io_uring_prep_fsync(entry, fd, 0)
        case .fallocate(let fd, let length):
            io_uring_prep_fallocate(entry, fd, 0, 0, off_t(length))
        case .syncFileRange(let fd, let position, let length):
            io_uring_prep_sync_file_range(entry, fd, UInt32(length), UInt64(position), Int32(RINGLOG_SYNC_FILE_RANGE_WRITE_AND_WAIT))
        case .rename(let from, let to):
            io_uring_prep_renameat(entry, AT_FDCWD, from.pointer, AT_FDCWD, to.pointer, 0)
        case .unlink(let path, let isDirectory):
            io_uring_prep_unlinkat(entry, AT_FDCWD, path.pointer, isDirectory ? AT_REMOVEDIR : 0)
        case .mkdir(let path, let mode):
            io_uring_prep_mkdirat(entry, AT_FDCWD, path.pointer, mode)
        }
    }

    /// The same write or read asking for half as many bytes (at least one), for fault injection.
    func halved() -> DiskOperation {
        switch self {
        case .write(let fd, let position, let bytes, let uncached):
            .write(fd: fd, position: position, bytes: UnsafeRawBufferPointer(rebasing: bytes[0..<max(1, bytes.count / 2)]), uncached: uncached)
        case .read(let fd, let position, let buffer, let uncached):
            .read(fd: fd, position: position, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<max(1, buffer.count / 2)]), uncached: uncached)
        default: self
        }
    }

    /// The io_uring operations the storage engine issues, for probing the kernel at start-up.
    public static let ringOperations: [(name: String, code: io_uring_op)] = [
        ("openat", IORING_OP_OPENAT), ("close", IORING_OP_CLOSE), ("read", IORING_OP_READ), ("write", IORING_OP_WRITE),
        ("fsync", IORING_OP_FSYNC), ("fallocate", IORING_OP_FALLOCATE), ("sync_file_range", IORING_OP_SYNC_FILE_RANGE), ("renameat", IORING_OP_RENAMEAT),
        ("unlinkat", IORING_OP_UNLINKAT), ("mkdirat", IORING_OP_MKDIRAT),
    ]
}

/// The real disk for start-up work: each operation goes through its own small io_uring and is
/// waited for. The server's data path does not use this; it submits to its event loop's ring.
public final class RingDisk: DiskIO {
    private let ring: Ring

    public init() throws(RingError) {
        ring = try Ring(entries: 8)
    }

    public func perform(_ operation: DiskOperation) -> DiskResult {
        let entry = ring.submissionEntry()
        operation.prepare(entry)
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

/// Carries a store's disk requests out on an io_uring, asynchronously: the server's event loop and
/// the storage benchmark use it. It keeps each request (and the paths and buffers it points at)
/// alive until its completion arrives.
public final class RingDiskExecutor {
    private var inFlight: [UInt64: DiskRequest] = [:]
    private var injected: [UInt64: Int32] = [:]
    /// Requests kept back by `DiskFaults.hold`, submitted once released.
    private var held: [DiskRequest] = []
    private let faults: DiskFaults?
    /// Bits of user data below this mark carry the store's token; the caller's tag goes above.
    public static let tokenBits: UInt64 = 56

    public init(faults: DiskFaults? = nil) {
        self.faults = faults
    }

    public var count: Int { inFlight.count }

    /// Queues every request the store has waiting as submission entries on `ring`, with user data
    /// `tag << 56 | token`. The caller submits.
    public func prepareQueued(from store: LogStore, on ring: Ring, tag: UInt64) {
        if !held.isEmpty, let faults {
            let released = held.filter { !faults.isHeld($0.operation) }
            held.removeAll { !faults.isHeld($0.operation) }
            for request in released { prepare(request, on: ring, tag: tag) }
        }
        while let request = store.takeRequest() {
            if let faults, faults.isHeld(request.operation) {
                held.append(request)
                continue
            }
            prepare(request, on: ring, tag: tag)
        }
    }

    private func prepare(_ request: DiskRequest, on ring: Ring, tag: UInt64) {
        precondition(request.token < (1 << RingDiskExecutor.tokenBits), "disk request tokens ran out of bits")
        let entry = ring.submissionEntry()
        switch faults?.injection(for: request.operation) {
        case .fail(let errno)?:
            io_uring_prep_nop(entry)
            injected[request.token] = -errno
        case .shorten?:
            request.operation.halved().prepare(entry)
        case nil:
            request.operation.prepare(entry)
        }
        io_uring_sqe_set_data64(entry, tag << RingDiskExecutor.tokenBits | request.token)
        inFlight[request.token] = request
    }

    /// Hands a completion back to the store; `userData` is what the ring returned.
    public func complete(userData: UInt64, result: Int32, store: LogStore) {
        let token = userData & ((1 << RingDiskExecutor.tokenBits) - 1)
        guard inFlight.removeValue(forKey: token) != nil else { preconditionFailure("completion for unknown disk request \(token)") }
        store.complete(token: token, result: DiskResult(injected.removeValue(forKey: token) ?? result))
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
