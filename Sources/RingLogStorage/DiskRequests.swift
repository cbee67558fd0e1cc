import DequeModule
import Glibc

/// The store's queue of disk requests: every operation it wants carried out waits here in issue
/// order until the driver takes it (`take`), and is remembered under its token, with what it was
/// for, until its result comes back (`complete`). Scripts (`DiskScript`) run through it one step
/// at a time. This is the one place an operation in flight is tracked: the executor carrying
/// operations out keeps nothing but the token.
final class DiskRequests {
    /// What an operation or script was for, kept until its result comes back.
    enum Purpose {
        /// Work of one log on its segment files, counted in the log's operations in flight.
        case log(Log, LogOperation)
        case script(ScriptRun)
        case close
    }

    /// What a script is for.
    enum ScriptPurpose {
        case log(Log, LogScript)
        case createLog(meta: LogMeta, staging: CPath, context: UInt64)
        case deleteLog(Log, context: UInt64)
        case cleanup

        var log: Log? {
            switch self {
            case .log(let log, _): log
            case .createLog, .deleteLog, .cleanup: nil
            }
        }
    }

    final class ScriptRun {
        let script: DiskScript
        let purpose: ScriptPurpose
        init(script: DiskScript, purpose: ScriptPurpose) {
            self.script = script
            self.purpose = purpose
        }
    }

    /// What a result finished.
    enum Finished {
        case operation(Log, LogOperation, DiskResult)
        case script(ScriptRun, Result<Void, StorageError>)
        /// A close, or a script step with more steps to go: nothing to hand on.
        case nothing
    }

    private var outbox: Deque<DiskRequest> = []
    /// By token: what each operation in flight is for, and the operation itself, which keeps the
    /// paths and buffers the kernel is using alive until its result is back.
    private var inFlight: [UInt64: (purpose: Purpose, operation: DiskOperation)] = [:]
    private var nextToken: UInt64 = 1

    /// The next request to carry out, in issue order.
    func take() -> DiskRequest? { outbox.popFirst() }

    var hasQueued: Bool { !outbox.isEmpty }

    /// Requests issued and not yet completed.
    var count: Int { inFlight.count }

    func issue(_ operation: DiskOperation, for log: Log, _ purpose: LogOperation) {
        log.operationsInFlight += 1
        enqueue(operation, for: .log(log, purpose))
    }

    func start(_ script: DiskScript, for purpose: ScriptPurpose) {
        purpose.log?.operationsInFlight += 1
        enqueue(script.start(), for: .script(ScriptRun(script: script, purpose: purpose)))
    }

    func close(_ fd: Int32) {
        precondition(fd >= 0, "closing descriptor \(fd)")
        enqueue(.close(fd: fd), for: .close)
    }

    /// Takes the result of the request `token`; a script's next step is queued here.
    func complete(token: UInt64, result: DiskResult) -> Finished {
        guard let (purpose, _) = inFlight.removeValue(forKey: token) else { preconditionFailure("unknown disk request token \(token)") }
        // A bad descriptor or address is a bug here, not a failing disk: stop rather than fail a
        // log over it (and perhaps act on some other file the descriptor now names).
        precondition(result != -Int64(EBADF) && result != -Int64(EFAULT), "disk request \(token) (\(purpose)) failed with \(StorageError.errnoName(Int32(-result))): a programming error")
        switch purpose {
        case .log(let log, let operation):
            log.operationsInFlight -= 1
            return .operation(log, operation, result)
        case .script(let run):
            switch run.script.complete(result) {
            case .next(let operation):
                enqueue(operation, for: .script(run))
                return .nothing
            case .finished:
                return finish(run, .success(()))
            case .failed(let error, _):
                for fd in run.script.descriptorsLeftOpen() { close(fd) }
                return finish(run, .failure(error))
            }
        case .close:
            return .nothing
        }
    }

    private func finish(_ run: ScriptRun, _ result: Result<Void, StorageError>) -> Finished {
        run.purpose.log?.operationsInFlight -= 1
        return .script(run, result)
    }

    private func enqueue(_ operation: DiskOperation, for purpose: Purpose) {
        let token = nextToken
        nextToken += 1
        inFlight[token] = (purpose, operation)
        outbox.append(DiskRequest(token: token, operation: operation))
    }
}
