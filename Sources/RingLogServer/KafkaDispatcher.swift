import RingLogIO
import RingLogKafka
import RingLogStorage
import RingLogWire

/// The Kafka listener's requests (docs/kafka.md): framing, versions, and one method per API. It
/// runs on the loop core like `RequestDispatcher` and uses the same store, waits, memory budget
/// and deadlines; what differs is the bytes. Parts of a request that wait (a read, a lookup, an
/// acknowledgement, a long-poll) do so under tokens of the connection's `KafkaSession`, and the
/// request's one response is completed when its last part is done.
final class KafkaDispatcher {
    let server: ServerLoop
    let settings: KafkaSettings
    let store: LogStore
    let configuration: ServerConfiguration
    /// Consumer groups (membership in memory; committed offsets are cursors).
    private(set) var groups: KafkaGroupCoordinator!
    /// Largest request frame: a batch as large as the server takes, plus room for the request
    /// around it, within what one connection may hold.
    let maxFrameBytes: Int
    /// Topics being created (auto-creation or CreateTopics): what to call when each is done.
    var creating: [String: [(Result<Void, KafkaErrorCode>) -> Void]] = [:]

    /// What the listener answers in ApiVersions. Produce is advertised from v0 (only v3+ are
    /// read; a client that picks v0-v2 is closed) because librdkafka stops compressing when the
    /// broker's minimum Produce version is above 0 (KAFKA-18659).
    static let supported: [KafkaApiVersions.Range] = [
        .init(.produce, 0, 7), .init(.fetch, 4, 11), .init(.listOffsets, 1, 2), .init(.metadata, 0, 4),
        .init(.offsetCommit, 2, 7), .init(.offsetFetch, 1, 5), .init(.findCoordinator, 0, 2), .init(.joinGroup, 0, 5),
        .init(.heartbeat, 0, 3), .init(.leaveGroup, 0, 1), .init(.syncGroup, 0, 3), .init(.apiVersions, 0, 3),
        .init(.createTopics, 0, 4), .init(.deleteTopics, 0, 3), .init(.initProducerId, 0, 1),
    ]

    /// SaslHandshake (key 17) and its answer when asked: UNSUPPORTED_SASL_MECHANISM (33).
    static let saslHandshakeKey: Int16 = 17
    static let unsupportedSaslMechanism: Int16 = 33

    init(server: ServerLoop, settings: KafkaSettings) {
        self.server = server
        self.settings = settings
        store = server.store
        configuration = server.configuration
        maxFrameBytes = min(server.configuration.storage.maxBatchBytes + (64 << 10), server.configuration.maxBufferedBytesPerConnection)
        groups = KafkaGroupCoordinator(dispatcher: self)
    }

    var advertised: (host: String, port: Int) { settings.advertised ?? (settings.listen.host, Int(settings.listen.port)) }

    // MARK: Framing

    /// Handles the whole frames at the front of `bytes` (a 4-byte big-endian size, then the
    /// request) while the connection may take requests; returns the bytes used. A partial frame
    /// stays for the next call. A size below a request header or above `maxFrameBytes` closes
    /// the connection: Kafka has no way to answer a frame it cannot read.
    func frame(_ connection: Connection, _ bytes: UnsafeRawBufferPointer) -> Int {
        var consumed = 0
        while bytes.count - consumed >= 4, mayGoOn(connection) {
            let base = bytes.baseAddress! + consumed
            let size = Int(Int32(bigEndian: base.loadUnaligned(as: Int32.self)))
            guard size >= 8, size <= maxFrameBytes else {
                connection.protocolError(.lengthOverLimit, ErrorBody(message: "a Kafka request frame of \(size) bytes (the limit is 8 to \(maxFrameBytes))"), requestID: 0)
                return consumed
            }
            guard bytes.count - consumed - 4 >= size else { break }
            consumed += 4 + size
            if !handle(connection, UnsafeRawBufferPointer(start: base + 4, count: size)) { break }
        }
        return consumed
    }

    /// Whether `bytes` begin with a whole frame (or one too large, which `frame` refuses).
    func holdsWholeFrame(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 4 else { return false }
        let size = Int(Int32(bigEndian: bytes.baseAddress!.loadUnaligned(as: Int32.self)))
        return size < 8 || size > maxFrameBytes || bytes.count - 4 >= size
    }

    /// Whether the connection may take another request now.
    /// Besides the in-flight limit and the memory budget (`ServerLoop.canRead`), the native
    /// read window: while a connection's fetched data not yet collected (reserved by reads in
    /// flight, waiting in responses, or unsent) reaches one largest read, it reads no more
    /// requests, so a client pipelining Fetches it never collects holds one read's worth.
    private func mayGoOn(_ connection: Connection) -> Bool {
        connection.isOpen && connection.countedInFlight < min(configuration.maxInFlightPerConnection, Self.maxInFlight)
            && connection.kafka?.blockedProduce == nil
            && !server.dispatcher.readWindowIsFull(connection) && server.canRead(connection)
    }

    /// Queues the response entry of a request, in arrival order. Until it is answered the
    /// request is charged for what its decoded parts and their state take, against the
    /// connection and the memory budget, so a client pipelining requests with many partitions
    /// is held to the budget like one sending large bodies: a Produce its frame's bytes (its
    /// batches' copies), any other request four times its frame's (a partition's state takes
    /// about that much more than its bytes on the wire).
    func begin(_ connection: Connection) -> UInt32 {
        server.counters.requests += 1
        server.counters.kafkaRequests += 1
        let sequence = connection.takeSequence()
        var entry = PendingResponse(sequence: sequence, requestID: 0, opcode: 0, counted: true)
        entry.reservedBytes = (currentAPI == .produce ? 1 : 4) * currentFrameBytes
        connection.responses.append(entry)
        connection.reservedReadBytes += entry.reservedBytes
        server.recharge(connection)
        connection.countedInFlight += 1
        return sequence
    }

    /// The size and API of the frame being handled (for `begin`'s charge).
    private var currentFrameBytes = 0
    private var currentAPI = KafkaApiKey.apiVersions

    /// Most partitions (or topics) one request may name: past it the request is refused and the
    /// connection closed. Clients send one Fetch per broker for every partition they consume.
    static let maxPartitionsPerRequest = 10_000
    /// Requests one Kafka connection may have in flight (clients keep at most a few).
    static let maxInFlight = 64

    /// Completes request `sequence` with `body`.
    func respond(_ connection: Connection, _ sequence: UInt32, _ header: KafkaRequestHeader, _ body: [UInt8]) {
        let response = KafkaResponseBytes()
        response.append(body)
        respond(connection, sequence, header, response)
    }

    func respond(_ connection: Connection, _ sequence: UInt32, _ header: KafkaRequestHeader, _ response: KafkaResponseBytes) {
        // ApiVersions answers with header v0 always (KIP-511); other APIs with v1 in their
        // flexible versions.
        let flexible = header.api.map { $0 != .apiVersions && $0.isFlexible(header.apiVersion) } ?? false
        response.frame(correlationID: header.correlationID, headerVersion: flexible ? 1 : 0)
        connection.complete(sequence, .kafka(response))
    }

    /// Ends the connection over a request it cannot serve.
    func refuse(_ connection: Connection, _ message: String) {
        server.counters.kafkaRefused += 1
        connection.protocolError(.malformedRequest, ErrorBody(message: message), requestID: 0)
    }

    /// Handles one request frame; false when the connection must stop taking requests.
    private func handle(_ connection: Connection, _ frame: UnsafeRawBufferPointer) -> Bool {
        currentFrameBytes = frame.count
        currentAPI = .apiVersions
        let header: KafkaRequestHeader
        do { header = try KafkaRequestHeader.decode(frame) } catch {
            // ApiVersions of a version not known here may carry a header we cannot read past the
            // correlation id; it still gets the v0-shaped answer (KIP-511).
            if frame.count >= 8, frame[0] == 0, frame[1] == UInt8(KafkaApiKey.apiVersions.rawValue), let correlation = KafkaRequestHeader.correlationID(frame) {
                let version = Int16(frame[2]) << 8 | Int16(frame[3])
                let sequence = begin(connection)
                respond(connection, sequence, KafkaRequestHeader(apiKey: 18, apiVersion: version, correlationID: correlation, clientID: nil, bodyStart: 8),
                    KafkaApiVersions.responseBody(version: version, supported: Self.supported))
                return mayGoOn(connection)
            }
            refuse(connection, "unreadable Kafka request header: \(error)")
            return false
        }
        let body = UnsafeRawBufferPointer(rebasing: frame[header.bodyStart...])
        if header.apiKey == Self.saslHandshakeKey, (0...1).contains(header.apiVersion) {
            // Not advertised, but a client configured for SASL that asks anyway is told plainly:
            // no mechanism is enabled (UNSUPPORTED_SASL_MECHANISM), then the connection ends.
            let sequence = begin(connection)
            var answer = KafkaWriter()
            answer.int16(Self.unsupportedSaslMechanism)
            answer.arrayCount(0)
            respond(connection, sequence, header, answer.bytes)
            connection.beginClosing(flushFirst: true, reason: "SASL is not served")
            return false
        }
        guard let api = header.api, let range = Self.supported.first(where: { $0.api == api }) else {
            refuse(connection, "Kafka API key \(header.apiKey) is not served (docs/kafka.md lists those that are)")
            return false
        }
        guard header.apiVersion >= range.min, header.apiVersion <= range.max else {
            if api == .apiVersions {
                // Answered in the v0 shape so the client can retry with a version we speak.
                let sequence = begin(connection)
                respond(connection, sequence, header, KafkaApiVersions.responseBody(version: header.apiVersion, supported: Self.supported))
                return mayGoOn(connection)
            }
            refuse(connection, "\(api) v\(header.apiVersion) is not served (v\(range.min)-v\(range.max) are)")
            return false
        }
        if server.isStopping {
            connection.beginClosing(flushFirst: true, reason: "server stopping")
            return false
        }
        let session = connection.kafka!
        currentAPI = api
        do throws(KafkaDecodeError) {
            switch api {
            case .apiVersions:
                let sequence = begin(connection)
                respond(connection, sequence, header, KafkaApiVersions.responseBody(version: header.apiVersion, supported: Self.supported))
            case .metadata:
                let request = try KafkaMetadataRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics?.count ?? 0) else { return false }
                metadata(connection, header, request)
            case .produce:
                guard header.apiVersion >= 3 else {
                    refuse(connection, "Produce v\(header.apiVersion) carries message sets older than record batches; use v3 or later")
                    return false
                }
                let request = try KafkaProduceRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics.partitionCount()) else { return false }
                produce(connection, session, header, body, request)
            case .fetch:
                let request = try KafkaFetchRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics.partitionCount()) else { return false }
                fetch(connection, session, header, request)
            case .listOffsets:
                let request = try KafkaListOffsetsRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics.partitionCount()) else { return false }
                listOffsets(connection, session, header, request)
            case .initProducerId:
                initProducerId(connection, header, try KafkaInitProducerIdRequest.decode(body, version: header.apiVersion))
            case .findCoordinator:
                let request = try KafkaFindCoordinatorRequest.decode(body, version: header.apiVersion)
                let sequence = begin(connection)
                // Transactions have no coordinator here.
                let error: KafkaErrorCode = request.keyType == 0 ? .none : .coordinatorNotAvailable
                respond(connection, sequence, header, KafkaFindCoordinatorRequest.responseBody(
                    version: header.apiVersion, errorCode: error, nodeID: error == .none ? 0 : -1, host: error == .none ? advertised.host : "",
                    port: error == .none ? Int32(advertised.port) : -1))
            case .offsetCommit:
                let request = try KafkaOffsetCommitRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics.partitionCount()) else { return false }
                offsetCommit(connection, session, header, request)
            case .offsetFetch:
                let request = try KafkaOffsetFetchRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topics?.partitionCount() ?? 0) else { return false }
                offsetFetch(connection, session, header, request)
            case .joinGroup:
                groups.join(connection, header, try KafkaJoinGroupRequest.decode(body, version: header.apiVersion))
            case .syncGroup:
                groups.sync(connection, header, try KafkaSyncGroupRequest.decode(body, version: header.apiVersion))
            case .heartbeat:
                groups.heartbeat(connection, header, try KafkaMembershipRequest.decodeHeartbeat(body, version: header.apiVersion))
            case .leaveGroup:
                groups.leave(connection, header, try KafkaMembershipRequest.decodeLeaveGroup(body, version: header.apiVersion))
            case .createTopics:
                let request = try KafkaCreateTopicsRequest.decode(body, version: header.apiVersion)
                // Counted in partitions to create (each is a log with its files).
                guard within(connection, api, request.topics.reduce(0) { $0 + max(Int($1.numPartitions), 1) }) else { return false }
                createTopics(connection, header, request)
            case .deleteTopics:
                let request = try KafkaDeleteTopicsRequest.decode(body, version: header.apiVersion)
                guard within(connection, api, request.topicNames.count) else { return false }
                deleteTopics(connection, header, request)
            }
        } catch {
            refuse(connection, "malformed \(api) v\(header.apiVersion) request: \(error)")
            return false
        }
        return mayGoOn(connection)
    }

    /// Whether a request naming `count` partitions (or topics) may be served; if not, it is
    /// refused and the connection closed.
    private func within(_ connection: Connection, _ api: KafkaApiKey, _ count: Int) -> Bool {
        guard count > Self.maxPartitionsPerRequest else { return true }
        refuse(connection, "\(api) names \(count) partitions or topics; the limit is \(Self.maxPartitionsPerRequest) per request")
        return false
    }

    // MARK: Storage, for the parts of requests

    /// Reads committed batches for a request part; `done` runs now or when the read is back.
    func read(
        _ connection: Connection, _ log: LogID, from offset: LogOffset, maxBytes: Int, _ done: @escaping (Result<ReadResult, StorageError>) -> Void
    ) {
        guard connection.isOpen, let session = connection.kafka else { return done(.failure(.shuttingDown)) }
        var reserved = 0
        let token = session.register(.storage { [unowned self] answer in
            // The buffer's reservation ends; the response that keeps its batches counts them.
            connection.reservedReadBytes -= reserved
            server.recharge(connection)
            if case .read(let result) = answer { done(result) } else { done(.failure(.shuttingDown)) }
        })
        switch store.read(from: log, offset: offset, maxBytes: maxBytes, context: ResponseContext.make(connection, sequence: token)) {
        case .ready(let result):
            _ = session.take(token)
            done(.success(result))
        case .pending(let bufferBytes):
            connection.storageRequestsInFlight += 1
            // Reserved while the disk read fills it, as for a native read.
            reserved = bufferBytes
            connection.reservedReadBytes += bufferBytes
            server.recharge(connection)
        case .failed(let error):
            _ = session.take(token)
            done(.failure(error))
        }
    }

    /// The offset of the batch holding `record` (see `LogStore.seek(_:record:context:)`), or of
    /// the first batch appended at or after a time.
    func seek(_ connection: Connection, _ log: LogID, record: UInt64? = nil, timeMicros: UInt64? = nil, _ done: @escaping (Result<LogOffset, StorageError>) -> Void) {
        guard connection.isOpen, let session = connection.kafka else { return done(.failure(.shuttingDown)) }
        let token = session.register(.storage { answer in
            if case .sought(let result) = answer { done(result) } else { done(.failure(.shuttingDown)) }
        })
        let context = ResponseContext.make(connection, sequence: token)
        let start = record.map { store.seek(log, record: $0, context: context) } ?? store.seek(log, atOrAfter: timeMicros ?? 0, context: context)
        switch start {
        case .ready(let offset):
            _ = session.take(token)
            done(.success(offset))
        case .pending: connection.storageRequestsInFlight += 1
        case .failed(let error):
            _ = session.take(token)
            done(.failure(error))
        }
    }

    /// The record number of the first format-2 batch at or after `offset` and its append time:
    /// the high watermark (and no time) at the committed end.
    func firstRecord(_ connection: Connection, _ log: Log, at offset: LogOffset, _ done: @escaping (Result<(record: UInt64, timeMicros: UInt64?), StorageError>) -> Void) {
        guard offset < log.committedEnd else { return done(.success((log.committedRecords, nil))) }
        read(connection, log.id, from: offset, maxBytes: 1) { result in
            switch result {
            case .failure(let error): done(.failure(error))
            case .success(let read):
                let found: (UInt64, UInt64?)? = read.withUnsafeBytes { bytes in
                    var position = 0
                    while position + Batch.minHeaderBytes <= bytes.count {
                        let header = BatchHeader(unchecked: bytes.baseAddress! + position)
                        if header.format == .v2 { return (header.firstRecord, header.appendTimeMicros) }
                        guard header.totalBytes > 0 else { break }
                        position += header.totalBytes
                    }
                    return nil
                }
                done(.success(found ?? (log.committedRecords, nil)))
            }
        }
    }

    /// A lookup (by record or by time, as `seek`) and then the record number and append time of
    /// the batch it found (`firstRecord`): the byte offset and what stands there.
    func find(
        _ connection: Connection, _ log: Log, record: UInt64? = nil, timeMicros: UInt64? = nil,
        _ done: @escaping (Result<(offset: LogOffset, record: UInt64, timeMicros: UInt64?), StorageError>) -> Void
    ) {
        seek(connection, log.id, record: record, timeMicros: timeMicros) { [unowned self] sought in
            switch sought {
            case .failure(let error): done(.failure(error))
            case .success(let offset): firstRecord(connection, log, at: offset) { first in done(first.map { (offset, $0.record, $0.timeMicros) }) }
            }
        }
    }

    /// A storage answer for a part waiting under `token`.
    func storageAnswered(_ connection: Connection, _ session: KafkaSession, token: UInt32, _ answer: KafkaStorageAnswer) {
        guard case .storage(let done)? = session.take(token) else { return }
        done(answer)
    }

    /// An acknowledgement, a failed one, or a long-poll answered through `Connection.answer`.
    func answered(_ connection: Connection, _ session: KafkaSession, token: UInt32, status: UInt16, _ body: PendingResponse.Body) {
        guard let wait = session.take(token) else { return }
        switch wait {
        case .acknowledgement(let done):
            if status == 0, case .append(let response) = body {
                done(.stored(offset: response.offset, duplicate: response.duplicate))
            } else if case .error(let error) = body {
                done(.failed(ErrorCode(rawValue: status) ?? .internalError, error))
            } else {
                done(.failed(.internalError, ErrorBody(message: "unexpected acknowledgement")))
            }
        case .poll(let fetch, _):
            fetch.pollEnded(connection)
        case .storage(let done):
            done(.read(.failure(.shuttingDown)))
        }
    }

    /// A long-poll of a Fetch was woken by new data, expired, or ended (the connection closes,
    /// the server stops).
    func pollEnded(_ connection: Connection, _ session: KafkaSession, token: UInt32) {
        guard case .poll(let fetch, _)? = session.take(token) else { return }
        fetch.pollEnded(connection)
    }

    // MARK: Errors

    /// The Kafka error a storage error is reported with.
    static func kafkaError(_ error: StorageError) -> KafkaErrorCode {
        switch error {
        case .unknownLog: .unknownTopicOrPartition
        case .offsetBelowStart, .offsetBeyondEnd, .notBatchBoundary: .offsetOutOfRange
        case .batchTooLarge: .messageTooLarge
        case .outOfOrderSequence: .outOfOrderSequenceNumber
        case .duplicateSequence: .duplicateSequenceNumber
        case .unknownProducer: .unknownProducerId
        case .producerFenced: .invalidProducerEpoch
        case .shuttingDown: .leaderNotAvailable
        case .badCursorName: .invalidGroupId
        case .corruption: .corruptMessage
        case .diskFull, .storageFailed, .io, .dataDirectoryInUse, .recoveryFailed, .logExists, .badLogName, .badSettings, .unknownCursor,
            .tooManyCursors, .cursorMismatch:
            .kafkaStorageError
        }
    }

    // MARK: Timers and stopping

    func runTimers(nowNanos: UInt64) { groups.runTimers(nowNanos: nowNanos) }

    var nextDeadlineNanos: UInt64? { groups.nextDeadlineNanos }

    func beginDraining() { groups.beginDraining() }

    // MARK: InitProducerId

    private func initProducerId(_ connection: Connection, _ header: KafkaRequestHeader, _ request: KafkaInitProducerIdRequest) {
        let sequence = begin(connection)
        guard request.transactionalID == nil else {
            respond(connection, sequence, header, KafkaInitProducerIdRequest.responseBody(errorCode: .transactionalIdAuthorizationFailed, producerID: -1, producerEpoch: -1))
            return
        }
        switch store.initProducer(id: 0, epoch: 0) {
        case .success(let granted):
            server.counters.producersInitialized += 1
            respond(connection, sequence, header, KafkaInitProducerIdRequest.responseBody(
                errorCode: .none, producerID: Int64(bitPattern: granted.id), producerEpoch: Int16(bitPattern: granted.epoch)))
        case .failure(let error):
            respond(connection, sequence, header, KafkaInitProducerIdRequest.responseBody(errorCode: Self.kafkaError(error), producerID: -1, producerEpoch: -1))
        }
    }
}
