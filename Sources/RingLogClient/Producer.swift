import DequeModule
import RingLogIO
import RingLogWire

/// How a producer batches records (Kafka's `linger.ms` and `batch.size`).
public struct ProducerConfiguration: Sendable {
    /// A batch is sent this long after its first record even if it is not full.
    public var lingerMillis: Int = 5
    /// A batch is sent once it reaches this size (header included). A single larger record goes
    /// in a batch of its own.
    public var batchBytes: Int = 64 << 10
    public var mode: AckMode = .durable
    /// Batches sent and not yet acknowledged; past this, sealed batches wait their turn.
    public var maxBatchesInFlight: Int = 16

    public init(lingerMillis: Int = 5, batchBytes: Int = 64 << 10, mode: AckMode = .durable, maxBatchesInFlight: Int = 16) {
        self.lingerMillis = lingerMillis
        self.batchBytes = batchBytes
        self.mode = mode
        self.maxBatchesInFlight = maxBatchesInFlight
    }
}

/// The batching logic of a producer, on the loop thread: records accumulate into a batch that is
/// sent when full or when its linger time passes; each record's completion runs with its
/// position once the batch is acknowledged. The bench drives this directly.
package final class ProducerCore {
    package typealias Completion = (Result<RecordPosition, RingLogError>) -> Void

    let socket: ClientSocket
    let log: LogID
    let configuration: ProducerConfiguration
    private var builder: BatchBuilder
    private var completions: [Completion] = []
    private var lingerTimer: UInt64?
    private var waiting: Deque<(batch: OwnedBytes, completions: [Completion])> = []
    package private(set) var batchesInFlight = 0
    /// Runs whenever a batch's acknowledgement arrives (for callers that pace themselves).
    package var onBatchAcknowledged: ((Int) -> Void)?

    package init(socket: ClientSocket, log: LogID, configuration: ProducerConfiguration) {
        self.socket = socket
        self.log = log
        self.configuration = configuration
        builder = BatchBuilder(reservingCapacity: configuration.batchBytes)
    }

    /// Records waiting in the open batch or in sealed batches not yet sent.
    package var recordsWaiting: Int { completions.count + waiting.reduce(0) { $0 + $1.completions.count } }

    package func add(_ record: UnsafeRawBufferPointer, completion: @escaping Completion) {
        if !builder.isEmpty && builder.sizeAdding(recordBytes: record.count) > configuration.batchBytes { seal() }
        builder.add(record)
        completions.append(completion)
        if builder.batchBytes >= configuration.batchBytes {
            seal()
        } else if lingerTimer == nil {
            lingerTimer = socket.core.schedule(afterNanos: UInt64(configuration.lingerMillis) * 1_000_000) { [weak self] in
                self?.lingerTimer = nil
                self?.seal()
            }
        }
    }

    /// Sends the open batch now.
    package func seal() {
        if let lingerTimer { socket.core.cancelTimer(lingerTimer) }
        lingerTimer = nil
        guard !builder.isEmpty else { return }
        waiting.append((OwnedBytes(builder.finish()), completions))
        completions = []
        sendWaiting()
    }

    private func sendWaiting() {
        while batchesInFlight < configuration.maxBatchesInFlight, let next = waiting.popFirst() {
            batchesInFlight += 1
            let batchCompletions = next.completions
            socket.sendAppend(logID: log, mode: configuration.mode, batch: next.batch) { [weak self] result in
                let acknowledged = decodeResponse(result, as: AppendResponse.self)
                for (index, completion) in batchCompletions.enumerated() {
                    completion(acknowledged.map { RecordPosition(batchOffset: $0.offset, index: index) })
                }
                guard let self else { return }
                self.batchesInFlight -= 1
                self.onBatchAcknowledged?(batchCompletions.count)
                self.sendWaiting()
            }
        }
    }
}

/// Sends records to one log in batches; each record gets its acknowledgement (batch offset and
/// index in the batch).
///
/// ```swift
/// let producer = try await client.producer(for: log.logID)
/// let position = try await producer.send(Array("event".utf8))
/// ```
public final class Producer: Sendable {
    let loop: ClientLoop
    let key: Int

    init(loop: ClientLoop, key: Int) {
        self.loop = loop
        self.key = key
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

    /// Sends the open batch without waiting for its linger time.
    public func flush() {
        let key = self.key
        loop.execute { core in core.producers[key]?.seal() }
    }

    /// Flushes and stops; later sends fail.
    public func close() {
        let key = self.key
        loop.execute { core in
            core.producers[key]?.seal()
            core.producers[key] = nil
        }
    }
}

extension RingLogClient {
    /// A producer that batches records for `log` on this connection.
    public func producer(for log: LogID, configuration: ProducerConfiguration = ProducerConfiguration()) async throws(RingLogError) -> Producer {
        guard configuration.batchBytes <= Int(server.maxBatchBytes) else {
            throw .invalidArgument("batch bytes \(configuration.batchBytes) exceed the server's limit of \(server.maxBatchBytes)")
        }
        let key: Int = try await withSocket { socket, core, resume in
            resume(.success(core.register(ProducerCore(socket: socket, log: log, configuration: configuration))))
        }
        return Producer(loop: loop, key: key)
    }
}
