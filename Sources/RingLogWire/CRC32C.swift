import CRingLogSupport

/// CRC32C (Castagnoli), the checksum on every stored batch and every protocol header.
///
/// Values chain like zlib's `crc32`: `checksum(b, continuing: checksum(a))` is the checksum of
/// `a` followed by `b`. The empty input has checksum 0.
public enum CRC32C {
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return ringlog_crc32c(crc, base, bytes.count)
    }

    @inlinable
    public static func checksum(_ base: UnsafeRawPointer, count: Int, continuing crc: UInt32 = 0) -> UInt32 {
        ringlog_crc32c(crc, base, count)
    }

    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        let array = Array(bytes)
        return array.withUnsafeBytes { checksum($0) }
    }

    /// The table-driven implementation, for checking the hardware path against it.
    public static func portableChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return ringlog_crc32c_portable(crc, base, bytes.count)
    }

    public static var isHardwareAccelerated: Bool { ringlog_crc32c_is_hardware_accelerated() }
}
