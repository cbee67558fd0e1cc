import Glibc

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
