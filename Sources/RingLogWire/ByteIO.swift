// Little-endian field access for the fixed layouts in docs/protocol.md and docs/storage.md.
// Every multi-byte integer RingLog puts on the wire or on disk is little-endian and may be unaligned.

extension UnsafeRawPointer {
    @inlinable @inline(__always)
    public func loadLittleEndian<T: FixedWidthInteger>(at offset: Int, as type: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeMutableRawPointer {
    @inlinable @inline(__always)
    public func loadLittleEndian<T: FixedWidthInteger>(at offset: Int, as type: T.Type = T.self) -> T {
        UnsafeRawPointer(self).loadLittleEndian(at: offset, as: type)
    }

    @inlinable @inline(__always)
    public func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

extension UnsafeRawBufferPointer {
    /// Reads a little-endian integer. Precondition: `offset + MemoryLayout<T>.size <= count`.
    @inlinable @inline(__always)
    public func loadLittleEndian<T: FixedWidthInteger>(at offset: Int, as type: T.Type = T.self) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "read past the buffer")
        return baseAddress!.loadLittleEndian(at: offset, as: type)
    }
}

extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    public func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "write past the buffer")
        baseAddress!.storeLittleEndian(value, at: offset)
    }
}

extension Array where Element == UInt8 {
    /// Appends `value` as little-endian bytes.
    @inlinable
    public mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
