import CLiburing
import Glibc
import SystemPackage

/// One io_uring operation, as a value: what `IOLoop` submits, or keeps in order until the
/// submission queue has room. Pointers inside must stay valid until the operation completes;
/// the caller owns them.
public enum RingOperation {
    /// Does nothing; completes with 0.
    case nop
    /// Accepts connections on a listening socket until cancelled (one completion each).
    case acceptMultishot(fd: Int32)
    /// Receives into a buffer the kernel picks from `bufferGroup` (provided buffers).
    case receiveProvided(fd: Int32, bufferGroup: UInt16, length: Int)
    /// Receives into a buffer of the caller's.
    case receive(fd: Int32, into: UnsafeMutableRawBufferPointer)
    case send(fd: Int32, bytes: UnsafeRawBufferPointer)
    case sendMessage(fd: Int32, message: UnsafeMutablePointer<msghdr>)
    case connect(fd: Int32, address: UnsafePointer<sockaddr>, length: socklen_t)
    /// Shuts a socket down both ways; its pending receives and sends complete.
    case shutdown(fd: Int32)
    /// An uncached read (`RWF_DONTCACHE`) takes cached pages from the cache and leaves them;
    /// pages it reads in are dropped once copied.
    case read(fd: Int32, position: Int64, into: UnsafeMutableRawBufferPointer, uncached: Bool)
    /// An uncached write (`RWF_DONTCACHE`, Linux 6.14+) goes through the page cache, but the kernel
    /// starts writeback at once and drops the pages when it completes. A kernel or file system
    /// without it fails the write with EOPNOTSUPP.
    case write(fd: Int32, position: Int64, bytes: UnsafeRawBufferPointer, uncached: Bool)
    /// fdatasync (`dataOnly`) or fsync.
    case sync(fd: Int32, dataOnly: Bool)
    /// Allocates `length` bytes from `offset` (mode 0: the file grows to cover them).
    case fallocate(fd: Int32, offset: Int64, length: Int64)
    /// `sync_file_range` with WAIT_BEFORE, WRITE and WAIT_AFTER: writes a range back and waits.
    case syncFileRange(fd: Int32, position: Int64, length: Int64)
    case open(path: UnsafePointer<CChar>, flags: Int32, mode: UInt32)
    case close(fd: Int32)
    case rename(from: UnsafePointer<CChar>, to: UnsafePointer<CChar>)
    case unlink(path: UnsafePointer<CChar>, isDirectory: Bool)
    case mkdir(path: UnsafePointer<CChar>, mode: UInt32)
    /// Cancels the operation submitted with this user data (`IOLoop.userData`).
    case cancel(userData: UInt64)
    /// Reads exactly 8 bytes (an eventfd's counter).
    case readCounter(fd: Int32, into: UnsafeMutablePointer<UInt64>)

    /// What a completion is the answer to; carried in its user data.
    public enum Kind: UInt8, Sendable {
        case nop = 0, acceptMultishot, receiveProvided, receive, send, sendMessage, connect, shutdown, read, write, sync, fallocate
        case syncFileRange, open, close, rename, unlink, mkdir, cancel, readCounter
    }

    public var kind: Kind {
        switch self {
        case .nop: .nop
        case .acceptMultishot: .acceptMultishot
        case .receiveProvided: .receiveProvided
        case .receive: .receive
        case .send: .send
        case .sendMessage: .sendMessage
        case .connect: .connect
        case .shutdown: .shutdown
        case .read: .read
        case .write: .write
        case .sync: .sync
        case .fallocate: .fallocate
        case .syncFileRange: .syncFileRange
        case .open: .open
        case .close: .close
        case .rename: .rename
        case .unlink: .unlink
        case .mkdir: .mkdir
        case .cancel: .cancel
        case .readCounter: .readCounter
        }
    }

    /// Fills a submission entry with this operation.
    public func prepare(_ entry: UnsafeMutablePointer<io_uring_sqe>) {
        switch self {
        case .nop:
            io_uring_prep_nop(entry)
        case .acceptMultishot(let fd):
            io_uring_prep_multishot_accept(entry, fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        case .receiveProvided(let fd, let group, let length):
            io_uring_prep_recv(entry, fd, nil, length, 0)
            entry.pointee.flags |= RINGLOG_IOSQE_BUFFER_SELECT
            entry.pointee.buf_group = group
        case .receive(let fd, let buffer):
            io_uring_prep_recv(entry, fd, buffer.baseAddress, buffer.count, 0)
        case .send(let fd, let bytes):
            io_uring_prep_send(entry, fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
        case .sendMessage(let fd, let message):
            io_uring_prep_sendmsg(entry, fd, message, UInt32(MSG_NOSIGNAL))
        case .connect(let fd, let address, let length):
            io_uring_prep_connect(entry, fd, address, length)
        case .shutdown(let fd):
            io_uring_prep_shutdown(entry, fd, Int32(SHUT_RDWR))
        case .read(let fd, let position, let buffer, let uncached):
            io_uring_prep_read(entry, fd, buffer.baseAddress, UInt32(buffer.count), UInt64(bitPattern: position))
            if uncached { entry.pointee.rw_flags = RINGLOG_RWF_DONTCACHE }
        case .write(let fd, let position, let bytes, let uncached):
            io_uring_prep_write(entry, fd, bytes.baseAddress, UInt32(bytes.count), UInt64(bitPattern: position))
            if uncached { entry.pointee.rw_flags = RINGLOG_RWF_DONTCACHE }
        case .sync(let fd, let dataOnly):
            io_uring_prep_fsync(entry, fd, dataOnly ? IORING_FSYNC_DATASYNC : 0)
        case .fallocate(let fd, let offset, let length):
            io_uring_prep_fallocate(entry, fd, 0, off_t(offset), off_t(length))
        case .syncFileRange(let fd, let position, let length):
            io_uring_prep_sync_file_range(entry, fd, UInt32(length), UInt64(position), Int32(RINGLOG_SYNC_FILE_RANGE_WRITE_AND_WAIT))
        case .open(let path, let flags, let mode):
            io_uring_prep_openat(entry, AT_FDCWD, path, flags, mode)
        case .close(let fd):
            io_uring_prep_close(entry, fd)
        case .rename(let from, let to):
            io_uring_prep_renameat(entry, AT_FDCWD, from, AT_FDCWD, to, 0)
        case .unlink(let path, let isDirectory):
            io_uring_prep_unlinkat(entry, AT_FDCWD, path, isDirectory ? AT_REMOVEDIR : 0)
        case .mkdir(let path, let mode):
            io_uring_prep_mkdirat(entry, AT_FDCWD, path, mode)
        case .cancel(let userData):
            io_uring_prep_cancel64(entry, userData, 0)
        case .readCounter(let fd, let counter):
            io_uring_prep_read(entry, fd, counter, 8, 0)
        }
    }

    /// The kernel operations a kind needs, for probing at start-up.
    public static func ringOpcodes(_ kinds: [Kind]) -> [(name: String, code: io_uring_op)] {
        kinds.map { kind in
            switch kind {
            case .nop: ("nop", IORING_OP_NOP)
            case .acceptMultishot: ("accept", IORING_OP_ACCEPT)
            case .receiveProvided, .receive: ("recv", IORING_OP_RECV)
            case .send: ("send", IORING_OP_SEND)
            case .sendMessage: ("sendmsg", IORING_OP_SENDMSG)
            case .connect: ("connect", IORING_OP_CONNECT)
            case .shutdown: ("shutdown", IORING_OP_SHUTDOWN)
            case .read, .readCounter: ("read", IORING_OP_READ)
            case .write: ("write", IORING_OP_WRITE)
            case .sync: ("fsync", IORING_OP_FSYNC)
            case .fallocate: ("fallocate", IORING_OP_FALLOCATE)
            case .syncFileRange: ("sync_file_range", IORING_OP_SYNC_FILE_RANGE)
            case .open: ("openat", IORING_OP_OPENAT)
            case .close: ("close", IORING_OP_CLOSE)
            case .rename: ("renameat", IORING_OP_RENAMEAT)
            case .unlink: ("unlinkat", IORING_OP_UNLINKAT)
            case .mkdir: ("mkdirat", IORING_OP_MKDIRAT)
            case .cancel: ("async_cancel", IORING_OP_ASYNC_CANCEL)
            }
        }
    }
}

/// The answer to one operation: the kernel's result, its flags, and the tag and context the
/// operation was submitted with. Typed views say what the result means for each kind.
public struct IOCompletion {
    public let kind: RingOperation.Kind
    /// Chosen by the submitter, to tell its operations of one kind apart.
    public let tag: UInt8
    /// The handle's context value (`IOLoop.register(_:context:)`).
    public let context: UInt64
    /// What the kernel returned: a count or descriptor when `>= 0`, else `-errno`.
    public let result: Int32
    public let flags: UInt32

    public init(kind: RingOperation.Kind, tag: UInt8, context: UInt64, result: Int32, flags: UInt32) {
        self.kind = kind
        self.tag = tag
        self.context = context
        self.result = result
        self.flags = flags
    }

    /// A count, a descriptor, or the error.
    @inline(__always)
    public var outcome: Result<Int, Errno> { result >= 0 ? .success(Int(result)) : .failure(Errno(rawValue: -result)) }

    /// The error, if the operation failed.
    @inline(__always)
    public var errno: Errno? { result < 0 ? Errno(rawValue: -result) : nil }

    /// A multishot operation stays armed (more completions will come).
    public var hasMore: Bool { flags & IORING_CQE_F_MORE != 0 }

    /// An accepted connection's descriptor.
    public var accepted: Result<Int32, Errno> { outcome.map { Int32($0) } }

    /// For a receive into provided buffers: the bytes and the buffer that holds them (nil with no
    /// data, at end of stream or on an error).
    public var providedBuffer: UInt16? {
        flags & IORING_CQE_F_BUFFER != 0 ? UInt16(truncatingIfNeeded: flags >> IORING_CQE_BUFFER_SHIFT) : nil
    }

    /// An opened file's descriptor.
    public var opened: Result<Int32, Errno> { outcome.map { Int32($0) } }

    /// Bytes moved (received, sent, read, written); 0 at end of stream for a receive.
    public var transferred: Result<Int, Errno> { outcome }

    /// Whether a retry is the right answer (the kernel was interrupted or had no room).
    public var isTransient: Bool { result == -EINTR || result == -EAGAIN }
}

extension Errno {
    /// Errors that mean the peer went away, not that something is wrong here.
    public var isDisconnect: Bool {
        self == .connectionReset || self == .brokenPipe || self == .timedOut || self == .connectionAbort || self == .canceled
    }

    /// Errors that only a programming mistake produces (a wrong descriptor or pointer).
    public var isProgrammingError: Bool { self == .badFileDescriptor || self == .badAddress }
}
