import RingLogWire

/// Reading whole batches out of a contiguous run of stored log bytes, for reads and trims.
enum BatchWalk {
    enum Collected: Equatable {
        /// Whole batches from the target on, as a byte range of the run.
        case batches(Range<Int>)
        /// The run ends inside a header or the first batch; this many bytes from the run's start are needed.
        case needMore(bytesFromRunStart: Int)
    }

    /// Walks headers from `runStart` (a known batch start) to `target`, confirming a batch starts
    /// there, then takes whole batches: at least one, then more while they fit in `maxBytes` and
    /// end at or before `limit` (the committed end, or the segment's end).
    ///
    /// A damaged first batch is an error naming its offset and, where it can be found, the next
    /// batch's; a damaged later batch just ends the result before it, so the reader meets the
    /// error when it asks for that batch itself. With `anchors` (batch starts known without reading
    /// the data: the sparse index, the end of the data), a damaged header met while locating the
    /// target is stepped over (`nextBatch(after:)`), so the batches after it still serve.
    static func collect(
        run: UnsafeRawBufferPointer, runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int,
        verifyPayloads: Bool, anchors: KnownStarts? = nil
    ) -> Result<Collected, StorageError> {
        var index = 0
        var position = runStart
        while position < target {
            let headerLength = headerLength(in: run, at: index)
            guard index + headerLength <= run.count else { return .success(.needMore(bytesFromRunStart: index + headerLength)) }
            switch Batch.verifyStoredHeader(run.baseAddress! + index, expectedOffset: position, maxPayloadBytes: Int(UInt32.max)) {
            case .failure(let error):
                guard let anchors else {
                    return .failure(.corruption(offset: position, detail: "\(error) (while locating \(target))", nextOffset: nil))
                }
                switch nextBatch(after: position, in: run, runStart: runStart, anchor: anchors.after(position)) {
                case .needMore(let bytes): return .success(.needMore(bytesFromRunStart: bytes))
                case .found(let next):
                    // The damaged batch spans the target: no batch starts there.
                    if next > target { return .failure(.notBatchBoundary(target)) }
                    index += position.distance(to: next)
                    position = next
                }
            case .success(let header):
                index += header.totalBytes
                position = position.advanced(by: header.totalBytes)
            }
        }
        guard position == target else { return .failure(.notBatchBoundary(target)) }
        let start = index
        while position < limit {
            let first = index == start
            let headerLength = headerLength(in: run, at: index)
            guard index + headerLength <= run.count else {
                return first ? .success(.needMore(bytesFromRunStart: index + headerLength)) : .success(.batches(start..<index))
            }
            let header: BatchHeader
            switch Batch.verifyStoredHeader(run.baseAddress! + index, expectedOffset: position, maxPayloadBytes: position.distance(to: limit)) {
            case .failure(let error):
                guard first else { return .success(.batches(start..<index)) }
                guard let anchors else { return .failure(.corruption(offset: position, detail: error.description, nextOffset: nil)) }
                switch nextBatch(after: position, in: run, runStart: runStart, anchor: anchors.after(position)) {
                case .needMore(let bytes): return .success(.needMore(bytesFromRunStart: bytes))
                case .found(let next): return .failure(.corruption(offset: position, detail: error.description, nextOffset: next))
                }
            case .success(let parsed): header = parsed
            }
            let total = header.totalBytes
            if position.advanced(by: total) > limit {
                if first {
                    return .failure(.corruption(offset: position, detail: "batch runs past the end of committed data", nextOffset: nil))
                }
                break
            }
            if !first && index + total - start > maxBytes { break }
            guard index + total <= run.count else {
                return first ? .success(.needMore(bytesFromRunStart: index + total)) : .success(.batches(start..<index))
            }
            if verifyPayloads, let error = Batch.verifyPayload(run.baseAddress! + index, header: header) {
                if first {
                    // The header CRC held, so its length is right: the next batch follows it.
                    return .failure(.corruption(offset: position, detail: error.description, nextOffset: position.advanced(by: total)))
                }
                break
            }
            index += total
            position = position.advanced(by: total)
            if index - start >= maxBytes { break }
        }
        return .success(.batches(start..<index))
    }

    /// Batch starts known independently of the bytes being walked: a segment's sparse-index
    /// entries, and the end of the data that may be read.
    struct KnownStarts {
        let segmentBase: LogOffset
        let positions: [UInt32]
        let limit: LogOffset

        /// The first known start after `offset` (at most `limit`).
        func after(_ offset: LogOffset) -> LogOffset {
            let relative = UInt32(clamping: segmentBase.distance(to: offset))
            let next = positions.partitionPoint { $0 <= relative }
            guard next < positions.count else { return limit }
            return min(segmentBase.advanced(by: Int(positions[next])), limit)
        }
    }

    enum Resync: Equatable {
        case found(LogOffset)
        /// The run must reach this far from its start to look.
        case needMore(bytesFromRunStart: Int)
    }

    /// Where the batch after a damaged header at `damaged` starts. `anchor` is a batch start known
    /// independently of the damaged bytes (the next sparse-index entry, or the end of the data), so
    /// a candidate is believed only if walking on from it by verified headers lands exactly there:
    ///
    /// 1. the damaged header's own length, when the client's CRC over the header's client part and
    ///    the payload still matches (then the damage was in the server's fields and the length is
    ///    proven);
    /// 2. else the first position after it holding a batch whose header and payload verify at that
    ///    offset and whose walk reaches the anchor;
    /// 3. else the anchor itself.
    ///
    /// A scan can in principle be fooled by a batch forged inside the damaged batch's own payload
    /// (offsets and CRCs are predictable) that also chains to the anchor; the damage is reported
    /// either way, and the reader chooses to skip it.
    static func nextBatch(after damaged: LogOffset, in run: UnsafeRawBufferPointer, runStart: LogOffset, anchor: LogOffset) -> Resync {
        precondition(anchor > damaged, "the anchor lies after the damage")
        let needed = runStart.distance(to: anchor)
        guard run.count >= needed else { return .needMore(bytesFromRunStart: needed) }
        let base = run.baseAddress!
        let at = runStart.distance(to: damaged)
        if at + headerLength(in: run, at: at) <= needed, let claim = Batch.claimedLength(base + at) {
            let end = damaged.advanced(by: claim.format.headerBytes + claim.payloadLength)
            if end <= anchor, Batch.clientChecksum(base + at, format: claim.format, payloadLength: claim.payloadLength) == claim.crc,
                chainReaches(anchor, from: end, in: run, runStart: runStart)
            {
                return .found(end)
            }
        }
        var candidate = at + 1
        while candidate + Batch.minHeaderBytes <= needed {
            defer { candidate += 1 }
            guard let format = Batch.Format.of(magic: base.loadLittleEndian(at: candidate, as: UInt32.self)),
                candidate + format.headerBytes <= needed
            else { continue }
            let offset = runStart.advanced(by: candidate)
            guard case .success(let header) = Batch.verifyStoredHeader(
                base + candidate, expectedOffset: offset, maxPayloadBytes: offset.distance(to: anchor) - format.headerBytes),
                Batch.verifyPayload(base + candidate, header: header) == nil,
                chainReaches(anchor, from: offset.advanced(by: header.totalBytes), in: run, runStart: runStart)
            else { continue }
            return .found(offset)
        }
        return .found(anchor)
    }

    /// Recovery's version of `nextBatch`, for rebuilding a lost index where no later batch start
    /// is known: the damaged header's own length when the client's CRC proves it, else the first
    /// position in `run` holding a batch that verifies whole at its offset and is followed by a
    /// verified header (or ends exactly at `limit`). Nil when `run` holds no such batch.
    static func nextVerifiedBatch(after damaged: LogOffset, in run: UnsafeRawBufferPointer, runStart: LogOffset, limit: LogOffset) -> LogOffset? {
        let base = run.baseAddress!
        func followedWell(_ end: LogOffset) -> Bool {
            end == limit || (runStart.distance(to: end) + headerLength(in: run, at: runStart.distance(to: end)) <= run.count
                && (try? Batch.verifyStoredHeader(base + runStart.distance(to: end), expectedOffset: end, maxPayloadBytes: end.distance(to: limit)).get()) != nil)
        }
        let at = runStart.distance(to: damaged)
        if at + headerLength(in: run, at: at) <= run.count, let claim = Batch.claimedLength(base + at) {
            let total = claim.format.headerBytes + claim.payloadLength
            let end = damaged.advanced(by: total)
            if end <= limit, at + total <= run.count,
                Batch.clientChecksum(base + at, format: claim.format, payloadLength: claim.payloadLength) == claim.crc, followedWell(end)
            {
                return end
            }
        }
        var candidate = at + 1
        while candidate + Batch.minHeaderBytes <= run.count {
            defer { candidate += 1 }
            guard let format = Batch.Format.of(magic: base.loadLittleEndian(at: candidate, as: UInt32.self)),
                candidate + format.headerBytes <= run.count
            else { continue }
            let offset = runStart.advanced(by: candidate)
            guard offset < limit,
                case .success(let header) = Batch.verifyStoredHeader(base + candidate, expectedOffset: offset, maxPayloadBytes: offset.distance(to: limit) - format.headerBytes),
                candidate + header.totalBytes <= run.count, Batch.verifyPayload(base + candidate, header: header) == nil,
                followedWell(offset.advanced(by: header.totalBytes))
            else { continue }
            return offset
        }
        return nil
    }

    /// Whether batches with verified headers lead from `start` exactly to `anchor`.
    private static func chainReaches(_ anchor: LogOffset, from start: LogOffset, in run: UnsafeRawBufferPointer, runStart: LogOffset) -> Bool {
        var position = start
        while position < anchor {
            let at = runStart.distance(to: position)
            let headerLength = headerLength(in: run, at: at)
            guard position.distance(to: anchor) >= headerLength else { return false }
            guard case .success(let header) = Batch.verifyStoredHeader(
                run.baseAddress! + at, expectedOffset: position, maxPayloadBytes: position.distance(to: anchor) - headerLength)
            else { return false }
            position = position.advanced(by: header.totalBytes)
        }
        return position == anchor
    }

    /// The header length the bytes at `index` of `run` call for (format 1's when fewer than 4 remain).
    private static func headerLength(in run: UnsafeRawBufferPointer, at index: Int) -> Int {
        guard let base = run.baseAddress, index < run.count else { return Batch.minHeaderBytes }
        return Batch.headerLength(at: base + index, available: run.count - index)
    }
}
