import Glibc
import RingLogIO
import RingLogWire

/// A connection to ringlogd with an async API. Calls may overlap: they are pipelined on the one
/// connection and answered in order.
///
/// ```swift
/// let client = try await RingLogClient.connect(to: "127.0.0.1:7400")
/// let log = try await client.createLog("orders")
/// let ack = try await client.append(to: log.logID, records: [Array("hello".utf8)])
/// for try await record in client.records(of: log.logID, from: .zero) { print(record) }
/// ```
public final class RingLogClient: Sendable {
    public let address: SocketAddress
    let loop: ClientLoop
    let socket: IOHandle
    /// What the server reported in its hello: version and limits.
    public let server: HelloResponse

    private init(address: SocketAddress, loop: ClientLoop, socket: IOHandle, server: HelloResponse) {
        self.address = address
        self.loop = loop
        self.socket = socket
        self.server = server
    }

    /// Connects and exchanges hellos. `address` is `host:port` or `[v6]:port`; a host name is
    /// resolved (off the loop thread) and each of its addresses tried in the resolver's order
    /// until one accepts.
    public static func connect(to address: String = "127.0.0.1:7400", loop: ClientLoop = .shared) async throws(RingLogError) -> RingLogClient {
        var lastFailure: RingLogError?
        for candidate in try await resolve(address) {
            do {
                return try await connect(to: candidate, loop: loop)
            } catch {
                guard case .connectFailed = error else { throw error }
                lastFailure = error
            }
        }
        throw lastFailure ?? .connectFailed(address: address, reason: "no address to try")
    }

    /// Connects to one address and exchanges hellos.
    public static func connect(to address: SocketAddress, loop: ClientLoop = .shared) async throws(RingLogError) -> RingLogClient {
        let socket: IOHandle = try await withLoop(loop) { core, resume in
            core.connect(to: address) { result in resume(result.map(\.handle)) }
        }
        let provisional = RingLogClient(
            address: address, loop: loop, socket: socket,
            server: HelloResponse(version: 1, maxBatchBytes: 0, maxReadBytes: 0, maxInFlight: 0, maxWaitMillis: 0, serverName: ""))
        do {
            let hello = try await provisional.call(.hello, HelloRequest().encoded(), as: HelloResponse.self)
            return RingLogClient(address: address, loop: loop, socket: socket, server: hello)
        } catch {
            provisional.close()
            // Something answered, but not in RingLog's protocol (an HTTP port, say).
            switch error {
            case .protocolViolation(let reason): throw .notRingLog(address: address.description, reason: reason)
            case .connectionClosed: throw .notRingLog(address: address.description, reason: "it closed the connection without answering the hello")
            default: break
            }
            throw error
        }
    }

    /// The addresses `text` names: a literal at once, a host name through getaddrinfo on a
    /// thread of its own (it may wait for DNS).
    static func resolve(_ text: String) async throws(RingLogError) -> [SocketAddress] {
        let split: (host: String, port: UInt16)
        do { split = try SocketAddress.split(text) } catch { throw .invalidArgument(error.description) }
        if let literal = try? SocketAddress(host: split.host, port: split.port) { return [literal] }
        let resolved: Result<[SocketAddress], AddressError> = await withCheckedContinuation { continuation in
            let thread = spawnThread {
                do throws(AddressError) { continuation.resume(returning: .success(try SocketAddress.resolve(text))) } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            pthread_detach(thread)
        }
        switch resolved {
        case .success(let addresses): return addresses
        case .failure(let error): throw .connectFailed(address: text, reason: error.description)
        }
    }

    /// The largest record one batch can carry on this server: its largest batch, less the batch
    /// header and one record's framing.
    public var maxRecordBytes: Int { Int(server.maxBatchBytes) - batchFormat.headerBytes - RecordFraming.overheadBytes }

    /// The batch format this client writes to this server: format 2 (record numbers, idempotent
    /// producers) when the server announces it, else format 1.
    public var batchFormat: Batch.Format { server.features.contains(.batchFormat2) ? .v2 : .v1 }

    /// Closes the connection; calls still waiting fail with `connectionClosed`.
    public func close() {
        let handle = socket
        loop.execute { core in core.socket(handle)?.close() }
    }

    // MARK: Operations

    public func ping() async throws(RingLogError) {
        _ = try await request(.ping, []) { _ in () }
    }

    /// Creates a log. `nil` settings take the server's defaults; a retention of 0 keeps everything.
    public func createLog(
        _ name: String, segmentBytes: UInt64? = nil, retentionBytes: UInt64? = nil, retentionMillis: UInt64? = nil
    ) async throws(RingLogError) -> LogDescription {
        let request = CreateLogRequest(
            name: name, segmentBytes: segmentBytes ?? serverDefault, retentionBytes: retentionBytes ?? serverDefault,
            retentionMillis: retentionMillis ?? serverDefault)
        return try await call(.createLog, request.encoded(), as: LogDescription.self)
    }

    public func deleteLog(_ name: String) async throws(RingLogError) {
        _ = try await request(.deleteLog, LogNameRequest(name: name).encoded()) { _ in () }
    }

    public func listLogs() async throws(RingLogError) -> [LogDescription] {
        try await call(.listLogs, [], as: LogList.self).logs
    }

    public func info(_ name: String) async throws(RingLogError) -> LogDescription {
        try await call(.logInfo, LogNameRequest(name: name).encoded(), as: LogDescription.self)
    }

    public func info(_ log: LogID) async throws(RingLogError) -> LogDescription {
        try await call(.logInfo, LogNameRequest(name: "").encoded(), logID: log, as: LogDescription.self)
    }

    /// Server-wide counters, by name.
    public func serverStats() async throws(RingLogError) -> [(name: String, value: UInt64)] {
        try await call(.serverStats, [], as: ServerStats.self).entries
    }

    /// Frames `records` into one batch and appends it. The acknowledgement's offset is the batch's;
    /// record `i` is at position (offset, i).
    public func append<Records: Sequence>(to log: LogID, records: Records, mode: AckMode = .durable) async throws(RingLogError) -> AppendResponse
    where Records.Element: Collection, Records.Element.Element == UInt8 {
        var builder = BatchBuilder(format: batchFormat)
        for record in records { builder.add(record) }
        guard !builder.isEmpty else { throw .invalidArgument("a batch needs at least one record") }
        return try await append(to: log, batch: builder.finish(), mode: mode)
    }

    /// Appends a batch only if the log's end is `expectedEnd` (APPEND_IF, docs/protocol.md): the
    /// end counts appends placed and not yet acknowledged, so a single writer can pipeline,
    /// expecting each time the end the batch before will leave (its offset plus its size).
    /// Otherwise nothing is written and this throws the server's END_MISMATCH, whose `detail1` is
    /// the log's end as the condition saw it (see `ServerError.currentEnd`).
    public func append(to log: LogID, batch: [UInt8], mode: AckMode = .durable, ifEndIs expectedEnd: LogOffset) async throws(RingLogError) -> AppendResponse {
        let body = batch.withUnsafeBytes { AppendIfRequest.encode(expectedEnd: expectedEnd, batch: $0) }
        // Each call waits for its answer, so it has seen every earlier one: a new chain.
        return try await request(.appendIf, body, logID: log, flags: mode.rawValue | AppendIfRequest.newChainFlag) { response throws(RingLogError) in
            try appendResponse(response)
        }
    }

    /// Appends a batch built elsewhere (see `BatchBuilder`).
    public func append(to log: LogID, batch: [UInt8], mode: AckMode = .durable) async throws(RingLogError) -> AppendResponse {
        let owned = OwnedBytes(batch)
        return try await withSocket { socket, _, resume in
            socket.sendAppend(logID: log, mode: mode, batch: owned) { result in
                resume(decodeAppend(result))
            }
        }
    }

    /// Sends an append at once, without waiting: appends sent this way from one thread or task go
    /// out, and are answered, in the order of the calls. `completion` runs on the client's loop
    /// thread with the acknowledgement.
    /// With `expectedEnd`, the append is conditional (APPEND_IF, as `append(to:batch:mode:ifEndIs:)`);
    /// `newChain` marks the first of a pipeline of them (see `AppendIfRequest.newChainFlag`).
    public func sendAppend(
        to log: LogID, batch: [UInt8], mode: AckMode = .durable, ifEndIs expectedEnd: LogOffset? = nil, newChain: Bool = false,
        completion: @escaping @Sendable (Result<AppendResponse, RingLogError>) -> Void
    ) {
        let owned = OwnedBytes(batch)
        let handle = socket
        loop.execute { core in
            guard let socket = core.socket(handle) else {
                completion(.failure(.connectionClosed("the connection is closed")))
                return
            }
            guard let expectedEnd else {
                socket.sendAppend(logID: log, mode: mode, batch: owned) { result in completion(decodeAppend(result)) }
                return
            }
            let body = AppendIfRequest.encode(expectedEnd: expectedEnd, batch: owned.bytes)
            body.withUnsafeBytes { bytes in
                socket.send(.appendIf, body: bytes, logID: log, flags: mode.rawValue | (newChain ? AppendIfRequest.newChainFlag : 0)) { result in
                    completion(decodeAppend(result))
                }
            }
        }
    }

    /// Reads whole committed batches from `offset` (see docs/protocol.md, "Reading"). With
    /// `maxWaitMillis`, a read at the end of the log waits for new batches.
    public func read(from log: LogID, offset: LogOffset, maxBytes: Int = 1 << 20, maxWaitMillis: Int = 0) async throws(RingLogError) -> FetchedBatches {
        let body = ReadRequest(offset: offset, maxBytes: UInt32(clamping: maxBytes), maxWaitMillis: UInt32(clamping: maxWaitMillis)).encoded()
        return try await request(.read, body, logID: log) { response throws(RingLogError) in
            try FetchedBatches(offset: offset, response: response)
        }
    }

    /// The offset of the first committed batch appended at or after `timeMicros` (µs since the
    /// Unix epoch, the server's clock): the log's start when every kept batch is that recent, its
    /// committed end when none is (SEEK_TIME; `server.features` has `.seekTime`).
    public func seek(_ log: LogID, atOrAfterMicros timeMicros: UInt64) async throws(RingLogError) -> LogOffset {
        try await call(.seekTime, SeekTimeRequest(timeMicros: timeMicros).encoded(), logID: log, as: OffsetMessage.self).offset
    }

    /// An idempotent producer's id and epoch (INIT_PRODUCER; `server.features` has
    /// `.batchFormat2`): a new id at epoch 0, or with `producerId`, the same id at the next epoch.
    /// `Producer` does this itself; this is for clients that number their own batches.
    public func initProducer(_ producerId: UInt64 = 0, epoch: UInt16 = 0) async throws(RingLogError) -> InitProducerResponse {
        try await call(.initProducer, InitProducerRequest(producerId: producerId, epoch: epoch).encoded(), as: InitProducerResponse.self)
    }

    /// Advances the log's start; returns the new start.
    public func trim(_ log: LogID, to offset: LogOffset) async throws(RingLogError) -> LogOffset {
        try await call(.trim, OffsetMessage(offset: offset).encoded(), logID: log, as: OffsetMessage.self).offset
    }

    // MARK: Plumbing

    func call<Message: WireMessage>(_ opcode: Opcode, _ body: [UInt8], logID: LogID = .none, as: Message.Type) async throws(RingLogError) -> Message {
        try await request(opcode, body, logID: logID) { response throws(RingLogError) in
            try decodeBody(response.body, as: Message.self)
        }
    }

    /// Sends a request and turns its response into a value on the loop thread (where the body is valid).
    func request<T: Sendable>(
        _ opcode: Opcode, _ body: [UInt8], logID: LogID = .none, flags: UInt32 = 0,
        decode: @escaping @Sendable (ClientResponse) throws(RingLogError) -> T
    ) async throws(RingLogError) -> T {
        try await withSocket { socket, _, resume in
            body.withUnsafeBytes { bytes in
                socket.send(opcode, body: bytes, logID: logID, flags: flags) { result in
                    resume(result.checkingServerError().flatMap { response in
                        do throws(RingLogError) { return .success(try decode(response)) } catch { return .failure(error) }
                    })
                }
            }
        }
    }

    /// Runs `start` on the loop thread with this client's socket; fails with `connectionClosed`
    /// when the connection is gone.
    func withSocket<T: Sendable>(
        _ start: @escaping @Sendable (ClientSocket, LoopCore, @escaping (Result<T, RingLogError>) -> Void) -> Void
    ) async throws(RingLogError) -> T {
        let handle = self.socket
        return try await withLoop(loop) { core, resume in
            guard let socket = core.socket(handle) else {
                resume(.failure(.connectionClosed("the connection is closed")))
                return
            }
            start(socket, core, resume)
        }
    }
}

/// Runs `start` on the loop thread and suspends until it calls `resume` (exactly once).
func withLoop<T: Sendable>(
    _ loop: ClientLoop, _ start: @escaping @Sendable (LoopCore, @escaping (Result<T, RingLogError>) -> Void) -> Void
) async throws(RingLogError) -> T {
    let result: Result<T, RingLogError> = await withCheckedContinuation { continuation in
        loop.execute { core in
            start(core) { continuation.resume(returning: $0) }
        }
    }
    return try result.get()
}

func decodeBody<Message: WireMessage>(_ body: UnsafeRawBufferPointer, as: Message.Type) throws(RingLogError) -> Message {
    do { return try Message.decode(body) } catch { throw .protocolViolation("undecodable \(Message.self): \(error)") }
}

/// An append's acknowledgement, with the DUPLICATE flag of its response header.
func appendResponse(_ response: ClientResponse) throws(RingLogError) -> AppendResponse {
    var acknowledgement = try decodeBody(response.body, as: AppendResponse.self)
    acknowledgement.duplicate = response.header.flags & ResponseHeader.duplicate != 0
    return acknowledgement
}

/// An append's response: its acknowledgement, or the server's error.
package func decodeAppend(_ result: Result<ClientResponse, RingLogError>) -> Result<AppendResponse, RingLogError> {
    result.checkingServerError().flatMap { response in
        do throws(RingLogError) { return .success(try appendResponse(response)) } catch { return .failure(error) }
    }
}

/// A response decoded as `Message`, or the server's error, or a protocol violation when the body
/// does not decode.
package func decodeResponse<Message: WireMessage>(_ result: Result<ClientResponse, RingLogError>, as: Message.Type) -> Result<Message, RingLogError> {
    result.checkingServerError().flatMap { response in
        do throws(RingLogError) { return .success(try decodeBody(response.body, as: Message.self)) } catch { return .failure(error) }
    }
}
