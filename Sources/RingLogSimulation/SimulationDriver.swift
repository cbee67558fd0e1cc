import RingLogStorage
import RingLogTestKit

/// Drives a `LogStore` over a `SimulatedDisk` the way the server drives it over io_uring, except
/// that requests in flight are carried out and completed in a random order, and at random times,
/// chosen by a seeded generator, so a failing run can be replayed exactly.
public final class SimulationDriver {
    public let disk: SimulatedDisk
    public let path: String
    public private(set) var configuration: StoreConfiguration
    public private(set) var store: LogStore
    private let world: SimulatedWorld
    /// Virtual wall clock in microseconds; tests move it forward.
    public var nowMicros: UInt64 {
        get { world.nowMicros }
        set { world.nowMicros = newValue }
    }
    public var generator: SeededGenerator
    /// The clocks and random source the store reads: virtual, and seeded.
    public var environment: StorageEnvironment { world.environment }
    /// Requests taken from the store and not yet carried out.
    private var pending: [DiskRequest] = []
    /// Events drained from the store, oldest first.
    public var events: [StoreEvent] = []
    /// Requests this returns true for stay in flight (not carried out) until it changes its mind:
    /// for holding an operation back to see what waits for it.
    public var holdBack: ((DiskOperation) -> Bool)?

    public init(seed: UInt64, configuration: StoreConfiguration, disk: SimulatedDisk = SimulatedDisk(), path: String = "/data") throws {
        self.disk = disk
        self.path = path
        self.configuration = configuration
        generator = SeededGenerator(seed: seed)
        world = SimulatedWorld(seed: seed)
        store = try SimulationDriver.openStore(path: path, configuration: configuration, disk: disk, world: world)
    }

    private static func openStore(path: String, configuration: StoreConfiguration, disk: SimulatedDisk, world: SimulatedWorld) throws -> LogStore {
        try LogStore.open(path: path, configuration: configuration, disk: disk, environment: world.environment).get()
    }

    /// Takes newly queued requests, then carries out and completes up to `count` of the requests in
    /// flight, chosen at random. Flushes the store afterwards and collects its events.
    public func step(completing count: Int) {
        collectRequests()
        for _ in 0..<count {
            let ready = pending.indices.filter { holdBack?(pending[$0].operation) != true }
            guard !ready.isEmpty else { break }
            let request = pending.remove(at: ready[Int.random(in: 0..<ready.count, using: &generator)])
            store.complete(token: request.token, result: disk.perform(request.operation))
            collectRequests()
        }
        store.flush()
        collectRequests()
        collectEvents()
    }

    /// Runs until nothing is queued or in flight (but held-back requests).
    public func runUntilQuiet(limit: Int = 1_000_000) {
        var rounds = 0
        repeat {
            store.flush()
            step(completing: pending.count)
            rounds += 1
            precondition(rounds < limit, "the store never went quiet")
        } while pending.contains(where: { holdBack?($0.operation) != true }) || store.hasQueuedRequests
        collectEvents()
    }

    /// Calls `maintain` at the current virtual time.
    public func maintain() {
        store.maintain()
        collectRequests()
        collectEvents()
    }

    /// Power cut: requests in flight vanish, unsynced data is lost or torn, and the store is opened
    /// again (recovery runs). Returns the new store.
    @discardableResult
    public func crashAndRecover(configuration newConfiguration: StoreConfiguration? = nil) throws -> LogStore {
        if let newConfiguration { configuration = newConfiguration }
        pending.removeAll()
        disk.crash(using: &generator)
        events.removeAll()
        store = try SimulationDriver.openStore(path: path, configuration: configuration, disk: disk, world: world)
        collectEvents()
        return store
    }

    /// Removes and returns the events so far.
    public func takeEvents() -> [StoreEvent] {
        collectEvents()
        defer { events.removeAll() }
        return events
    }

    private func collectRequests() {
        while let request = store.takeRequest() {
            if case .write(let fd, let position, let bytes, _) = request.operation {
                let range = position..<position + Int64(bytes.count)
                for other in pending {
                    guard case .write(fd, let otherPosition, let otherBytes, _) = other.operation else { continue }
                    // The kernel does not order writes in flight, so overlapping ones could land in
                    // either order: the engine must never issue them.
                    precondition(
                        !range.overlaps(otherPosition..<otherPosition + Int64(otherBytes.count)),
                        "writes in flight overlap on fd \(fd): \(range) and \(otherPosition)..<\(otherPosition + Int64(otherBytes.count))")
                }
            }
            pending.append(request)
        }
    }

    private func collectEvents() {
        while let event = store.nextEvent() { events.append(event) }
    }
}

/// The outside world as the store sees it in a simulation: time that moves only when a test says
/// so, and random numbers from the run's seed, so the run repeats exactly. One thread uses it.
public final class SimulatedWorld: @unchecked Sendable {
    public var nowMicros: UInt64 = 1_700_000_000_000_000
    private var random: SeededGenerator

    public init(seed: UInt64) { random = SeededGenerator(seed: seed ^ 0x5EED_0F_1D5) }

    public var environment: StorageEnvironment {
        StorageEnvironment(
            wallMicros: { [self] in nowMicros }, monotonicNanos: { [self] in nowMicros &* 1000 }, random: { [self] in random.next() })
    }
}
