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
    /// A damaged first batch is an error naming its offset; a damaged later batch just ends the
    /// result before it, so the reader meets the error when it asks for that batch itself.
    static func collect(
        run: UnsafeRawBufferPointer, runStart: LogOffset, target: LogOffset, limit: LogOffset, maxBytes: Int,
        verifyPayloads: Bool
    ) -> Result<Collected, StorageError> {
        var index = 0
        var position = runStart
        while position < target {
            guard index + Batch.headerBytes <= run.count else { return .success(.needMore(bytesFromRunStart: index + Batch.headerBytes)) }
            switch Batch.verifyStoredHeader(run.baseAddress! + index, expectedOffset: position, maxPayloadBytes: Int(UInt32.max)) {
            case .failure(let error):
                return .failure(.corruption(offset: position, detail: "\(error) (while locating \(target))", nextOffset: nil))
            case .success(let header):
                index += header.totalBytes
                position = position.advanced(by: header.totalBytes)
            }
        }
        guard position == target else { return .failure(.notBatchBoundary(target)) }
        let start = index
        while position < limit {
            let first = index == start
            guard index + Batch.headerBytes <= run.count else {
                return first ? .success(.needMore(bytesFromRunStart: index + Batch.headerBytes)) : .success(.batches(start..<index))
            }
            let header: BatchHeader
            switch Batch.verifyStoredHeader(run.baseAddress! + index, expectedOffset: position, maxPayloadBytes: position.distance(to: limit)) {
            case .failure(let error):
                if first { return .failure(.corruption(offset: position, detail: error.description, nextOffset: nil)) }
                return .success(.batches(start..<index))
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
}
