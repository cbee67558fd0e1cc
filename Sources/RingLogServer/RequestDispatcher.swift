import RingLogIO
import RingLogStorage
import RingLogWire

/// What each request does: decode its body, check it, ask the store, and answer, now or when
/// the store's event arrives. One method per operation; answers go back through the connection.
final class RequestDispatcher {
    /// Its owner, held strongly for the same reason as `Connection.server`; `ServerLoop.release`
    /// ends the cycle.
    let server: ServerLoop
    private let configuration: ServerConfiguration
    private let store: LogStore

    init(server: ServerLoop) {
        self.server = server
        configuration = server.configuration
        store = server.store
    }

    // MARK: Framing decisions

    /// Queues the response entry for a request, in arrival order; answers TOO_MANY_IN_FLIGHT and
    /// returns nil when the connection already has its limit of requests in flight.
    private func beginRequest(_ connection: Connection, _ header: RequestHeader) -> UInt32? {
        server.counters.requests += 1
        let sequence = connection.takeSequence()
        let counted = connection.countedInFlight < configuration.maxInFlightPerConnection
        connection.responses.append(PendingResponse(sequence: sequence, requestID: header.requestID, opcode: header.opcode, counted: counted))
        guard counted else {
            connection.answer(sequence, code: .tooManyInFlight, ErrorBody(
                detail1: UInt64(configuration.maxInFlightPerConnection),
                message: "more than \(configuration.maxInFlightPerConnection) requests in flight on one connection"))
            return nil
        }
        connection.countedInFlight += 1
        return sequence
    }

    /// Whether a request body that spans receive buffers may be assembled: always when it is no
    /// larger than the allowance, else when the memory budget can hold all of it (reserved now).
    /// Otherwise it is read and dropped, and the request answered SERVER_BUSY.
    func admitAssembly(_ connection: Connection, _ header: RequestHeader) -> Bool {
        let length = Int(header.bodyLength)
        if length > server.budget.allowance {
            guard server.budget.fits(length) else { return false }
            connection.assemblyReservedBytes = length
            server.recharge(connection)
        }
        return true
    }

    /// A request whose body could not be given memory; the body was read and dropped.
    func refuseForMemory(_ connection: Connection, _ header: RequestHeader) -> Bool {
        server.counters.refusedForMemory += 1
        guard let sequence = beginRequest(connection, header) else { return server.canRead(connection) }
        connection.answer(sequence, code: .serverBusy, ErrorBody(
            detail1: UInt64(header.bodyLength), detail2: UInt64(server.budget.limit),
            message: "the server is short of memory for a body of \(header.bodyLength) bytes; it was dropped, retry later"))
        return server.canRead(connection)
    }

    // MARK: Requests

    /// Handles one framed request. Returns false when the connection must stop taking requests.
    func handle(_ connection: Connection, _ header: RequestHeader, _ body: UnsafeRawBufferPointer) -> Bool {
        guard let sequence = beginRequest(connection, header) else { return server.canRead(connection) }
        guard let opcode = Opcode.named(header.opcode) else {
            connection.answer(sequence, code: .unknownOperation, ErrorBody(message: "unknown operation 0x\(String(header.opcode, radix: 16))"))
            return server.canRead(connection)
        }
        if let problem = Self.reservedFieldProblem(opcode, header) {
            connection.answer(sequence, code: .malformedRequest, ErrorBody(message: problem))
            return server.canRead(connection)
        }
        if server.isStopping {
            answer(connection, sequence, error: .shuttingDown)
            connection.beginClosing(flushFirst: true, reason: "server stopping")
            return false
        }
        do {
            switch opcode {
            case .ping:
                try WireReader(body).finish()
                connection.answer(sequence, .empty)
            case .hello: try hello(connection, sequence, body)
            case .append: return append(connection, header, sequence, body, expectedEnd: nil)
            case .appendIf:
                let request = try AppendIfRequest.decode(body)
                var plain = header
                plain.flags &= ~AppendIfRequest.newChainFlag
                if header.flags & AppendIfRequest.newChainFlag != 0 {
                    connection.brokenChains.remove(header.logID)
                } else if connection.brokenChains.contains(header.logID) {
                    // It was sent counting on a request of its chain that was refused.
                    connection.answer(sequence, code: .endMismatch, ErrorBody(
                        detail1: store.log(header.logID)?.reservedEnd.rawValue ?? 0, detail2: store.log(header.logID)?.committedEnd.rawValue ?? 0,
                        message: "an earlier APPEND_IF of this chain was refused; this batch was not written (start a new chain to go on)"))
                    return server.canRead(connection)
                }
                return append(connection, plain, sequence, request.batch, expectedEnd: request.expectedEnd)
            case .read:
                let request = try ReadRequest.decode(body)
                admitRead(connection, sequence, logID: header.logID, offset: request.offset, maxBytes: Int(request.maxBytes),
                    waitMillis: Int(request.maxWaitMillis))
            case .createLog: try createLog(connection, sequence, body)
            case .deleteLog:
                let name = try LogNameRequest.decode(body).name
                connection.storageRequestsInFlight += 1
                store.deleteLog(named: name, context: ResponseContext.make(connection, sequence: sequence))
            case .logInfo: try logInfo(connection, sequence, header, body)
            case .listLogs:
                try WireReader(body).finish()
                connection.answer(sequence, .encoded(LogList(logs: store.logs.map(Self.describe)).encoded()))
            case .cursorCommit:
                let request = try CursorCommitRequest.decode(body)
                let expected: CursorPosition?? =
                    switch request.condition {
                    case .none: nil
                    case .absent: .some(nil)
                    case .at(let offset, let index): .some(CursorPosition(offset: LogOffset(offset), index: index))
                    }
                let position = CursorPosition(offset: LogOffset(request.offset), index: request.index)
                let context = ResponseContext.make(connection, sequence: sequence)
                switch store.commitCursor(header.logID, name: request.name, position: position, expected: expected, context: context) {
                case .failed(let error): answer(connection, sequence, error: error)
                case .pending: connection.storageRequestsInFlight += 1
                }
            case .cursorDelete:
                let name = try LogNameRequest.decode(body).name
                switch store.deleteCursor(header.logID, name: name, context: ResponseContext.make(connection, sequence: sequence)) {
                case .failed(let error): answer(connection, sequence, error: error)
                case .pending: connection.storageRequestsInFlight += 1
                }
            case .cursorFetch:
                let name = try LogNameRequest.decode(body).name
                switch store.cursor(header.logID, name: name) {
                case .success(let position): connection.answer(sequence, .encoded(Self.encode(position).encoded()))
                case .failure(let error): answer(connection, sequence, error: error)
                }
            case .cursorList:
                try WireReader(body).finish()
                switch store.cursors(header.logID) {
                case .success(let cursors):
                    let entries = cursors.map { cursor in
                        CursorList.Entry(name: cursor.name, offset: cursor.position.offset.rawValue, index: cursor.position.index, lagBytes: cursor.lagBytes)
                    }
                    connection.answer(sequence, .encoded(CursorList(entries: entries).encoded()))
                case .failure(let error): answer(connection, sequence, error: error)
                }
            case .seekTime:
                let time = try SeekTimeRequest.decode(body).timeMicros
                let context = ResponseContext.make(connection, sequence: sequence)
                switch store.seek(header.logID, atOrAfter: time, context: context) {
                case .ready(let offset): connection.answer(sequence, .offset(OffsetMessage(offset: offset)))
                case .failed(let error): answer(connection, sequence, error: error)
                case .pending: connection.storageRequestsInFlight += 1
                }
            case .trim:
                let target = try OffsetMessage.decode(body).offset
                connection.storageRequestsInFlight += 1
                store.trim(header.logID, to: target, context: ResponseContext.make(connection, sequence: sequence))
            case .serverStats:
                try WireReader(body).finish()
                connection.answer(sequence, .encoded(server.serverStats().encoded()))
            case .initProducer:
                let request = try InitProducerRequest.decode(body)
                switch store.initProducer(id: request.producerId, epoch: request.epoch) {
                case .success(let granted):
                    server.counters.producersInitialized += 1
                    let response = InitProducerResponse(producerId: granted.id, epoch: granted.epoch, window: UInt32(store.producerWindow))
                    connection.answer(sequence, .encoded(response.encoded()))
                case .failure(let error): answer(connection, sequence, error: error)
                }
            }
        } catch {
            connection.answer(sequence, code: .malformedRequest, ErrorBody(message: "malformed \(opcode) body: \(error)"))
        }
        return server.canRead(connection)
    }

    /// Header fields an operation does not use must be zero, so they can be given a meaning later.
    static func reservedFieldProblem(_ opcode: Opcode, _ header: RequestHeader) -> String? {
        if opcode != .append && opcode != .appendIf && header.flags != 0 { return "flags must be 0 for \(opcode) (got \(header.flags))" }
        switch opcode {
        case .hello, .ping, .createLog, .deleteLog, .listLogs, .serverStats, .initProducer:
            if header.logID != .none { return "\(opcode) takes no log id (got \(header.logID))" }
        case .append, .appendIf, .read, .trim, .logInfo, .seekTime, .cursorCommit, .cursorFetch, .cursorList, .cursorDelete:
            break
        }
        return nil
    }

    private func hello(_ connection: Connection, _ sequence: UInt32, _ body: UnsafeRawBufferPointer) throws(WireError) {
        let request = try HelloRequest.decode(body)
        guard request.minVersion <= UInt16(WireProtocol.version), request.maxVersion >= UInt16(WireProtocol.version) else {
            connection.answer(sequence, code: .unsupportedVersion, ErrorBody(
                detail1: UInt64(WireProtocol.version), detail2: UInt64(WireProtocol.version),
                message: "client speaks versions \(request.minVersion)...\(request.maxVersion); this server speaks only 1"))
            return
        }
        let response = HelloResponse(
            version: UInt16(WireProtocol.version), maxBatchBytes: UInt32(configuration.storage.maxBatchBytes),
            maxReadBytes: UInt32(configuration.maxReadBytes), maxInFlight: UInt32(configuration.maxInFlightPerConnection),
            maxWaitMillis: UInt32(configuration.maxWaitMillis), serverName: "ringlogd \(ringLogVersion)")
        var announced = response
        announced.features = .all
        connection.answer(sequence, .encoded(announced.encoded()))
    }

    // MARK: Appending

    /// APPEND, and APPEND_IF with the end it expects.
    private func append(
        _ connection: Connection, _ header: RequestHeader, _ sequence: UInt32, _ body: UnsafeRawBufferPointer, expectedEnd: LogOffset?
    ) -> Bool {
        guard AckMode(rawValue: header.flags) != nil else {
            connection.answer(sequence, code: .malformedRequest, ErrorBody(message: "unknown acknowledgement mode \(header.flags)"))
            return server.canRead(connection)
        }
        if let problem = Batch.validateIncoming(body, maxBatchBytes: configuration.storage.maxBatchBytes) {
            // A payloadLength past the limit is a malformed batch like one that disagrees with the
            // body (LENGTH_OVER_LIMIT is the header-level error, which closes): docs/protocol.md.
            let code: ErrorCode = if case .checksumMismatch = problem { .crcMismatch } else { .badBatch }
            connection.answer(sequence, code: code, ErrorBody(message: problem.description))
            return server.canRead(connection)
        }
        return place(connection, header, sequence, body, keeping: nil, expectedEnd: expectedEnd) && server.canRead(connection)
    }

    /// Offers a validated batch to the store. When the store has no room, the batch is kept (copied
    /// unless `keeping` already holds it) and the connection reads nothing until a retry places it.
    /// Returns false in that case.
    private func place(
        _ connection: Connection, _ header: RequestHeader, _ sequence: UInt32, _ batch: UnsafeRawBufferPointer, keeping: OwnedBytes?,
        expectedEnd: LogOffset?
    ) -> Bool {
        let log: Log
        if let cached = connection.appendLog, cached.id == header.logID, !cached.deleting {
            log = cached
        } else if let found = store.log(header.logID) {
            connection.appendLog = found
            log = found
        } else {
            answer(connection, sequence, error: .unknownLog("id \(header.logID)"))
            return true
        }
        // The condition is checked where the batch would be placed, in the same turn: nothing
        // can move the end between the check and the placement. (A log that failed or is being
        // deleted reports that instead; an idempotent retry gets its original offset.)
        let durable = header.flags == AckMode.durable.rawValue
        switch store.append(to: log, batch: batch, expectedEnd: expectedEnd) {
        case .placed(let offset, let end):
            server.counters.appends += 1
            server.counters.appendedBytes += UInt64(batch.count)
            server.counters.appendedRecords += UInt64(Batch.recordCount(batch.baseAddress!))
            let wait = server.waiters.wait(of: connection, on: header.logID)
            server.waiters.addAcknowledgement(PendingAck(offset: offset, end: end, sequence: sequence), durable: durable, to: wait)
            return true
        case .duplicate(let offset, let end):
            server.counters.duplicateAppends += 1
            // Answered like the batch it repeats: once that batch is written or committed.
            let wait = server.waiters.wait(of: connection, on: header.logID)
            server.waiters.addAcknowledgement(PendingAck(offset: offset, end: end, sequence: sequence, duplicate: true), durable: durable, to: wait)
            server.waiters.acknowledge(header.logID, upTo: durable ? log.committedEnd : log.writtenEnd, durable: durable, committedEnd: log.committedEnd)
            return true
        case .endMismatch(let reserved, let committed):
            connection.brokenChains.insert(header.logID)
            connection.answer(
                sequence, code: .endMismatch,
                ErrorBody(
                    detail1: reserved.rawValue, detail2: committed.rawValue,
                    message: "the log's end is \(reserved), not \(expectedEnd ?? .zero) as expected; this batch was not written"))
            return true
        case .wouldBlock:
            server.counters.appendsBlocked += 1
            connection.blockedAppend = (header, keeping ?? OwnedBytes(copying: batch), sequence, expectedEnd)
            server.blockedConnections.append(connection)
            return false
        case .failed(let error):
            answer(connection, sequence, error: error)
            return true
        }
    }

    func retryBlockedAppend(_ connection: Connection) {
        guard let blocked = connection.blockedAppend else { return }
        connection.blockedAppend = nil
        _ = place(connection, blocked.header, blocked.sequence, blocked.batch.bytes, keeping: blocked.batch, expectedEnd: blocked.expectedEnd)
    }

    // MARK: Reading

    /// Queues a read behind the connection's earlier ones and starts what may start now.
    func admitRead(_ connection: Connection, _ sequence: UInt32, logID: LogID, offset: LogOffset, maxBytes: Int, waitMillis: Int) {
        connection.parkedReads.append(ParkedRead(sequence: sequence, logID: logID, offset: offset, maxBytes: maxBytes, waitMillis: waitMillis))
        server.budget.parkedReadCount += 1
        guard connection.parkedReads.count == 1, !connection.queuedForMemory else { return }
        startParkedReads(connection)
    }

    /// A connection's results not yet collected (reserved or kept by its send queue) have reached
    /// one largest read: its next read waits until the client takes some, so a client that never
    /// reads its responses makes the server read from the disk for it only once.
    func readWindowIsFull(_ connection: Connection) -> Bool {
        connection.reservedReadBytes + connection.output.heldBytes >= max(configuration.maxReadBytes, configuration.storage.maxBatchBytes)
    }

    /// Starts the connection's waiting reads in order while its read window and the memory
    /// budget allow (`MemoryBudget`); when the budget does not, the connection takes its place in
    /// line. `turnCame`: its turn in that line came, so it starts one read and, with more
    /// waiting, goes to the back. Each read is charged the buffer its result takes until the
    /// result is sent.
    func startParkedReads(_ connection: Connection, turnCame: Bool = false) {
        var started = 0
        while let read = connection.parkedReads.first {
            if readWindowIsFull(connection) { return }
            let lineAhead = !turnCame && !server.budget.waiting.isEmpty
            if server.budget.mustWait(holding: connection.heldBytes) || lineAhead || (turnCame && started == 1) {
                if !connection.queuedForMemory && !(turnCame && started == 1) { server.counters.readsParked += 1 }
                server.budget.enqueue(connection)
                return
            }
            connection.parkedReads.removeFirst()
            server.budget.parkedReadCount -= 1
            started += 1
            startRead(connection, read.sequence, logID: read.logID, offset: read.offset, maxBytes: read.maxBytes, waitMillis: read.waitMillis)
        }
    }

    /// Sets the bytes a queued response holds against its connection and the memory budget.
    private func setReservation(_ connection: Connection, _ sequence: UInt32, to bytes: Int) {
        _ = connection.responses.update(sequence: sequence) { response in
            connection.reservedReadBytes += bytes - response.reservedBytes
            response.reservedBytes = bytes
        }
        server.recharge(connection)
    }

    private func startRead(_ connection: Connection, _ sequence: UInt32, logID: LogID, offset: LogOffset, maxBytes: Int, waitMillis: Int) {
        let context = ResponseContext.make(connection, sequence: sequence)
        let maxBytes = min(max(maxBytes, 1), configuration.maxReadBytes)
        switch store.read(from: logID, offset: offset, maxBytes: maxBytes, context: context) {
        case .ready(let result):
            if result.isEmpty && waitMillis > 0 {
                let wait = min(waitMillis, configuration.maxWaitMillis)
                server.waiters.addLongPoll(
                    LongPoll(offset: offset, maxBytes: maxBytes), sequence: sequence,
                    deadlineNanos: MonotonicClock.nanos() + UInt64(wait) * 1_000_000, to: server.waiters.wait(of: connection, on: logID))
                server.counters.longPollsStarted += 1
            } else {
                finishRead(connection, sequence, .success(result))
            }
        case .pending(let bufferBytes):
            connection.storageRequestsInFlight += 1
            setReservation(connection, sequence, to: bufferBytes)
        case .failed(let error):
            answer(connection, sequence, error: error)
        }
    }

    func finishRead(_ connection: Connection, _ sequence: UInt32, _ result: Result<ReadResult, StorageError>) {
        switch result {
        case .success(let read):
            server.counters.reads += 1
            server.counters.readBytes += UInt64(read.range.count)
            connection.answer(sequence, .read(ReadResponseHead(startOffset: read.startOffset, committedEnd: read.committedEnd), read))
        case .failure(let error):
            answer(connection, sequence, error: error)
        }
    }

    /// Wakes the long-polls of `log` that the new committed end answers: each reads again.
    func wakeReaders(_ log: LogID, committedEnd: LogOffset) {
        for (connection, sequence, poll) in server.waiters.takeReadersToWake(log, committedEnd: committedEnd) {
            if let kafka = connection.kafka {
                server.kafka!.pollEnded(connection, kafka, token: sequence)
                continue
            }
            admitRead(connection, sequence, logID: log, offset: poll.offset, maxBytes: poll.maxBytes, waitMillis: 0)
        }
    }

    /// Answers `connection`'s long-polls now, empty, as if their deadline had passed: a closing
    /// connection is not held open for them.
    func answerLongPollsNow(_ connection: Connection) {
        for (log, sequence) in server.waiters.takeLongPolls(of: connection) { answerEmpty(connection, sequence, logID: log) }
    }

    /// Answers long-polls whose deadline passed with an empty read.
    func expireLongPolls(nowNanos: UInt64) {
        for (connection, log, sequence) in server.waiters.takeExpired(nowNanos: nowNanos) {
            server.counters.longPollsExpired += 1
            answerEmpty(connection, sequence, logID: log)
        }
    }

    private func answerEmpty(_ connection: Connection, _ sequence: UInt32, logID: LogID) {
        if let kafka = connection.kafka {
            server.kafka!.pollEnded(connection, kafka, token: sequence)
            return
        }
        guard let log = store.log(logID) else {
            answer(connection, sequence, error: .unknownLog("id \(logID)"))
            return
        }
        let empty = ReadResult.empty(at: log.committedEnd, start: log.startOffset, end: log.committedEnd)
        connection.answer(sequence, .read(ReadResponseHead(startOffset: log.startOffset, committedEnd: log.committedEnd), empty))
    }

    // MARK: Logs

    private func createLog(_ connection: Connection, _ sequence: UInt32, _ body: UnsafeRawBufferPointer) throws(WireError) {
        let request = try CreateLogRequest.decode(body)
        switch Self.logSettings(from: request, defaults: configuration.storage.defaultLogSettings, maxBatchBytes: configuration.storage.maxBatchBytes) {
        case .failure(let problem):
            connection.answer(sequence, code: .badLogSettings, Self.errorBody(problem))
        case .success(let settings):
            connection.storageRequestsInFlight += 1
            store.createLog(named: request.name, settings: settings, context: ResponseContext.make(connection, sequence: sequence))
        }
    }

    /// BAD_LOG_SETTINGS details: the valid minimum and maximum of the first bad field.
    static func errorBody(_ problem: SettingProblem) -> ErrorBody {
        ErrorBody(detail1: problem.minimum, detail2: problem.maximum, message: "bad log settings: \(problem)")
    }

    /// A CREATE_LOG request's settings, every field range-checked before any arithmetic, or the
    /// first field out of range (named as on the wire, docs/protocol.md).
    static func logSettings(from request: CreateLogRequest, defaults: LogSettings, maxBatchBytes: Int) -> Result<LogSettings, SettingProblem> {
        var settings = defaults
        if request.segmentBytes != serverDefault {
            let range = LogSettings.segmentBytesRange(maxBatchBytes: maxBatchBytes)
            if let problem = SettingProblem.check("segmentBytes", request.segmentBytes, range, unit: .bytes, rule: "and at least the server's maxBatchBytes") {
                return .failure(problem)
            }
            settings.segmentBytes = Int(request.segmentBytes)
        }
        if request.retentionBytes != serverDefault {
            let range = LogSettings.retentionBytesRange(segmentBytes: settings.segmentBytes)
            if request.retentionBytes == 0 {
                settings.retentionBytes = nil
            } else if let problem = SettingProblem.check("retentionBytes", request.retentionBytes, range, unit: .bytes, rule: "at least one segment, or 0 to keep everything") {
                return .failure(problem)
            } else {
                settings.retentionBytes = Int(request.retentionBytes)
            }
        }
        if request.retentionMillis != serverDefault {
            if request.retentionMillis == 0 {
                settings.retentionMicros = nil
            } else if let problem = SettingProblem.check("retentionMillis", request.retentionMillis, LogSettings.retentionMillisRange, unit: .milliseconds, rule: "or 0 to keep everything") {
                return .failure(problem)
            } else {
                // Within the range, so at most about 3.2e15 µs: no overflow.
                settings.retentionMicros = request.retentionMillis * 1000
            }
        }
        // A field left at the server's default can still disagree with one that was given (a
        // default size retention below a larger segment size).
        if let problem = settings.problems(maxBatchBytes: maxBatchBytes).first {
            switch problem.setting {
            case "retention-micros":
                return .failure(SettingProblem(
                    setting: "retentionMillis", value: "\((settings.retentionMicros ?? 0) / 1000) (the server's default)",
                    minimum: problem.minimum / 1000, maximum: problem.maximum / 1000, unit: .milliseconds, rule: problem.rule))
            default:
                var renamed = problem
                renamed.setting = problem.setting == "segment-bytes" ? "segmentBytes" : "retentionBytes"
                renamed.value += " (the server's default)"
                return .failure(renamed)
            }
        }
        return .success(settings)
    }

    private func logInfo(_ connection: Connection, _ sequence: UInt32, _ header: RequestHeader, _ body: UnsafeRawBufferPointer) throws(WireError) {
        let name = try LogNameRequest.decode(body).name
        if !name.isEmpty && header.logID != .none { throw WireError("give a log name or a log id, not both") }
        // The same name rules as CREATE_LOG: a name no log can have is reported as such.
        if !name.isEmpty, let problem = LogName.problem(with: name) {
            answer(connection, sequence, error: .badLogName(problem))
            return
        }
        let log = name.isEmpty ? store.log(header.logID) : store.log(named: name)
        guard let log else {
            answer(connection, sequence, error: .unknownLog(name.isEmpty ? "id \(header.logID)" : name))
            return
        }
        connection.answer(sequence, .encoded(Self.describe(log.info).encoded()))
    }

    static func describe(_ info: LogInfo) -> LogDescription {
        LogDescription(
            logID: info.id, name: info.name, startOffset: info.startOffset, committedEnd: info.committedEnd,
            segmentCount: UInt32(info.segmentCount), storedBytes: UInt64(info.storedBytes), diskBytes: UInt64(info.diskBytes),
            segmentBytes: UInt64(info.settings.segmentBytes), retentionBytes: UInt64(info.settings.retentionBytes ?? 0),
            retentionMillis: (info.settings.retentionMicros ?? 0) / 1000, failure: info.failure ?? "")
    }

    // MARK: Errors

    func answer(_ connection: Connection, _ sequence: UInt32, error: StorageError) {
        let (code, body) = Self.wireError(error)
        connection.answer(sequence, code: code, body)
    }

    /// The error code and body a storage error is reported with.
    static func wireError(_ error: StorageError) -> (ErrorCode, ErrorBody) {
        let message = error.description
        switch error {
        case .unknownLog: return (.unknownLog, ErrorBody(message: message))
        case .logExists: return (.logExists, ErrorBody(message: message))
        case .badLogName: return (.badLogName, ErrorBody(message: message))
        case .badSettings(let problems):
            guard let first = problems.first else { return (.badLogSettings, ErrorBody(message: message)) }
            return (.badLogSettings, ErrorBody(detail1: first.minimum, detail2: first.maximum, message: message))
        case .offsetBelowStart(_, let start, let end), .offsetBeyondEnd(_, let start, let end):
            return (.offsetOutOfRange, ErrorBody(detail1: start.rawValue, detail2: end.rawValue, message: message))
        case .notBatchBoundary(let offset): return (.notBatchBoundary, ErrorBody(detail1: offset.rawValue, message: message))
        case .corruption(let offset, _, let next):
            return (.corruptBatch, ErrorBody(detail1: offset.rawValue, detail2: next?.rawValue ?? UInt64.max, message: message))
        case .batchTooLarge(_, let limit): return (.lengthOverLimit, ErrorBody(detail1: UInt64(limit), message: message))
        case .diskFull: return (.diskFull, ErrorBody(message: message))
        case .storageFailed: return (.storageFailed, ErrorBody(message: message))
        case .shuttingDown: return (.shuttingDown, ErrorBody(message: message))
        case .io, .dataDirectoryInUse, .recoveryFailed: return (.internalError, ErrorBody(message: message))
        case .unknownCursor: return (.unknownCursor, ErrorBody(message: message))
        case .badCursorName: return (.badCursorName, ErrorBody(message: message))
        case .tooManyCursors(let limit): return (.tooManyCursors, ErrorBody(detail1: UInt64(limit), message: message))
        case .cursorMismatch(_, let current):
            return (.cursorMismatch, ErrorBody(detail1: current?.offset.rawValue ?? UInt64.max, detail2: UInt64(current?.index ?? 0), message: message))
        case .outOfOrderSequence(_, _, let expected, let epoch):
            return (.outOfOrderSequence, ErrorBody(detail1: UInt64(expected), detail2: UInt64(epoch), message: message))
        case .duplicateSequence(_, _, let expected, let epoch):
            return (.duplicateSequence, ErrorBody(detail1: UInt64(expected), detail2: UInt64(epoch), message: message))
        case .unknownProducer: return (.unknownProducer, ErrorBody(message: message))
        case .producerFenced(_, _, let current): return (.producerFenced, ErrorBody(detail2: UInt64(current), message: message))
        }
    }

    static func encode(_ position: CursorPosition) -> CursorPositionMessage {
        CursorPositionMessage(offset: position.offset.rawValue, index: position.index)
    }
}
