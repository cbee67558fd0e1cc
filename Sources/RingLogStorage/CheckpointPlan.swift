import Glibc
import RingLogWire

/// One checkpoint: what it will write and what it changes once durable.
final class CheckpointPlan {
    let checkpoint: Checkpoint
    let script: DiskScript
    private let indexUpdates: [(segment: Segment, entries: Int, sealed: Bool, dataEnd: LogOffset)]

    /// Persists the index entries below the committed end (and sealed headers), then replaces the
    /// checkpoint file atomically.
    init(state: LogState, desiredStart: LogOffset, nowMicros: UInt64, clean: Bool) {
        let target = state.positions.committed
        var steps: [DiskScript.Step] = []
        var updates: [(Segment, Int, Bool, LogOffset)] = []
        for segment in state.segments where segment.base < target {
            let below = segment.index.count(below: UInt32(min(segment.base.distance(to: target), Int(UInt32.max))))
            let sealed = segment.sealed && segment.dataEnd <= target
            let dataEnd = sealed ? segment.dataEnd : target
            // New entries or a seal always go out. A header merely behind the data goes out with a
            // clean checkpoint, so a clean restart scans nothing; otherwise recovery extends the
            // index over the few bytes past the header instead (less than one index interval plus
            // one batch, since no entry was added there).
            let stale = clean && dataEnd > segment.persistedDataEnd
            guard below > segment.persistedEntryCount || sealed != segment.persistedSealed || stale else { continue }
            let index = "index \(segment.base)"
            steps.append(.open(state.directory.appending(LogFileNames.index(segment.base)), flags: O_RDWR | O_CREAT | O_CLOEXEC, mode: 0o644, as: index))
            if below > segment.persistedEntryCount {
                var entries: [UInt8] = []
                entries.reserveCapacity((below - segment.persistedEntryCount) * 4)
                for position in segment.index.positions[segment.persistedEntryCount..<below] { entries.appendLittleEndian(position) }
                let position = Int64(IndexFileHeader.encodedBytes + segment.persistedEntryCount * 4)
                steps.append(.write(.opened(index), position: position, OwnedBytes(entries)))
            }
            let header = IndexFileHeader(
                segmentBase: segment.base, sealed: sealed, dataEnd: dataEnd,
                maxAppendTimeMicros: segment.maxAppendTimeMicros, entryCount: UInt32(below), intervalBytes: segment.index.intervalBytes)
            steps.append(.write(.opened(index), position: 0, OwnedBytes(header.encoded())))
            steps.append(.fdatasync(.opened(index)))
            steps.append(.close(.opened(index)))
            updates.append((segment, below, sealed, dataEnd))
        }
        var checkpoint = Checkpoint(
            logID: state.id, epoch: state.epoch, clean: clean, startOffset: max(state.positions.start, min(desiredStart, target)),
            checkpointOffset: target, writtenAtMicros: nowMicros, nextRecord: state.committedNextRecord)
        // The producers as of the committed end: recovery replays the batches after it.
        state.producers.expire(nowMicros: nowMicros)
        checkpoint.producers = state.producers.snapshot(endingAt: target)
        checkpoint.forgottenProducers = Array(state.producers.forgotten)
        self.checkpoint = checkpoint
        steps += DiskScript.Step.replace(
            state.directory.appending(LogFileNames.checkpoint), through: state.directory.appending(LogFileNames.checkpointTemporary),
            with: OwnedBytes(checkpoint.encoded()), directory: .fd(state.directoryFD))
        script = DiskScript(steps)
        indexUpdates = updates
    }

    func apply() {
        for update in indexUpdates {
            update.segment.persistedEntryCount = max(update.segment.persistedEntryCount, update.entries)
            update.segment.persistedSealed = update.sealed
            update.segment.persistedDataEnd = max(update.segment.persistedDataEnd, update.dataEnd)
        }
    }
}
