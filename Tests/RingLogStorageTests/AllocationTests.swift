import Glibc
import RingLogSimulation
import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Segment files are allocated in steps as the appends approach the allocated end, so the disk a
/// log uses follows its data instead of a whole segment (and a spare) per log.
@Suite struct AllocationTests {
    static let ahead = 16 << 10
    static let segmentBytes = 256 << 10

    func harness(disk: SimulatedDisk = SimulatedDisk()) throws -> Harness {
        var configuration = StoreConfiguration.small(segmentBytes: Self.segmentBytes)
        configuration.allocateAheadBytes = Self.ahead
        return try Harness(configuration: configuration, disk: disk)
    }

    func segmentSizes(_ harness: Harness, _ name: String) -> [Int] {
        harness.segmentFiles(name).map { harness.disk.contents(of: "/data/logs/\(name)/\($0)")?.count ?? -1 }
    }

    @Test func aNewLogTakesHalfAStepAndTheFileGrowsJustAheadOfTheData() throws {
        let harness = try harness()
        let id = try harness.createLog("steps")
        #expect(segmentSizes(harness, "steps") == [Self.ahead / 2], "a new segment is not allocated whole")
        #expect(harness.store.log(id)!.info.diskBytes == Self.ahead / 2)
        var end = 0
        for seed in 0..<60 {
            let offset = try harness.append(id, payload(2_000, seed: seed))
            end = Int(offset.rawValue) + Batch.minHeaderBytes + 2_000
            harness.driver.runUntilQuiet()
            let size = segmentSizes(harness, "steps")[0]
            #expect(size >= end, "the file holds the data")
            #expect(size <= end + Self.ahead + 4096, "at \(end) the file is \(size): more than a step ahead")
            #expect(harness.store.log(id)!.info.diskBytes == size)
        }
        #expect(harness.driver.store.statistics.allocationSteps > 5)
        #expect(try harness.readAll(id).map(\.payload) == (0..<60).map { payload(2_000, seed: $0) })
    }

    @Test func afterACrashTheLastSegmentStillFillsToTheSegmentSize() throws {
        let harness = try harness()
        let id = try harness.createLog("grow")
        _ = try harness.appendPayloads(id, length: 3_000, seeds: 0..<10)
        try harness.driver.crashAndRecover()
        let sizeAfterRecovery = segmentSizes(harness, "grow")[0]
        #expect(sizeAfterRecovery < Self.segmentBytes, "the file was not allocated whole")
        // Past the allocated size, appends go on in the same segment up to its full size.
        _ = try harness.appendPayloads(id, length: 3_000, seeds: 10..<100)
        // 86 batches of 3,048 bytes fit in 256 KiB: the second segment starts after the 86th.
        let secondBase = LogOffset(UInt64(86 * (3_000 + Batch.minHeaderBytes)))
        #expect(harness.segmentFiles("grow") == [LogFileNames.segment(.zero), LogFileNames.segment(secondBase)])
        #expect(try harness.readAll(id).count == 100)
    }

    /// The disk fills up while the active segment grows: the writes that needed the space are
    /// undone and reported as disk-full, what committed stays readable, and appends work again
    /// once there is room.
    @Test func aFullDiskDuringGrowthFailsOnlyTheWritesThatNeedTheSpace() throws {
        let disk = SimulatedDisk()
        let harness = try harness(disk: disk)
        let id = try harness.createLog("full")
        let kept = try harness.appendPayloads(id, length: 1_000, seeds: 0..<3)
        harness.driver.runUntilQuiet()
        disk.capacityBytes = disk.usedBytes
        var rewound = false
        for seed in 3..<80 {
            _ = try harness.appendAndSettle(id, payload(1_000, seed: seed))
            if harness.driver.takeEvents().contains(where: { if case .appendsRewound(id, _, .diskFull) = $0 { true } else { false } }) {
                rewound = true
                break
            }
        }
        #expect(rewound, "a write into space the disk did not have was reported")
        let readable = try harness.readAll(id).map(\.payload)
        #expect(Array(readable.prefix(3)) == kept, "committed data is intact")
        disk.capacityBytes = .max
        harness.passTime(micros: 2_000_000)
        let after = try harness.append(id, payload(1_000, seed: 999))
        #expect(try harness.readAll(id).last?.offset == after)
    }

    @Test func allocatingWholeSegmentsIsStillAvailable() throws {
        var configuration = StoreConfiguration.small(segmentBytes: Self.segmentBytes)
        configuration.allocateAheadBytes = 0
        let harness = try Harness(configuration: configuration)
        _ = try harness.createLog("whole")
        #expect(segmentSizes(harness, "whole") == [Self.segmentBytes])
    }
}
