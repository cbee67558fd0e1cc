import RingLogIO
import RingLogKafka
import RingLogStorage
import RingLogWire

/// A Fetch on its way. Partitions are served one after the other, within the response's byte
/// limit: the record offset asked for becomes a byte offset (the connection's last position for
/// that log, or a lookup by record), a read returns whole stored batches, and each is sent as a
/// Kafka batch: a Kafka-written one as a 17-byte prefix made from the RingLog header followed by
/// its stored bytes, referenced where the read put them; a natively written one re-encoded as
/// Kafka records (a copy). With nothing to send and `max.wait.ms` above zero, it long-polls every
/// partition it reads at the end of, and runs again once one has news or the wait is over.
final class KafkaFetch {
    struct Part {
        var topic: Int
        var index: Int32
        var fetchRecord: Int64
        var maxBytes: Int
        var error = KafkaErrorCode.none
        var highWatermark: Int64 = -1
        var logStart: Int64 = -1
        var log: Log?
        var records = KafkaResponseBytes()
        /// The record number of the first batch sent.
        var firstSent: Int64?
    }

    unowned let dispatcher: KafkaDispatcher
    let sequence: UInt32
    let header: KafkaRequestHeader
    let topicNames: [String]
    let maxWaitMillis: Int
    let maxBytes: Int
    var parts: [Part]
    var next = 0
    var sentBytes = 0
    /// The long-polls it waits on (their tokens), when it waits.
    var polls: [(token: UInt32, log: LogID)] = []
    var waited = false
    var finished = false

    init(dispatcher: KafkaDispatcher, sequence: UInt32, header: KafkaRequestHeader, request: KafkaFetchRequest, maxBytes: Int, maxWaitMillis: Int) {
        self.dispatcher = dispatcher
        self.sequence = sequence
        self.header = header
        topicNames = request.topics.map(\.name)
        self.maxBytes = maxBytes
        self.maxWaitMillis = maxWaitMillis
        var parts: [Part] = []
        for (topic, entry) in request.topics.enumerated() {
            for partition in entry.partitions {
                parts.append(Part(topic: topic, index: partition.index, fetchRecord: partition.fetchOffset, maxBytes: max(Int(partition.maxBytes), 0)))
            }
        }
        self.parts = parts
    }

    /// Set while `run` is on the stack: a read or lookup answered at once (from the tail cache)
    /// only asks for another pass instead of calling `run` again, so a Fetch of many partitions
    /// does not recurse once per partition.
    private var running = false
    private var passWanted = false

    /// Serves the partitions from `next` on.
    func run(_ connection: Connection) {
        if running {
            passWanted = true
            return
        }
        running = true
        repeat {
            passWanted = false
            pass(connection)
        } while passWanted
        running = false
    }

    /// One pass: partitions in order until one waits for storage (its answer runs `run` again)
    /// or all are served.
    private func pass(_ connection: Connection) {
        let store = dispatcher.store
        // A closing connection still gets its answer (it may be flushed, and every queued
        // response must be completed for the connection to finish).
        while next < parts.count && connection.isOpen {
            let index = next
            var part = parts[index]
            part.records = KafkaResponseBytes()
            part.error = .none
            guard KafkaTopics.problem(with: topicNames[part.topic]) == nil, let log = KafkaTopics.log(topicNames[part.topic], Int(part.index), in: store),
                !log.deleting
            else {
                part.error = .unknownTopicOrPartition
                parts[index] = part
                next += 1
                continue
            }
            part.log = log
            let highWatermark = log.committedRecords
            part.highWatermark = Int64(highWatermark)
            part.logStart = log.startOffset == .zero ? 0 : part.logStart
            parts[index] = part
            guard part.fetchRecord >= 0, UInt64(part.fetchRecord) <= highWatermark else {
                parts[index].error = .offsetOutOfRange
                next += 1
                continue
            }
            let record = UInt64(part.fetchRecord)
            let budget = min(part.maxBytes, maxBytes - sentBytes)
            if record == highWatermark || budget <= 0 && sentBytes > 0 {
                next += 1
                continue
            }
            // Known position, or a lookup; then the read. Either may finish later: `run` goes on then.
            let session = connection.kafka!
            if let known = session.fetchPositions[log.id], known.record == record, known.offset >= log.startOffset {
                read(connection, index, log, from: known.offset, record: record, budget: max(budget, 1))
            } else {
                dispatcher.seek(connection, log.id, record: record) { [self] result in
                    switch result {
                    case .success(let offset): read(connection, index, log, from: offset, record: record, budget: max(budget, 1))
                    case .failure(let error): partFailed(connection, index, error)
                    }
                }
            }
            return
        }
        done(connection)
    }

    private func partFailed(_ connection: Connection, _ index: Int, _ error: StorageError) {
        parts[index].error = KafkaDispatcher.kafkaError(error)
        next = index + 1
        run(connection)
    }

    private func read(_ connection: Connection, _ index: Int, _ log: Log, from offset: LogOffset, record: UInt64, budget: Int) {
        dispatcher.read(connection, log.id, from: offset, maxBytes: budget) { [self] result in
            switch result {
            case .failure(let error): partFailed(connection, index, error)
            case .success(let read):
                convert(read, into: &parts[index], from: record, session: connection.kafka!)
                if let first = parts[index].firstSent, first > Int64(record), read.offset == log.startOffset {
                    // The record asked for is older than anything kept (trimmed): Kafka's answer,
                    // so the client applies its auto.offset.reset.
                    parts[index].error = .offsetOutOfRange
                    parts[index].records = KafkaResponseBytes()
                }
                if read.offset == log.startOffset && parts[index].logStart < 0, let first = parts[index].firstSent { parts[index].logStart = first }
                sentBytes += parts[index].records.count
                next = index + 1
                run(connection)
            }
        }
    }

    /// Appends the read's batches to the part as Kafka batches and remembers where the next one is.
    private func convert(_ read: ReadResult, into part: inout Part, from record: UInt64, session: KafkaSession) {
        guard let buffer = read.buffer, let log = part.log else { return }
        var position = read.range.lowerBound
        var offset = read.offset
        var nextRecord: UInt64?
        let bytes = buffer.bytes
        while position + Batch.minHeaderBytes <= read.range.upperBound {
            let header = BatchHeader(unchecked: bytes.baseAddress! + position)
            let total = header.totalBytes
            guard total > 0, position + total <= read.range.upperBound else { break }
            defer {
                position += total
                offset = offset.advanced(by: total)
            }
            // Format 1 has no record numbers: such batches are not served to Kafka consumers.
            guard header.format == .v2 else { continue }
            let end = header.firstRecord &+ UInt64(header.recordCount)
            nextRecord = end
            if end <= record { continue }
            if part.firstSent == nil { part.firstSent = Int64(header.firstRecord) }
            let payload = (position + header.headerBytes)..<(position + total)
            if header.flags & Batch.kafkaFlag != 0, payload.count >= 4 {
                part.records.append(KafkaRecordBatch.fetchPrefix(baseOffset: Int64(header.firstRecord), partitionLeaderEpoch: -1, storedPayloadBytes: payload.count))
                part.records.append(buffer, payload)
            } else {
                part.records.append(KafkaDispatcher.kafkaBatch(native: UnsafeRawBufferPointer(rebasing: bytes[payload]), header: header))
            }
        }
        if let nextRecord { session.fetchPositions[log.id] = (nextRecord, offset) }
    }

    /// Sends the response, or waits for news first.
    private func done(_ connection: Connection) {
        let server = dispatcher.server
        if sentBytes == 0, maxWaitMillis > 0, !waited, connection.isOpen, !server.isStopping,
            !parts.contains(where: { $0.error != .none }), let session = connection.kafka
        {
            waited = true
            let deadline = MonotonicClock.nanos() + UInt64(maxWaitMillis) * 1_000_000
            for part in parts {
                guard let log = part.log, UInt64(part.fetchRecord) == log.committedRecords else { continue }
                let token = session.register(.poll(self, log.id))
                polls.append((token, log.id))
                server.waiters.addLongPoll(
                    LongPoll(offset: log.committedEnd, maxBytes: 0), sequence: token, deadlineNanos: deadline, to: server.waiters.wait(of: connection, on: log.id))
                server.counters.longPollsStarted += 1
            }
            if !polls.isEmpty { return }
        }
        guard !finished else { return }
        finished = true
        dispatcher.respond(connection, sequence, header, encode())
    }

    /// One of its long-polls ended: it stops waiting on the others and runs again.
    func pollEnded(_ connection: Connection) {
        guard !polls.isEmpty else { return }
        if let session = connection.kafka {
            for poll in polls {
                _ = session.take(poll.token)
                dispatcher.server.waiters.cancelLongPoll(of: connection, on: poll.log, sequence: poll.token)
            }
        }
        polls.removeAll()
        next = 0
        sentBytes = 0
        run(connection)
    }

    /// The response body (Fetch v4-v11, no fetch sessions, last stable offset = high watermark).
    private func encode() -> KafkaResponseBytes {
        let response = KafkaResponseBytes()
        let version = header.apiVersion
        // The fields as `KafkaFetchResponse` writes them; the records referenced, not copied.
        var writer = KafkaWriter()
        KafkaFetchResponse.writeHead(version: version, into: &writer)
        writer.arrayCount(topicNames.count)
        var partIndex = 0
        for (topic, name) in topicNames.enumerated() {
            writer.nullableString(name)
            let end = parts[partIndex...].firstIndex { $0.topic != topic } ?? parts.count
            writer.arrayCount(end - partIndex)
            for part in parts[partIndex..<end] {
                KafkaFetchResponse.writePartitionHead(
                    KafkaFetchResponse.Partition(index: part.index, errorCode: part.error, highWatermark: part.highWatermark, logStartOffset: part.logStart),
                    recordBytes: part.records.count, version: version, into: &writer)
                response.append(writer.bytes)
                writer = KafkaWriter()
                for piece in part.records.pieces {
                    switch piece {
                    case .bytes(let bytes): response.append(bytes)
                    case .external(let owner, let range): response.append(owner, range)
                    }
                }
            }
            partIndex = end
        }
        response.append(writer.bytes)
        return response
    }
}

extension KafkaDispatcher {
    func fetch(_ connection: Connection, _ session: KafkaSession, _ header: KafkaRequestHeader, _ request: KafkaFetchRequest) {
        let sequence = begin(connection)
        server.counters.reads += 1
        // Clients ask for up to 50 MiB; one response holds at most what a native read may.
        let maxBytes = max(1, min(Int(max(request.maxBytes, 1)), configuration.maxReadBytes))
        let wait = min(Int(max(request.maxWaitMillis, 0)), configuration.maxWaitMillis)
        KafkaFetch(dispatcher: self, sequence: sequence, header: header, request: request, maxBytes: maxBytes, maxWaitMillis: wait).run(connection)
    }

    /// A natively written batch as a Kafka batch: its records (RingLog's record framing) become
    /// Kafka records with no key, stamped with the append time. A payload that is not framed
    /// that way is one record holding all of it, followed by empty ones up to the record count,
    /// so record offsets still line up.
    static func kafkaBatch(native payload: UnsafeRawBufferPointer, header: BatchHeader) -> [UInt8] {
        let count = Int(header.recordCount)
        let timestamp = Int64(header.appendTimeMicros / 1000)
        var batch: [UInt8]
        if let ranges = try? RecordFraming.records(in: payload, expectedCount: count) {
            let records = ranges.enumerated().map { KafkaRecord(offsetDelta: Int32($0.offset), timestampDelta: 0, key: nil, value: Array(payload[$0.element])) }
            batch = KafkaRecordBatch.build(records, baseTimestamp: timestamp)
        } else {
            // Not RingLog's record framing (the count is the client's word): one record holding
            // the payload, and a last offset delta that still spans the batch's record numbers,
            // so the next batch's offsets follow (the CRC is made again over the change).
            batch = KafkaRecordBatch.build([KafkaRecord(offsetDelta: 0, timestampDelta: 0, key: nil, value: Array(payload))], baseTimestamp: timestamp)
            let lastDelta = UInt32(clamping: max(count - 1, 0) > Int(Int32.max) ? Int(Int32.max) : max(count - 1, 0))
            for byte in 0..<4 { batch[23 + byte] = UInt8(truncatingIfNeeded: lastDelta >> (24 - 8 * UInt32(byte))) }
            let crc = batch.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[21...])) }
            for byte in 0..<4 { batch[17 + byte] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * UInt32(byte))) }
        }
        let base = header.firstRecord
        for byte in 0..<8 { batch[byte] = UInt8(truncatingIfNeeded: base >> (56 - 8 * UInt64(byte))) }
        return batch
    }

    // MARK: ListOffsets

    func listOffsets(_ connection: Connection, _ session: KafkaSession, _ header: KafkaRequestHeader, _ request: KafkaListOffsetsRequest) {
        let sequence = begin(connection)
        var topics = request.topics.map { topic in
            KafkaTopic(name: topic.name, partitions: topic.partitions.map { KafkaListOffsetsResponse.Partition(index: $0.index) })
        }
        var remaining = 1
        let answer = { [unowned self] in
            remaining -= 1
            if remaining == 0 { respond(connection, sequence, header, KafkaListOffsetsResponse(topics: topics).encode(version: header.apiVersion)) }
        }
        for (topicIndex, topic) in request.topics.enumerated() {
            for (partitionIndex, partition) in topic.partitions.enumerated() {
                let set = { (error: KafkaErrorCode, offset: Int64, time: Int64) in
                    topics[topicIndex].partitions[partitionIndex].errorCode = error
                    topics[topicIndex].partitions[partitionIndex].offset = offset
                    topics[topicIndex].partitions[partitionIndex].timestamp = time
                }
                guard partition.index >= 0, KafkaTopics.problem(with: topic.name) == nil,
                    let log = KafkaTopics.log(topic.name, Int(partition.index), in: store)
                else {
                    set(.unknownTopicOrPartition, -1, -1)
                    continue
                }
                switch partition.timestamp {
                case -1:
                    set(.none, Int64(log.committedRecords), -1)
                case -2, 0...:
                    remaining += 1
                    // Earliest: the first kept format-2 batch. A time: the first batch appended at
                    // or after it (the server's append time, docs/kafka.md), none past the end.
                    let earliest = partition.timestamp == -2
                    find(connection, log, record: earliest ? 0 : nil, timeMicros: earliest ? nil : UInt64(partition.timestamp) &* 1000) { found in
                        switch found {
                        case .success(let first) where earliest: set(.none, Int64(first.record), -1)
                        case .success(let first):
                            set(.none, first.timeMicros == nil ? -1 : Int64(first.record), first.timeMicros.map { Int64($0 / 1000) } ?? -1)
                        case .failure(let error): set(Self.kafkaError(error), -1, -1)
                        }
                        answer()
                    }
                default:
                    set(.invalidRequest, -1, -1)
                }
            }
        }
        answer()
    }
}
