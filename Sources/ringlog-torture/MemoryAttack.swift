import ArgumentParser
import Foundation
import Glibc
import RingLogClient
import RingLogIO
import RingLogTestKit
import RingLogWire
import Synchronization

/// The memory attack of issue 12, against ringlogd's documented memory bound: readers that
/// pipeline thousands of large reads and never collect a byte (reconnecting whenever they are
/// cut), and a client that announces 8 MiB (or 4 GiB) bodies, sends part of one and vanishes,
/// while an honest reader and honest appenders keep working.
struct MemoryAttack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Attack ringlogd's memory; check its peak and its memory after the attack against the documented bound.",
        discussion: """
            Starts ringlogd with --max-connections 3000 --send-timeout-ms 5000 and default memory settings, \
            fills a log with 80 MiB of 1 MiB batches, then runs FLOODERS readers that pipeline 20,000 reads \
            of 4 MiB each and never read, and one huge-body client, for SECONDS while an honest reader \
            and honest appenders run. Exits 1 if the peak resident memory passes the bound in \
            docs/operations.md (Memory), if memory is not given back once every attacker is gone, or if \
            an honest client saw an error.
            """)

    @Option(help: "Readers that never read their responses.") var flooders = 4
    @Option(help: "Seconds the attack lasts.") var seconds = 60
    @Option(help: "Path to ringlogd (default: next to this program).") var ringlogd: String?

    /// ringlogd's defaults (docs/operations.md), which the bound is computed from.
    static let cacheBytes = 64 << 20
    static let receivePoolBytes = 512 * (16 << 10)
    static let idleReadBufferBytes = 16 << 20
    static let budgetBytes = 128 << 20
    static let largestRead = 8 << 20
    static let maxConnections = 3000
    /// Per connection, outside the budget: the allowance, one receive buffer of stashed bytes,
    /// and bookkeeping (docs/operations.md).
    static let perConnectionBytes = 36 << 10
    /// The binary, its libraries, the ring, thread stacks.
    static let runtimeBytes = 40 << 20

    /// docs/operations.md, Memory: what resident memory stays under, whatever clients do.
    static var documentedBound: Int {
        cacheBytes + receivePoolBytes + idleReadBufferBytes + budgetBytes + largestRead + maxConnections * perConnectionBytes + runtimeBytes
    }

    /// Once every connection is gone: everything but the budget may stay (caches and pools).
    static var boundAtRest: Int { cacheBytes + receivePoolBytes + idleReadBufferBytes + runtimeBytes }

    func run() async throws {
        let directory = makeTemporaryDirectory(prefix: "ringlog-memory")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try Daemon(executable: ringlogdExecutable(ringlogd), directory: directory, quiet: true, arguments: ["--max-connections", "\(Self.maxConnections)", "--send-timeout-ms", "5000", "--segment-bytes", "256MiB"])
        defer { daemon.stop() }
        let address = daemon.address
        let setup = try await RingLogClient.connect(to: address.description)
        let log = try await setup.createLog("big").logID
        let megabyte = RecordFraming.batch([[UInt8](repeating: 0x61, count: (1 << 20) - 64)])
        for _ in 0..<80 { _ = try await setup.append(to: log, batch: megabyte) }
        let appendLog = try await setup.createLog("honest").logID
        let rest = daemon.residentBytes
        RingLogTorture.log("memory: \(rest >> 20) MiB resident with the log filled; attack for \(seconds) s with \(flooders) flooders")

        let stop = Stop()
        let peak = Counter(rest)
        let pid = daemon.pid
        var threads = [spawnThread {
            while !stop.isSet {
                peak.raise(to: Daemon.residentBytes(pid: pid))
                usleep(100_000)
            }
        }]
        let cut = Counter()
        for seed in 0..<flooders { threads.append(spawnThread { flood(address, log: log, stop: stop, cut: cut, seed: UInt64(seed)) }) }
        let hugeBodies = Counter()
        threads.append(spawnThread { sendHugeBodies(address, log: log, stop: stop, count: hugeBodies) })
        try await Task.sleep(for: .seconds(1))

        async let reading = honestReads(address: address, log: log, seconds: seconds - 2)
        async let appending = honestAppends(address: address, log: appendLog, seconds: seconds - 2)
        async let bufferedPeak = peakBuffered(setup, seconds: seconds - 2)
        let (reader, appender, buffered) = try await (reading, appending, bufferedPeak)
        stop.set()
        for thread in threads { joinThread(thread) }

        // Every attacker is gone: wait until the server has closed their connections, then see
        // what memory it kept.
        var open = Int.max
        for _ in 0..<100 where open > 1 {
            open = Int(try await setup.serverStats().first { $0.name == "connections_open" }?.value ?? 0)
            try await Task.sleep(for: .milliseconds(100))
        }
        try await Task.sleep(for: .seconds(1))
        let after = daemon.residentBytes
        let stats = Dictionary(try await setup.serverStats().map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
        setup.close()

        print("""
            memory:    \(rest >> 20) MiB before, \(peak.value >> 20) MiB peak (bound \(Self.documentedBound >> 20) MiB), \
            \(after >> 20) MiB after every connection closed (bound \(Self.boundAtRest >> 20) MiB); \
            buffered for connections at most \(buffered >> 20) MiB (budget \(Self.budgetBytes >> 20) MiB)
            attackers: \(flooders) flooders cut \(cut.value) times, \(hugeBodies.value) huge-body connections; \
            \(stats["reads_waited_for_memory_total"] ?? 0) reads waited for memory, \
            \(stats["connections_closed_for_memory_total"] ?? 0) connections closed for memory, buffered now \(stats["buffered_bytes"] ?? 0) B
            reader:    \(reader.megabytesPerSecond) MB/s, p50 \(reader.p50Micros) µs, p99 \(reader.p99Micros) µs, max \(reader.maxMicros) µs, errors \(reader.errors)
            appenders: \(appender.perSecond) appends/s, p99 \(appender.p99Micros) µs, errors \(appender.errors)
            """)
        let failed = peak.value > Self.documentedBound || after > Self.boundAtRest || reader.errors > 0 || appender.errors > 0 || open > 1
        if failed { throw ExitCode(1) }
    }
}

/// The most the server said it held for connections (SERVER_STATS buffered_bytes), sampled.
func peakBuffered(_ client: RingLogClient, seconds: Int) async throws -> Int {
    var peak = 0
    let end = ContinuousClock.now.advanced(by: .seconds(seconds))
    while ContinuousClock.now < end {
        let stats = Dictionary(try await client.serverStats().map { ($0.name, Int($0.value)) }, uniquingKeysWith: { first, _ in first })
        if stats["buffered_bytes", default: 0] > peak || ProcessInfo.processInfo.environment["RINGLOG_MEMORY_TRACE"] != nil {
            RingLogTorture.log("buffered \(stats["buffered_bytes", default: 0] >> 20) MiB, read buffers \(stats["read_buffers_in_use_bytes", default: 0] >> 20) MiB, allocator in use \(stats["allocator_in_use_bytes", default: 0] >> 20) MiB, mapped \(stats["allocator_mapped_bytes", default: 0] >> 20) MiB, free \(stats["allocator_free_bytes", default: 0] >> 20) MiB")
        }
        peak = max(peak, stats["buffered_bytes", default: 0])
        try await Task.sleep(for: .milliseconds(50))
    }
    return peak
}

struct HonestFigures {
    var megabytesPerSecond = 0
    var perSecond = 0
    var p50Micros = 0
    var p99Micros = 0
    var maxMicros = 0
    var errors = 0

    init(latencies: [Int], seconds: Int, bytes: Int, count: Int, errors: Int) {
        let sorted = latencies.sorted()
        let percentile = { (p: Double) in sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        megabytesPerSecond = bytes / max(seconds, 1) / 1_000_000
        perSecond = count / max(seconds, 1)
        p50Micros = percentile(0.5)
        p99Micros = percentile(0.99)
        maxMicros = sorted.last ?? 0
        self.errors = errors
    }
}

func microseconds(since start: ContinuousClock.Instant) -> Int {
    let elapsed = ContinuousClock.now - start
    return Int(elapsed.components.seconds) * 1_000_000 + Int(elapsed.components.attoseconds / 1_000_000_000_000)
}

/// Reads the log over and over in 1 MiB reads, verifying every batch.
func honestReads(address: SocketAddress, log: LogID, seconds: Int) async throws -> HonestFigures {
    let client = try await RingLogClient.connect(to: address.description)
    defer { client.close() }
    var latencies: [Int] = []
    var bytes = 0
    var errors = 0
    var offset = LogOffset.zero
    let end = ContinuousClock.now.advanced(by: .seconds(seconds))
    while ContinuousClock.now < end {
        let started = ContinuousClock.now
        do {
            let fetched = try await client.read(from: log, offset: offset, maxBytes: 1 << 20)
            _ = try fetched.records()
            latencies.append(microseconds(since: started))
            bytes += fetched.nextOffset.rawValue > offset.rawValue ? Int(fetched.nextOffset.rawValue - offset.rawValue) : 0
            offset = fetched.nextOffset >= fetched.committedEnd ? .zero : fetched.nextOffset
        } catch {
            errors += 1
            RingLogTorture.log("honest reader error: \(error)")
            break
        }
    }
    return HonestFigures(latencies: latencies, seconds: seconds, bytes: bytes, count: latencies.count, errors: errors)
}

/// Two connections appending small durable batches, eight in flight each.
func honestAppends(address: SocketAddress, log: LogID, seconds: Int) async throws -> HonestFigures {
    let latencies = Shared<[Int]>([])
    let errors = Counter()
    let end = ContinuousClock.now.advanced(by: .seconds(seconds))
    var clients: [RingLogClient] = []
    try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<2 {
            let client = try await RingLogClient.connect(to: address.description)
            for lane in 0..<8 {
                group.addTask {
                    let batch = RecordFraming.batch([Array("honest \(lane)".utf8) + [UInt8](repeating: 0x68, count: 100)])
                    while ContinuousClock.now < end {
                        let started = ContinuousClock.now
                        do {
                            _ = try await client.append(to: log, batch: batch)
                            latencies.update { $0.append(microseconds(since: started)) }
                        } catch {
                            errors.add()
                            RingLogTorture.log("honest appender error: \(error)")
                            return
                        }
                    }
                }
            }
            clients.append(client)
        }
        try await group.waitForAll()
    }
    for client in clients { client.close() }
    let all = latencies.value
    return HonestFigures(latencies: all, seconds: seconds, bytes: 0, count: all.count, errors: errors.value)
}

/// Pipelines 20,000 reads of 4 MiB on a connection with a tiny receive buffer, never reads a
/// byte, and reconnects as soon as the server cuts it.
func flood(_ address: SocketAddress, log: LogID, stop: Stop, cut: Counter, seed: UInt64) {
    var requests: [UInt8] = []
    requests.reserveCapacity(20_000 * (WireProtocol.headerBytes + 16))
    for id in 1...20_000 {
        requests += RequestHeader(opcode: .read, bodyLength: 16, requestID: UInt64(id), logID: log).encoded()
        requests += ReadRequest(offset: .zero, maxBytes: 4 << 20).encoded()
    }
    while !stop.isSet {
        guard let fd = connectSocket(address, timeoutMillis: 500) else {
            usleep(20_000)
            continue
        }
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        _ = sendAll(fd, requests)  // gives up at the send timeout once the server stops reading
        // Wait for the server to cut the connection (end of stream or reset), unread data and all.
        while !stop.isSet {
            var descriptor = pollfd(fd: fd, events: pollReadHangUp, revents: 0)
            if poll(&descriptor, 1, 200) > 0, descriptor.revents & (pollReadHangUp | Int16(POLLHUP | POLLERR)) != 0 {
                cut.add()
                break
            }
        }
        close(fd)
    }
}

/// POLLRDHUP (the peer shut down its side), which Swift's Glibc module leaves out as GNU-only.
let pollReadHangUp: Int16 = 0x2000

/// Announces an 8 MiB body (every tenth time 4 GiB, past any limit), sends 0 to 256 KiB of it,
/// then resets or closes; about 500 times a second (a connection flood is the hostile test's
/// business, not this one's).
func sendHugeBodies(_ address: SocketAddress, log: LogID, stop: Stop, count: Counter) {
    var generator = SeededGenerator(seed: 12)
    let chunk = [UInt8](repeating: 0x42, count: 256 << 10)
    var round = 0
    while !stop.isSet {
        round += 1
        guard let fd = connectSocket(address, timeoutMillis: 500) else {
            usleep(10_000)
            continue
        }
        count.add()
        let announced = round % 10 == 0 ? Int(UInt32.max) : 8 << 20
        let header = RequestHeader(opcode: .append, bodyLength: announced, requestID: 1, logID: log).encoded()
        _ = sendAll(fd, header + chunk[0..<Int.random(in: 0...chunk.count, using: &generator)])
        if round % 2 == 0 {
            var linger = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
        }
        close(fd)
        usleep(2_000)
    }
}
