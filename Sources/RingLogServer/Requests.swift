import RingLogIO
import DequeModule
import HeapModule
import RingLogStorage
import RingLogWire

/// Appends waiting for their acknowledgement and reads waiting for new data, for one log.
/// What waits on one log: acknowledgements for its appends and long-polls at its end. A class, so
/// that acknowledging pops from the queues where they are stored (a struct copied out of the
/// dictionary shared its storage, and the first pop copied the whole queue).
final class LogWaiters {
    let logID: LogID
    /// Set when the entry leaves the loop's table; a connection's cached reference is then stale.
    var detached = false

    init(logID: LogID) { self.logID = logID }

    struct Acknowledgement {
        var offset: LogOffset
        var end: LogOffset
        var context: UInt64
    }

    struct LongPoll {
        var offset: LogOffset
        var maxBytes: Int
    }

    /// In offset order, so acknowledging is popping from the front.
    var durable: Deque<Acknowledgement> = []
    var written: Deque<Acknowledgement> = []
    var readers: [UInt64: LongPoll] = [:]

    var isEmpty: Bool { durable.isEmpty && written.isEmpty && readers.isEmpty }
}

/// A response's place: which connection (its slot and whole generation) and which queued
/// response (its sequence number). 24 + 16 + 24 bits: the configuration keeps slots below 2^24,
/// and sequences count modulo 2^24 (`Connection.sequenceMask`).
enum ResponseContext {
    @inline(__always)
    static func make(_ connection: Connection, sequence: UInt32) -> UInt64 {
        UInt64(connection.slot) << 40 | UInt64(connection.generation) << 24 | UInt64(sequence & Connection.sequenceMask)
    }

    @inline(__always)
    static func parts(_ context: UInt64) -> (slot: Int, generation: UInt16, sequence: UInt32) {
        (Int(context >> 40), UInt16(truncatingIfNeeded: context >> 24), UInt32(truncatingIfNeeded: context) & Connection.sequenceMask)
    }

    /// Whether `context` belongs to `connection` (any of its responses).
    @inline(__always)
    static func belongs(_ context: UInt64, to connection: Connection) -> Bool {
        context >> 24 == UInt64(connection.slot) << 16 | UInt64(connection.generation)
    }
}

extension EventLoop {
    // MARK: Requests

    /// Queues the response entry for a request, in arrival order; answers TOO_MANY_IN_FLIGHT and
    /// returns nil when the connection already has its limit of requests in flight.
    private func beginRequest(_ connection: Connection, _ header: RequestHeader) -> UInt32? {
        counters.requests += 1
        let sequence = connection.takeSequence()
        let counted = connection.countedInFlight < configuration.maxInFlightPerConnection
        connection.responses.append(PendingResponse(sequence: sequence, requestID: header.requestID, opcode: header.opcode, counted: counted))
        guard counted else {
            respond(connection, sequence: sequence, code: .tooManyInFlight, ErrorBody(
                detail1: UInt64(configuration.maxInFlightPerConnection),
                message: "more than \(configuration.maxInFlightPerConnection) requests in flight on one connection"))
            return nil
        }
        connection.countedInFlight += 1
        return sequence
    }

    /// A request whose body could not be given memory; the body was read and dropped.
    func refuseForMemory(_ connection: Connection, _ header: RequestHeader) -> Bool {
        counters.refusedForMemory += 1
        guard let sequence = beginRequest(connection, header) else { return canRead(connection) }
        respond(connection, sequence: sequence, code: .serverBusy, ErrorBody(
            detail1: UInt64(header.bodyLength), detail2: UInt64(budget.limit),
            message: "the server is short of memory for a body of \(header.bodyLength) bytes; it was dropped, retry later"))
        return canRead(connection)
    }

    /// Handles one framed request. Returns false when the connection must stop taking requests.
    func handle(_ connection: Connection, _ header: RequestHeader, _ body: UnsafeRawBufferPointer) -> Bool {
        guard let sequence = beginRequest(connection, header) else { return canRead(connection) }
        guard let opcode = Opcode(rawValue: header.opcode) else {
            respond(connection, sequence: sequence, code: .unknownOperation, ErrorBody(message: "unknown operation 0x\(String(header.opcode, radix: 16))"))
            return canRead(connection)
        }
        if let problem = Self.reservedFieldProblem(opcode, header) {
            respond(connection, sequence: sequence, code: .malformedRequest, ErrorBody(message: problem))
            return canRead(connection)
        }
        if case .draining = phase {
            respond(connection, sequence: sequence, error: .shuttingDown)
            beginClosing(connection, flushFirst: true, reason: "server stopping")
            return false
        }
        do {
            switch opcode {
            case .ping:
                try WireReader(body).finish()
                respond(connection, sequence: sequence, .empty)
            case .hello: try hello(connection, sequence, body)
            case .append: return append(connection, header, sequence, body)
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
                respond(connection, sequence: sequence, .encoded(LogList(logs: store.logs.map(Self.describe)).encoded()))
            case .trim:
                let target = try OffsetMessage.decode(body).offset
                connection.storageRequestsInFlight += 1
                store.trim(header.logID, to: target, context: ResponseContext.make(connection, sequence: sequence))
            case .serverStats:
                try WireReader(body).finish()
                respond(connection, sequence: sequence, .encoded(serverStats().encoded()))
            }
        } catch {
            respond(connection, sequence: sequence, code: .malformedRequest, ErrorBody(message: "malformed \(opcode) body: \(error)"))
        }
        return canRead(connection)
    }

    /// Header fields an operation does not use must be zero, so they can be given a meaning later.
    static func reservedFieldProblem(_ opcode: Opcode, _ header: RequestHeader) -> String? {
        if opcode != .append && header.flags != 0 { return "flags must be 0 for \(opcode) (got \(header.flags))" }
        switch opcode {
        case .hello, .ping, .createLog, .deleteLog, .listLogs, .serverStats:
            if header.logID != .none { return "\(opcode) takes no log id (got \(header.logID))" }
        case .append, .read, .trim, .logInfo:
            break
        }
        return nil
    }

    private func hello(_ connection: Connection, _ sequence: UInt32, _ body: UnsafeRawBufferPointer) throws(WireError) {
        let request = try HelloRequest.decode(body)
        guard request.minVersion <= UInt16(WireProtocol.version), request.maxVersion >= UInt16(WireProtocol.version) else {
            respond(connection, sequence: sequence, code: .unsupportedVersion, ErrorBody(
                detail1: UInt64(WireProtocol.version), detail2: UInt64(WireProtocol.version),
                message: "client speaks versions \(request.minVersion)...\(request.maxVersion); this server speaks only 1"))
            return
        }
        let response = HelloResponse(
            version: UInt16(WireProtocol.version), maxBatchBytes: UInt32(configuration.storage.maxBatchBytes),
            maxReadBytes: UInt32(configuration.maxReadBytes), maxInFlight: UInt32(configuration.maxInFlightPerConnection),
            maxWaitMillis: UInt32(configuration.maxWaitMillis), serverName: "ringlogd \(ringLogVersion)")
        respond(connection, sequence: sequence, .encoded(response.encoded()))
    }

    private func append(_ connection: Connection, _ header: RequestHeader, _ sequence: UInt32, _ body: UnsafeRawBufferPointer) -> Bool {
        guard AckMode(rawValue: header.flags) != nil else {
            respond(connection, sequence: sequence, code: .malformedRequest, ErrorBody(message: "unknown acknowledgement mode \(header.flags)"))
            return canRead(connection)
        }
        if let problem = Batch.validateIncoming(body, maxPayloadBytes: configuration.storage.maxBatchBytes - Batch.headerBytes) {
            // A payloadLength past the limit is a malformed batch like one that disagrees with the
            // body (LENGTH_OVER_LIMIT is the header-level error, which closes): docs/protocol.md.
            let code: ErrorCode = if case .checksumMismatch = problem { .crcMismatch } else { .badBatch }
            respond(connection, sequence: sequence, code: code, ErrorBody(message: problem.description))
            return canRead(connection)
        }
        return place(connection, header, sequence, body, keeping: nil) && canRead(connection)
    }

    /// Offers a validated batch to the store. When the store has no room, the batch is kept (copied
    /// unless `keeping` already holds it) and the connection reads nothing until a retry places it.
    /// Returns false in that case.
    private func place(
        _ connection: Connection, _ header: RequestHeader, _ sequence: UInt32, _ batch: UnsafeRawBufferPointer, keeping: OwnedBytes?
    ) -> Bool {
        let log: Log
        if let cached = connection.appendLog, cached.id == header.logID, !cached.deleting {
            log = cached
        } else if let found = store.log(header.logID) {
            connection.appendLog = found
            log = found
        } else {
            respond(connection, sequence: sequence, error: .unknownLog("id \(header.logID)"))
            return true
        }
        switch store.append(to: log, batch: batch) {
        case .placed(let offset, let end):
            counters.appends += 1
            counters.appendedBytes += UInt64(batch.count)
            counters.appendedRecords += UInt64(batch.loadLittleEndian(at: 36, as: UInt32.self))
            let acknowledgement = LogWaiters.Acknowledgement(offset: offset, end: end, context: ResponseContext.make(connection, sequence: sequence))
            let waiters: LogWaiters
            if let cached = connection.appendWaiters, cached.logID == header.logID, !cached.detached {
                waiters = cached
            } else {
                waiters = waitersFor(header.logID)
                connection.appendWaiters = waiters
                connection.noteWaiting(on: header.logID)
            }
            if header.flags == AckMode.durable.rawValue {
                waiters.durable.append(acknowledgement)
            } else {
                waiters.written.append(acknowledgement)
            }
            return true
        case .wouldBlock:
            counters.appendsBlocked += 1
            connection.blockedAppend = (header, keeping ?? OwnedBytes(copying: batch), sequence)
            blockedConnections.append(connection)
            return false
        case .failed(let error):
            respond(connection, sequence: sequence, error: error)
            return true
        }
    }

    func retryBlockedAppend(_ connection: Connection) {
        guard let blocked = connection.blockedAppend else { return }
        connection.blockedAppend = nil
        _ = place(connection, blocked.header, blocked.sequence, blocked.batch.bytes, keeping: blocked.batch)
    }

    /// Queues a read behind the connection's earlier ones and starts what may start now.
    func admitRead(_ connection: Connection, _ sequence: UInt32, logID: LogID, offset: LogOffset, maxBytes: Int, waitMillis: Int) {
        connection.parkedReads.append(ParkedRead(sequence: sequence, logID: logID, offset: offset, maxBytes: maxBytes, waitMillis: waitMillis))
        budget.parkedReadCount += 1
        guard connection.parkedReads.count == 1, !connection.queuedForMemory else { return }
        startParkedReads(connection)
    }

    /// A connection's results not yet collected (reserved or waiting to be sent) have reached one
    /// largest read: its next read waits until the client takes some, so a client that never
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
            let lineAhead = !turnCame && !budget.waiting.isEmpty
            if budget.mustWait(holding: connection.heldBytes) || lineAhead || (turnCame && started == 1) {
                if !connection.queuedForMemory && !(turnCame && started == 1) { counters.readsParked += 1 }
                budget.enqueue(connection)
                return
            }
            connection.parkedReads.removeFirst()
            budget.parkedReadCount -= 1
            started += 1
            startRead(connection, read.sequence, logID: read.logID, offset: read.offset, maxBytes: read.maxBytes, waitMillis: read.waitMillis)
        }
    }

    /// Sets the bytes a queued response holds against its connection and the memory budget.
    func setReservation(_ connection: Connection, _ sequence: UInt32, to bytes: Int) {
        _ = connection.responses.update(sequence: sequence) { response in
            connection.reservedReadBytes += bytes - response.reservedBytes
            response.reservedBytes = bytes
        }
        recharge(connection)
    }

    private func startRead(_ connection: Connection, _ sequence: UInt32, logID: LogID, offset: LogOffset, maxBytes: Int, waitMillis: Int) {
        let context = ResponseContext.make(connection, sequence: sequence)
        let maxBytes = min(max(maxBytes, 1), configuration.maxReadBytes)
        switch store.read(from: logID, offset: offset, maxBytes: maxBytes, context: context) {
        case .ready(let result):
            if result.isEmpty && waitMillis > 0 {
                let wait = min(waitMillis, configuration.maxWaitMillis)
                waitersFor(logID).readers[context] = LogWaiters.LongPoll(offset: offset, maxBytes: maxBytes)
                connection.noteWaiting(on: logID)
                longPollDeadlines.insert(LongPollDeadline(deadlineNanos: monotonicNanos() + UInt64(wait) * 1_000_000, logID: logID, context: context))
                counters.longPollsStarted += 1
            } else {
                finishRead(context: context, .success(result))
            }
        case .pending(let bufferBytes):
            connection.storageRequestsInFlight += 1
            setReservation(connection, sequence, to: bufferBytes)
        case .failed(let error):
            respond(context: context, error: error)
        }
    }

    private func finishRead(context: UInt64, _ result: Result<ReadResult, StorageError>) {
        switch result {
        case .success(let read):
            counters.reads += 1
            counters.readBytes += UInt64(read.range.count)
            respond(context: context, .read(ReadResponseHead(startOffset: read.startOffset, committedEnd: read.committedEnd), read))
        case .failure(let error):
            respond(context: context, error: error)
        }
    }

    private func createLog(_ connection: Connection, _ sequence: UInt32, _ body: UnsafeRawBufferPointer) throws(WireError) {
        let request = try CreateLogRequest.decode(body)
        switch Self.logSettings(from: request, defaults: configuration.storage.defaultLogSettings, maxBatchBytes: configuration.storage.maxBatchBytes) {
        case .failure(let problem):
            respond(connection, sequence: sequence, code: .badLogSettings, Self.errorBody(problem))
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
            respond(connection, sequence: sequence, error: .badLogName(problem))
            return
        }
        let log = name.isEmpty ? store.log(header.logID) : store.log(named: name)
        guard let log else {
            respond(connection, sequence: sequence, error: .unknownLog(name.isEmpty ? "id \(header.logID)" : name))
            return
        }
        respond(connection, sequence: sequence, .encoded(Self.describe(log.info).encoded()))
    }

    static func describe(_ info: LogInfo) -> LogDescription {
        LogDescription(
            logID: info.id, name: info.name, startOffset: info.startOffset, committedEnd: info.committedEnd,
            segmentCount: UInt32(info.segmentCount), storedBytes: UInt64(info.storedBytes), diskBytes: UInt64(info.diskBytes),
            segmentBytes: UInt64(info.settings.segmentBytes), retentionBytes: UInt64(info.settings.retentionBytes ?? 0),
            retentionMillis: (info.settings.retentionMicros ?? 0) / 1000, failure: info.failure ?? "")
    }

    // MARK: Responding

    func respond(_ connection: Connection, sequence: UInt32, _ body: PendingResponse.Body) {
        respond(context: ResponseContext.make(connection, sequence: sequence), status: 0, body)
    }

    func respond(_ connection: Connection, sequence: UInt32, code: ErrorCode, _ error: ErrorBody) {
        respond(context: ResponseContext.make(connection, sequence: sequence), status: code.rawValue, .error(error))
    }

    func respond(_ connection: Connection, sequence: UInt32, error: StorageError) {
        respond(context: ResponseContext.make(connection, sequence: sequence), error: error)
    }

    func respond(context: UInt64, _ body: PendingResponse.Body) { respond(context: context, status: 0, body) }

    func respond(context: UInt64, error: StorageError) {
        let (code, body) = Self.wireError(error)
        respond(context: context, status: code.rawValue, .error(body))
    }

    /// The connection a context belongs to, if it is still the slot's owner.
    func connection(for context: UInt64) -> Connection? {
        let (slot, generation, _) = ResponseContext.parts(context)
        guard slot < connections.count, let connection = connections[slot], connection.generation == generation else { return nil }
        return connection
    }

    /// Marks a queued response ready; dropped when its connection is gone.
    private func respond(context: UInt64, status: UInt16, _ body: PendingResponse.Body) {
        let (slot, _, sequence) = ResponseContext.parts(context)
        guard let connection = connection(for: context) else { return }
        if status != 0, let code = ErrorCode(rawValue: status) {
            counters.countError(code)
            if case .error(let error) = body {
                logger.debug(
                    "error response",
                    metadata: ["connection": "\(slot).\(connection.generation)", "code": "\(code)", "message": "\(error.message)"])
            }
        }
        let found = connection.responses.update(sequence: sequence) { response in
            response.ready = true
            response.status = status
            response.body = body
            // What the response holds until it is written out counts against the budget: a read's
            // buffer (its reservation shrinks to that), an encoded body or an error message.
            let holds: Int =
                switch body {
                case .read(_, let result): result.buffer?.count ?? 0
                case .encoded(let bytes): bytes.count
                case .error(let error): 16 + error.message.utf8.count
                case .empty, .append, .offset: 0
                }
            connection.reservedReadBytes += holds - response.reservedBytes
            response.reservedBytes = holds
        }
        if found {
            recharge(connection)
            scheduleFlush(connection)
        }
    }

    /// Moves every ready response at the head of the queue into the connection's output.
    func writeReadyResponses(_ connection: Connection) {
        while connection.responses.firstIsReady {
            let response = connection.responses.removeFirst()
            if response.counted { connection.countedInFlight -= 1 }
            connection.reservedReadBytes -= response.reservedBytes
            encode(response, into: connection.output.filling)
        }
    }

    private static func header(of response: PendingResponse, bodyLength: Int) -> ResponseHeader {
        ResponseHeader(opcode: response.opcode, bodyLength: bodyLength, requestID: response.requestID, status: response.status)
    }

    private func encode(_ response: PendingResponse, into output: OutgoingBytes) {
        // Headers are plain values made per case: a closure capturing the response to make them
        // was a heap allocation per response.
        switch response.body {
        case .empty:
            let header = Self.header(of: response, bodyLength: 0)
            output.appendInline(count: WireProtocol.headerBytes) { header.encode(into: $0) }
        case .append(let message):
            let header = Self.header(of: response, bodyLength: 16)
            output.appendInline(count: WireProtocol.headerBytes + 16) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(message.offset.rawValue, at: 32)
                pointer.storeLittleEndian(message.committedEnd.rawValue, at: 40)
            }
        case .offset(let message):
            let header = Self.header(of: response, bodyLength: 8)
            output.appendInline(count: WireProtocol.headerBytes + 8) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(message.offset.rawValue, at: 32)
            }
        case .read(let head, let result):
            let header = Self.header(of: response, bodyLength: ReadResponseHead.encodedBytes + result.range.count)
            output.appendInline(count: WireProtocol.headerBytes + ReadResponseHead.encodedBytes) { pointer in
                header.encode(into: pointer)
                pointer.storeLittleEndian(head.startOffset.rawValue, at: 32)
                pointer.storeLittleEndian(head.committedEnd.rawValue, at: 40)
            }
            if let buffer = result.buffer { output.appendExternal(buffer, result.range) }
        case .encoded(let bytes):
            let header = Self.header(of: response, bodyLength: bytes.count)
            output.appendInline(count: WireProtocol.headerBytes + bytes.count) { pointer in
                header.encode(into: pointer)
                bytes.withUnsafeBytes { (pointer + WireProtocol.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        case .error(let error):
            let bytes = error.encoded()
            let header = Self.header(of: response, bodyLength: bytes.count)
            output.appendInline(count: WireProtocol.headerBytes + bytes.count) { pointer in
                header.encode(into: pointer)
                bytes.withUnsafeBytes { (pointer + WireProtocol.headerBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
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
        }
    }

    // MARK: Store events

    func applyStoreEvents() {
        while let event = store.events.popFirst() {
            switch event {
            case .written(let id):
                guard let log = store.log(id) else { continue }
                acknowledge(id, upTo: log.writtenEnd, durable: false, committedEnd: log.committedEnd)
            case .committed(let id):
                guard let log = store.log(id) else { continue }
                acknowledge(id, upTo: log.committedEnd, durable: true, committedEnd: log.committedEnd)
                wakeReaders(id, committedEnd: log.committedEnd)
            case .appendsRewound(let id, let from, let error):
                failAcknowledgements(id, from: from, error: error)
                if case .unknownLog = error { failReaders(id, error: error) }
            case .logFailed(let id, let error):
                failAcknowledgements(id, from: .zero, error: error)
            case .spaceAvailable:
                let blocked = blockedConnections
                blockedConnections.removeAll()
                for connection in blocked where connections[connection.slot] === connection { pump(connection) }
            case .readCompleted(let context, let result):
                storageRequestAnswered(context)
                finishRead(context: context, result)
            case .created(let context, let result):
                storageRequestAnswered(context)
                switch result {
                case .success(let info): respond(context: context, .encoded(Self.describe(info).encoded()))
                case .failure(let error): respond(context: context, error: error)
                }
            case .deleted(let context, let result):
                storageRequestAnswered(context)
                switch result {
                case .success: respond(context: context, .empty)
                case .failure(let error): respond(context: context, error: error)
                }
            case .trimmed(let context, let result):
                storageRequestAnswered(context)
                switch result {
                case .success(let start): respond(context: context, .offset(OffsetMessage(offset: start)))
                case .failure(let error): respond(context: context, error: error)
                }
            case .shutdownComplete(let clean):
                storeShutDown(clean: clean)
            }
        }
    }

    /// A storage request's answer came back: the connection may be freed once none is left.
    private func storageRequestAnswered(_ context: UInt64) {
        guard let connection = connection(for: context) else { return }
        connection.storageRequestsInFlight -= 1
        finishIfDone(connection)
    }

    private func acknowledge(_ id: LogID, upTo end: LogOffset, durable: Bool, committedEnd: LogOffset) {
        guard let entry = waiters[id] else { return }
        while let first = entry.written.first, first.end <= end {
            entry.written.removeFirst()
            respond(context: first.context, .append(AppendResponse(offset: first.offset, committedEnd: committedEnd)))
        }
        if durable {
            while let first = entry.durable.first, first.end <= end {
                entry.durable.removeFirst()
                respond(context: first.context, .append(AppendResponse(offset: first.offset, committedEnd: committedEnd)))
            }
        }
        store(entry, for: id)
    }

    private func failAcknowledgements(_ id: LogID, from offset: LogOffset, error: StorageError) {
        guard let entry = waiters[id] else { return }
        for queue in [\LogWaiters.durable, \LogWaiters.written] {
            while let last = entry[keyPath: queue].last, last.offset >= offset {
                entry[keyPath: queue].removeLast()
                respond(context: last.context, error: error)
            }
        }
        store(entry, for: id)
    }

    private func wakeReaders(_ id: LogID, committedEnd: LogOffset) {
        guard let entry = waiters[id], !entry.readers.isEmpty else { return }
        let ready = entry.readers.filter { $0.value.offset < committedEnd }
        for context in ready.keys { entry.readers[context] = nil }
        store(entry, for: id)
        for (context, reader) in ready {
            guard let connection = connection(for: context) else { continue }
            admitRead(connection, ResponseContext.parts(context).sequence, logID: id, offset: reader.offset, maxBytes: reader.maxBytes, waitMillis: 0)
        }
    }

    private func failReaders(_ id: LogID, error: StorageError) {
        guard let entry = waiters[id] else { return }
        for context in entry.readers.keys { respond(context: context, error: error) }
        waiters[id]?.readers.removeAll()
    }

    /// Removes everything waiting on behalf of `connection` (acknowledgements, long-polls): it will
    /// never be answered, and its slot may go to another connection.
    func abandonWaits(_ connection: Connection) {
        for id in connection.waitingOn {
            guard let entry = waiters[id] else { continue }
            entry.durable.removeAll { ResponseContext.belongs($0.context, to: connection) }
            entry.written.removeAll { ResponseContext.belongs($0.context, to: connection) }
            for context in entry.readers.keys where ResponseContext.belongs(context, to: connection) { entry.readers[context] = nil }
            store(entry, for: id)
        }
        connection.waitingOn.removeAll()
        connection.appendWaiters = nil
        budget.remove(connection)
        budget.parkedReadCount -= connection.parkedReads.count
        connection.parkedReads.removeAll()
    }

    /// Answers `connection`'s long-polls now, empty, as if their deadline had passed: a closing
    /// connection is not held open for them.
    func answerLongPollsNow(_ connection: Connection) {
        for id in connection.waitingOn {
            guard let entry = waiters[id], !entry.readers.isEmpty else { continue }
            for context in entry.readers.keys where ResponseContext.belongs(context, to: connection) {
                entry.readers[context] = nil
                answerEmpty(context: context, logID: id)
            }
            store(entry, for: id)
        }
    }

    /// Drops a log's entry once nothing waits on it.
    private func store(_ entry: LogWaiters, for id: LogID) {
        if entry.isEmpty {
            entry.detached = true
            waiters[id] = nil
        }
    }

    private func waitersFor(_ id: LogID) -> LogWaiters {
        if let existing = waiters[id] { return existing }
        let created = LogWaiters(logID: id)
        waiters[id] = created
        return created
    }

    /// Answers long-polls whose deadline passed with an empty read.
    func expireLongPolls(now: UInt64) {
        while let first = longPollDeadlines.min, first.deadlineNanos <= now {
            _ = longPollDeadlines.removeMin()
            guard waiters[first.logID]?.readers.removeValue(forKey: first.context) != nil else { continue }
            answerEmpty(context: first.context, logID: first.logID)
        }
    }

    /// At a graceful stop: every waiting long-poll, and every read waiting for memory, is
    /// answered SHUTTING_DOWN (docs/protocol.md).
    func answerAllLongPolls() {
        for case let connection? in connections where !connection.parkedReads.isEmpty {
            let parked = connection.parkedReads
            budget.remove(connection)
            budget.parkedReadCount -= parked.count
            connection.parkedReads.removeAll()
            for read in parked { respond(connection, sequence: read.sequence, error: .shuttingDown) }
        }
        for (id, entry) in waiters {
            for context in entry.readers.keys { respond(context: context, error: .shuttingDown) }
            entry.readers.removeAll()
            store(entry, for: id)
        }
        longPollDeadlines = Heap()
    }

    private func answerEmpty(context: UInt64, logID: LogID) {
        guard let log = store.log(logID) else {
            respond(context: context, error: .unknownLog("id \(logID)"))
            return
        }
        counters.longPollsExpired += 1
        let empty = ReadResult.empty(at: log.committedEnd, start: log.startOffset, end: log.committedEnd)
        respond(context: context, .read(ReadResponseHead(startOffset: log.startOffset, committedEnd: log.committedEnd), empty))
    }
}
