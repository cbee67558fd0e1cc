import Glibc

/// One file-system operation the storage engine wants carried out.
///
/// The engine decides; it never performs I/O. The server carries these out on its io_uring ring,
/// recovery and tools through `DiskIO.perform`, and tests on a simulated disk that can lose,
/// tear and corrupt writes. Every pointer stays valid until the operation completes.
public enum DiskOperation {
    case open(path: CPath, flags: Int32, mode: UInt32)
    case close(fd: Int32)
    /// An uncached read (`RWF_DONTCACHE`) takes pages already cached from the cache and leaves
    /// them there; pages it has to read in are dropped once copied.
    case read(fd: Int32, position: Int64, into: UnsafeMutableRawBufferPointer, uncached: Bool)
    /// An uncached write (`RWF_DONTCACHE`, Linux 6.14+) still goes through the page cache, but the
    /// kernel starts writeback at once and drops the pages when it completes, so bulk appends keep
    /// reusing the same few pages instead of filling the cache (docs/storage.md). A kernel or file
    /// system without it fails the write with EOPNOTSUPP.
    case write(fd: Int32, position: Int64, bytes: UnsafeRawBufferPointer, uncached: Bool)
    case fdatasync(fd: Int32)
    /// A full fsync; used on directories to make entries durable.
    case fsync(fd: Int32)
    /// Allocates `length` bytes from `offset`; the file grows to cover them.
    case fallocate(fd: Int32, offset: Int64, length: Int64)
    /// Starts writeback of a range and waits for it (`sync_file_range` with WAIT_BEFORE, WRITE
    /// and WAIT_AFTER). Makes nothing durable; it only keeps a later fdatasync from having to write
    /// those pages.
    case syncFileRange(fd: Int32, position: Int64, length: Int64)
    case rename(from: CPath, to: CPath)
    case unlink(path: CPath, isDirectory: Bool)
    case mkdir(path: CPath, mode: UInt32)

    public var name: String {
        switch self {
        case .open: "open"
        case .close: "close"
        case .read: "read"
        case .write: "write"
        case .fdatasync: "fdatasync"
        case .fsync: "fsync"
        case .fallocate: "fallocate"
        case .syncFileRange: "sync_file_range"
        case .rename: "rename"
        case .unlink: "unlink"
        case .mkdir: "mkdir"
        }
    }
}

/// An operation the engine has issued, with the token its completion must carry back.
public struct DiskRequest {
    public var token: UInt64
    public var operation: DiskOperation
}

/// What the kernel returned: a byte count or descriptor when `>= 0`, else `-errno`.
public typealias DiskResult = Int64

extension DiskOperation {
    /// The path or descriptor the operation is about, for error messages.
    var subject: String {
        switch self {
        case .open(let path, _, _), .unlink(let path, _), .mkdir(let path, _): path.string
        case .rename(let from, let to): "\(from) -> \(to)"
        case .close(let fd), .read(let fd, _, _, _), .write(let fd, _, _, _), .fdatasync(let fd), .fsync(let fd),
            .fallocate(let fd, _, _), .syncFileRange(let fd, _, _):
            "fd \(fd)"
        }
    }
}
