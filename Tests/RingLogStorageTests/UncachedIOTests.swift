@testable import RingLogStorage
import RingLogSimulation
import RingLogTestKit
import RingLogWire
import Glibc
import Testing

/// Uncached I/O: writes of large batches (StoreConfiguration.uncachedBatchBytes) ask the kernel
/// not to keep their pages, small batches are written the ordinary way, segment reads are uncached
/// (uncachedColdReads), and a kernel that refuses the flag gets the same operation again without
/// it. The real kernel's side is in RingLogServerTests.OperationTests.
struct UncachedIOTests {
    static let threshold = 8 << 10

    static func configuration() -> StoreConfiguration {
        var configuration = StoreConfiguration.small(segmentBytes: 1 << 20, tailCacheBytes: 256 << 10)
        configuration.uncachedBatchBytes = threshold
        return configuration
    }

    /// The segment writes the disk saw (refused ones included), as (byte count, uncached).
    final class Writes {
        var seen: [(bytes: Int, uncached: Bool)] = []
        func attach(to disk: SimulatedDisk, segmentFD: @escaping () -> Int32?) {
            disk.onPerform = { [unowned self] operation in
                guard case .write(let fd, _, let bytes, let uncached) = operation, fd == segmentFD(),
                    !bytes.allSatisfy({ $0 == 0 })
                else { return }
                seen.append((bytes.count, uncached))
            }
        }
        func take() -> [(bytes: Int, uncached: Bool)] {
            defer { seen.removeAll() }
            return seen
        }
    }

    @Test func largeBatchesAreWrittenUncachedAndSmallOnesAreNot() throws {
        let harness = try Harness(configuration: Self.configuration())
        let id = try harness.createLog("bulk")
        let log = try #require(harness.store.log(id))
        let writes = Writes()
        writes.attach(to: harness.disk) { log.segments.last?.fd }
        var payloads: [[UInt8]] = []
        var uncachedWrites = 0
        // One batch at a time, each committed before the next: every write belongs to the batch
        // just appended. 12 KiB batches need two writes (max write 8 KiB); both are uncached.
        for (seed, length) in [2_000, 12_000, 300, Self.threshold - Batch.minHeaderBytes, Self.threshold - Batch.minHeaderBytes - 1, 12_000, 5_000].enumerated() {
            let data = payload(length, seed: seed)
            try harness.append(id, data)
            payloads.append(data)
            let seen = writes.take()
            #expect(!seen.isEmpty, "no write for the batch of \(length) bytes")
            let large = Batch.minHeaderBytes + length >= Self.threshold
            #expect(seen.allSatisfy { $0.uncached == large }, "batch of \(length) bytes: \(seen)")
            if large { uncachedWrites += seen.count }
        }
        #expect(uncachedWrites == 5, "two 12 KiB batches in two writes each, the threshold-sized one in one")
        #expect(harness.store.statistics.uncachedWrites == uncachedWrites)
        #expect(try harness.readAll(id).map(\.payload) == payloads)
    }

    /// Reads that miss the tail cache are uncached unless turned off.
    @Test(arguments: [true, false]) func diskReadsAreUncachedUnlessTurnedOff(_ enabled: Bool) throws {
        var configuration = StoreConfiguration.small(segmentBytes: 1 << 20, tailCacheBytes: 64 << 10)
        configuration.uncachedColdReads = enabled
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("history")
        let payloads = try harness.appendPayloads(id, length: 4_000, seeds: 0..<40)
        var reads: [Bool] = []
        harness.disk.onPerform = { if case .read(_, _, _, let uncached) = $0 { reads.append(uncached) } }
        let result = try harness.read(id, from: .zero, maxBytes: 8_192).get()
        #expect(try harness.batches(result).map(\.payload) == Array(payloads.prefix(2)))
        #expect(!reads.isEmpty && reads.allSatisfy { $0 == enabled }, "\(reads)")
    }

    @Test func nothingIsUncachedWhenTurnedOff() throws {
        var configuration = Self.configuration()
        configuration.uncachedBatchBytes = 0
        let harness = try Harness(configuration: configuration)
        let id = try harness.createLog("cached")
        let log = try #require(harness.store.log(id))
        let writes = Writes()
        writes.attach(to: harness.disk) { log.segments.last?.fd }
        try harness.append(id, payload(14_000, seed: 1))
        #expect(writes.seen.count >= 2 && writes.seen.allSatisfy { !$0.uncached })
        #expect(harness.store.statistics.uncachedWrites == 0)
    }

    /// Kernels before 6.14 answer EOPNOTSUPP: the write is issued again, cached, and from then on
    /// no write asks for the flag. Nothing is lost, before or after a crash.
    @Test func aDiskWithoutUncachedWritesGetsOrdinaryWritesAndLosesNothing() throws {
        let disk = SimulatedDisk()
        disk.supportsUncachedIO = false
        let harness = try Harness(configuration: Self.configuration(), disk: disk)
        let id = try harness.createLog("old-kernel")
        let log = try #require(harness.store.log(id))
        let writes = Writes()
        writes.attach(to: disk) { log.segments.last?.fd }
        let payloads = try harness.appendPayloads(id, length: 10_000, seeds: 0..<4)
        let seen = writes.take()
        #expect(seen.filter(\.uncached).count == 1, "only the first write asks for the flag: \(seen)")
        #expect(seen.first?.uncached == true)
        #expect(!harness.store.uncachedIOWorks)
        #expect(harness.store.statistics.uncachedWrites == 0)
        #expect(try harness.readAll(id).map(\.payload) == payloads)

        // After recovery the tail cache is empty: the reads go to the disk, ask for uncached
        // reads, are refused, and are read again the ordinary way.
        try harness.driver.crashAndRecover()
        #expect(harness.store.uncachedIOWorks)
        #expect(try harness.readAll(id).map(\.payload) == payloads)
        #expect(!harness.store.uncachedIOWorks)
    }
}
