import Glibc
import RingLogWire

/// A fixed sequence of disk operations, each started when the one before it succeeds.
///
/// Multi-step work (a checkpoint's write-fsync-rename-fsync, creating a log, preallocating a
/// segment) is written once as a script. The store runs scripts asynchronously through its
/// request queue; start-up and tests run the same scripts synchronously with `run(on:)`.
/// A failed step ends the script; descriptors it opened and had not closed are closed.
final class DiskScript {
    /// A descriptor known now, or the one the earlier `open` step of that name will return.
    enum File {
        case fd(Int32)
        case opened(String)
    }

    enum Step {
        /// Opens `path`; later steps refer to the descriptor by `name`.
        case open(CPath, flags: Int32, mode: UInt32, as: String)
        case close(File)
        case write(File, position: Int64, OwnedBytes)
        case read(File, position: Int64, OwnedBytes)
        case fdatasync(File)
        case fsync(File)
        case fallocate(File, length: Int64)
        case rename(from: CPath, to: CPath)
        case unlink(CPath, isDirectory: Bool, ignoreMissing: Bool)
        case mkdir(CPath, ignoreExisting: Bool)

        /// Replaces `path` atomically with `bytes`: written to `temporary`, fdatasynced, renamed
        /// over `path`, then `directory` (the one holding both) fsynced, so after a crash the
        /// file is whole, old or new.
        static func replace(_ path: CPath, through temporary: CPath, with bytes: OwnedBytes, directory: File) -> [Step] {
            [
                .open(temporary, flags: O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644, as: "replacement"),
                .write(.opened("replacement"), position: 0, bytes),
                .fdatasync(.opened("replacement")),
                .close(.opened("replacement")),
                .rename(from: temporary, to: path),
                .fsync(directory),
            ]
        }
    }

    enum Progress {
        case next(DiskOperation)
        case finished
        case failed(StorageError, errno: Int32)
    }

    let steps: [Step]
    /// The step index of each named `open`.
    private let openSteps: [String: Int]
    private(set) var results: [Int64]
    private var current = 0
    /// Bytes of the current write or read step already done (short transfers continue).
    private var transferred = 0

    /// Every name a step refers to belongs to an earlier `open`, and no two opens share a name:
    /// a script that breaks this is a programming error, caught when it is made.
    init(_ steps: [Step]) {
        precondition(!steps.isEmpty, "a disk script has at least one step")
        var openSteps: [String: Int] = [:]
        for (index, step) in steps.enumerated() {
            if let name = step.file.flatMap({ if case .opened(let name) = $0 { name } else { nil } }) {
                precondition(openSteps[name] != nil, "step \(index) uses \"\(name)\", which no earlier step opens")
            }
            if case .open(_, _, _, let name) = step {
                precondition(openSteps[name] == nil, "two steps open \"\(name)\"")
                openSteps[name] = index
            }
        }
        self.steps = steps
        self.openSteps = openSteps
        results = Array(repeating: -1, count: steps.count)
    }

    /// The descriptor the `open` step called `name` returned.
    func openedDescriptor(_ name: String) -> Int32 {
        guard let step = openSteps[name] else { preconditionFailure("no step opens \"\(name)\"") }
        precondition(results[step] >= 0, "\"\(name)\" has not been opened")
        return Int32(results[step])
    }

    /// The first operation to issue.
    func start() -> DiskOperation { operation(for: steps[0]) }

    /// Feeds back the current operation's result; returns what to do next.
    func complete(_ result: DiskResult) -> Progress {
        let step = steps[current]
        if result < 0 {
            let errno = Int32(-result)
            if errno == EINTR || errno == EAGAIN { return .next(operation(for: step)) }
            if case .unlink(_, _, true) = step, errno == ENOENT { return advance(result: 0) }
            if case .mkdir(_, true) = step, errno == EEXIST { return advance(result: 0) }
            let operation = operation(for: step)
            return .failed(.io(operation: operation.name, errno: errno, detail: operation.subject), errno: errno)
        }
        switch step {
        case .write(_, _, let bytes) where transferred + Int(result) < bytes.count:
            if result == 0 { return .failed(.io(operation: "write", errno: EIO, detail: "wrote 0 bytes"), errno: EIO) }
            transferred += Int(result)
            return .next(operation(for: step))
        case .read(_, _, let bytes) where result > 0 && transferred + Int(result) < bytes.count:
            transferred += Int(result)
            return .next(operation(for: step))
        case .read:
            return advance(result: Int64(transferred) + result)
        default:
            return advance(result: result)
        }
    }

    /// Descriptors opened by finished steps and not closed by a later step: what a failed script leaves.
    func descriptorsLeftOpen() -> [Int32] {
        var open: [Int: Int32] = [:]
        for index in 0..<current {
            switch steps[index] {
            case .open: if results[index] >= 0 { open[index] = Int32(results[index]) }
            case .close(.opened(let name)): open[openSteps[name]!] = nil
            default: break
            }
        }
        return Array(open.values)
    }

    /// Runs every step now on a synchronous disk.
    func run(on disk: DiskIO) -> Result<Void, StorageError> {
        var progress = Progress.next(start())
        while true {
            switch progress {
            case .finished: return .success(())
            case .failed(let error, _):
                for fd in descriptorsLeftOpen() { _ = disk.perform(.close(fd: fd)) }
                return .failure(error)
            case .next(let operation): progress = complete(disk.perform(operation))
            }
        }
    }

    private func advance(result: Int64) -> Progress {
        results[current] = result
        current += 1
        transferred = 0
        return current == steps.count ? .finished : .next(operation(for: steps[current]))
    }

    private func descriptor(_ file: File) -> Int32 {
        switch file {
        case .fd(let fd): fd
        case .opened(let name): openedDescriptor(name)
        }
    }

    private func operation(for step: Step) -> DiskOperation {
        switch step {
        case .open(let path, let flags, let mode, _): .open(path: path, flags: flags, mode: mode)
        case .close(let file): .close(fd: descriptor(file))
        case .write(let file, let position, let bytes):
            .write(
                fd: descriptor(file), position: position + Int64(transferred),
                bytes: UnsafeRawBufferPointer(rebasing: bytes.bytes[transferred...]), uncached: false)
        case .read(let file, let position, let bytes):
            .read(
                fd: descriptor(file), position: position + Int64(transferred),
                into: UnsafeMutableRawBufferPointer(rebasing: bytes.mutableBytes[transferred...]), uncached: false)
        case .fdatasync(let file): .fdatasync(fd: descriptor(file))
        case .fsync(let file): .fsync(fd: descriptor(file))
        case .fallocate(let file, let length): .fallocate(fd: descriptor(file), offset: 0, length: length)
        case .rename(let from, let to): .rename(from: from, to: to)
        case .unlink(let path, let isDirectory, _): .unlink(path: path, isDirectory: isDirectory)
        case .mkdir(let path, _): .mkdir(path: path, mode: 0o755)
        }
    }
}

extension DiskScript.Step {
    /// The descriptor the step works on, if it works on one.
    var file: DiskScript.File? {
        switch self {
        case .close(let file), .write(let file, _, _), .read(let file, _, _), .fdatasync(let file), .fsync(let file), .fallocate(let file, _): file
        case .open, .rename, .unlink, .mkdir: nil
        }
    }
}
