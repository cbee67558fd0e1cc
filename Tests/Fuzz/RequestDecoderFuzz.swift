// libFuzzer target for everything that parses bytes a peer sent: the server's request framing and
// body decoders, batch validation and record unframing, and the client's response decoders.
// Built with the RingLogWire sources by Scripts/fuzz (swiftc -sanitize=fuzzer,address).
//
// The first input byte chooses how the rest is cut into chunks, as TCP may cut it. Properties
// checked: no crash or out-of-bounds access (ASan), every rejection is an error code, the framer
// consumes every byte it is given, and it never holds more than one request's worth of bytes.

let limits = RequestFramer.Limits(maxAppendBodyBytes: 1 << 16, maxControlBodyBytes: WireProtocol.maxControlBodyBytes)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafeRawPointer, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let chunkSize = Int(input[0]) + 1
    let stream = UnsafeRawBufferPointer(rebasing: input[1...])
    var framer = RequestFramer(limits: limits)
    var index = 0
    while index < stream.count {
        let end = min(index + chunkSize, stream.count)
        let (consumed, failure) = framer.frame(UnsafeRawBufferPointer(rebasing: stream[index..<end])) { header, body in
            decodeRequestBody(header, body)
            return true
        }
        if let failure {
            precondition(ErrorCode(rawValue: failure.code.rawValue) == failure.code)
            precondition(failure.code.closesConnection, "a framing failure must close the connection")
            break
        }
        precondition(consumed == end - index, "the framer must take every byte it is given")
        index = end
    }
    precondition(framer.partialBytes <= WireProtocol.headerBytes + limits.maxAppendBodyBytes + AppendIfRequest.prefixBytes)
    decodeAsResponses(stream)
    decodeAsKafka(stream, chunkSize: chunkSize)
    return 0
}

/// The same bytes as a Kafka client's stream: frames, request headers, ApiVersions answers, and
/// each frame (and the bytes themselves) as a produced record batch.
func decodeAsKafka(_ stream: UnsafeRawBufferPointer, chunkSize: Int) {
    var framer = KafkaFramer(maxFrameBytes: 1 << 16)
    var index = 0
    while index < stream.count {
        let end = min(index + chunkSize, stream.count)
        do {
            try framer.feed(UnsafeRawBufferPointer(rebasing: stream[index..<end])) { frame in
                if let header = try? KafkaRequestHeader.decode(frame) {
                    precondition(header.bodyStart <= frame.count)
                    let body = UnsafeRawBufferPointer(rebasing: frame[header.bodyStart...])
                    switch header.api {
                    case .apiVersions?:
                        _ = KafkaApiVersions.responseBody(version: header.apiVersion, supported: [KafkaApiVersions.Range(.apiVersions, 0, 3)])
                    case .produce?:
                        if let request = try? KafkaProduceRequest.decode(body, version: header.apiVersion) {
                            for topic in request.topics {
                                for partition in topic.partitions {
                                    guard let range = partition.records else { continue }
                                    precondition(range.upperBound <= body.count)
                                    decodeKafkaBatch(UnsafeRawBufferPointer(rebasing: body[range]))
                                }
                            }
                        }
                    case .metadata?: _ = try? KafkaMetadataRequest.decode(body, version: header.apiVersion)
                    case .fetch?: _ = try? KafkaFetchRequest.decode(body, version: header.apiVersion)
                    case .listOffsets?: _ = try? KafkaListOffsetsRequest.decode(body, version: header.apiVersion)
                    case .offsetCommit?: _ = try? KafkaOffsetCommitRequest.decode(body, version: header.apiVersion)
                    case .offsetFetch?: _ = try? KafkaOffsetFetchRequest.decode(body, version: header.apiVersion)
                    case .findCoordinator?: _ = try? KafkaFindCoordinatorRequest.decode(body, version: header.apiVersion)
                    case .heartbeat?: _ = try? KafkaMembershipRequest.decodeHeartbeat(body, version: header.apiVersion)
                    case .leaveGroup?: _ = try? KafkaMembershipRequest.decodeLeaveGroup(body, version: header.apiVersion)
                    case .initProducerId?: _ = try? KafkaInitProducerIdRequest.decode(body, version: header.apiVersion)
                    case .joinGroup?: _ = try? KafkaJoinGroupRequest.decode(body, version: header.apiVersion)
                    case .syncGroup?: _ = try? KafkaSyncGroupRequest.decode(body, version: header.apiVersion)
                    case .createTopics?: _ = try? KafkaCreateTopicsRequest.decode(body, version: header.apiVersion)
                    case .deleteTopics?: _ = try? KafkaDeleteTopicsRequest.decode(body, version: header.apiVersion)
                    default: break
                    }
                }
                _ = KafkaRequestHeader.correlationID(frame)
                decodeKafkaBatch(frame)
            }
        } catch {
            break
        }
        precondition(framer.pendingBytes <= 4 + (1 << 16))
        index = end
    }
    decodeKafkaBatch(stream)
}

func decodeKafkaBatch(_ bytes: UnsafeRawBufferPointer) {
    if case .success(let header) = KafkaRecordBatch.validateProduced(bytes) {
        precondition(Int(header.batchLength) + 12 == bytes.count)
        let payload = KafkaRecordBatch.storedPayload(bytes)
        precondition(payload.count + KafkaRecordBatch.prefixBytes == bytes.count)
    }
    if let records = try? KafkaRecordBatch.records(bytes) {
        for record in records { precondition((record.key?.count ?? 0) + (record.value?.count ?? 0) <= bytes.count) }
    }
}

func decodeRequestBody(_ header: RequestHeader, _ body: UnsafeRawBufferPointer) {
    precondition(body.count == Int(header.bodyLength))
    switch Opcode(rawValue: header.opcode) {
    case .hello: _ = try? HelloRequest.decode(body)
    case .createLog: _ = try? CreateLogRequest.decode(body)
    case .deleteLog, .logInfo: _ = try? LogNameRequest.decode(body)
    case .read: _ = try? ReadRequest.decode(body)
    case .trim: _ = try? OffsetMessage.decode(body)
    case .seekTime: _ = try? SeekTimeRequest.decode(body)
    case .cursorCommit: _ = try? CursorCommitRequest.decode(body)
    case .cursorFetch, .cursorDelete: _ = try? LogNameRequest.decode(body)
    case .cursorList: break
    case .initProducer: _ = try? InitProducerRequest.decode(body)
    case .append: decodeBatch(body)
    case .appendIf:
        guard let request = try? AppendIfRequest.decode(body) else { return }
        precondition(request.batch.count == body.count - AppendIfRequest.prefixBytes)
        decodeBatch(request.batch)
    case .ping, .listLogs, .serverStats, nil: break
    }
}

/// An appended batch as the server checks it, and its records as a reader splits them.
func decodeBatch(_ body: UnsafeRawBufferPointer) {
    guard Batch.validateIncoming(body, maxBatchBytes: limits.maxAppendBodyBytes) == nil else { return }
    let header = BatchHeader(unchecked: body.baseAddress!)
    precondition(header.totalBytes == body.count && header.headerBytes == Batch.headerLength(at: body.baseAddress!, available: body.count))
    let payload = UnsafeRawBufferPointer(rebasing: body[header.headerBytes...])
    if let ranges = try? RecordFraming.records(in: payload, expectedCount: Int(header.recordCount)) {
        for range in ranges { precondition(range.upperBound <= payload.count) }
    }
}

/// What a client does with bytes a server sent.
func decodeAsResponses(_ bytes: UnsafeRawBufferPointer) {
    var index = 0
    while bytes.count - index >= WireProtocol.headerBytes {
        guard case .success(let header) = ResponseHeader.decode(bytes.baseAddress! + index) else { return }
        index += WireProtocol.headerBytes
        let length = min(Int(header.bodyLength), bytes.count - index)
        let body = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + length)])
        index += length
        _ = try? ErrorBody.decode(body)
        _ = try? HelloResponse.decode(body)
        _ = try? LogDescription.decode(body)
        _ = try? LogList.decode(body)
        _ = try? ServerStats.decode(body)
        _ = try? AppendResponse.decode(body)
        _ = try? CursorPositionMessage.decode(body)
        _ = try? CursorList.decode(body)
        _ = try? InitProducerResponse.decode(body)
        if body.count >= ReadResponseHead.encodedBytes {
            walkStoredBatches(UnsafeRawBufferPointer(rebasing: body[ReadResponseHead.encodedBytes...]))
        }
    }
}

/// A reader's walk over stored batches, as the client library does it (either format).
func walkStoredBatches(_ bytes: UnsafeRawBufferPointer) {
    try? StoredBatches.forEach(in: bytes, startingAt: nil, damaged: { $0 }) { _, header, payload throws(StoredBatches.Damage) in
        precondition(payload.count == Int(header.payloadLength) && header.headerBytes >= Batch.minHeaderBytes)
        _ = try? RecordFraming.records(in: payload, expectedCount: Int(header.recordCount))
    }
}
