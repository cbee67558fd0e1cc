/// Where batches start inside one segment, sampled: the first batch, then the first batch at or
/// after every `intervalBytes` since the previous entry.
///
/// That rule is what makes boundary checks cheap. A batch start `p` that is not an entry lies less
/// than `intervalBytes` after the greatest entry at or below it, so an offset further than that from
/// its floor entry cannot be a batch start, and one nearer is confirmed by walking batch headers
/// from the floor entry, which reads less than `intervalBytes` plus one header.
struct SparseIndex: Equatable {
    /// Positions relative to the segment base, strictly increasing.
    private(set) var positions: [UInt32] = []
    let intervalBytes: UInt32

    init(intervalBytes: UInt32, positions: [UInt32] = []) {
        precondition(intervalBytes > 0)
        self.intervalBytes = intervalBytes
        self.positions = positions
    }

    /// Records a batch that starts at `position`, appended in order after every earlier batch.
    mutating func noteBatch(at position: UInt32) {
        if let last = positions.last {
            precondition(position > last, "batches are noted in order")
            if position - last < intervalBytes { return }
        }
        positions.append(position)
    }

    /// Forgets entries at or past `position`, after the batches there were cut.
    mutating func removeEntries(from position: UInt32) {
        while let last = positions.last, last >= position { positions.removeLast() }
    }

    /// Keeps the first `count` entries.
    mutating func truncate(toCount count: Int) {
        positions.removeLast(max(0, positions.count - count))
    }

    /// The greatest entry at or below `position`.
    func floor(_ position: UInt32) -> UInt32? {
        let above = positions.partitionPoint { $0 <= position }
        return above == 0 ? nil : positions[above - 1]
    }

    enum Boundary: Equatable {
        /// `position` is an entry, so a batch starts there.
        case known
        /// Walk batch headers from this entry to see whether one starts at `position`.
        case walk(from: UInt32)
        /// No batch can start at `position`.
        case impossible
    }

    func boundary(at position: UInt32) -> Boundary {
        guard let entry = floor(position) else { return .impossible }
        if entry == position { return .known }
        return position - entry >= intervalBytes ? .impossible : .walk(from: entry)
    }

    /// Checks a loaded entry list: increasing, starting at 0, every entry inside `limit`, and spaced
    /// by the rule (no two entries nearer than the interval).
    static func isPlausible(_ positions: [UInt32], intervalBytes: UInt32, limit: UInt32) -> Bool {
        guard let first = positions.first else { return true }
        guard first == 0 else { return false }
        for (previous, next) in zip(positions, positions.dropFirst()) where next <= previous || next - previous < intervalBytes {
            return false
        }
        return positions.last! < limit
    }
}
