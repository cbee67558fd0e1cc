import Glibc
import RingLogIO
import RingLogStorage

extension DiskOperation {
    /// The ring operation that carries this out. Paths and buffers stay owned by the request,
    /// which the store keeps until the completion arrives.
    var ringOperation: RingOperation {
        switch self {
        case .open(let path, let flags, let mode): .open(path: path.pointer, flags: flags, mode: mode)
        case .close(let fd): .close(fd: fd)
        case .read(let fd, let position, let buffer, let uncached): .read(fd: fd, position: position, into: buffer, uncached: uncached)
        case .write(let fd, let position, let bytes, let uncached): .write(fd: fd, position: position, bytes: bytes, uncached: uncached)
        case .fdatasync(let fd): .sync(fd: fd, dataOnly: true)
        case .fsync(let fd): .sync(fd: fd, dataOnly: false)
        case .fallocate(let fd, let offset, let length): .fallocate(fd: fd, offset: offset, length: length)
        case .syncFileRange(let fd, let position, let length): .syncFileRange(fd: fd, position: position, length: length)
        case .rename(let from, let to): .rename(from: from.pointer, to: to.pointer)
        case .unlink(let path, let isDirectory): .unlink(path: path.pointer, isDirectory: isDirectory)
        case .mkdir(let path, let mode): .mkdir(path: path.pointer, mode: mode)
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

    /// The ring operations the storage engine issues, for probing the kernel at start-up.
    public static let ringOperationKinds: [RingOperation.Kind] = [.open, .close, .read, .write, .sync, .fallocate, .syncFileRange, .rename, .unlink, .mkdir]
}
