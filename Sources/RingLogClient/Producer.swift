import DequeModule
import RingLogIO
import RingLogWire

/// How a producer batches records (Kafka's `linger.ms` and `batch.size`) and whether it is
/// idempotent (Kafka's `enable.idempotence`).
public struct ProducerConfiguration: Sendable {
    /// A batch is sent this long after its first record even if it is not full.
    public var lingerMillis: Int = 5
    /// A batch is sent once it reaches this size (header included). A single larger record goes
    /// in a batch of its own.
    public var batchBytes: Int = 64 << 10
    public var mode: AckMode = .durable
    /// Batches sent and not yet acknowledged; past this, sealed batches wait their turn. An
    /// idempotent producer keeps at most the server's producer window in flight.
    public var maxBatchesInFlight: Int = 16
    /// Number every batch (producer id, epoch, sequence; INIT_PRODUCER) so the server stores it
    /// exactly once, and when the connection drops (or the server stops) reconnect and send again
    /// every batch not yet acknowledged: the server answers a batch it already has with its
    /// original offset. Off, or against a server without `.batchFormat2`, a dropped connection
    /// fails the batches in flight (they may or may not be stored).
    public var idempotent: Bool = true
    /// How long an idempotent producer keeps trying to reconnect before its batches fail.
    public var retryTimeoutMillis: Int = 120_000

    public init(
        lingerMillis: Int = 5, batchBytes: Int = 64 << 10, mode: AckMode = .durable, maxBatchesInFlight: Int = 16, idempotent: Bool = true,
        retryTimeoutMillis: Int = 120_000
    ) {
        self.lingerMillis = lingerMillis
        self.batchBytes = batchBytes
        self.mode = mode
        self.maxBatchesInFlight = maxBatchesInFlight
        self.idempotent = idempotent
        self.retryTimeoutMillis = retryTimeoutMillis
    }
}

/// An idempotent producer's identity on one server.
package struct ProducerIdentity: Sendable {
    package var id: UInt64
    package var epoch: UInt16
    /// How many batches the server remembers per producer and log (at most this many in flight).
    package var window: Int

    package init(id: UInt64, epoch: UInt16, window: Int) {
        self.id = id
        self.epoch = epoch
        self.window = window
    }
}

/// The batching logic of a producer, on the loop thread: records accumulate into a batch that is
/// sent when full or when its linger time passes; each record's completion runs with its
/// position once the batch is acknowledged.
///
/// Idempotent (with an identity), every batch carries the producer's id, epoch and the sequence of
/// its first record, given when it is sealed. A batch stays in `inFlight` until answered; when the
/// connection is lost (or the server is stopping) every unanswered batch goes back to the front
/// of the line, unchanged, and is sent again on a new connection. A batch the server refuses for
/// good fails, with every batch sent after it (their sequences no longer follow), and the
/// producer moves to its next epoch, numbering the batches not yet sent from 0 again.
package final class ProducerCore {
    package typealias Completion = (Result<RecordPosition, RingLogError>) -> Void

    final class Sealed {
        var batch: OwnedBytes
        let completions: [Completion]
        let recordCount: UInt32

        init(batch: OwnedBytes, completions: [Completion], recordCount: UInt32) {
            self.batch = batch
            self.completions = completions
            self.recordCount = recordCount
        }
    }

    let core: LoopCore
    let address: SocketAddress
    private(set) var socket: ClientSocket?
    let log: LogID
    let configuration: ProducerConfiguration
    package private(set) var identity: ProducerIdentity?
    private var nextSequence: UInt32 = 0
    private let maxInFlight: Int
    private var builder: BatchBuilder
    private var completions: [Completion] = []
    private var lingerTimer: UInt64?
    private var waiting: Deque<Sealed> = []
    private var inFlight: Deque<Sealed> = []
    /// Answers to batches sent on an earlier connection (or before a failure) are ignored.
    private var generation = 0
    private var reconnectPending = false
    private var backoffNanos: UInt64 = ProducerCore.firstBackoffNanos
    private var troubleSinceNanos: UInt64?
    private var changingEpoch = false
    /// A batch was refused for good: the next epoch comes before anything more is sent.
    private var needsNewEpoch = false
    private var stopped = false
    package var batchesInFlight: Int { inFlight.count }
    /// Format 2 when the server has it (an idempotent producer needs it), else format 1.
    package let batchFormat: Batch.Format
    /// Runs whenever a batch's acknowledgement arrives (for callers that pace themselves).
    package var onBatchAcknowledged: ((Int) -> Void)?
    /// Batches sent again after a connection was lost, and connections made again.
    package private(set) var resentBatches = 0
    package private(set) var reconnections = 0

    static let firstBackoffNanos: UInt64 = 50_000_000
    static let maxBackoffNanos: UInt64 = 2_000_000_000

    package init(
        socket: ClientSocket, log: LogID, configuration: ProducerConfiguration, identity: ProducerIdentity? = nil, format: Batch.Format = .v1
    ) {
        precondition(identity == nil || format == .v2, "an idempotent producer writes format 2")
        core = socket.core
        address = socket.address
        self.socket = socket
        self.log = log
        self.configuration = configuration
        self.identity = identity
        maxInFlight = max(1, min(configuration.maxBatchesInFlight, identity?.window ?? Int.max))
        batchFormat = format
        builder = BatchBuilder(reservingCapacity: configuration.batchBytes, format: format)
    }

    /// Records waiting in the open batch or in sealed batches not yet acknowledged.
    package var recordsWaiting: Int {
        completions.count + waiting.reduce(0) { $0 + $1.completions.count } + inFlight.reduce(0) { $0 + $1.completions.count }
    }

    package func add(_ record: UnsafeRawBufferPointer, completion: @escaping Completion) {
        guard !stopped else {
            completion(.failure(.connectionClosed("the producer is closed")))
            return
        }
        if !builder.isEmpty && builder.sizeAdding(recordBytes: record.count) > configuration.batchBytes { seal() }
        builder.add(record)
        completions.append(completion)
        if builder.batchBytes >= configuration.batchBytes {
            seal()
        } else if lingerTimer == nil {
            lingerTimer = core.schedule(afterNanos: UInt64(configuration.lingerMillis) * 1_000_000) { [weak self] in
                self?.lingerTimer = nil
                self?.seal()
            }
        }
    }

    /// Sends the records a caller batched itself as one batch (after the open batch, if any):
    /// `completion` gets the batch's acknowledgement, its offset (record i is at (offset, i)).
    package func add(batch: BatchBuilder, completion: @escaping (Result<LogOffset, RingLogError>) -> Void) {
        guard !stopped else {
            completion(.failure(.connectionClosed("the producer is closed")))
            return
        }
        seal()
        var batch = batch
        let count = UInt32(batch.recordCount)
        // One completion per record, as for records sent one by one; the first answers for all.
        var perRecord: [Completion] = [{ completion($0.map(\.batchOffset)) }]
        perRecord += repeatElement({ _ in }, count: Int(count) - 1)
        waiting.append(Sealed(batch: OwnedBytes(batch.finish(producer: takeStamp(count))), completions: perRecord, recordCount: count))
        pump()
    }

    /// Sends the open batch now.
    package func seal() {
        if let lingerTimer { core.cancelTimer(lingerTimer) }
        lingerTimer = nil
        guard !builder.isEmpty else { return }
        let count = UInt32(builder.recordCount)
        waiting.append(Sealed(batch: OwnedBytes(builder.finish(producer: takeStamp(count))), completions: completions, recordCount: count))
        completions = []
        pump()
    }

    /// The producer fields of the next batch of `count` records (none when not idempotent).
    private func takeStamp(_ count: UInt32) -> ProducerStamp {
        guard let identity else { return .none }
        let stamp = ProducerStamp(id: identity.id, epoch: identity.epoch, baseSequence: nextSequence)
        nextSequence = (nextSequence &+ count) & (Batch.sequenceModulus - 1)
        return stamp
    }

    private func pump() {
        guard !changingEpoch, !reconnectPending, let socket else { return }
        if let closed = socket.closed {
            if identity != nil {
                connectionLost(closed)
            } else {
                while let batch = waiting.popFirst() { fail(batch, closed) }
            }
            return
        }
        if needsNewEpoch {
            changeEpoch(on: socket)
            return
        }
        while inFlight.count < maxInFlight, let next = waiting.popFirst() {
            inFlight.append(next)
            let sentIn = generation
            socket.sendAppend(logID: log, mode: configuration.mode, batch: next.batch) { [weak self] result in
                self?.answered(decodeAppend(result), generation: sentIn)
            }
        }
    }

    private func answered(_ result: Result<AppendResponse, RingLogError>, generation sentIn: Int) {
        guard sentIn == generation, let batch = inFlight.first else { return }
        switch result {
        case .success(let acknowledgement):
            inFlight.removeFirst()
            troubleSinceNanos = nil
            backoffNanos = ProducerCore.firstBackoffNanos
            for (index, completion) in batch.completions.enumerated() {
                completion(.success(RecordPosition(batchOffset: acknowledgement.offset, index: index)))
            }
            onBatchAcknowledged?(batch.completions.count)
            pump()
        case .failure(let error) where identity != nil && ProducerCore.worthRetrying(error):
            connectionLost(error)
        case .failure(let error):
            inFlight.removeFirst()
            fail(batch, error)
            guard identity != nil else {
                pump()
                return
            }
            // The batches sent after it count on its sequence: the server refuses them. They fail
            // with it, and the batches not yet sent are numbered afresh under the next epoch.
            generation += 1
            while let later = inFlight.popFirst() { fail(later, error) }
            needsNewEpoch = true
            pump()
        }
    }

    /// Errors after which the same batch may simply be sent again: the connection ended (the
    /// server may or may not have stored the batch; a retry is answered with its offset), or the
    /// server refused it for now.
    static func worthRetrying(_ error: RingLogError) -> Bool {
        switch error {
        case .connectionClosed, .connectFailed: true
        case .server(let server): [.shuttingDown, .serverBusy, .timedOut, .tooManyConnections].contains(server.code)
        default: false
        }
    }

    private func fail(_ batch: Sealed, _ error: RingLogError) {
        for completion in batch.completions { completion(.failure(error)) }
        onBatchAcknowledged?(batch.completions.count)
    }

    // MARK: Reconnecting

    /// Puts every unanswered batch back in front, in order and unchanged, and connects again.
    private func connectionLost(_ error: RingLogError) {
        generation += 1
        // An epoch change cut short is asked for again on the next connection.
        changingEpoch = false
        let lost = socket
        socket = nil
        lost?.close(reason: "the producer reconnects")
        resentBatches += inFlight.count
        while let batch = inFlight.popLast() { waiting.prepend(batch) }
        let now = core.nowNanos
        let since = troubleSinceNanos ?? now
        troubleSinceNanos = since
        if now - since > UInt64(configuration.retryTimeoutMillis) * 1_000_000 {
            giveUp(error)
            return
        }
        reconnectPending = true
        let delay = backoffNanos
        backoffNanos = min(backoffNanos * 2, ProducerCore.maxBackoffNanos)
        core.schedule(afterNanos: delay) { [weak self] in self?.reconnect(after: error) }
    }

    private func reconnect(after error: RingLogError) {
        guard !stopped else { return }
        core.connect(to: address) { [weak self] result in
            guard let self else { return }
            switch result {
            case .success(let socket):
                self.reconnectPending = false
                self.reconnections += 1
                if self.stopped {
                    socket.close()
                    return
                }
                self.socket = socket
                self.pump()
            case .failure(let failure):
                self.reconnectPending = false
                self.connectionLost(ProducerCore.worthRetrying(failure) ? failure : error)
            }
        }
    }

    /// Fails everything waiting: the server stayed out of reach past the retry timeout.
    private func giveUp(_ error: RingLogError) {
        generation += 1
        while let batch = inFlight.popFirst() { fail(batch, error) }
        while let batch = waiting.popFirst() { fail(batch, error) }
        troubleSinceNanos = nil
        backoffNanos = ProducerCore.firstBackoffNanos
        // Later records start over on a new connection.
        reconnectPending = true
        core.schedule(afterNanos: 0) { [weak self] in self?.reconnect(after: error) }
    }

    // MARK: Epochs

    /// INIT_PRODUCER with the current id: the next epoch; the batches not yet sent are numbered
    /// from 0 under it (their headers are rewritten, CRC included).
    private func changeEpoch(on socket: ClientSocket) {
        guard let identity else { return }
        changingEpoch = true
        let sentIn = generation
        let body = InitProducerRequest(producerId: identity.id, epoch: identity.epoch).encoded()
        body.withUnsafeBytes { bytes in
            socket.send(.initProducer, body: bytes) { [weak self] result in
                guard let self, sentIn == self.generation else { return }
                self.changingEpoch = false
                switch decodeResponse(result, as: InitProducerResponse.self) {
                case .success(let granted):
                    self.needsNewEpoch = false
                    self.identity?.epoch = granted.epoch
                    self.nextSequence = 0
                    for sealed in self.waiting {
                        let stamp = self.takeStamp(sealed.recordCount)
                        let payloadLength = sealed.batch.count - Batch.Format.v2.headerBytes
                        Batch.fillHeader(
                            sealed.batch.mutableBytes.baseAddress!, format: .v2, payloadLength: payloadLength, recordCount: sealed.recordCount,
                            producer: stamp)
                    }
                    self.pump()
                case .failure(let error) where ProducerCore.worthRetrying(error):
                    self.connectionLost(error)
                case .failure(let error):
                    // No new epoch: nothing more can be sent exactly once.
                    self.generation += 1
                    while let batch = self.waiting.popFirst() { self.fail(batch, error) }
                }
            }
        }
    }

    /// Stops: the open batch is sealed and sent; later adds fail.
    package func close() {
        seal()
        stopped = true
    }
}

/// Sends records to one log in batches; each record gets its acknowledgement (batch offset and
/// index in the batch). Idempotent by default (see `ProducerConfiguration.idempotent`): a record
/// is in the log once, even when its batch had to be sent again after the connection dropped or
/// the server restarted.
///
/// ```swift
/// let producer = try await client.producer(for: log.logID)
/// let position = try await producer.send(Array("event".utf8))
/// ```
public final class Producer: Sendable {
    let loop: ClientLoop
    let key: Int
    /// The producer id the server gave, when idempotent.
    public let producerId: UInt64?
    /// The batch format `send(batch:)` takes: 2 when the server has it, else 1.
    public let batchFormat: Batch.Format

    init(loop: ClientLoop, key: Int, producerId: UInt64?, batchFormat: Batch.Format) {
        self.loop = loop
        self.key = key
        self.producerId = producerId
        self.batchFormat = batchFormat
    }

    /// Adds a record to the current batch and returns once the batch is acknowledged.
    public func send(_ record: [UInt8]) async throws(RingLogError) -> RecordPosition {
        let key = self.key
        return try await withLoop(loop) { core, resume in
            guard let producer = core.producers[key] else {
                resume(.failure(.connectionClosed("the producer is closed")))
                return
            }
            record.withUnsafeBytes { producer.add($0, completion: resume) }
        }
    }

    /// Adds a record without waiting; `completion` runs on the client's loop thread.
    public func send(_ record: [UInt8], completion: @escaping @Sendable (Result<RecordPosition, RingLogError>) -> Void) {
        let key = self.key
        loop.execute { core in
            guard let producer = core.producers[key] else {
                completion(.failure(.connectionClosed("the producer is closed")))
                return
            }
            record.withUnsafeBytes { producer.add($0, completion: completion) }
        }
    }

    /// Sends records batched by the caller (a `BatchBuilder` of this producer's format, 2 when
    /// idempotent) as one batch, with the same guarantees as `send`; `completion` runs on the
    /// client's loop thread with the batch's offset (record i is at (offset, i)).
    public func send(batch: BatchBuilder, completion: @escaping @Sendable (Result<LogOffset, RingLogError>) -> Void) {
        let key = self.key
        loop.execute { core in
            guard let producer = core.producers[key] else {
                completion(.failure(.connectionClosed("the producer is closed")))
                return
            }
            guard batch.format == producer.batchFormat, !batch.isEmpty else {
                completion(.failure(.invalidArgument("a batch for this producer is a non-empty one of format \(producer.batchFormat.version)")))
                return
            }
            producer.add(batch: batch, completion: completion)
        }
    }

    /// Sends the open batch without waiting for its linger time.
    public func flush() {
        let key = self.key
        loop.execute { core in core.producers[key]?.seal() }
    }

    private struct Counts: Sendable {
        var resent: Int
        var reconnections: Int
    }

    /// Batches sent again after a connection was lost, and reconnections (for tests and tools).
    public func retryCounts() async -> (resentBatches: Int, reconnections: Int) {
        let key = self.key
        let counts = try? await withLoop(loop) { core, resume in
            let producer = core.producers[key]
            resume(.success(Counts(resent: producer?.resentBatches ?? 0, reconnections: producer?.reconnections ?? 0)))
        }
        return (counts?.resent ?? 0, counts?.reconnections ?? 0)
    }

    /// Flushes and stops; later sends fail. Batches already sent are still retried.
    public func close() {
        let key = self.key
        loop.execute { core in
            core.producers[key]?.close()
            core.producers[key] = nil
        }
    }
}

extension RingLogClient {
    /// A producer that batches records for `log`, starting on this connection (an idempotent one
    /// opens new connections of its own when this one drops).
    public func producer(for log: LogID, configuration: ProducerConfiguration = ProducerConfiguration()) async throws(RingLogError) -> Producer {
        guard configuration.batchBytes <= Int(server.maxBatchBytes) else {
            throw .invalidArgument("batch bytes \(configuration.batchBytes) exceed the server's limit of \(server.maxBatchBytes)")
        }
        var identity: ProducerIdentity?
        if configuration.idempotent && server.features.contains(.batchFormat2) {
            let granted = try await initProducer()
            identity = ProducerIdentity(id: granted.producerId, epoch: granted.epoch, window: Int(granted.window))
        }
        let chosen = identity
        let format = batchFormat
        let key: Int = try await withSocket { socket, core, resume in
            resume(.success(core.register(ProducerCore(socket: socket, log: log, configuration: configuration, identity: chosen, format: format))))
        }
        return Producer(loop: loop, key: key, producerId: identity?.id, batchFormat: format)
    }
}
