import Glibc
import RingLogStorage

/// A file system in memory that fails the way real ones do, for testing the storage engine.
///
/// Files have two states: what reads see now (the page cache) and what survives a crash. A write
/// lands in the first at once and in the second only at the next successful fsync/fdatasync of the
/// file. Directory entries (create, rename, unlink) become durable only when the directory itself
/// is fsynced. `crash` throws away the volatile state: each unsynced write survives whole, torn at
/// a random byte, or not at all, independently, and the namespace returns to its last synced form.
///
/// Faults on demand: fsync fails with EIO (and, as on Linux, the unsynced writes it covered are
/// then never persisted, though reads still see them), a capacity past which allocation returns
/// ENOSPC, short writes and EINTR, and flipping a bit in a file.
public final class SimulatedDisk: DiskIO {
    final class Inode {
        let isDirectory: Bool
        var data: [UInt8] = []
        var durableData: [UInt8] = []
        /// Writes and size changes since the last sync, oldest first.
        var unsynced: [Change] = []
        var children: [String: Inode] = [:]
        var durableChildren: [String: Inode] = [:]

        init(isDirectory: Bool) { self.isDirectory = isDirectory }
    }

    enum Change {
        case write(position: Int, bytes: [UInt8])
        case resize(to: Int)
    }

    /// What to do to one write: let it through, cut it short, or fail it.
    public enum WriteFault {
        case shortWrite(bytes: Int)
        case error(errno: Int32)
    }

    private let root = Inode(isDirectory: true)
    private var descriptors: [Int32: Inode] = [:]
    private var nextDescriptor: Int32 = 100
    private var lockedPaths: Set<String> = []

    /// Total bytes of file data the disk can hold; allocation past it fails with ENOSPC.
    public var capacityBytes = Int.max
    /// Called for every fsync/fdatasync with the file's path when known; return an errno to fail it.
    public var syncFault: ((String) -> Int32?)?
    /// Called for every write (path, position, byte count); return a fault to inject one.
    public var writeFault: ((String, Int, Int) -> WriteFault?)?
    /// Called for every fallocate (path, end of the range allocated); return an errno to fail it.
    public var allocateFault: ((String, Int) -> Int32?)?
    /// Off, uncached writes and reads fail with EOPNOTSUPP, as on kernels before 6.14.
    public var supportsUncachedIO = true
    public private(set) var operationCounts: [String: Int] = [:]
    private var paths: [ObjectIdentifier: String] = [:]

    public init() {}

    // MARK: DiskIO

    /// Sees every operation just before it is carried out (tests record what the engine issued).
    public var onPerform: ((DiskOperation) -> Void)?

    public func perform(_ operation: DiskOperation) -> DiskResult {
        operationCounts[operation.name, default: 0] += 1
        onPerform?(operation)
        switch operation {
        case .open(let path, let flags, _): return open(path.string, flags: flags)
        case .close(let fd): return descriptors.removeValue(forKey: fd) == nil ? -Int64(EBADF) : 0
        case .read(let fd, let position, let buffer, let uncached):
            if uncached && !supportsUncachedIO { return -Int64(EOPNOTSUPP) }
            return read(fd, position: Int(position), into: buffer)
        case .write(let fd, let position, let bytes, let uncached):
            // Caching is invisible to what is read and what survives a crash; only support differs.
            if uncached && !supportsUncachedIO { return -Int64(EOPNOTSUPP) }
            return write(fd, position: Int(position), bytes: bytes)
        case .fdatasync(let fd), .fsync(let fd): return sync(fd)
        case .fallocate(let fd, let offset, let length): return allocate(fd, length: Int(offset + length))
        // Writeback without a cache flush: nothing becomes durable, so there is nothing to model.
        case .syncFileRange(let fd, _, _): return descriptors[fd] == nil ? -Int64(EBADF) : 0
        case .rename(let from, let to): return rename(from.string, to.string)
        case .unlink(let path, let isDirectory): return unlink(path.string, isDirectory: isDirectory)
        case .mkdir(let path, _): return makeDirectory(path.string)
        }
    }

    public func listDirectory(_ path: CPath) -> Result<[String], StorageError> {
        guard let inode = resolve(path.string), inode.isDirectory else {
            return .failure(.io(operation: "opendir", errno: ENOENT, detail: path.string))
        }
        return .success(Array(inode.children.keys))
    }

    public func fileSize(fd: Int32) -> Result<Int64, StorageError> {
        guard let inode = descriptors[fd] else { return .failure(.io(operation: "fstat", errno: EBADF, detail: "fd \(fd)")) }
        return .success(Int64(inode.data.count))
    }

    public func lockExclusively(_ path: CPath) -> Result<Int32, StorageError> {
        if lockedPaths.contains(path.string) { return .failure(.dataDirectoryInUse(path.string)) }
        let fd = open(path.string, flags: O_RDWR | O_CREAT)
        guard fd >= 0 else { return .failure(.io(operation: "open", errno: Int32(-fd), detail: path.string)) }
        lockedPaths.insert(path.string)
        return .success(Int32(fd))
    }

    // MARK: Faults and inspection

    /// Loses everything not synced, as a power cut would. Every descriptor and lock is gone.
    public func crash<Generator: RandomNumberGenerator>(using generator: inout Generator) {
        descriptors.removeAll()
        lockedPaths.removeAll()
        var visited: Set<ObjectIdentifier> = []
        crash(root, visited: &visited, generator: &generator)
    }

    private func crash<Generator: RandomNumberGenerator>(_ inode: Inode, visited: inout Set<ObjectIdentifier>, generator: inout Generator) {
        guard visited.insert(ObjectIdentifier(inode)).inserted else { return }
        if inode.isDirectory {
            inode.children = inode.durableChildren
            // Name order, so the same seed replays the same crash (Dictionary order varies by process).
            for name in inode.children.keys.sorted() { crash(inode.children[name]!, visited: &visited, generator: &generator) }
            return
        }
        var survivor = inode.durableData
        for change in inode.unsynced {
            switch Int.random(in: 0..<3, using: &generator) {
            case 0: continue
            case 1: apply(change, to: &survivor, tornAfter: nil)
            default:
                if case .write(_, let bytes) = change {
                    apply(change, to: &survivor, tornAfter: Int.random(in: 0...bytes.count, using: &generator))
                } else {
                    apply(change, to: &survivor, tornAfter: nil)
                }
            }
        }
        inode.data = survivor
        inode.durableData = survivor
        inode.unsynced.removeAll()
    }

    /// Flips one bit of a file, in what reads see and in what survives a crash.
    public func flipBit(path: String, position: Int, bit: Int = 0) {
        guard let inode = resolve(path), position < inode.data.count else { preconditionFailure("no byte \(position) in \(path)") }
        inode.data[position] ^= UInt8(1 << bit)
        if position < inode.durableData.count { inode.durableData[position] ^= UInt8(1 << bit) }
    }

    /// What reads of `path` see now, or nil when it does not exist.
    public func contents(of path: String) -> [UInt8]? { resolve(path)?.data }

    public func exists(_ path: String) -> Bool { resolve(path) != nil }

    public func names(in path: String) -> [String] { resolve(path)?.children.keys.sorted() ?? [] }

    /// Bytes of file data held, for checking capacity accounting.
    public var usedBytes: Int {
        var visited: Set<ObjectIdentifier> = []
        return used(root, visited: &visited)
    }

    private func used(_ inode: Inode, visited: inout Set<ObjectIdentifier>) -> Int {
        guard visited.insert(ObjectIdentifier(inode)).inserted else { return 0 }
        if !inode.isDirectory { return inode.data.count }
        return inode.children.values.reduce(0) { $0 + used($1, visited: &visited) }
    }

    // MARK: Operations

    private func open(_ path: String, flags: Int32) -> DiskResult {
        var inode = resolve(path)
        if inode != nil && flags & O_CREAT != 0 && flags & O_EXCL != 0 { return -Int64(EEXIST) }
        if inode == nil {
            let (parentPath, name) = split(path)
            guard let parent = resolve(parentPath), parent.isDirectory else { return -Int64(ENOENT) }
            guard flags & O_CREAT != 0 else { return -Int64(ENOENT) }
            let created = Inode(isDirectory: false)
            parent.children[name] = created
            inode = created
        }
        let opened = inode!
        if flags & O_DIRECTORY != 0 && !opened.isDirectory { return -Int64(ENOTDIR) }
        if flags & O_TRUNC != 0 && !opened.isDirectory {
            opened.data.removeAll()
            opened.unsynced.append(.resize(to: 0))
        }
        let fd = nextDescriptor
        nextDescriptor += 1
        descriptors[fd] = opened
        paths[ObjectIdentifier(opened)] = path
        return DiskResult(fd)
    }

    private func read(_ fd: Int32, position: Int, into buffer: UnsafeMutableRawBufferPointer) -> DiskResult {
        guard let inode = descriptors[fd], !inode.isDirectory else { return -Int64(EBADF) }
        guard position < inode.data.count else { return 0 }
        let count = min(buffer.count, inode.data.count - position)
        inode.data.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + position, byteCount: count) }
        return DiskResult(count)
    }

    private func write(_ fd: Int32, position: Int, bytes: UnsafeRawBufferPointer) -> DiskResult {
        guard let inode = descriptors[fd], !inode.isDirectory else { return -Int64(EBADF) }
        var count = bytes.count
        switch writeFault?(pathOf(inode), position, count) {
        case .error(let errno)?: return -Int64(errno)
        case .shortWrite(let shorter)?: count = min(count, shorter)
        case nil: break
        }
        let growth = max(0, position + count - inode.data.count)
        if growth > 0 && usedBytes + growth > capacityBytes { return -Int64(ENOSPC) }
        let written = Array(UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
        apply(.write(position: position, bytes: written), to: &inode.data, tornAfter: nil)
        inode.unsynced.append(.write(position: position, bytes: written))
        return DiskResult(count)
    }

    private func sync(_ fd: Int32) -> DiskResult {
        guard let inode = descriptors[fd] else { return -Int64(EBADF) }
        if let errno = syncFault?(pathOf(inode)) {
            // Linux reports a writeback error once and marks the pages clean: the data is not on
            // disk, reads still return it, and the next fsync succeeds without writing it.
            inode.unsynced.removeAll()
            return -Int64(errno)
        }
        if inode.isDirectory {
            inode.durableChildren = inode.children
        } else {
            inode.durableData = inode.data
            inode.unsynced.removeAll()
        }
        return 0
    }

    private func allocate(_ fd: Int32, length: Int) -> DiskResult {
        guard let inode = descriptors[fd], !inode.isDirectory else { return -Int64(EBADF) }
        if let errno = allocateFault?(pathOf(inode), length) { return -Int64(errno) }
        let growth = max(0, length - inode.data.count)
        if usedBytes + growth > capacityBytes { return -Int64(ENOSPC) }
        if growth > 0 {
            inode.data.append(contentsOf: repeatElement(0, count: growth))
            inode.unsynced.append(.resize(to: length))
        }
        return 0
    }

    private func rename(_ from: String, _ to: String) -> DiskResult {
        let (fromParentPath, fromName) = split(from)
        let (toParentPath, toName) = split(to)
        guard let fromParent = resolve(fromParentPath), let moving = fromParent.children[fromName] else { return -Int64(ENOENT) }
        guard let toParent = resolve(toParentPath), toParent.isDirectory else { return -Int64(ENOENT) }
        if let existing = toParent.children[toName], existing.isDirectory, !existing.children.isEmpty { return -Int64(ENOTEMPTY) }
        fromParent.children[fromName] = nil
        toParent.children[toName] = moving
        paths[ObjectIdentifier(moving)] = to
        return 0
    }

    private func unlink(_ path: String, isDirectory: Bool) -> DiskResult {
        let (parentPath, name) = split(path)
        guard let parent = resolve(parentPath), let inode = parent.children[name] else { return -Int64(ENOENT) }
        if isDirectory != inode.isDirectory { return -Int64(isDirectory ? ENOTDIR : EISDIR) }
        if inode.isDirectory && !inode.children.isEmpty { return -Int64(ENOTEMPTY) }
        parent.children[name] = nil
        return 0
    }

    private func makeDirectory(_ path: String) -> DiskResult {
        let (parentPath, name) = split(path)
        guard let parent = resolve(parentPath), parent.isDirectory else { return -Int64(ENOENT) }
        if parent.children[name] != nil { return -Int64(EEXIST) }
        parent.children[name] = Inode(isDirectory: true)
        return 0
    }

    // MARK: Helpers

    private func apply(_ change: Change, to data: inout [UInt8], tornAfter: Int?) {
        switch change {
        case .resize(let length):
            if length < data.count { data.removeLast(data.count - length) } else { data.append(contentsOf: repeatElement(0, count: length - data.count)) }
        case .write(let position, let bytes):
            let count = tornAfter ?? bytes.count
            if position + count > data.count { data.append(contentsOf: repeatElement(0, count: position + count - data.count)) }
            data.replaceSubrange(position..<(position + count), with: bytes[0..<count])
        }
    }

    private func resolve(_ path: String) -> Inode? {
        var inode = root
        for component in path.split(separator: "/") where !component.isEmpty {
            guard let next = inode.children[String(component)] else { return nil }
            inode = next
        }
        return inode
    }

    private func split(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
        let parent = String(path[..<slash])
        return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
    }

    private func pathOf(_ inode: Inode) -> String { paths[ObjectIdentifier(inode)] ?? "?" }
}
