import Glibc
import RingLogIO
import RingLogWire

/// A NUL-terminated path whose bytes stay put for as long as the object lives, so an operation
/// in flight in the kernel can point at it.
public final class CPath: CustomStringConvertible, @unchecked Sendable {
    public let string: String
    public let pointer: UnsafeMutablePointer<CChar>

    public init(_ string: String) {
        precondition(!string.utf8.contains(0), "paths never contain NUL")
        self.string = string
        pointer = strdup(string)!
    }

    deinit { free(pointer) }

    public var description: String { string }

    /// `self` joined with one more path component.
    public func appending(_ component: String) -> CPath { CPath(string + "/" + component) }
}

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
    case fallocate(fd: Int32, length: Int64)
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

/// Carries out disk operations one at a time, synchronously. Recovery, log directory set-up at
/// start-up and the tests use this; the server's data path uses the ring asynchronously instead.
public protocol DiskIO: AnyObject {
    func perform(_ operation: DiskOperation) -> DiskResult
    /// Names in a directory (not `.` and `..`). io_uring has no getdents, so this is the one
    /// start-up step that does not go through the ring.
    func listDirectory(_ path: CPath) -> Result<[String], StorageError>
    /// Size in bytes of an open file.
    func fileSize(fd: Int32) -> Result<Int64, StorageError>
    /// Takes an exclusive lock on the data directory for the life of the process.
    func lockExclusively(_ path: CPath) -> Result<Int32, StorageError>
}

extension DiskIO {
    /// Performs the operation, retrying EINTR/EAGAIN, and turns a failure into a `StorageError`.
    func run(_ operation: DiskOperation) -> Result<Int64, StorageError> {
        while true {
            let result = perform(operation)
            if result >= 0 { return .success(result) }
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN { continue }
            return .failure(StorageError.io(operation: operation.name, errno: errno, detail: operation.subject))
        }
    }

    /// Reads exactly `buffer.count` bytes at `position` unless the file ends first; returns the
    /// number read.
    func readFully(fd: Int32, position: Int64, into buffer: UnsafeMutableRawBufferPointer) -> Result<Int, StorageError> {
        var done = 0
        while done < buffer.count {
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            switch run(.read(fd: fd, position: position + Int64(done), into: piece, uncached: false)) {
            case .failure(let error): return .failure(error)
            case .success(0): return .success(done)
            case .success(let count): done += Int(count)
            }
        }
        return .success(done)
    }

    /// Writes every byte, continuing after short writes.
    func writeFully(fd: Int32, position: Int64, bytes: UnsafeRawBufferPointer) -> Result<Void, StorageError> {
        var done = 0
        while done < bytes.count {
            let piece = UnsafeRawBufferPointer(rebasing: bytes[done...])
            switch run(.write(fd: fd, position: position + Int64(done), bytes: piece, uncached: false)) {
            case .failure(let error): return .failure(error)
            case .success(0): return .failure(.io(operation: "write", errno: EIO, detail: "wrote 0 bytes"))
            case .success(let count): done += Int(count)
            }
        }
        return .success(())
    }

    /// The whole content of a small file, or nil when it does not exist.
    func readSmallFile(_ path: CPath, limit: Int = 1 << 20) -> Result<[UInt8]?, StorageError> {
        let opened = perform(.open(path: path, flags: O_RDONLY | O_CLOEXEC, mode: 0))
        if opened == -Int64(ENOENT) { return .success(nil) }
        if opened < 0 { return .failure(.io(operation: "open", errno: Int32(-opened), detail: path.string)) }
        let fd = Int32(opened)
        defer { _ = perform(.close(fd: fd)) }
        // Sized to the file, not to the limit: recovery reads one index file per segment, and a
        // zeroed 64 MiB buffer for each was 40 ms per segment (issue 12).
        let size: Int64
        switch fileSize(fd: fd) {
        case .failure(let error): return .failure(error)
        case .success(let found): size = found
        }
        var bytes = [UInt8](repeating: 0, count: Int(min(size, Int64(limit))))
        let count = bytes.withUnsafeMutableBytes { readFully(fd: fd, position: 0, into: $0) }
        return count.map { Array(bytes[0..<$0]) }
    }
}

extension DiskOperation {
    /// The path or descriptor the operation is about, for error messages.
    var subject: String {
        switch self {
        case .open(let path, _, _), .unlink(let path, _), .mkdir(let path, _): path.string
        case .rename(let from, let to): "\(from) -> \(to)"
        case .close(let fd), .read(let fd, _, _, _), .write(let fd, _, _, _), .fdatasync(let fd), .fsync(let fd),
            .fallocate(let fd, _), .syncFileRange(let fd, _, _):
            "fd \(fd)"
        }
    }
}
