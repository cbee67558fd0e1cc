// The storage engine alone on the real disk, through io_uring, in a release build: append
// throughput by batch size (durable: every figure counts only committed batches) and recovery
// scan speed. Run it with Scripts/bench-storage; figures go to docs/benchmarks.md.

import ArgumentParser
import Glibc
import RingLogDiskIO
import RingLogIO
import RingLogStorage
import RingLogWire

@main
struct StorageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringlog-storage-bench",
        abstract: "Benchmark the RingLog storage engine alone (no network).",
        subcommands: [Append.self, FillTail.self, FillSegments.self, Recover.self, Seek.self])
}

struct Common: ParsableArguments {
    @Option(help: "Data directory (created; must not be in use).")
    var dir: String

    @Option(help: "Segment size in bytes.")
    var segmentBytes: Int = 1 << 30

    @Option(help: "Tail cache size in bytes.")
    var cacheBytes: Int = 64 << 20

    func configuration(checkpointBytes: Int = 256 << 20) -> StoreConfiguration {
        StoreConfiguration(
            maxBatchBytes: min(8 << 20, segmentBytes), tailCacheBytes: max(cacheBytes, 2 * min(8 << 20, segmentBytes)), defaultLogSettings: LogSettings(segmentBytes: segmentBytes),
            checkpointIntervalBytes: checkpointBytes, checkpointIntervalMicros: checkpointBytes == Int.max ? UInt64.max / 2 : 1_000_000)
    }
}

/// Drives a store on the loop core as the server does: appends are offered by the caller
/// whenever there is room, completions are fed back, and the store is flushed every turn.
final class Runner: IOLoopDriver {
    let store: LogStore
    let loop: IOLoop
    let executor: DiskExecutor

    init(store: LogStore) throws {
        self.store = store
        loop = IOLoop(ring: try Ring(entries: 256, completionEntries: 4096))
        executor = DiskExecutor(loop: loop, store: store)
    }

    private var nextMaintenance: UInt64 = 0

    func beforeWait(_ loop: IOLoop) {
        let now = MonotonicClock.nanos()
        if now >= nextMaintenance {
            store.maintain()
            nextMaintenance = now + 100_000_000
        }
        store.flush()
        executor.submitQueued()
    }

    func afterCompletions(_ loop: IOLoop) {}

    func nextDeadline(_ loop: IOLoop) -> UInt64? { nextMaintenance }

    /// One loop turn, as the server runs it; without `wait`, only what is already complete.
    func turn(wait: Bool) {
        if wait && store.requestsInFlight > 0 {
            loop.turn(driver: self)
        } else {
            beforeWait(loop)
            loop.flushSubmissions()
            loop.dispatchCompletions()
        }
    }

    /// Creates `name` and returns its id.
    func createLog(_ name: String) throws -> LogID {
        store.createLog(named: name, context: 1)
        while true {
            turn(wait: true)
            while let event = store.nextEvent() {
                if case .created(_, let result) = event { return try result.get().id }
            }
        }
    }
}

func openStore(_ common: Common, checkpointBytes: Int = 256 << 20) throws -> LogStore {
    try LogStore.open(path: common.dir, configuration: common.configuration(checkpointBytes: checkpointBytes), disk: try RingDisk(), environment: .system).get()
}

struct Append: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Append batches of one size as fast as the engine commits them.")

    @OptionGroup var common: Common

    @Option(help: "Payload bytes per batch (the 48-byte header comes on top).")
    var batchBytes: Int = 100

    @Option(help: "Seconds to run.")
    var seconds: Double = 5

    func run() throws {
        let runner = try Runner(store: openStore(common))
        let id = try runner.createLog("bench-\(batchBytes)-\(getpid())")
        let batch = Batch.make(payload: [UInt8](repeating: 0x5A, count: batchBytes))
        let started = MonotonicClock.seconds()
        var placed = 0
        var blocked = false
        while MonotonicClock.seconds() - started < seconds {
            blocked = false
            for _ in 0..<4096 {
                let outcome = batch.withUnsafeBytes { runner.store.append(to: id, batch: $0) }
                if case .placed = outcome { placed += 1 } else { blocked = true; break }
            }
            runner.turn(wait: blocked)
            runner.store.discardEvents()
        }
        while runner.store.log(id)!.committedEnd < runner.store.log(id)!.reservedEnd { runner.turn(wait: true) }
        let elapsed = MonotonicClock.seconds() - started
        let committedBytes = runner.store.log(id)!.committedEnd.rawValue
        let committedBatches = Int(committedBytes) / batch.count
        let syncs = runner.store.statistics.fdatasyncs
        let perSecond = Int(Double(committedBatches) / elapsed)
        let megabytes = fixed(Double(committedBytes) / elapsed / 1e6, digits: 1)
        let perSync = syncs > 0 ? committedBatches / syncs : 0
        print("append payload=\(batchBytes)B batches/s=\(perSecond) MB/s=\(megabytes) fdatasyncs=\(syncs) batches/fdatasync=\(perSync)")
    }
}

struct FillTail: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fill-tail", abstract: "Append BYTES to a fresh log with no checkpoint, then exit without a clean shutdown.")

    @OptionGroup var common: Common

    @Option(help: "Bytes to append after the last checkpoint.")
    var bytes: Int = 1 << 30

    @Option(help: "Payload bytes per batch.")
    var batchBytes: Int = 64 << 10

    func run() throws {
        let runner = try Runner(store: openStore(common, checkpointBytes: Int.max))
        let id = try runner.createLog("tail")
        let batch = Batch.make(payload: (0..<batchBytes).map { UInt8(truncatingIfNeeded: $0) })
        var placed = 0
        while placed * batch.count < bytes {
            let outcome = batch.withUnsafeBytes { runner.store.append(to: id, batch: $0) }
            if case .placed = outcome { placed += 1 } else { runner.turn(wait: true) }
            runner.store.discardEvents()
        }
        while runner.store.log(id)!.committedEnd < runner.store.log(id)!.reservedEnd { runner.turn(wait: true) }
        print("filled \(runner.store.log(id)!.committedEnd) bytes in \(placed) batches; exiting without a checkpoint")
        Glibc.exit(0)
    }
}

struct FillSegments: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fill-segments",
        abstract: "Append to a fresh log until it has SEGMENTS segment files, then stop cleanly or exit as if killed.")

    @OptionGroup var common: Common

    @Option(help: "Segment files to fill (one batch each: the batch is a little smaller than --segment-bytes).")
    var segments: Int = 1000

    @Flag(help: "Stop with a clean checkpoint (a restart then scans nothing); otherwise exit without one.")
    var clean = false

    func run() throws {
        raiseOpenFileLimit()
        let runner = try Runner(store: openStore(common))
        let id = try runner.createLog("segments")
        let payloadBytes = common.segmentBytes - 4096
        let batch = Batch.make(payload: (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        var placed = 0
        while placed < segments {
            let outcome = batch.withUnsafeBytes { runner.store.append(to: id, batch: $0) }
            if case .placed = outcome { placed += 1 } else { runner.turn(wait: true) }
            runner.store.discardEvents()
        }
        while runner.store.log(id)!.committedEnd < runner.store.log(id)!.reservedEnd { runner.turn(wait: true) }
        let count = runner.store.log(id)!.info.segmentCount
        if clean {
            runner.store.beginShutdown()
            var finished = false
            while !finished {
                runner.turn(wait: true)
                while let event = runner.store.nextEvent() { if case .shutdownComplete = event { finished = true } }
            }
        }
        print("filled \(count) segments; \(clean ? "stopped cleanly" : "exiting without a clean checkpoint")")
        Glibc.exit(0)
    }
}

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Open the data directory and report what recovery scanned and how fast.")

    @OptionGroup var common: Common

    func run() throws {
        raiseOpenFileLimit()
        let started = MonotonicClock.seconds()
        let store = try openStore(common)
        let elapsed = MonotonicClock.seconds() - started
        for report in store.recoveryReports {
            print(report)
            let rate = Double(report.scannedBytes) / elapsed / 1e6
            let seconds = fixed(elapsed, digits: 3)
            print("recovery segments=\(report.segments) clean=\(report.cleanShutdown) scanned=\(report.scannedBytes)B batches=\(report.scannedBatches) seconds=\(seconds) MB/s=\(Int(rate))")
        }
    }
}

/// `value` with `digits` decimals (Foundation-free).
struct Seek: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time lookups by time on the log `fill-tail` wrote: random times between its first and last batch.")

    @OptionGroup var common: Common

    @Option(help: "Payload bytes per batch that fill-tail used.")
    var batchBytes: Int = 64 << 10

    @Option(help: "Lookups to time.")
    var count: Int = 1000

    func run() throws {
        let runner = try Runner(store: openStore(common))
        guard let log = runner.store.logs.first(where: { $0.name == "tail" }) else { throw ValidationError("no log 'tail' in \(common.dir): run fill-tail first") }
        let batch = batchBytes + Batch.Format.v1.headerBytes
        func appendTime(at offset: LogOffset) throws -> UInt64 {
            var result: ReadResult
            switch runner.store.read(from: log.id, offset: offset, maxBytes: 1, context: 1) {
            case .ready(let ready): result = ready
            case .failed(let error): throw ValidationError("read: \(error)")
            case .pending:
                while true {
                    runner.turn(wait: true)
                    if case .readCompleted(_, let answer)? = runner.store.nextEvent() { result = try answer.get(); break }
                }
            }
            return result.withUnsafeBytes { BatchHeader(unchecked: $0.baseAddress!).appendTimeMicros }
        }
        let first = try appendTime(at: log.startOffset)
        let last = try appendTime(at: LogOffset(log.committedEnd.rawValue - UInt64(batch)))
        var generator = SystemRandomNumberGenerator()
        var micros: [Double] = []
        for _ in 0..<count {
            let target = UInt64.random(in: first...max(first, last), using: &generator)
            let started = MonotonicClock.nanos()
            switch runner.store.seek(log.id, atOrAfter: target, context: 2) {
            case .ready: break
            case .failed(let error): throw ValidationError("seek: \(error)")
            case .pending:
                var answered = false
                while !answered {
                    runner.turn(wait: true)
                    while let event = runner.store.nextEvent() { if case .sought = event { answered = true } }
                }
            }
            micros.append(Double(MonotonicClock.nanos() - started) / 1000)
        }
        micros.sort()
        let median = micros[micros.count / 2]
        let p99 = micros[min(micros.count - 1, micros.count * 99 / 100)]
        print("seek log=\(log.committedEnd.rawValue)B segments=\(log.segmentCount) lookups=\(count) median_us=\(fixed(median, digits: 1)) p99_us=\(fixed(p99, digits: 1)) max_us=\(fixed(micros.last!, digits: 1))")
    }
}

func fixed(_ value: Double, digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let scaled = Int((value * scale).rounded())
    let whole = scaled / Int(scale)
    let fraction = String(abs(scaled) % Int(scale))
    return digits == 0 ? "\(whole)" : "\(whole)." + String(repeating: "0", count: digits - fraction.count) + fraction
}
