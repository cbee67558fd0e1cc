import DequeModule
import RingLogWire

/// One of an idempotent producer's latest batches in a log: enough to answer its retry.
struct RememberedBatch: Equatable, Sendable {
    var baseSequence: UInt32
    var recordCount: UInt32
    var offset: LogOffset
    var length: UInt32

    var end: LogOffset { offset.advanced(by: Int(length)) }
}

/// What the log knows of one producer id: its epoch, the sequence it owes next, and its latest
/// batches (at most the table's window), oldest first.
struct ProducerState: Equatable, Sendable {
    var epoch: UInt16
    var nextSequence: UInt32
    var batches: Deque<RememberedBatch>
    /// The append time of its newest batch: idle producers expire from it.
    var lastAppendMicros: UInt64
}

/// The idempotent producers of one log (docs/storage.md, "Producers"). A format-2 batch with a
/// producer id is checked here before it is placed: the next sequence is written; a repeat of one
/// of the producer's last `window` batches is answered with that batch's offset and not stored
/// again; anything else is refused. The table is rebuilt after a restart from the checkpoint
/// (which holds it as of the checkpoint offset) and the batches after it, so a batch is
/// acknowledged once even across kill -9.
///
/// Bounded: at most `maxProducers` ids (a new one evicts the one idle longest), each with at most
/// `window` batches; a producer idle for `expiryMicros` is forgotten. A retry from a forgotten
/// producer is refused (UNKNOWN_PRODUCER), never stored.
final class ProducerTable {
    let window: Int
    let maxProducers: Int
    let expiryMicros: UInt64
    private(set) var producers: [UInt64: ProducerState] = [:]

    init(window: Int, maxProducers: Int, expiryMicros: UInt64) {
        precondition(window >= 1 && maxProducers >= 1)
        self.window = window
        self.maxProducers = maxProducers
        self.expiryMicros = expiryMicros
    }

    enum Check: Equatable {
        /// The next batch of the producer (or the first of a new one, or of a new epoch): place it.
        case write
        /// A retry of a batch in the log.
        case duplicate(RememberedBatch)
        case refused(StorageError)
    }

    /// Judges a batch with producer fields (`stamp.id` is not 0) before it is placed.
    func check(_ stamp: ProducerStamp, recordCount: UInt32) -> Check {
        guard let state = producers[stamp.id] else {
            // A producer's first batch in this log starts at sequence 0; a later one means the
            // log has forgotten it (expired, evicted) or never saw it.
            return stamp.baseSequence == 0 ? .write : .refused(.unknownProducer(producer: stamp.id, sequence: stamp.baseSequence))
        }
        if stamp.epoch < state.epoch {
            return .refused(.producerFenced(producer: stamp.id, epoch: stamp.epoch, current: state.epoch))
        }
        if stamp.epoch > state.epoch {
            return stamp.baseSequence == 0
                ? .write : .refused(.outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: 0, epoch: stamp.epoch))
        }
        if stamp.baseSequence == state.nextSequence { return .write }
        if let earlier = state.batches.last(where: { $0.baseSequence == stamp.baseSequence }) {
            guard earlier.recordCount == recordCount else {
                return .refused(.outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: state.nextSequence, epoch: state.epoch))
            }
            return .duplicate(earlier)
        }
        // Sequences wrap at 2^31: behind the next one by at most half the space is a repeat.
        let behind = (state.nextSequence &- stamp.baseSequence) & (Batch.sequenceModulus - 1)
        if behind > 0 && behind <= Batch.sequenceModulus / 2 {
            return .refused(.duplicateSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: state.nextSequence, epoch: state.epoch))
        }
        return .refused(.outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: state.nextSequence, epoch: state.epoch))
    }

    /// Notes a batch that was placed (or, in recovery, found) at `offset`.
    func record(_ stamp: ProducerStamp, recordCount: UInt32, offset: LogOffset, length: Int, appendMicros: UInt64) {
        let batch = RememberedBatch(baseSequence: stamp.baseSequence, recordCount: recordCount, offset: offset, length: UInt32(length))
        let next = (stamp.baseSequence &+ recordCount) & (Batch.sequenceModulus - 1)
        if var state = producers[stamp.id], state.epoch == stamp.epoch {
            producers[stamp.id] = nil  // keep the deque uniquely referenced while it changes
            state.batches.append(batch)
            if state.batches.count > window { state.batches.removeFirst() }
            state.nextSequence = next
            state.lastAppendMicros = max(state.lastAppendMicros, appendMicros)
            producers[stamp.id] = state
            return
        }
        if producers[stamp.id] == nil && producers.count >= maxProducers { evictIdlest() }
        producers[stamp.id] = ProducerState(epoch: stamp.epoch, nextSequence: next, batches: [batch], lastAppendMicros: appendMicros)
    }

    private func evictIdlest() {
        guard let idlest = producers.min(by: { $0.value.lastAppendMicros < $1.value.lastAppendMicros })?.key else { return }
        producers[idlest] = nil
    }

    /// Forgets the batches at and after `offset`, whose reservations were undone.
    func rewind(to offset: LogOffset) {
        for (id, var state) in producers where (state.batches.last?.end ?? .zero) > offset {
            producers[id] = nil
            while let last = state.batches.last, last.end > offset {
                state.nextSequence = last.baseSequence
                state.batches.removeLast()
            }
            // A producer with nothing left in the log owes its first sequence again; its batches
            // below `offset` are out of the window, so nothing is lost by forgetting it.
            if !state.batches.isEmpty || state.nextSequence != 0 { producers[id] = state }
        }
    }

    /// Forgets producers idle since before `nowMicros - expiryMicros`.
    func expire(nowMicros: UInt64) {
        guard expiryMicros > 0, nowMicros > expiryMicros else { return }
        let cutoff = nowMicros - expiryMicros
        producers = producers.filter { $0.value.lastAppendMicros >= cutoff }
    }

    /// The table as it was when the log ended at `end`: the batches ending after it are left out
    /// (a checkpoint at `end` holds this; recovery replays the batches after it).
    func snapshot(endingAt end: LogOffset) -> [UInt64: ProducerState] {
        var snapshot = producers
        for (id, state) in producers where (state.batches.last?.end ?? .zero) > end {
            var trimmed = state
            while let last = trimmed.batches.last, last.end > end {
                trimmed.nextSequence = last.baseSequence
                trimmed.batches.removeLast()
            }
            snapshot[id] = trimmed.batches.isEmpty && trimmed.nextSequence == 0 ? nil : trimmed
        }
        return snapshot
    }

    /// Starts from a checkpoint's snapshot (recovery).
    func restore(_ snapshot: [UInt64: ProducerState]) {
        producers = snapshot
    }

    var count: Int { producers.count }

    /// Memory the table holds, roughly: what the documented bound counts.
    var memoryBytes: Int { producers.values.reduce(0) { $0 + 64 + $1.batches.count * MemoryLayout<RememberedBatch>.stride } }

    // MARK: In a checkpoint

    /// `u32 count`, then per producer `u64 id, u16 epoch, u16 batchCount, u32 nextSequence,
    /// u64 lastAppendMicros`, then its batches `u32 baseSequence, u32 recordCount, u64 offset,
    /// u32 length`, oldest first; in id order, so equal tables encode equally.
    static func encode(_ snapshot: [UInt64: ProducerState], into bytes: inout [UInt8]) {
        bytes.appendLittleEndian(UInt32(snapshot.count))
        for id in snapshot.keys.sorted() {
            let state = snapshot[id]!
            bytes.appendLittleEndian(id)
            bytes.appendLittleEndian(state.epoch)
            bytes.appendLittleEndian(UInt16(state.batches.count))
            bytes.appendLittleEndian(state.nextSequence)
            bytes.appendLittleEndian(state.lastAppendMicros)
            for batch in state.batches {
                bytes.appendLittleEndian(batch.baseSequence)
                bytes.appendLittleEndian(batch.recordCount)
                bytes.appendLittleEndian(batch.offset.rawValue)
                bytes.appendLittleEndian(batch.length)
            }
        }
    }

    /// Decodes what `encode` wrote from `at`; nil when the bytes do not add up.
    static func decode(_ reader: FieldReader, at start: Int, end: Int) -> [UInt64: ProducerState]? {
        var at = start
        guard at + 4 <= end else { return nil }
        let count = Int(reader.u32(at))
        at += 4
        var snapshot: [UInt64: ProducerState] = [:]
        for _ in 0..<count {
            guard at + 24 <= end else { return nil }
            let id = reader.u64(at)
            let epoch = reader.u16(at + 8)
            let batchCount = Int(reader.u16(at + 10))
            let next = reader.u32(at + 12)
            let last = reader.u64(at + 16)
            at += 24
            guard at + batchCount * 20 <= end, id != 0, next < Batch.sequenceModulus else { return nil }
            var batches: Deque<RememberedBatch> = []
            for _ in 0..<batchCount {
                batches.append(
                    RememberedBatch(baseSequence: reader.u32(at), recordCount: reader.u32(at + 4), offset: LogOffset(reader.u64(at + 8)), length: reader.u32(at + 16)))
                at += 20
            }
            snapshot[id] = ProducerState(epoch: epoch, nextSequence: next, batches: batches, lastAppendMicros: last)
        }
        return at == end ? snapshot : nil
    }
}
