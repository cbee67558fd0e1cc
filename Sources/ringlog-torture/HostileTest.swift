import ArgumentParser
import Foundation
import Glibc
import RingLogClient
import RingLogIO
import RingLogTestKit
import RingLogWire
import Synchronization

/// Honest clients measured alone, then again while others send garbage, stall half-way through
/// headers, never read their responses, and flood the connection limit.
struct Hostile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Abuse ringlogd while honest clients append; check they see no errors and lose nothing.",
        discussion: """
            Phases: quiet (honest load alone), attack (the same load while attackers run: garbage, \
            truncated headers, lengths past the limit, wrong CRCs and abrupt disconnects on many \
            connections; SLOW connections that send half a header and stall; a reader that never reads \
            its responses), deadlines (the stalled connections must be closed), flood (connections past \
            the limit must be refused with an error, and no descriptor may leak). Exits 1 on any honest \
            error, lost acknowledgement, leaked descriptor or stalled connection left open.
            """)

    @Option(help: "Seconds of honest load in each of the quiet and attack phases.") var duration = 10
    @Option(help: "Connections that send half a header and stall.") var slow = 300
    @Option(help: "Connections sending garbage in a loop.") var garbage = 16
    @Option(help: "Honest appending connections.") var honest = 4
    @Option(help: "The daemon's connection limit.") var maxConnections = 512
    @Option(help: "Path to ringlogd (default: next to this program).") var ringlogd: String?

    func run() async throws {
        let directory = makeTemporaryDirectory(prefix: "ringlog-hostile")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try Daemon(executable: ringlogdExecutable(ringlogd), directory: directory, quiet: true, arguments: [
                "--segment-bytes", "64MiB", "--max-connections", "\(maxConnections)", "--header-timeout-ms", "2000",
                "--payload-timeout-ms", "2000", "--send-timeout-ms", "4000",
            ])
        defer { daemon.stop() }
        let address = daemon.address
        let setup = try await RingLogClient.connect(to: address.description)
        let log = try await setup.createLog("honest").logID
        let baselineSockets = daemon.socketCount
        let baselineMemory = daemon.residentBytes

        let quiet = try await honestLoad(address: address, log: log, seconds: duration)
        report("quiet", quiet)

        let stop = Stop()
        let memoryPeak = Counter(daemon.residentBytes)
        let pid = daemon.pid
        let sampler = spawnThread {
            while !stop.isSet {
                memoryPeak.raise(to: Daemon.residentBytes(pid: pid))
                usleep(100_000)
            }
        }
        let stalled = openStalledConnections(address, count: slow)
        let nonReader = startNonReader(address, log: log, stop: stop)
        let garbageCounters = GarbageCounters()
        let attackers = (0..<garbage).map { index in
            spawnThread { sendGarbage(address, log: log, seed: UInt64(index), stop: stop, counters: garbageCounters) }
        }
        let attacked = try await honestLoad(address: address, log: log, seconds: duration)
        report("attack", attacked)
        stop.set()
        for thread in attackers + [nonReader, sampler] { joinThread(thread) }
        RingLogTorture.log("attack: \(garbageCounters.connections.value) garbage connections, \(garbageCounters.errorResponses.value) error responses, "
            + "\(stalled.count) stalled connections")

        // The stalled connections must be closed at their header deadline (2 s).
        let closedStalled = waitForClose(stalled, seconds: 6)
        for fd in stalled { close(fd) }

        // Flood past the connection limit.
        let flood = floodConnections(address, count: maxConnections + 100)
        try await Task.sleep(for: .seconds(2))
        let socketsAfter = daemon.socketCount

        // Every honest acknowledgement must read back.
        let lost = try await verify(setup, log: log, acknowledged: quiet.acknowledged.merging(attacked.acknowledged) { first, _ in first })
        setup.close()

        let factor = quiet.recordsPerSecond / max(attacked.recordsPerSecond, 1)
        // Cache, receive buffers, the non-reader's budget (buffered bytes + one read + one batch),
        // and a small allowance per connection for its bookkeeping.
        let memoryBound = baselineMemory + (32 << 20) + (4 << 20) + (8 << 20) + maxConnections * (64 << 10)
        print("""
            quiet:   \(Int(quiet.recordsPerSecond)) appends/s, p50 \(quiet.p50Micros) µs, p99 \(quiet.p99Micros) µs, errors \(quiet.errors)
            attack:  \(Int(attacked.recordsPerSecond)) appends/s, p50 \(attacked.p50Micros) µs, p99 \(attacked.p99Micros) µs, errors \(attacked.errors)
            throughput quiet/attack: \(String(format: "%.2f", factor))x; p99 attack/quiet: \(String(format: "%.2f", Double(attacked.p99Micros) / Double(max(quiet.p99Micros, 1))))x
            memory:  \(baselineMemory >> 20) MiB at rest, \(memoryPeak.value >> 20) MiB peak under attack (bound \(memoryBound >> 20) MiB)
            stalled: \(closedStalled) of \(stalled.count) closed by the server at their header deadline
            flood:   \(flood.refused) of \(flood.attempted) refused with TOO_MANY_CONNECTIONS, \(flood.unanswered) unanswered
            sockets: \(baselineSockets) open before, \(socketsAfter) after
            honest acknowledgements: \(quiet.acknowledged.count + attacked.acknowledged.count), lost \(lost)
            """)
        let failed = quiet.errors > 0 || attacked.errors > 0 || lost > 0 || closedStalled < stalled.count
            || socketsAfter > baselineSockets || flood.refused < flood.attempted - maxConnections
            || memoryPeak.value > memoryBound
        if failed { throw ExitCode(1) }
    }

    func report(_ phase: String, _ load: HonestLoad) {
        RingLogTorture.log("\(phase): \(Int(load.recordsPerSecond)) appends/s, p50 \(load.p50Micros) µs, p99 \(load.p99Micros) µs, errors \(load.errors)")
    }

    // MARK: Honest clients

    struct HonestLoad {
        var recordsPerSecond: Double
        var p50Micros: Int
        var p99Micros: Int
        var errors: Int
        var acknowledged: [LogOffset: UInt64]
    }

    func honestLoad(address: SocketAddress, log: LogID, seconds: Int) async throws -> HonestLoad {
        let latencies = Shared<[Int]>([])
        let acknowledged = Shared<[LogOffset: UInt64]>([:])
        let errors = Counter()
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: .seconds(seconds))
        await withTaskGroup(of: Void.self) { group in
            for connection in 0..<honest {
                group.addTask {
                    guard let client = try? await RingLogClient.connect(to: address.description) else {
                        errors.add()
                        return
                    }
                    defer { client.close() }
                    await withTaskGroup(of: Void.self) { lanes in
                        for lane in 0..<8 {
                            lanes.addTask {
                                var sequence = 0
                                while clock.now < end {
                                    let record = Array("honest \(connection)/\(lane)/\(sequence) ".utf8) + [UInt8](repeating: 0x68, count: 100)
                                    let batch = RecordFraming.batch([record])
                                    let started = clock.now
                                    do {
                                        let ack = try await client.append(to: log, batch: batch)
                                        let elapsed = clock.now - started
                                        latencies.update { $0.append(Int(elapsed.components.attoseconds / 1_000_000_000_000) + Int(elapsed.components.seconds) * 1_000_000) }
                                        let digest = batch.withUnsafeBytes { fingerprint(UnsafeRawBufferPointer(rebasing: $0[Batch.Format.v2.headerBytes...])) }
                                        acknowledged.update { $0[ack.offset] = digest }
                                    } catch {
                                        errors.add()
                                        RingLogTorture.log("honest client error: \(error)")
                                        return
                                    }
                                    sequence += 1
                                }
                            }
                        }
                    }
                }
            }
        }
        let sorted = latencies.value.sorted()
        let percentile = { (p: Double) in sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        return HonestLoad(
            recordsPerSecond: Double(sorted.count) / Double(seconds), p50Micros: percentile(0.5), p99Micros: percentile(0.99),
            errors: errors.value, acknowledged: acknowledged.value)
    }

    func verify(_ client: RingLogClient, log: LogID, acknowledged: [LogOffset: UInt64]) async throws -> Int {
        var found: [LogOffset: UInt64] = [:]
        var offset = LogOffset.zero
        while true {
            let fetched = try await client.read(from: log, offset: offset, maxBytes: 4 << 20)
            try fetched.withUnsafeBytes { bytes in
                try BatchReader.forEachBatch(in: bytes, startingAt: offset) { batchOffset, _, payload in found[batchOffset] = fingerprint(payload) }
            }
            offset = fetched.nextOffset
            if offset >= fetched.committedEnd || fetched.isEmpty { break }
        }
        return acknowledged.filter { found[$0.key] != $0.value }.count
    }
}

// MARK: Attackers (plain blocking sockets on their own threads)

final class Stop: Sendable {
    private let flag = Mutex(false)
    var isSet: Bool { flag.withLock { $0 } }
    func set() { flag.withLock { $0 = true } }
}

final class Counter: Sendable {
    private let state: Mutex<Int>
    init(_ value: Int = 0) { state = Mutex(value) }
    var value: Int { state.withLock { $0 } }
    func add(_ amount: Int = 1) { state.withLock { $0 += amount } }
    func raise(to candidate: Int) { state.withLock { $0 = max($0, candidate) } }
}

final class GarbageCounters: Sendable {
    let connections = Counter()
    let errorResponses = Counter()
}

func connectSocket(_ address: SocketAddress, timeoutMillis: Int = 2_000) -> Int32? {
    guard let fd = try? Sockets.connect(to: address) else { return nil }
    var timeout = timeval(tv_sec: timeoutMillis / 1000, tv_usec: Int((timeoutMillis % 1000) * 1000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
    var sent = 0
    while sent < bytes.count {
        let result = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
        if result <= 0 { return false }
        sent += result
    }
    return true
}

/// Loops over kinds of bad input, one connection each, until told to stop.
func sendGarbage(_ address: SocketAddress, log: LogID, seed: UInt64, stop: Stop, counters: GarbageCounters) {
    var generator = SeededGenerator(seed: seed)
    var kind = Int(seed)
    while !stop.isSet {
        kind += 1
        guard let fd = connectSocket(address, timeoutMillis: 500) else {
            usleep(10_000)
            continue
        }
        counters.connections.add()
        let valid = RequestHeader(opcode: .append, bodyLength: 60, requestID: 1, logID: log).encoded()
        var bytes: [UInt8]
        switch kind % 6 {
        case 0: bytes = (0..<Int.random(in: 1...4096, using: &generator)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        case 1: bytes = Array(valid.prefix(Int.random(in: 1...31, using: &generator)))
        case 2: bytes = RequestHeader(opcode: .append, bodyLength: Int(UInt32.max), requestID: 2, logID: log).encoded()
        case 3:
            bytes = valid
            bytes[Int.random(in: 0...27, using: &generator)] ^= 0x20
        case 4:
            var batch = RecordFraming.batch([[UInt8](repeating: 1, count: 8)])
            batch[batch.count - 1] ^= 0xFF
            bytes = RequestHeader(opcode: .append, bodyLength: batch.count, requestID: 3, logID: log).encoded() + batch
        default:
            bytes = valid + [UInt8](repeating: 0, count: 10)
        }
        _ = sendAll(fd, bytes)
        if kind % 2 == 0 {
            var response = [UInt8](repeating: 0, count: 64)
            if recv(fd, &response, 64, 0) > 0 { counters.errorResponses.add() }
        }
        if kind % 3 == 0 {
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        }
        close(fd)
    }
}

/// Connections that send half a request header and then nothing.
func openStalledConnections(_ address: SocketAddress, count: Int) -> [Int32] {
    let half = Array(RequestHeader(opcode: .ping, bodyLength: 0, requestID: 1).encoded().prefix(16))
    return (0..<count).compactMap { _ in
        guard let fd = connectSocket(address, timeoutMillis: 10_000) else { return nil }
        return sendAll(fd, half) ? fd : nil
    }
}

/// True for each connection that reaches end-of-file within `seconds` (the server closed it).
func waitForClose(_ descriptors: [Int32], seconds: Int) -> Int {
    let deadline = Date().addingTimeInterval(Double(seconds))
    var closed = 0
    for fd in descriptors {
        var buffer = [UInt8](repeating: 0, count: 256)
        while Date() < deadline {
            let result = recv(fd, &buffer, buffer.count, 0)
            if result == 0 || (result < 0 && errno == ECONNRESET) {
                closed += 1
                break
            }
            if result < 0 && errno != EAGAIN && errno != EINTR { break }
        }
    }
    return closed
}

/// A client that asks for big reads and never reads a byte of the answers.
func startNonReader(_ address: SocketAddress, log: LogID, stop: Stop) -> pthread_t {
    spawnThread {
        guard let fd = connectSocket(address, timeoutMillis: 200) else { return }
        defer { close(fd) }
        var id: UInt64 = 1
        while !stop.isSet {
            let request = RequestHeader(opcode: .read, bodyLength: 16, requestID: id, logID: log).encoded()
                + ReadRequest(offset: .zero, maxBytes: 4 << 20).encoded()
            if !sendAll(fd, request) {
                usleep(50_000)
                continue
            }
            id += 1
        }
    }
}

/// Opens `count` connections at once; the ones past the limit must be answered with
/// TOO_MANY_CONNECTIONS and closed.
func floodConnections(_ address: SocketAddress, count: Int) -> (attempted: Int, refused: Int, unanswered: Int) {
    var descriptors: [Int32] = []
    var refused = 0
    var unanswered = 0
    for _ in 0..<count {
        guard let fd = connectSocket(address, timeoutMillis: 300) else { continue }
        descriptors.append(fd)
    }
    usleep(500_000)
    for fd in descriptors {
        var header = [UInt8](repeating: 0, count: WireProtocol.headerBytes)
        let received = recv(fd, &header, header.count, Int32(MSG_DONTWAIT))
        if received == WireProtocol.headerBytes, case .success(let response) = header.withUnsafeBytes({ ResponseHeader.decode($0.baseAddress!) }),
            response.status == ErrorCode.tooManyConnections.rawValue
        {
            refused += 1
        } else if received != -1 || errno != EAGAIN {
            unanswered += 1
        }
    }
    for fd in descriptors { close(fd) }
    return (descriptors.count, refused, unanswered)
}
