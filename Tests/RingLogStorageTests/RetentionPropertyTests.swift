import RingLogSimulation
@testable import RingLogStorage
import RingLogTestKit
import RingLogWire
import Testing

/// Retention never deletes what its settings say to keep: for any accepted settings, the newest
/// `retentionBytes` of a log and every batch appended within the last `retention` of time stay
/// readable, however time and appends interleave. (Issue 12: a retention age of 2^64 µs
/// overflowed into 384 µs and deleted everything.)
@Suite struct RetentionPropertyTests {
    struct Appended {
        var offset: LogOffset
        var end: LogOffset
        var appendedMicros: UInt64
        var payload: [UInt8]
    }

    /// Settings drawn from the whole accepted range, weighted toward the edges.
    static func randomSettings(using generator: inout SeededGenerator) -> LogSettings {
        let segment = Int.random(in: (64 << 10)...(192 << 10), using: &generator)
        let bytesChoices: [Int?] = [
            nil, segment, segment + Int.random(in: 0...(256 << 10), using: &generator), Int(LogSettings.maxRetentionBytes),
            Int.random(in: segment...Int(LogSettings.maxRetentionBytes), using: &generator),
        ]
        let maxMicros = LogSettings.maxRetentionMillis * 1000
        let ageChoices: [UInt64?] = [
            nil, 1000, UInt64.random(in: 1000...5_000_000, using: &generator), UInt64.random(in: 1000...maxMicros, using: &generator), maxMicros,
        ]
        return LogSettings(
            segmentBytes: segment, retentionBytes: bytesChoices.randomElement(using: &generator)!,
            retentionMicros: ageChoices.randomElement(using: &generator)!)
    }

    @Test(arguments: 0..<24)
    func retentionKeepsEverythingItsSettingsPromise(_ seed: Int) throws {
        var generator = SeededGenerator(seed: UInt64(seed) &* 7919 &+ 11)
        let settings = Self.randomSettings(using: &generator)
        let harness = try Harness(seed: UInt64(seed))
        #expect(settings.problems(maxBatchBytes: harness.store.configuration.maxBatchBytes).isEmpty, "drawn from the accepted range")
        let id = try harness.createLog("kept", settings: settings)
        var appended: [Appended] = []
        for round in 0..<160 {
            let data = payload(Int.random(in: 1...6000, using: &generator), seed: seed * 1000 + round)
            let offset = try harness.append(id, data)
            appended.append(Appended(offset: offset, end: offset.advanced(by: Batch.minHeaderBytes + data.count), appendedMicros: harness.driver.nowMicros, payload: data))
            // Time jumps from nothing to well past the shorter retentions.
            let jumps: [UInt64] = [0, 500, 20_000, 700_000, 3_000_000]
            harness.passTime(micros: jumps.randomElement(using: &generator)!)
            if round % 20 == 19 { try Self.checkPromises(harness, id, settings, appended) }
        }
        try Self.checkPromises(harness, id, settings, appended)
    }

    static func checkPromises(_ harness: Harness, _ id: LogID, _ settings: LogSettings, _ appended: [Appended]) throws {
        let log = try #require(harness.store.log(id))
        let now = harness.driver.nowMicros
        let start = log.startOffset
        for batch in appended {
            let keptBySize = settings.retentionBytes.map { batch.end.distance(to: log.committedEnd) < $0 } ?? true
            let keptByAge = settings.retentionMicros.map { now < $0 || batch.appendedMicros >= now - $0 } ?? true
            // With both limits set a batch may go when either says so; each alone must hold.
            let promised = settings.retentionBytes == nil ? keptByAge : settings.retentionMicros == nil ? keptBySize : keptBySize && keptByAge
            if promised {
                #expect(batch.offset >= start, "batch at \(batch.offset) deleted though \(settings) keeps it (start \(start), end \(log.committedEnd))")
            }
        }
        let readable = try harness.readAll(id)
        let expected = appended.filter { $0.offset >= start }
        #expect(readable.map(\.offset) == expected.map(\.offset))
        #expect(readable.map(\.payload) == expected.map(\.payload))
    }

    /// The overflow of issue 12, at the storage boundary: a retention age the clock cannot
    /// subtract deletes nothing.
    @Test func aRetentionLongerThanTheClockHasRunDeletesNothing() throws {
        let settings = LogSettings(segmentBytes: 64 << 10, retentionMicros: LogSettings.maxRetentionMillis * 1000)
        let harness = try Harness()
        let id = try harness.createLog("ancient", settings: settings)
        for seed in 0..<60 { try harness.append(id, payload(3000, seed: seed)) }
        harness.passTime(micros: 10_000_000)
        #expect(harness.store.log(id)!.startOffset == .zero)
        #expect(try harness.readAll(id).count == 60)
    }

    /// Settings outside the ranges are refused by the engine too, naming the setting.
    @Test func outOfRangeSettingsAreRefusedNamingTheSetting() throws {
        let harness = try Harness()
        let cases: [(LogSettings, String)] = [
            (LogSettings(segmentBytes: 1000), "segment-bytes"),
            (LogSettings(segmentBytes: 64 << 10, retentionBytes: 1000), "retention-bytes"),
            (LogSettings(segmentBytes: 64 << 10, retentionMicros: 384), "retention-micros"),
            (LogSettings(segmentBytes: 64 << 10, retentionMicros: UInt64.max), "retention-micros"),
        ]
        for (index, (settings, name)) in cases.enumerated() {
            let result = try harness.createLogResult("bad\(index)", settings: settings)
            guard case .failure(.badSettings(let problems)) = result else {
                Issue.record("\(settings) accepted: \(result)")
                continue
            }
            #expect(problems.first?.setting == name)
        }
    }
}
