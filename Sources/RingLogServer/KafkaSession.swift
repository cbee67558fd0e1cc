import RingLogIO
import RingLogKafka
import RingLogStorage
import RingLogWire

/// A storage answer for a part of a Kafka request (the store's events, as `KafkaDispatcher`
/// sees them).
enum KafkaStorageAnswer {
    case read(Result<ReadResult, StorageError>)
    case sought(Result<LogOffset, StorageError>)
    case cursor(Result<CursorPosition?, StorageError>)
    case created(Result<Void, StorageError>)
    case deleted(Result<Void, StorageError>)
}

/// How an acknowledgement of a Kafka append ended: the batch's offset (the one it repeats, for an
/// idempotent retry), or the error that undid it.
enum KafkaAck {
    case stored(offset: LogOffset, duplicate: Bool)
    case failed(ErrorCode, ErrorBody)
}

/// A Kafka response frame as pieces: bytes made for it, and stored batches referenced where a
/// read put them (a Fetch sends them without copying).
final class KafkaResponseBytes {
    enum Piece {
        case bytes([UInt8])
        case external(OwnedBytes, Range<Int>)
    }

    private(set) var pieces: [Piece] = []
    private(set) var count = 0
    /// Memory it keeps alive: read buffers count whole.
    private(set) var heldBytes = 0

    func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        pieces.append(.bytes(bytes))
        count += bytes.count
        heldBytes += bytes.count
    }

    func append(_ owner: OwnedBytes, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        pieces.append(.external(owner, range))
        count += range.count
        heldBytes += range.count
    }

    /// Puts the frame's size and header in front of what was appended.
    func frame(correlationID: Int32, headerVersion: Int) {
        var writer = KafkaWriter(reservingCapacity: 9)
        writer.int32(Int32(clamping: 4 + (headerVersion >= 1 ? 1 : 0) + count))
        writer.int32(correlationID)
        if headerVersion >= 1 { writer.noTaggedFields() }
        pieces.insert(.bytes(writer.bytes), at: 0)
        count += writer.bytes.count
        heldBytes += writer.bytes.count
    }
}

/// What one part of a Kafka request waits for, by its token.
enum KafkaWait {
    case storage((KafkaStorageAnswer) -> Void)
    case acknowledgement((KafkaAck) -> Void)
    /// A Fetch's long-poll on one of its partitions' logs.
    case poll(KafkaFetch, LogID)
}

/// The Kafka side of one connection: the parts of its requests that wait (on storage answers,
/// acknowledgements, long-polls), each under a 24-bit token that travels where a native
/// connection's response sequence would (`ResponseContext`, `PendingAck`, long-polls).
final class KafkaSession {
    private(set) var waits: [UInt32: KafkaWait] = [:]
    private var lastToken: UInt32 = 0
    /// A Produce waiting for room in the store; the connection reads nothing meanwhile.
    var blockedProduce: KafkaProduce?
    /// Where each log's next record is, as the last Fetch on this connection left it: a consumer
    /// going on from there needs no lookup.
    var fetchPositions: [LogID: (record: UInt64, offset: LogOffset)] = [:]

    func register(_ wait: KafkaWait) -> UInt32 {
        repeat { lastToken = (lastToken &+ 1) & ResponseQueue.sequenceMask } while waits[lastToken] != nil
        waits[lastToken] = wait
        return lastToken
    }

    func take(_ token: UInt32) -> KafkaWait? { waits.removeValue(forKey: token) }

    /// The connection is gone: nothing it waits for will be answered. (Storage answers still due
    /// find no token and are dropped.)
    func abandon() {
        waits.removeAll()
        blockedProduce = nil
        fetchPositions.removeAll()
    }

    /// Bytes of a Produce's batches not placed yet (held while it waits for room).
    var blockedBytes: Int {
        guard let produce = blockedProduce else { return 0 }
        return produce.items[produce.next...].reduce(0) { $0 + $1.batch.count }
    }
}
