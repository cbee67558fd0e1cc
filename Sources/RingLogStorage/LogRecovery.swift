import Glibc
import RingLogWire

/// What opening a log found and did.
public struct RecoveryReport: Sendable, CustomStringConvertible {
    public struct Cut: Sendable, Equatable {
        /// The log now ends here; bytes at and after it were discarded.
        public var offset: LogOffset
        public var reason: String
        /// Later segment files deleted because they followed the cut.
        public var segmentsDiscarded: Int
    }

    public struct Corruption: Sendable, Equatable {
        public var offset: LogOffset
        public var file: String
        public var position: Int64
        public var detail: String
    }

    public var logName: String
    public var logID: LogID
    public var epoch: UInt32 = 0
    public var segments = 0
    public var startOffset = LogOffset.zero
    public var committedEnd = LogOffset.zero
    /// Where the scan began: the checkpoint, or the first segment when there was none.
    public var scanFrom = LogOffset.zero
    public var cleanShutdown = false
    public var scannedBytes = 0
    public var scannedBatches = 0
    public var cut: Cut?
    /// Damage found below the checkpoint. It is reported, never truncated; reads of it fail.
    public var corruption: [Corruption] = []
    /// Segments whose sparse index had to be rebuilt by scanning.
    public var rebuiltIndexes: [LogOffset] = []
    /// Cursors found in the log's cursors file.
    public var cursors = 0
    /// Idempotent producers the log remembers after recovery.
    public var producers = 0
    public var durationMicros: UInt64 = 0

    public var description: String {
        var text = "log \(logName): start \(startOffset), committed end \(committedEnd), \(segments) segment(s), epoch \(epoch)"
        text += cleanShutdown ? ", clean shutdown" : ", scanned \(scannedBytes) bytes (\(scannedBatches) batches) from \(scanFrom)"
        if let cut { text += "; CUT at \(cut.offset): \(cut.reason)" + (cut.segmentsDiscarded > 0 ? " (\(cut.segmentsDiscarded) later segment(s) removed)" : "") }
        for damage in corruption { text += "; CORRUPTION at \(damage.offset) (\(damage.file) position \(damage.position)): \(damage.detail)" }
        if !rebuiltIndexes.isEmpty { text += "; rebuilt index of segment(s) \(rebuiltIndexes.map(\.description).joined(separator: ", "))" }
        return text + "; took \(durationMicros) µs"
    }
}

/// Opening a log after a clean stop or a crash.
///
/// Sealed segments below the checkpoint are trusted as they are: their indexes are loaded, their
/// data is not read. From the checkpoint on, every batch is verified (magic, header CRC, offset,
/// epoch, payload CRC); the first one that fails ends the log there, and segments after the cut
/// are removed. So restart time depends on the bytes written since the last checkpoint, not on
/// the size of the log. The recovered tail is fdatasynced and a new checkpoint, with the next
/// epoch, is written before the log accepts appends.
struct LogRecovery {
    let directory: CPath
    let disk: DiskIO
    let configuration: StoreConfiguration
    /// The log's segment size: the last segment's capacity, however much of it is allocated.
    let segmentBytes: Int
    var report: RecoveryReport
    private var scratch: OwnedBytes
    /// The first read error met while scanning; recovery fails with it.
    private var readFailure: StorageError?
    /// Rebuilt as the checkpoint left them plus every batch the tail scan keeps.
    private let producers: ProducerTable
    private var nextRecord: UInt64 = 0

    private init(directory: CPath, disk: DiskIO, configuration: StoreConfiguration, meta: LogMeta) {
        self.directory = directory
        self.disk = disk
        self.configuration = configuration
        segmentBytes = meta.settings.segmentBytes
        report = RecoveryReport(logName: meta.name, logID: meta.logID)
        scratch = OwnedBytes(uninitializedCount: max(8 << 20, 2 * configuration.maxBatchBytes))
        producers = configuration.makeProducerTable()
    }

    /// A segment file found on disk, before it becomes a `Segment`.
    private struct Found {
        var base: LogOffset
        var fd: Int32
        var fileBytes: Int
    }

    static func recover(directory: CPath, context: LogContext, disk: DiskIO) -> Result<(Log, RecoveryReport), StorageError> {
        let startedNanos = context.environment.monotonicNanos()
        let meta: LogMeta
        switch disk.readSmallFile(directory.appending(LogFileNames.meta)) {
        case .failure(let error): return .failure(error)
        case .success(let bytes):
            guard let bytes, let decoded = LogMeta(decoding: bytes) else {
                return .failure(.storageFailed("\(directory)/\(LogFileNames.meta) is missing or damaged"))
            }
            meta = decoded
        }
        var recovery = LogRecovery(directory: directory, disk: disk, configuration: context.configuration, meta: meta)
        return recovery.run(meta: meta, context: context).map { log in
            recovery.report.durationMicros = (context.environment.monotonicNanos() &- startedNanos) / 1000
            context.logger.info("recovered log", metadata: ["report": "\(recovery.report)"])
            return (log, recovery.report)
        }
    }

    private mutating func run(meta: LogMeta, context: LogContext) -> Result<Log, StorageError> {
        let checkpoint: Checkpoint?
        switch readCheckpoint(meta: meta) {
        case .failure(let error): return .failure(error)
        case .success(let found): checkpoint = found
        }
        // A format-1 checkpoint predates record numbers: they count from 0 at its offset.
        nextRecord = checkpoint?.nextRecord ?? 0
        producers.restore(checkpoint?.producers ?? [:], forgotten: checkpoint?.forgottenProducers ?? [])
        var found: [Found]
        switch openSegments() {
        case .failure(let error): return .failure(error)
        case .success(let segments): found = segments
        }
        if found.isEmpty {
            guard checkpoint.map({ $0.checkpointOffset == $0.startOffset }) ?? true else {
                return .failure(.storageFailed("no segment files in \(directory), but its checkpoint records data"))
            }
            switch createFirstSegment(at: checkpoint?.startOffset ?? .zero, bytes: configuration.initialAllocation(segmentBytes: meta.settings.segmentBytes)) {
            case .failure(let error): return .failure(error)
            case .success(let segment): found = [segment]
            }
        }
        let startOffset = max(checkpoint?.startOffset ?? found[0].base, found[0].base)
        found = dropSegmentsBelow(startOffset, found)
        guard found[0].base <= startOffset else {
            return .failure(.storageFailed("log \(meta.name) starts at \(startOffset) but its first segment begins at \(found[0].base)"))
        }
        let scanFrom = max(checkpoint?.checkpointOffset ?? found[0].base, found[0].base)
        guard scanFrom <= found[found.count - 1].base.advanced(by: found[found.count - 1].fileBytes) else {
            return .failure(.storageFailed("the checkpoint of \(meta.name) points past its last segment"))
        }
        report.scanFrom = scanFrom
        report.cleanShutdown = checkpoint?.clean ?? false
        let checkpointSegment = found.lastIndex { $0.base <= scanFrom }!
        var segments = trustedSegments(found[..<checkpointSegment], followedBy: found[checkpointSegment].base)
        let (tailSegments, maxEpoch) = scanTail(
            Array(found[checkpointSegment...]), from: scanFrom, requiredEpoch: checkpoint?.epoch)
        segments.append(contentsOf: tailSegments)
        if let readFailure { return .failure(readFailure) }
        for segment in tailSegments {
            if case .failure(let error) = disk.run(.fdatasync(fd: segment.fd)) { return .failure(error) }
        }
        return makeLog(meta: meta, context: context, segments: segments, startOffset: startOffset, scanFrom: scanFrom,
            epoch: max(checkpoint?.epoch ?? 0, maxEpoch) + 1)
    }

    private mutating func makeLog(
        meta: LogMeta, context: LogContext, segments: [Segment], startOffset: LogOffset, scanFrom: LogOffset, epoch: UInt32
    ) -> Result<Log, StorageError> {
        let opened = disk.perform(.open(path: directory, flags: O_RDONLY | O_DIRECTORY | O_CLOEXEC, mode: 0))
        guard opened >= 0 else { return .failure(.io(operation: "open", errno: Int32(-opened), detail: directory.string)) }
        let end = segments[segments.count - 1].dataEnd
        let state = LogState(
            meta: meta, epoch: epoch, directory: directory, directoryFD: Int32(opened), segments: segments,
            positions: LogPositions(start: startOffset, end: end), producers: producers)
        state.lastAppendMicros = segments.map(\.maxAppendTimeMicros).max() ?? 0
        state.nextRecord = nextRecord
        state.committedNextRecord = nextRecord
        let now = context.environment.wallMicros()
        producers.expire(nowMicros: now)
        report.producers = producers.count
        // The newer intact version of the two slots; a torn one (the write a crash interrupted)
        // fails its checksum and the other, the version before, stands.
        var cursors: (cursors: [String: CursorPosition], sequence: UInt64) = ([:], 0)
        var slotBytes = 0
        for slot in 0..<2 {
            switch disk.readSmallFile(directory.appending(LogFileNames.cursorSlot(slot)), limit: 64 << 20) {
            case .failure(let error): return .failure(error)
            case .success(nil): continue
            case .success(let bytes?):
                // Larger than any version this server writes: refuse rather than start without
                // the cursors (and overwrite one of their copies).
                guard bytes.count < 64 << 20 else {
                    return .failure(.storageFailed("\(directory)/\(LogFileNames.cursorSlot(slot)) is larger than any cursors version (64 MiB or more)"))
                }
                slotBytes += bytes.count
                if let version = CursorsFile.decode(bytes), version.sequence > cursors.sequence { cursors = version }
            }
        }
        if slotBytes > 0 && cursors.sequence == 0 {
            context.logger.warning("no intact version of the cursors was found; starting without cursors", metadata: ["log": "\(meta.name)"])
        }
        report.cursors = cursors.cursors.count
        let log = Log(state: state, context: context, checkpointOffset: scanFrom, nowMicros: now, cursors: cursors)
        // Persist the new epoch and move the checkpoint to the verified, now synced, end.
        let plan = CheckpointPlan(state: state, desiredStart: startOffset, nowMicros: now, clean: false)
        if case .failure(let error) = plan.script.run(on: disk) { return .failure(error) }
        log.checkpointFinished(plan, .success(()))
        report.epoch = epoch
        report.segments = segments.count
        report.startOffset = startOffset
        report.committedEnd = end
        return .success(log)
    }

    // MARK: Files

    private func readCheckpoint(meta: LogMeta) -> Result<Checkpoint?, StorageError> {
        switch disk.readSmallFile(directory.appending(LogFileNames.checkpoint), limit: Checkpoint.maxBytes) {
        case .failure(let error): return .failure(error)
        case .success(nil): return .success(nil)
        case .success(let bytes?):
            guard let checkpoint = Checkpoint(decoding: bytes) else { return .success(nil) }
            guard checkpoint.logID == meta.logID else {
                return .failure(.storageFailed("\(directory)/checkpoint belongs to log id \(checkpoint.logID), not \(meta.logID)"))
            }
            return .success(checkpoint)
        }
    }

    /// Opens every segment file, sorted by base, and removes leftovers of interrupted steps.
    private func openSegments() -> Result<[Found], StorageError> {
        let names: [String]
        switch disk.listDirectory(directory) {
        case .failure(let error): return .failure(error)
        case .success(let listed): names = listed
        }
        for leftover in names where LogFileNames.isSpare(leftover) || leftover == LogFileNames.checkpointTemporary {
            _ = disk.perform(.unlink(path: directory.appending(leftover), isDirectory: false))
        }
        var found: [Found] = []
        for base in names.compactMap(LogFileNames.segmentBase(fromFileName:)).sorted() {
            let path = directory.appending(LogFileNames.segment(base))
            switch disk.run(.open(path: path, flags: O_RDWR | O_CLOEXEC, mode: 0)) {
            case .failure(let error): return .failure(error)
            case .success(let fd):
                switch disk.fileSize(fd: Int32(fd)) {
                case .failure(let error): return .failure(error)
                case .success(let size): found.append(Found(base: base, fd: Int32(fd), fileBytes: Int(size)))
                }
            }
        }
        return .success(found)
    }

    private func createFirstSegment(at base: LogOffset, bytes: Int) -> Result<Found, StorageError> {
        let path = directory.appending(LogFileNames.segment(base))
        return disk.run(.open(path: path, flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o644)).flatMap { fd in
            disk.run(.fallocate(fd: Int32(fd), offset: 0, length: Int64(bytes))).map { _ in Found(base: base, fd: Int32(fd), fileBytes: bytes) }
        }
    }

    /// Removes segments wholly below the start: a trim whose checkpoint landed but whose unlinks
    /// did not. The last segment always stays.
    private func dropSegmentsBelow(_ start: LogOffset, _ found: [Found]) -> [Found] {
        var kept = found
        while kept.count > 1 && kept[1].base <= start {
            let doomed = kept.removeFirst()
            _ = disk.perform(.close(fd: doomed.fd))
            _ = disk.perform(.unlink(path: directory.appending(LogFileNames.segment(doomed.base)), isDirectory: false))
            _ = disk.perform(.unlink(path: directory.appending(LogFileNames.index(doomed.base)), isDirectory: false))
        }
        return kept
    }

    // MARK: Below the checkpoint

    /// Segments sealed before the checkpoint: their end is the next segment's base and their
    /// index comes from the `.idx` file (rebuilt by scanning only if that file is unusable).
    private mutating func trustedSegments(_ found: ArraySlice<Found>, followedBy nextBase: LogOffset) -> [Segment] {
        var segments: [Segment] = []
        for (position, file) in zip(found.indices, found) {
            let dataEnd = position + 1 < found.endIndex ? found[position + 1].base : nextBase
            let segment = Segment(
                base: file.base, fileBytes: file.fileBytes, allocatedBytes: file.fileBytes, fd: file.fd, dataEnd: dataEnd, syncedEnd: dataEnd,
                nameDurable: true, index: SparseIndex(intervalBytes: UInt32(configuration.indexIntervalBytes)))
            segment.sealed = true
            if let (index, header) = loadIndex(file, limit: dataEnd), header.dataEnd == dataEnd {
                segment.index = index
                segment.maxAppendTimeMicros = header.maxAppendTimeMicros
                segment.persistedEntryCount = index.positions.count
                segment.persistedSealed = header.sealed
                segment.persistedDataEnd = header.dataEnd
            } else {
                rebuildIndex(segment, upTo: dataEnd)
            }
            segments.append(segment)
        }
        return segments
    }

    /// The `.idx` file's entries below `limit`, with its header, if the file is intact and belongs
    /// to this segment. The header's `dataEnd` says how far its entries reach; the caller decides
    /// whether that is far enough.
    private func loadIndex(_ file: Found, limit: LogOffset) -> (SparseIndex, IndexFileHeader)? {
        guard case .success(let bytes?) = disk.readSmallFile(directory.appending(LogFileNames.index(file.base)), limit: 64 << 20),
            let header = IndexFileHeader(decoding: bytes), header.segmentBase == file.base, header.dataEnd >= file.base
        else { return nil }
        let available = min(Int(header.entryCount), (bytes.count - IndexFileHeader.encodedBytes) / 4)
        let end = min(limit, header.dataEnd)
        let positionLimit = UInt32(clamping: file.base.distance(to: end))
        var positions: [UInt32] = []
        bytes.withUnsafeBytes { raw in
            for entry in 0..<available {
                let position: UInt32 = raw.loadLittleEndian(at: IndexFileHeader.encodedBytes + entry * 4)
                if position >= positionLimit { break }
                positions.append(position)
            }
        }
        guard SparseIndex.isPlausible(positions, intervalBytes: header.intervalBytes, limit: max(positionLimit, 1)) else { return nil }
        return (SparseIndex(intervalBytes: header.intervalBytes, positions: positions), header)
    }

    /// Rebuilds a segment's index below `end` by reading it. Damage found here is below the
    /// checkpoint: reported, stepped over when the header still gives the length, never cut.
    private mutating func rebuildIndex(_ segment: Segment, upTo end: LogOffset) {
        report.rebuiltIndexes.append(segment.base)
        var index = SparseIndex(intervalBytes: UInt32(configuration.indexIntervalBytes))
        let result = scan(fd: segment.fd, base: segment.base, from: segment.base, limit: end, index: &index, mode: .rebuild)
        segment.index = index
        segment.maxAppendTimeMicros = result.maxAppendTimeMicros
        if result.end < end {
            recordCorruption(segment: segment.base, at: result.end, detail: "cannot locate batches from here to \(end): \(result.stop)")
        }
    }

    private mutating func recordCorruption(segment base: LogOffset, at offset: LogOffset, detail: String) {
        report.corruption.append(
            RecoveryReport.Corruption(
                offset: offset, file: "\(directory)/\(LogFileNames.segment(base))", position: Int64(base.distance(to: offset)), detail: detail))
    }

    // MARK: From the checkpoint on

    /// Verifies every batch from `from`, segment after segment, and cuts at the first that fails.
    private mutating func scanTail(_ found: [Found], from: LogOffset, requiredEpoch: UInt32?) -> ([Segment], UInt32) {
        var segments: [Segment] = []
        var maxEpoch: UInt32 = 0
        for (position, file) in found.enumerated() {
            var index = SparseIndex(intervalBytes: UInt32(configuration.indexIntervalBytes))
            var persisted = 0
            var persistedDataEnd = file.base
            // The newest append time below the checkpoint, so age retention sees the whole segment.
            var maxAppendTimeBelow: UInt64 = 0
            if position == 0 && from > file.base {
                if let (loaded, header) = loadIndex(file, limit: from) {
                    index = loaded
                    persisted = loaded.positions.count
                    persistedDataEnd = header.dataEnd
                    maxAppendTimeBelow = header.maxAppendTimeMicros
                    if header.dataEnd < from {
                        // The header was last written at an earlier checkpoint (no index entry was
                        // added since): extend the index over the bytes in between, which are
                        // fewer than one index interval plus one batch.
                        let extended = scan(fd: file.fd, base: file.base, from: header.dataEnd, limit: from, index: &index, mode: .rebuild)
                        maxAppendTimeBelow = max(maxAppendTimeBelow, extended.maxAppendTimeMicros)
                        if extended.end < from {
                            recordCorruption(segment: file.base, at: extended.end, detail: "cannot locate batches before the checkpoint: \(extended.stop)")
                        }
                    }
                } else {
                    report.rebuiltIndexes.append(file.base)
                    let rebuilt = scan(fd: file.fd, base: file.base, from: file.base, limit: from, index: &index, mode: .rebuild)
                    maxAppendTimeBelow = rebuilt.maxAppendTimeMicros
                    if rebuilt.end < from {
                        recordCorruption(segment: file.base, at: rebuilt.end, detail: "cannot locate batches before the checkpoint: \(rebuilt.stop)")
                    }
                }
            }
            let start = position == 0 ? from : file.base
            let result = scan(
                fd: file.fd, base: file.base, from: start, limit: file.base.advanced(by: file.fileBytes), index: &index,
                mode: .tail(requiredEpoch: requiredEpoch))
            if readFailure != nil { return (segments, maxEpoch) }
            maxEpoch = max(maxEpoch, result.maxEpoch)
            // A segment that does not end where the next begins is the active one (the last, or the
            // one a cut left last): it goes on filling up to the log's segment size, whatever part
            // of it its file was allocated so far (allocate-ahead grows it in steps).
            let endsSealed = position + 1 < found.count && found[position + 1].base == result.end
            let segment = Segment(
                base: file.base, fileBytes: endsSealed ? file.fileBytes : max(file.fileBytes, segmentBytes),
                allocatedBytes: file.fileBytes, fd: file.fd, dataEnd: result.end, syncedEnd: result.end, nameDurable: true, index: index)
            segment.maxAppendTimeMicros = max(result.maxAppendTimeMicros, maxAppendTimeBelow)
            segment.persistedEntryCount = persisted
            segment.persistedDataEnd = persistedDataEnd
            segments.append(segment)
            let nextBase = position + 1 < found.count ? found[position + 1].base : nil
            if nextBase == result.end {
                segment.sealed = true
                continue
            }
            let discarded = Array(found[(position + 1)...])
            if case .invalid(let reason) = result.stop {
                report.cut = RecoveryReport.Cut(offset: result.end, reason: reason, segmentsDiscarded: discarded.count)
            } else if let nextBase {
                report.cut = RecoveryReport.Cut(
                    offset: result.end, reason: "data ends at \(result.end) but the next segment starts at \(nextBase)",
                    segmentsDiscarded: discarded.count)
            }
            for doomed in discarded {
                _ = disk.perform(.close(fd: doomed.fd))
                _ = disk.perform(.unlink(path: directory.appending(LogFileNames.segment(doomed.base)), isDirectory: false))
                _ = disk.perform(.unlink(path: directory.appending(LogFileNames.index(doomed.base)), isDirectory: false))
            }
            break
        }
        return (segments, maxEpoch)
    }

    // MARK: Scanning

    enum ScanMode {
        /// After the checkpoint: stop at the first batch that fails any check. Every batch must carry
        /// `requiredEpoch` (the checkpoint's), or, without a checkpoint, a non-decreasing epoch.
        case tail(requiredEpoch: UInt32?)
        /// Below the checkpoint: step over a batch whose payload is damaged if its header is intact.
        case rebuild
    }

    enum Stop: CustomStringConvertible {
        case reachedLimit
        /// All-zero bytes: the unused, preallocated part of the segment.
        case cleanEnd
        case invalid(String)

        var description: String {
            switch self {
            case .reachedLimit: "reached the limit"
            case .cleanEnd: "preallocated space"
            case .invalid(let reason): reason
            }
        }
    }

    struct ScanResult {
        var end: LogOffset
        var stop: Stop
        var maxEpoch: UInt32 = 0
        var maxAppendTimeMicros: UInt64 = 0
    }

    /// Reads from `from` towards `limit` in large chunks, verifying each batch and noting it in `index`.
    private mutating func scan(fd: Int32, base: LogOffset, from: LogOffset, limit: LogOffset, index: inout SparseIndex, mode: ScanMode) -> ScanResult {
        var result = ScanResult(end: from, stop: .reachedLimit)
        var epochFloor: UInt32 = 0
        var chunkStart = from
        var chunkBytes = 0
        var position = from
        // Start small (a short or clean tail reads little) and grow to the scratch size.
        var readSize = 256 << 10
        scanning: while position < limit {
            var offsetInChunk = chunkStart.distance(to: position)
            var headerLength = Batch.headerLength(at: scratch.bytes.baseAddress! + offsetInChunk, available: chunkBytes - offsetInChunk)
            if offsetInChunk + headerLength > chunkBytes {
                chunkBytes = fill(fd: fd, base: base, from: position, limit: limit, upTo: readSize)
                readSize = min(readSize * 4, scratch.count)
                chunkStart = position
                offsetInChunk = 0
                headerLength = Batch.headerLength(at: scratch.bytes.baseAddress!, available: chunkBytes)
                if chunkBytes < headerLength {
                    let clean = isZero(0, chunkBytes)
                    result.stop = clean ? .cleanEnd : .invalid("file ends inside a batch header at \(position)")
                    break scanning
                }
            }
            if isZero(offsetInChunk, headerLength) {
                result.stop = .cleanEnd
                break scanning
            }
            let remaining = position.distance(to: limit) - headerLength
            let header: BatchHeader
            switch Batch.verifyStoredHeader(scratch.bytes.baseAddress! + offsetInChunk, expectedOffset: position, maxPayloadBytes: remaining) {
            case .failure(let error):
                // Below the checkpoint, a damaged header is stepped over when the batch after it
                // can be found in what was read, so the index covers the rest of the segment.
                let chunk = UnsafeRawBufferPointer(rebasing: scratch.bytes[0..<chunkBytes])
                if case .rebuild = mode, let next = BatchWalk.nextVerifiedBatch(after: position, in: chunk, runStart: chunkStart, limit: limit) {
                    recordCorruption(segment: base, at: position, detail: "\(error); the next batch starts at \(next)")
                    // A batch does start here (the previous one ended here): the index says so,
                    // so a read of it finds the damage rather than "no batch starts here".
                    index.noteBatch(at: UInt32(base.distance(to: position)))
                    position = next
                    continue scanning
                }
                result.stop = .invalid("\(error) at \(position)")
                break scanning
            case .success(let parsed): header = parsed
            }
            if case .tail(let required) = mode, !(required.map { header.epoch == $0 } ?? (header.epoch >= epochFloor)) {
                result.stop = .invalid("batch at \(position) has epoch \(header.epoch), left over from an earlier run")
                break scanning
            }
            let total = header.totalBytes
            if offsetInChunk + total > chunkBytes {
                if total > scratch.count { scratch = OwnedBytes(uninitializedCount: total) }
                chunkBytes = fill(fd: fd, base: base, from: position, limit: limit, upTo: max(readSize, total))
                chunkStart = position
                offsetInChunk = 0
                if chunkBytes < total {
                    result.stop = .invalid("torn batch at \(position): \(total) bytes declared, \(chunkBytes) present")
                    break scanning
                }
            }
            if let error = Batch.verifyPayload(scratch.bytes.baseAddress! + offsetInChunk, header: header) {
                if case .tail = mode {
                    result.stop = .invalid("\(error) at \(position)")
                    break scanning
                }
                recordCorruption(segment: base, at: position, detail: error.description)
            }
            index.noteBatch(at: UInt32(base.distance(to: position)))
            if case .tail = mode {
                // Kept from here on: the producers and the record count take it in.
                if header.producer.id != 0 {
                    producers.record(header.producer, recordCount: header.recordCount, offset: position, length: total, appendMicros: header.appendTimeMicros)
                }
                nextRecord &+= UInt64(header.recordCount)
            }
            epochFloor = header.epoch
            result.maxEpoch = max(result.maxEpoch, header.epoch)
            result.maxAppendTimeMicros = max(result.maxAppendTimeMicros, header.appendTimeMicros)
            report.scannedBatches += 1
            report.scannedBytes += total
            position = position.advanced(by: total)
        }
        result.end = position
        return result
    }

    /// Reads as much as fits from `from` (up to `limit`) into the scratch buffer; returns the count.
    /// A read error is kept in `readFailure` (recovery then fails rather than cut good data).
    private mutating func fill(fd: Int32, base: LogOffset, from: LogOffset, limit: LogOffset, upTo size: Int) -> Int {
        let wanted = min(size, scratch.count, from.distance(to: limit))
        let target = UnsafeMutableRawBufferPointer(rebasing: scratch.mutableBytes[0..<wanted])
        switch disk.readFully(fd: fd, position: Int64(base.distance(to: from)), into: target) {
        case .success(let count): return count
        case .failure(let error):
            readFailure = readFailure ?? error
            return 0
        }
    }

    private func isZero(_ start: Int, _ count: Int) -> Bool {
        let bytes = scratch.bytes
        for index in start..<min(start + count, bytes.count) where bytes[index] != 0 { return false }
        return true
    }
}

