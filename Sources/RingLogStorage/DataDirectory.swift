import Glibc
import RingLogWire
import Logging

/// The data directory's layout (docs/storage.md): `LOCK`, `logs/<name>/` for each log,
/// `staging/` for logs being created, `trash/` for logs being deleted. Opening it makes the
/// directories durably, takes the lock, and removes what an interrupted create or delete left.
struct DataDirectory {
    let root: String
    let logs: CPath
    let trash: CPath
    let staging: CPath
    private(set) var lockFD: Int32 = -1
    /// One more at every open of the data directory (the `instance` file): producer ids carry it,
    /// so ids handed out by different runs never meet.
    private(set) var incarnation: UInt32 = 0
    private(set) var logsFD: Int32 = -1
    private(set) var trashFD: Int32 = -1

    private init(root: String) {
        self.root = root
        logs = CPath(root + "/logs")
        trash = CPath(root + "/trash")
        staging = CPath(root + "/staging")
    }

    /// Opens (creating if needed) the data directory at `path` and locks it. Blocking.
    static func open(path: String, disk: DiskIO, logger: Logger) -> Result<DataDirectory, StorageError> {
        var directory = DataDirectory(root: absolutePath(path))
        return directory.open(disk: disk, logger: logger).map { directory }
    }

    private mutating func open(disk: DiskIO, logger: Logger) -> Result<Void, StorageError> {
        let rootPath = CPath(root)
        var ancestors: [String] = []
        var prefix = ""
        for component in root.split(separator: "/") {
            prefix += "/" + component
            ancestors.append(prefix)
        }
        let wanted = ancestors.map(CPath.init) + [logs, trash, staging]
        for (index, directory) in wanted.enumerated() {
            let made = disk.perform(.mkdir(path: directory, mode: 0o755))
            if made < 0 && made != -Int64(EEXIST) {
                return .failure(.io(operation: "mkdir", errno: Int32(-made), detail: directory.string))
            }
            // A new directory's entry is durable only once its parent is fsynced.
            guard made == 0 else { continue }
            let parent = index == 0 ? CPath("/") : (index < ancestors.count ? CPath(ancestors[index - 1]) : rootPath)
            if case .failure(let error) = Self.syncDirectory(parent, disk: disk) { return .failure(error) }
        }
        switch disk.lockExclusively(rootPath.appending("LOCK")) {
        case .failure(let error): return .failure(error)
        case .success(let fd): lockFD = fd
        }
        for directory in [staging, trash] {
            guard case .success(let names) = disk.listDirectory(directory) else { continue }
            for name in names {
                logger.notice("removing leftover \(directory.string)/\(name) from an interrupted create or delete")
                if case .failure(let error) = Self.removeDirectory(directory.appending(name), disk: disk) { return .failure(error) }
            }
        }
        switch Self.nextIncarnation(rootPath, disk: disk) {
        case .failure(let error): return .failure(error)
        case .success(let next): incarnation = next
        }
        let directoryFlags = O_RDONLY | O_DIRECTORY | O_CLOEXEC
        logsFD = Int32(truncatingIfNeeded: disk.perform(.open(path: logs, flags: directoryFlags, mode: 0)))
        trashFD = Int32(truncatingIfNeeded: disk.perform(.open(path: trash, flags: directoryFlags, mode: 0)))
        guard logsFD >= 0, trashFD >= 0 else {
            return .failure(.io(operation: "open", errno: EIO, detail: "could not open \(logs) or \(trash)"))
        }
        return .success(())
    }

    /// Reads `instance` ("RLI1", u32 incarnation, CRC32C), and replaces it durably with the next
    /// incarnation before the store serves. A missing file starts at 1; a damaged one is refused
    /// (ids could repeat), naming the file.
    private static func nextIncarnation(_ root: CPath, disk: DiskIO) -> Result<UInt32, StorageError> {
        let path = root.appending("instance")
        var previous: UInt32 = 0
        switch disk.readSmallFile(path) {
        case .failure(let error): return .failure(error)
        case .success(nil): break
        case .success(let bytes?):
            let reader = FieldReader(bytes: bytes)
            guard bytes.count == 12, reader.u32(0) == 0x3144_4C52, reader.checksumHolds(at: 8) else {
                return .failure(.storageFailed("\(path) is damaged; producer ids could repeat, so the store does not open (remove it only if no producer of an earlier run will retry)"))
            }
            previous = reader.u32(4)
        }
        guard previous < UInt32.max else { return .failure(.storageFailed("\(path): the data directory has used every incarnation")) }
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(UInt32(0x3144_4C52))
        bytes.appendLittleEndian(previous + 1)
        bytes.appendChecksum()
        let script = DiskScript(
            [.open(root, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0, as: "root")]
                + DiskScript.Step.replace(path, through: root.appending("instance.tmp"), with: OwnedBytes(bytes), directory: .opened("root"))
                + [.close(.opened("root"))])
        return script.run(on: disk).map { previous + 1 }
    }

    /// The names of the log directories, sorted.
    func logNames(disk: DiskIO) -> Result<[String], StorageError> {
        disk.listDirectory(logs).map { $0.sorted() }
    }

    /// Its descriptors, for closing at exit (the lock goes with them).
    mutating func takeDescriptors() -> [Int32] {
        defer {
            lockFD = -1
            logsFD = -1
            trashFD = -1
        }
        return [logsFD, trashFD, lockFD].filter { $0 >= 0 }
    }

    private static func syncDirectory(_ directory: CPath, disk: DiskIO) -> Result<Void, StorageError> {
        disk.run(.open(path: directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0)).flatMap { fd in
            defer { _ = disk.perform(.close(fd: Int32(fd))) }
            return disk.run(.fsync(fd: Int32(fd))).map { _ in () }
        }
    }

    private static func removeDirectory(_ directory: CPath, disk: DiskIO) -> Result<Void, StorageError> {
        if case .success(let names) = disk.listDirectory(directory) {
            for name in names {
                let removed = disk.perform(.unlink(path: directory.appending(name), isDirectory: false))
                if removed < 0 && removed != -Int64(ENOENT) {
                    return .failure(.io(operation: "unlink", errno: Int32(-removed), detail: "\(directory)/\(name)"))
                }
            }
        }
        let removed = disk.perform(.unlink(path: directory, isDirectory: true))
        if removed < 0 && removed != -Int64(ENOENT) {
            return .failure(.io(operation: "rmdir", errno: Int32(-removed), detail: directory.string))
        }
        return .success(())
    }

    private static func absolutePath(_ path: String) -> String {
        var trimmed = path
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.hasPrefix("/") { return trimmed }
        guard let cwd = getcwd(nil, 0) else { return trimmed }
        defer { free(cwd) }
        let base = String(cString: cwd)
        return trimmed == "." ? base : base + "/" + trimmed
    }
}
