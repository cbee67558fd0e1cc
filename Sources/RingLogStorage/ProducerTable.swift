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

/// A producer a log forgot (evicted or expired), and the newest epoch it had.
struct ForgottenProducer: Equatable, Sendable {
    var id: UInt64
    var epoch: UInt16
}

/// What the log knows of one producer id: its epoch, the sequence it owes next, and its latest
/// batches (at most the table's window), oldest first.
struct ProducerState: Equatable, Sendable {
    var epoch: UInt16
    var nextSequence: UInt32
    var batches: Deque<RememberedBatch>
    /// The append time of its newest batch: idle producers expire from it.
    var lastAppendMicros: UInt64

    /// Drops the batches ending after `offset`; the producer owes the first of them again.
    mutating func forget(after offset: LogOffset) {
        while let last = batches.last, last.end > offset {
            nextSequence = last.baseSequence
            batches.removeLast()
        }
    }
}

/// Producer ids to dense positions `0..<count`, by open addressing with linear probing. The hash
/// is one multiply by a random odd number (ids an attacker picks cannot be aimed at one bucket);
/// Swift's Dictionary hashes with SipHash, which cost more than the rest of an idempotent
/// append's bookkeeping (docs/benchmarks.md). Removing moves the last position into the hole,
/// as the caller does with its own arrays.
struct ProducerSlots {
    /// -1: empty; else a position in `ids`. The size is a power of two, at most half full.
    private var table: [Int32] = [Int32](repeating: -1, count: 16)
    private var shift: UInt64 = 60
    private let multiplier: UInt64
    private(set) var ids: [UInt64] = []

    init(multiplier: UInt64) { self.multiplier = multiplier | 1 }

    @inline(__always)
    private func home(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* multiplier) >> shift) }

    /// Where `id`'s entry sits in `table`, or the empty bucket where it would go.
    @inline(__always)
    private func bucket(of id: UInt64) -> Int {
        let mask = table.count - 1
        var at = home(id)
        while true {
            let position = table[at]
            if position < 0 || ids[Int(position)] == id { return at }
            at = (at + 1) & mask
        }
    }

    func find(_ id: UInt64) -> Int? {
        let position = table[bucket(of: id)]
        return position < 0 ? nil : Int(position)
    }

    /// Adds `id` (not present) at position `ids.count`.
    mutating func insert(_ id: UInt64) {
        if (ids.count + 1) * 2 > table.count { grow() }
        table[bucket(of: id)] = Int32(ids.count)
        ids.append(id)
    }

    /// Removes the id at `position`; the last id moves to `position`.
    mutating func remove(at position: Int) {
        let mask = table.count - 1
        var hole = bucket(of: ids[position])
        // Backward shift: pull later entries of the run into the hole when their home allows.
        var next = (hole + 1) & mask
        while table[next] >= 0 {
            let home = home(ids[Int(table[next])])
            let between = hole <= next ? (home > hole && home <= next) : (home > hole || home <= next)
            if !between {
                table[hole] = table[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        table[hole] = -1
        let last = ids.count - 1
        if position != last {
            table[bucket(of: ids[last])] = Int32(position)
            ids[position] = ids[last]
        }
        ids.removeLast()
    }

    private mutating func grow() {
        table = [Int32](repeating: -1, count: table.count * 2)
        shift -= 1
        for (position, id) in ids.enumerated() { table[bucket(of: id)] = Int32(position) }
    }
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
    /// Producer ids to dense positions in `live` (and blocks of `rings`).
    // Unchecked exclusivity: these are touched on every idempotent append, only from the store's
    // thread, never while another access is open (the dynamic checks cost more than the work).
    @exclusivity(unchecked) private var slots = ProducerSlots(multiplier: UInt64.random(in: 1...UInt64.max))
    @exclusivity(unchecked) private var live: [LiveProducer] = []
    /// `window` entries per producer, at `position * window`: a ring of its latest batches. One
    /// flat array, so remembering a batch is a few stores (no object per producer to retain).
    @exclusivity(unchecked) private var rings: [RememberedBatch] = []
    /// Producers forgotten by eviction or expiry, newest last (at most `maxProducers`): a batch
    /// of one of them at sequence 0 and an epoch no newer cannot be told from its own retry, so it
    /// is refused (UNKNOWN_PRODUCER) instead of being taken for a new producer's first batch.
    private(set) var forgotten: Deque<ForgottenProducer> = []
    /// The position `check` found, for the `record` of the same batch that follows it.
    @exclusivity(unchecked) private var recent: (id: UInt64, position: Int) = (0, 0)

    /// A producer as the table keeps it; `ProducerState` is the same in a checkpoint's shape.
    private struct LiveProducer {
        var epoch: UInt16
        var nextSequence: UInt32
        var lastAppendMicros: UInt64
        /// Its ring: the oldest entry's index, and how many entries are in use.
        var head: Int32
        var count: Int32
    }

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

    @inline(__always)
    private func ringIndex(_ position: Int, _ entry: Int32) -> Int {
        var index = Int(live[position].head + entry)
        if index >= window { index -= window }
        return position * window + index
    }

    @inline(__always)
    private func find(_ id: UInt64) -> Int? {
        if recent.id == id, recent.position < live.count, slots.ids[recent.position] == id { return recent.position }
        guard let position = slots.find(id) else { return nil }
        recent = (id, position)
        return position
    }

    /// The common case, decided without building a `Check`: the producer's next batch, in its
    /// current epoch.
    @inline(__always)
    func isNext(_ stamp: ProducerStamp) -> Bool {
        guard let position = find(stamp.id) else { return false }
        let producer = live[position]
        return producer.epoch == stamp.epoch && producer.nextSequence == stamp.baseSequence
    }

    /// Judges a batch with producer fields (`stamp.id` is not 0) before it is placed.
    func check(_ stamp: ProducerStamp, recordCount: UInt32) -> Check {
        guard let position = find(stamp.id) else {
            // A producer's first batch in this log starts at sequence 0; a later one means the
            // log has forgotten it (expired, evicted) or never saw it. A forgotten producer's
            // batch at 0 may be a retry: it must come back under a newer epoch.
            guard stamp.baseSequence == 0, !forgotten.contains(where: { $0.id == stamp.id && $0.epoch >= stamp.epoch }) else {
                return .refused(.unknownProducer(producer: stamp.id, sequence: stamp.baseSequence))
            }
            return .write
        }
        let producer = live[position]
        if stamp.epoch < producer.epoch {
            return .refused(.producerFenced(producer: stamp.id, epoch: stamp.epoch, current: producer.epoch))
        }
        if stamp.epoch > producer.epoch {
            return stamp.baseSequence == 0
                ? .write : .refused(.outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: 0, epoch: stamp.epoch))
        }
        if stamp.baseSequence == producer.nextSequence { return .write }
        var entry = producer.count - 1
        while entry >= 0 {
            let earlier = rings[ringIndex(position, entry)]
            if earlier.baseSequence == stamp.baseSequence {
                guard earlier.recordCount == recordCount else {
                    return .refused(
                        .outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: producer.nextSequence, epoch: producer.epoch))
                }
                return .duplicate(earlier)
            }
            entry -= 1
        }
        // Sequences wrap at 2^31: behind the next one by at most half the space is a repeat.
        let behind = (producer.nextSequence &- stamp.baseSequence) & (Batch.sequenceModulus - 1)
        if behind > 0 && behind <= Batch.sequenceModulus / 2 {
            return .refused(.duplicateSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: producer.nextSequence, epoch: producer.epoch))
        }
        return .refused(.outOfOrderSequence(producer: stamp.id, sequence: stamp.baseSequence, expected: producer.nextSequence, epoch: producer.epoch))
    }

    /// Notes a batch that was placed (or, in recovery, found) at `offset`.
    func record(_ stamp: ProducerStamp, recordCount: UInt32, offset: LogOffset, length: Int, appendMicros: UInt64) {
        let batch = RememberedBatch(baseSequence: stamp.baseSequence, recordCount: recordCount, offset: offset, length: UInt32(length))
        let next = (stamp.baseSequence &+ recordCount) & (Batch.sequenceModulus - 1)
        let position: Int
        if let found = find(stamp.id) {
            position = found
            if live[position].epoch != stamp.epoch {
                live[position] = LiveProducer(epoch: stamp.epoch, nextSequence: 0, lastAppendMicros: 0, head: 0, count: 0)
            }
        } else {
            if live.count >= maxProducers { evictIdlest() }
            position = insert(stamp.id, LiveProducer(epoch: stamp.epoch, nextSequence: 0, lastAppendMicros: 0, head: 0, count: 0))
        }
        remember(batch, at: position)
        live[position].nextSequence = next
        live[position].lastAppendMicros = max(live[position].lastAppendMicros, appendMicros)
    }

    private func remember(_ batch: RememberedBatch, at position: Int) {
        if live[position].count == Int32(window) {
            rings[ringIndex(position, 0)] = batch
            live[position].head = live[position].head + 1 == Int32(window) ? 0 : live[position].head + 1
        } else {
            rings[ringIndex(position, live[position].count)] = batch
            live[position].count += 1
        }
    }

    private func insert(_ id: UInt64, _ producer: LiveProducer) -> Int {
        slots.insert(id)
        live.append(producer)
        rings.append(contentsOf: repeatElement(RememberedBatch(baseSequence: 0, recordCount: 0, offset: .zero, length: 0), count: window))
        return live.count - 1
    }

    private func remove(at position: Int) {
        slots.remove(at: position)
        let last = live.count - 1
        if position != last {
            live[position] = live[last]
            for entry in 0..<window { rings[position * window + entry] = rings[last * window + entry] }
        }
        live.removeLast()
        rings.removeLast(window)
    }

    private func evictIdlest() {
        guard let idlest = live.indices.min(by: { live[$0].lastAppendMicros < live[$1].lastAppendMicros }) else { return }
        forget(at: idlest)
    }

    /// Evicts or expires the producer at `position`, keeping a note that it was here.
    private func forget(at position: Int) {
        forgotten.append(ForgottenProducer(id: slots.ids[position], epoch: live[position].epoch))
        if forgotten.count > maxProducers { forgotten.removeFirst() }
        remove(at: position)
    }

    /// Drops the producer's remembered batches ending after `offset`; it owes the first of them
    /// again. Returns whether anything is left of it (batches, or a sequence other than 0).
    private func forget(after offset: LogOffset, at position: Int) -> Bool {
        while live[position].count > 0 {
            let newest = rings[ringIndex(position, live[position].count - 1)]
            guard newest.end > offset else { break }
            live[position].nextSequence = newest.baseSequence
            live[position].count -= 1
        }
        return live[position].count > 0 || live[position].nextSequence != 0
    }

    private func newestEnd(_ position: Int) -> LogOffset {
        live[position].count == 0 ? .zero : rings[ringIndex(position, live[position].count - 1)].end
    }

    /// Forgets the batches at and after `offset`, whose reservations were undone.
    func rewind(to offset: LogOffset) {
        var position = live.count - 1
        while position >= 0 {
            // A producer with nothing left in the log owes its first sequence again; its batches
            // below `offset` are out of the window, so nothing is lost by forgetting it.
            if newestEnd(position) > offset && !forget(after: offset, at: position) { remove(at: position) }
            position -= 1
        }
    }

    /// Forgets producers idle since before `nowMicros - expiryMicros`.
    func expire(nowMicros: UInt64) {
        guard expiryMicros > 0, nowMicros > expiryMicros else { return }
        let cutoff = nowMicros - expiryMicros
        var position = live.count - 1
        while position >= 0 {
            if live[position].lastAppendMicros < cutoff { forget(at: position) }
            position -= 1
        }
    }

    /// The table as it was when the log ended at `end`: the batches ending after it are left out
    /// (a checkpoint at `end` holds this; recovery replays the batches after it).
    func snapshot(endingAt end: LogOffset) -> [UInt64: ProducerState] {
        var snapshot: [UInt64: ProducerState] = [:]
        snapshot.reserveCapacity(live.count)
        for (position, id) in slots.ids.enumerated() {
            let producer = live[position]
            var state = ProducerState(
                epoch: producer.epoch, nextSequence: producer.nextSequence,
                batches: Deque((0..<producer.count).map { rings[ringIndex(position, $0)] }), lastAppendMicros: producer.lastAppendMicros)
            if (state.batches.last?.end ?? .zero) > end {
                state.forget(after: end)
                if state.batches.isEmpty && state.nextSequence == 0 { continue }
            }
            snapshot[id] = state
        }
        return snapshot
    }

    /// Starts from a checkpoint's snapshot (recovery), in id order.
    func restore(_ snapshot: [UInt64: ProducerState], forgotten: [ForgottenProducer] = []) {
        self.forgotten = Deque(forgotten.suffix(maxProducers))
        slots = ProducerSlots(multiplier: UInt64.random(in: 1...UInt64.max))
        live = []
        rings = []
        recent = (0, 0)
        for id in snapshot.keys.sorted() {
            let state = snapshot[id]!
            let position = insert(id, LiveProducer(epoch: state.epoch, nextSequence: state.nextSequence, lastAppendMicros: state.lastAppendMicros, head: 0, count: 0))
            // A window smaller than when the checkpoint was written keeps the newest batches.
            for batch in state.batches.suffix(window) { remember(batch, at: position) }
        }
    }

    var count: Int { live.count }

    /// Memory the table holds: what the documented bound counts.
    var memoryBytes: Int { live.count * (MemoryLayout<LiveProducer>.stride + 8 + 8 + window * MemoryLayout<RememberedBatch>.stride) }

    // MARK: In a checkpoint

    /// `u32 count`, then per producer `u64 id, u16 epoch, u16 batchCount, u32 nextSequence,
    /// u64 lastAppendMicros`, then its batches `u32 baseSequence, u32 recordCount, u64 offset,
    /// u32 length`, oldest first; in id order, so equal tables encode equally.
    static func encode(_ snapshot: [UInt64: ProducerState], into bytes: inout [UInt8]) {
        // Sized first and stored in place: a checkpoint can carry thousands of batches, and an
        // append per field was the larger part of its cost.
        let size = 4 + snapshot.values.reduce(0) { $0 + 24 + $1.batches.count * 20 }
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: size))
        bytes.withUnsafeMutableBytes { buffer in
            let out = buffer.baseAddress! + start
            var at = 0
            func put<T: FixedWidthInteger>(_ value: T) {
                out.storeLittleEndian(value, at: at)
                at += MemoryLayout<T>.size
            }
            put(UInt32(snapshot.count))
            for id in snapshot.keys.sorted() {
                let state = snapshot[id]!
                put(id)
                put(state.epoch)
                put(UInt16(state.batches.count))
                put(state.nextSequence)
                put(state.lastAppendMicros)
                for batch in state.batches {
                    put(batch.baseSequence)
                    put(batch.recordCount)
                    put(batch.offset.rawValue)
                    put(batch.length)
                }
            }
            precondition(at == size, "the producers' encoding is \(at) bytes, sized \(size)")
        }
    }

    /// `u32 count`, then `u64 id, u16 epoch, u16 0, u32 0` each, oldest first.
    static func encode(forgotten: [ForgottenProducer], into bytes: inout [UInt8]) {
        bytes.reserveCapacity(bytes.count + 4 + forgotten.count * 16)
        bytes.appendLittleEndian(UInt32(forgotten.count))
        for producer in forgotten {
            bytes.appendLittleEndian(producer.id)
            bytes.appendLittleEndian(producer.epoch)
            bytes.appendLittleEndian(UInt16(0))
            bytes.appendLittleEndian(UInt32(0))
        }
    }

    static func decodeForgotten(_ reader: FieldReader, at start: Int, end: Int) -> [ForgottenProducer]? {
        guard start + 4 <= end else { return nil }
        let count = Int(reader.u32(start))
        guard start + 4 + count * 16 == end else { return nil }
        return (0..<count).map { ForgottenProducer(id: reader.u64(start + 4 + $0 * 16), epoch: reader.u16(start + 12 + $0 * 16)) }
    }

    /// Decodes what `encode` wrote from `at`, and where it ends; nil when the bytes do not add up.
    static func decode(_ reader: FieldReader, at start: Int, end: Int) -> (producers: [UInt64: ProducerState], end: Int)? {
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
        return (snapshot, at)
    }
}
