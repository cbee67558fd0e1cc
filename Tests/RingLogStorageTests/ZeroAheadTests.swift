@testable import RingLogStorage
import RingLogSimulation
import RingLogTestKit
import RingLogWire
import Glibc
import Testing

/// Zero-ahead (Log.issueZeroAhead): the active segment is written with zeros, and written back,
/// a little past the reservation point, so fdatasyncs of small appends convert no extents.
struct ZeroAheadTests {
    /// Operations as the disk saw them, in order.
    final class Recorder {
        enum Seen: Equatable {
            case zeros(Range<Int64>)
            case data(Range<Int64>)
            case writeback(Range<Int64>)
        }
        var seen: [Seen] = []
        func attach(to disk: SimulatedDisk, segmentFD: @escaping () -> Int32?) {
            disk.onPerform = { [unowned self] operation in
                switch operation {
                case .write(let fd, let position, let bytes, _) where fd == segmentFD():
                    let range = position..<position + Int64(bytes.count)
                    seen.append(bytes.allSatisfy { $0 == 0 } ? .zeros(range) : .data(range))
                case .syncFileRange(let fd, let position, let length) where fd == segmentFD():
                    seen.append(.writeback(position..<position + length))
                default: break
                }
            }
        }
        var zeroRanges: [Range<Int64>] { seen.compactMap { if case .zeros(let range) = $0 { range } else { nil } } }
    }

    @Test func zerosGoAheadOfTheDataAndEachChunkIsWrittenBack() throws {
        let harness = try Harness()
        let id = try harness.createLog("zeros")
        let log = try #require(harness.store.log(id))
        let recorder = Recorder()
        recorder.attach(to: harness.disk) { log.segments.last?.fd }
        var offsets: [LogOffset] = []
        for seed in 0..<40 { offsets.append(try harness.append(id, payload(300, seed: seed))) }
        let zeros = recorder.zeroRanges
        #expect(zeros.count >= 2, "zero-ahead never ran: \(recorder.seen.count) operations seen")
        // Every chunk is written back right after it is written, before the next chunk starts.
        for (index, entry) in recorder.seen.enumerated() {
            guard case .zeros(let range) = entry else { continue }
            let next = recorder.seen[(index + 1)...].first { if case .data = $0 { false } else { true } }
            #expect(next == .writeback(range), "chunk \(range) was not written back next")
        }
        // Data written after a chunk never lands before it was written back: the data that follows
        // a chunk is outside it, or comes after its writeback.
        var pending: Range<Int64>?
        for entry in recorder.seen {
            switch entry {
            case .zeros(let range): pending = range
            case .writeback: pending = nil
            case .data(let range): #expect(pending.map { !$0.overlaps(range) } ?? true, "data \(range) overlapped a chunk in flight")
            }
        }
        // The chunks stayed within the configured window past the data.
        let window = Int64(harness.store.configuration.zeroAheadBytes + harness.store.configuration.zeroChunkBytes)
        let dataEnd = Int64(log.segments.last!.filePosition(of: log.reservedEnd))
        #expect(zeros.allSatisfy { $0.upperBound <= dataEnd + window })
        #expect(try harness.readAll(id).map(\.offset) == offsets)
        #expect(harness.store.statistics.zeroChunks == zeros.count)
    }

    /// A data write that would reach a chunk still in flight waits for the chunk's writeback.
    @Test func dataWaitsForAChunkStillInFlight() throws {
        let harness = try Harness()
        let id = try harness.createLog("waits")
        harness.driver.holdBack = { if case .syncFileRange = $0 { true } else { false } }
        let log = try #require(harness.store.log(id))
        var placed: [LogOffset] = []
        for seed in 0..<30 {
            let batch = Batch.make(payload: payload(700, seed: seed))
            if case .placed(let offset, _) = batch.withUnsafeBytes({ harness.store.append(to: id, batch: $0) }) { placed.append(offset) }
            harness.driver.runUntilQuiet()
        }
        let held = try #require(log.segments.last?.zeroing, "no chunk in flight while its writeback is held")
        let writtenPosition = Int(log.segments.last!.filePosition(of: log.writtenEnd))
        #expect(writtenPosition <= held.lowerBound, "data was written into a chunk still in flight")
        #expect(log.reservedEnd > log.writtenEnd, "the appends past the chunk are waiting")
        harness.driver.holdBack = nil
        harness.driver.runUntilQuiet()
        #expect(log.committedEnd == log.reservedEnd)
        #expect(try harness.readAll(id).map(\.offset) == placed)
    }

    /// Once fdatasyncs are large the journal commit is amortized and zero-ahead stops, rather than
    /// doubling the bytes written.
    @Test func zeroAheadStopsWhenSyncsAreLarge() throws {
        var configuration = StoreConfiguration.small()
        configuration.zeroAheadMaxSyncBytes = 1024
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("large")
        for seed in 0..<6 { _ = try harness.append(id, payload(4000, seed: seed)) }
        let afterWarmUp = harness.store.statistics.zeroChunks
        for seed in 6..<40 { _ = try harness.append(id, payload(4000, seed: seed)) }
        #expect(harness.store.statistics.zeroChunks == afterWarmUp, "zero chunks kept coming with 4 KB syncs")

        let small = try Harness()
        let smallID = try small.createLog("small")
        for seed in 0..<40 { _ = try small.append(smallID, payload(200, seed: seed)) }
        #expect(small.store.statistics.zeroChunks > 1, "small syncs should keep zero-ahead running")
    }

    @Test func aFailedChunkStopsZeroAheadForThatSegmentAndNothingElse() throws {
        let harness = try Harness()
        let id = try harness.createLog("fails")
        // Zero chunks are exactly one aligned 4 KiB chunk here; 548-byte batches never write that.
        harness.disk.writeFault = { path, position, count in
            path.hasSuffix(".seg") && count == 4096 && position % 4096 == 0 ? .error(errno: EIO) : nil
        }
        var offsets: [LogOffset] = []
        for seed in 0..<20 { offsets.append(try harness.append(id, payload(500, seed: seed))) }
        #expect(harness.store.statistics.zeroChunks == 0)
        #expect(harness.store.log(id)?.info.failure == nil, "a failed zero chunk must not fail the log")
        #expect(try harness.readAll(id).map(\.offset) == offsets)
    }
}
