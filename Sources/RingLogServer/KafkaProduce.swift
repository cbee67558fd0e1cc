import RingLogKafka
import RingLogStorage
import RingLogWire

/// A Produce request on its way: each partition's batch, made into a RingLog batch, is placed in
/// order, then waits for its acknowledgement (acks=1: written, acks=-1: durable); the response
/// goes when the last one is answered. acks=0 gets no response (Kafka's rule); an error then
/// closes the connection, which is how a Kafka broker tells such a producer.
final class KafkaProduce {
    struct Item {
        var topic: Int
        var partition: Int
        var log: Log
        var batch: OwnedBytes
    }

    let sequence: UInt32?
    let header: KafkaRequestHeader
    let acks: Int16
    var results: [KafkaProduceResponse.Topic]
    /// Batches not placed yet, in request order (the head waits for room when blocked).
    var items: [Item]
    var next = 0
    /// Partitions not answered yet.
    var remaining: Int

    init(sequence: UInt32?, header: KafkaRequestHeader, acks: Int16, results: [KafkaProduceResponse.Topic], items: [Item], remaining: Int) {
        self.sequence = sequence
        self.header = header
        self.acks = acks
        self.results = results
        self.items = items
        self.remaining = remaining
    }
}

extension KafkaDispatcher {
    func produce(_ connection: Connection, _ session: KafkaSession, _ header: KafkaRequestHeader, _ body: UnsafeRawBufferPointer, _ request: KafkaProduceRequest) {
        guard [0, 1, -1].contains(request.acks) else {
            refuse(connection, "acks \(request.acks) is not 0, 1 or -1")
            return
        }
        if request.acks == 0 {
            server.counters.requests += 1
            server.counters.kafkaRequests += 1
        }
        let sequence = request.acks == 0 ? nil : begin(connection)
        var results: [KafkaProduceResponse.Topic] = []
        var items: [KafkaProduce.Item] = []
        var remaining = 0
        for (topicIndex, topic) in request.topics.enumerated() {
            var partitions: [KafkaProduceResponse.Partition] = []
            let badName = KafkaTopics.problem(with: topic.name) != nil
            for partition in topic.partitions {
                partitions.append(.init(index: partition.index, errorCode: .none))
                let error: KafkaErrorCode
                if request.transactionalID != nil {
                    error = .transactionalIdAuthorizationFailed
                } else if badName {
                    error = .invalidTopic
                } else if let log = KafkaTopics.log(topic.name, Int(partition.index), in: store), !log.deleting {
                    switch makeBatch(body, partition.records) {
                    case .success(let batch):
                        items.append(.init(topic: topicIndex, partition: partitions.count - 1, log: log, batch: batch))
                        remaining += 1
                        continue
                    case .failure(let problem): error = problem
                    }
                } else {
                    // Retriable: a producer refreshes its metadata (which creates the topic when
                    // auto-creation is on) and sends again.
                    if settings.autoCreateTopics && KafkaTopics.partitionCount(topic.name, in: store) == 0 {
                        createTopic(connection, topic.name, partitions: settings.defaultPartitions) { _ in }
                    }
                    error = .unknownTopicOrPartition
                }
                partitions[partitions.count - 1].errorCode = error
                server.counters.kafkaProduceErrors += 1
            }
            results.append(KafkaTopic(name: topic.name, partitions: partitions))
        }
        let produce = KafkaProduce(sequence: sequence, header: header, acks: request.acks, results: results, items: items, remaining: remaining)
        if request.acks == 0 && produce.results.contains(where: { $0.partitions.contains { $0.errorCode != .none } }) {
            connection.beginClosing(flushFirst: true, reason: "a Produce with acks=0 was refused")
            return
        }
        place(connection, session, produce)
    }

    /// A RingLog batch (format 2, `Batch.kafkaFlag`) holding the Kafka batch as it came, after
    /// Kafka's checks; or the Kafka error for it.
    private func makeBatch(_ body: UnsafeRawBufferPointer, _ range: Range<Int>?) -> Result<OwnedBytes, KafkaErrorCode> {
        guard let range else { return .failure(.invalidRecord) }
        let bytes = UnsafeRawBufferPointer(rebasing: body[range])
        let kafka: KafkaRecordBatch.Header
        switch KafkaRecordBatch.validateProduced(bytes) {
        case .success(let header): kafka = header
        case .failure(let problem):
            server.logger.debug("kafka batch refused", metadata: ["problem": "\(problem)"])
            return .failure(KafkaErrorCode(rawValue: problem.kafkaErrorCode) ?? .corruptMessage)
        }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[KafkaRecordBatch.prefixBytes...])
        let total = Batch.maxHeaderBytes + payload.count
        guard total <= configuration.storage.maxBatchBytes else { return .failure(.messageTooLarge) }
        let batch = OwnedBytes(uninitializedCount: total)
        let base = batch.mutableBytes.baseAddress!
        (base + Batch.maxHeaderBytes).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        let producer =
            kafka.producerId >= 0
            ? ProducerStamp(id: UInt64(kafka.producerId), epoch: UInt16(kafka.producerEpoch), baseSequence: UInt32(kafka.baseSequence))
            : .none
        if producer.id != 0 && producer.id >> 32 == 0 {
            // Not an id this server handed out (ours carry the data directory's incarnation).
            return .failure(.unknownProducerId)
        }
        Batch.fillHeader(base, format: .v2, payloadLength: payload.count, recordCount: UInt32(kafka.recordsCount), producer: producer, flags: Batch.kafkaFlag)
        return .success(batch)
    }

    /// Places the request's batches in order; stops (and stops the connection reading) when the
    /// store has no room, to go on from there when room frees (`retryBlockedProduce`).
    private func place(_ connection: Connection, _ session: KafkaSession, _ produce: KafkaProduce) {
        // (An acks=0 Produce whose batch was refused closed the connection: the rest is dropped.)
        while produce.next < produce.items.count && (produce.acks != 0 || connection.isOpen) {
            let item = produce.items[produce.next]
            let firstRecord = item.log.nextRecord
            let outcome = store.append(to: item.log, batch: item.batch.bytes)
            switch outcome {
            case .wouldBlock:
                server.counters.appendsBlocked += 1
                session.blockedProduce = produce
                server.blockedConnections.append(connection)
                return
            case .placed(let offset, let end):
                server.counters.appends += 1
                server.counters.appendedBytes += UInt64(item.batch.count)
                server.counters.appendedRecords += UInt64(Batch.recordCount(item.batch.bytes.baseAddress!))
                if produce.acks == 0 {
                    partitionDone(connection, produce, item, error: .none, baseOffset: Int64(firstRecord))
                } else {
                    awaitAcknowledgement(connection, session, produce, item, offset: offset, end: end, duplicate: false, firstRecord: firstRecord)
                }
            case .duplicate(let offset, let end):
                server.counters.duplicateAppends += 1
                if produce.acks == 0 {
                    partitionDone(connection, produce, item, error: .none, baseOffset: -1)
                } else {
                    awaitAcknowledgement(connection, session, produce, item, offset: offset, end: end, duplicate: true, firstRecord: nil)
                }
            case .endMismatch:
                partitionDone(connection, produce, item, error: .unknownServerError, baseOffset: -1)
            case .failed(let error):
                server.counters.kafkaProduceErrors += 1
                partitionDone(connection, produce, item, error: Self.kafkaError(error), baseOffset: -1)
            }
            produce.next += 1
        }
        produce.items.removeAll()
        if produce.remaining == 0 { finish(connection, produce) }
    }

    /// The server is stopping: a Produce waiting for room answers its batches not placed with a
    /// retriable error (the producer sends them again to the restarted server).
    func abandonBlockedProduce(_ connection: Connection, _ session: KafkaSession) {
        guard let produce = session.blockedProduce else { return }
        session.blockedProduce = nil
        // (An acks=0 Produce whose batch was refused closed the connection: the rest is dropped.)
        while produce.next < produce.items.count && (produce.acks != 0 || connection.isOpen) {
            let item = produce.items[produce.next]
            produce.next += 1
            partitionDone(connection, produce, item, error: .leaderNotAvailable, baseOffset: -1)
        }
    }

    func retryBlockedProduce(_ connection: Connection, _ session: KafkaSession) {
        guard let produce = session.blockedProduce else { return }
        session.blockedProduce = nil
        place(connection, session, produce)
    }

    private func awaitAcknowledgement(
        _ connection: Connection, _ session: KafkaSession, _ produce: KafkaProduce, _ item: KafkaProduce.Item, offset: LogOffset, end: LogOffset,
        duplicate: Bool, firstRecord: UInt64?
    ) {
        let durable = produce.acks == -1
        let token = session.register(.acknowledgement { [unowned self] ack in
            switch ack {
            case .failed(let code, let body):
                server.logger.debug("kafka append failed", metadata: ["code": "\(code)", "message": "\(body.message)"])
                partitionDone(connection, produce, item, error: code == .shuttingDown ? .leaderNotAvailable : .kafkaStorageError, baseOffset: -1)
            case .stored(let stored, _):
                if let firstRecord {
                    partitionDone(connection, produce, item, error: .none, baseOffset: Int64(firstRecord))
                    return
                }
                // A retry of a stored batch: answered with the original's first offset, as Kafka does.
                self.firstRecord(connection, item.log, at: stored) { [self] result in
                    switch result {
                    case .success(let found): partitionDone(connection, produce, item, error: .none, baseOffset: Int64(found.record))
                    case .failure: partitionDone(connection, produce, item, error: .none, baseOffset: -1)
                    }
                }
            }
        })
        let wait = server.waiters.wait(of: connection, on: item.log.id)
        server.waiters.addAcknowledgement(PendingAck(offset: offset, end: end, sequence: token, duplicate: duplicate), durable: durable, to: wait)
        if duplicate {
            server.waiters.acknowledge(item.log.id, upTo: durable ? item.log.committedEnd : item.log.writtenEnd, durable: durable, committedEnd: item.log.committedEnd)
        }
    }

    private func partitionDone(_ connection: Connection, _ produce: KafkaProduce, _ item: KafkaProduce.Item, error: KafkaErrorCode, baseOffset: Int64) {
        produce.results[item.topic].partitions[item.partition].errorCode = error
        produce.results[item.topic].partitions[item.partition].baseOffset = baseOffset
        produce.remaining -= 1
        if produce.acks == 0 && error != .none {
            connection.beginClosing(flushFirst: true, reason: "a Produce with acks=0 failed")
            return
        }
        if produce.remaining == 0 && produce.next >= produce.items.count { finish(connection, produce) }
    }

    private func finish(_ connection: Connection, _ produce: KafkaProduce) {
        guard let sequence = produce.sequence, produce.remaining == 0 else { return }
        var response = KafkaProduceResponse(topics: produce.results)
        response.throttleTimeMillis = 0
        respond(connection, sequence, produce.header, response.encode(version: produce.header.apiVersion))
    }
}
