import CLiburing
import Glibc

/// A ring of receive buffers registered with io_uring: a receive with `IOSQE_BUFFER_SELECT`
/// names a group instead of a buffer, the kernel picks a free one and reports its id in the
/// completion flags. Buffers go back with `recycle` once their bytes are consumed, so memory for
/// receives is fixed at start-up however many connections there are.
public final class ProvidedBuffers {
    public let groupID: UInt16
    public let count: Int
    public let bufferBytes: Int
    private let ring: Ring
    private let bufferRing: UnsafeMutablePointer<io_uring_buf_ring>
    private let ringMemoryBytes: Int
    private let memory: UnsafeMutableRawPointer

    /// - Parameters: `count` must be a power of two (a kernel requirement).
    public init(ring: Ring, groupID: UInt16, count: Int, bufferBytes: Int) throws(RingError) {
        precondition(count > 0 && count & (count - 1) == 0 && count <= 32_768, "buffer count must be a power of two up to 32768")
        self.ring = ring
        self.groupID = groupID
        self.count = count
        self.bufferBytes = bufferBytes
        ringMemoryBytes = count * MemoryLayout<io_uring_buf>.stride
        // liburing 2.3 has no io_uring_setup_buf_ring: map the ring memory, register it, init it.
        let mapped = mmap(nil, ringMemoryBytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0)
        guard let mapped, mapped != MAP_FAILED else { throw RingError(operation: "mmap buffer ring", errno: errno) }
        bufferRing = mapped.assumingMemoryBound(to: io_uring_buf_ring.self)
        var registration = io_uring_buf_reg()
        registration.ring_addr = UInt64(UInt(bitPattern: mapped))
        registration.ring_entries = UInt32(count)
        registration.bgid = groupID
        let registered = io_uring_register_buf_ring(ring.raw, &registration, 0)
        guard registered == 0 else {
            munmap(mapped, ringMemoryBytes)
            throw RingError(operation: "io_uring_register_buf_ring", errno: -registered)
        }
        io_uring_buf_ring_init(bufferRing)
        memory = UnsafeMutableRawPointer.allocate(byteCount: count * bufferBytes, alignment: 4096)
        let mask = io_uring_buf_ring_mask(UInt32(count))
        for id in 0..<count {
            io_uring_buf_ring_add(bufferRing, memory + id * bufferBytes, UInt32(bufferBytes), UInt16(id), mask, Int32(id))
        }
        io_uring_buf_ring_advance(bufferRing, Int32(count))
    }

    deinit {
        _ = io_uring_unregister_buf_ring(ring.raw, Int32(groupID))
        munmap(bufferRing, ringMemoryBytes)
        memory.deallocate()
    }

    /// The bytes of buffer `id` that a completion filled.
    @inline(__always)
    public func bytes(id: UInt16, count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: memory + Int(id) * bufferBytes, count: count)
    }

    /// Gives buffer `id` back to the kernel.
    @inline(__always)
    public func recycle(id: UInt16) {
        io_uring_buf_ring_add(bufferRing, memory + Int(id) * bufferBytes, UInt32(bufferBytes), id, io_uring_buf_ring_mask(UInt32(count)), 0)
        io_uring_buf_ring_advance(bufferRing, 1)
    }

    /// The buffer id a receive completion's flags carry, if it used one.
    @inline(__always)
    public static func bufferID(fromFlags flags: UInt32) -> UInt16? {
        flags & IORING_CQE_F_BUFFER != 0 ? UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT) : nil
    }
}
