import Glibc

/// Bytes owned by an operation in flight, freed when the last reference goes.
public final class OwnedBytes: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer

    public init(_ bytes: [UInt8]) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
        self.buffer = buffer
        count = bytes.count
    }

    public init(zeroedCount: Int) {
        buffer = .allocate(byteCount: max(zeroedCount, 1), alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        count = zeroedCount
    }

    /// Room for `count` bytes that the caller fills before reading (a read target).
    public init(uninitializedCount: Int) {
        buffer = .allocate(byteCount: max(uninitializedCount, 1), alignment: 4096)
        count = uninitializedCount
    }

    /// Bytes handed out by `pool`; they go back to it when released.
    init(pooled buffer: UnsafeMutableRawBufferPointer, count: Int, pool: BufferPool) {
        self.buffer = buffer
        self.count = count
        self.pool = pool
    }

    public init(copying bytes: UnsafeRawBufferPointer) {
        buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        if bytes.count > 0 { buffer.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
        count = bytes.count
    }

    public let count: Int
    private var pool: BufferPool?
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<count]) }
    public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]) }

    deinit {
        if let pool, pool.keep(buffer) { return }
        buffer.deallocate()
    }
}

/// Large buffers kept for reuse on one thread (the server's loop): reads of segment files land in
/// the same pages again instead of a fresh multi-megabyte allocation each, whose page faults cost
/// more than the read itself. Buffers come in size classes (powers of two from `smallestPooled` to
/// 1 MiB, then whole MiB, so a 4 MiB read window plus its index walk stays in one class); at most
/// `maxPooledBytes` are kept idle, the rest are freed. Buffers handed out by a pool must be
/// released on the thread that owns it.
public final class BufferPool {
    public static let smallestPooled = 64 << 10
    private var idle: [Int: [UnsafeMutableRawBufferPointer]] = [:]
    private var idleBytes = 0
    public let maxPooledBytes: Int

    public init(maxPooledBytes: Int) { self.maxPooledBytes = maxPooledBytes }

    deinit {
        for buffers in idle.values { for buffer in buffers { buffer.deallocate() } }
    }

    /// Room for `count` bytes that the caller fills before reading (a read target).
    public func take(count: Int) -> OwnedBytes {
        guard count >= BufferPool.smallestPooled, maxPooledBytes > 0 else { return OwnedBytes(uninitializedCount: count) }
        let size = count >= 1 << 20 ? (count + (1 << 20) - 1) & ~((1 << 20) - 1) : 1 << (Int.bitWidth - (count - 1).leadingZeroBitCount)
        inUseBytes += size
        if let buffer = idle[size]?.popLast() {
            idleBytes -= size
            return OwnedBytes(pooled: buffer, count: count, pool: self)
        }
        return OwnedBytes(pooled: .allocate(byteCount: size, alignment: 4096), count: count, pool: self)
    }

    /// A copy of `bytes` (pooled when large enough).
    public func copy(_ bytes: UnsafeRawBufferPointer) -> OwnedBytes {
        guard bytes.count >= BufferPool.smallestPooled else { return OwnedBytes(copying: bytes) }
        let copy = take(count: bytes.count)
        copy.buffer.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        return copy
    }

    /// Bytes of the buffers handed out and not yet back (their size classes).
    public private(set) var inUseBytes = 0

    /// Whether `buffer` was kept; the caller frees it otherwise.
    fileprivate func keep(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        inUseBytes -= buffer.count
        assert(idle[buffer.count]?.contains { $0.baseAddress == buffer.baseAddress } != true, "a buffer went back to the pool twice")
        guard idleBytes + buffer.count <= maxPooledBytes else { return false }
        idle[buffer.count, default: []].append(buffer)
        idleBytes += buffer.count
        return true
    }

    public var idleByteCount: Int { idleBytes }
}
