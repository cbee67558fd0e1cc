import Glibc
import RingLogIO
import RingLogTestKit
import RingLogTesting
@testable import RingLogServer
import RingLogStorage
import RingLogWire
import Testing

/// The server's memory for requests and responses in flight is bounded by construction
/// (`MemoryBudget`, docs/operations.md#memory): clients that never collect their results hold at
/// most a read window each and the budget in all, bodies that do not fit are refused with
/// SERVER_BUSY, and honest clients keep being served meanwhile.
@Suite struct MemoryBudgetTests {
    /// A server with a small budget: 1 MiB batches and reads, so the read window is 1 MiB.
    static func server(budget: Int = 6 << 20) throws -> TestServer {
        try TestServer { configuration in
            configuration.maxBufferedBytesTotal = budget
            configuration.maxReadBytes = 1 << 20
            configuration.sendTimeoutMillis = 30_000
        }
    }

    /// A log of 8 batches of 900 KB (two segments of the test server's 4 MiB).
    static func bigLog(_ client: RawClient) throws -> (LogID, [LogOffset]) {
        let log = try client.createLog("big").logID
        let offsets = try (0..<8).map { try client.append(log, payload(900_000, seed: $0)).decode(AppendResponse.self).offset }
        return (log, offsets)
    }

    /// Pipelines `reads` reads of the first batch and does not read the answers (yet). With a
    /// tiny receive buffer (`stalled`) the kernel holds little for it either.
    static func nonReader(_ server: TestServer, log: LogID, reads: Int, stalled: Bool = true) throws -> RawClient {
        let client = try server.client()
        if stalled {
            var small: Int32 = 4096
            setsockopt(client.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        var bytes: [UInt8] = []
        for _ in 0..<reads { bytes += client.encode(.read, ReadRequest(offset: .zero, maxBytes: 1 << 20).encoded(), logID: log) }
        try client.send(bytes)
        return client
    }

    /// A client that pipelines many reads and takes its time collecting them makes the server
    /// read for it only as fast as it collects: its reads wait for its read window, and every
    /// one is answered, in order, once it reads.
    @Test func readsWaitForTheirConnectionsReadWindow() throws {
        let server = try Self.server(budget: 64 << 20)
        let control = try server.client()
        let (log, offsets) = try Self.bigLog(control)
        let reader = try Self.nonReader(server, log: log, reads: 40, stalled: false)
        try ConnectionCloseTests.waitUntil("most reads wait") { try control.stats()["reads_waiting"] ?? 0 >= 30 }
        let stats = try control.stats()
        #expect(stats["buffered_bytes"] ?? .max <= 3 << 20, "about one read window held for it: \(stats["buffered_bytes"] ?? 0)")
        for index in 0..<40 {
            let response = try reader.receive()
            #expect(response.header.requestID == UInt64(index + 1))
            #expect(try response.batches().batches.first?.offset == offsets[0])
        }
        #expect(try control.stats()["reads_waiting"] == 0)
    }

    /// Several clients that never collect their results cannot take more than the budget (plus
    /// one read); an honest reader that arrives later is served while they hold it, and the
    /// shortened send deadline removes them.
    @Test func nonReadersCannotTakeMoreThanTheBudgetAndAnHonestReaderIsStillServed() throws {
        let budget = 6 << 20
        let server = try Self.server(budget: budget)
        let control = try server.client()
        let (log, offsets) = try Self.bigLog(control)
        let attackers = try (0..<8).map { _ in try Self.nonReader(server, log: log, reads: 200) }
        try ConnectionCloseTests.waitUntil("the budget is taken") { try control.stats()["connections_waiting_for_memory"] ?? 0 > 0 }
        var peak: UInt64 = 0
        let honest = try server.client()
        for round in 0..<20 {
            let stats = try control.stats()
            peak = max(peak, stats["buffered_bytes"] ?? 0)
            let started = MonotonicClock.millis()
            let read = try honest.read(log, from: offsets[round % 8], maxBytes: 1 << 20).batches()
            #expect(read.batches.first?.payload == payload(900_000, seed: round % 8))
            #expect(MonotonicClock.millis() - started < 3_000, "an honest read waited \(MonotonicClock.millis() - started) ms")
        }
        #expect(peak <= UInt64(budget + (1 << 20) + (64 << 10)), "buffered \(peak) bytes over a budget of \(budget)")
        try ConnectionCloseTests.waitUntil("the non-readers are cut", timeoutMillis: 10_000) {
            try control.stats()["connections_closed_for_memory_total"] ?? 0 >= 1
        }
        _ = attackers
    }

    /// A body that spans receive buffers gets memory only if the budget can hold all of it;
    /// otherwise it is read and dropped, the request is answered SERVER_BUSY, and the connection
    /// goes on in step. Retried once the budget has room, it succeeds.
    @Test func aBodyTheBudgetCannotHoldIsDroppedAndAnsweredServerBusy() throws {
        let server = try Self.server(budget: 4 << 20)
        let control = try server.client()
        let (log, _) = try Self.bigLog(control)
        let attackers = try (0..<8).map { _ in try Self.nonReader(server, log: log, reads: 50) }
        try ConnectionCloseTests.waitUntil("the budget is taken") { try control.stats()["buffered_bytes"] ?? 0 >= 4 << 20 }
        let appender = try server.client()
        let big = payload(600_000, seed: 99)
        let refused = try appender.append(log, big)
        #expect(refused.errorCode == .serverBusy)
        #expect(refused.error?.detail1 == UInt64(Batch.make(payload: big).count))
        #expect(try appender.append(log, [1, 2, 3]).header.status == 0, "small appends go on, in step")
        #expect(try control.stats()["requests_refused_for_memory_total"] == 1)
        for attacker in attackers { attacker.reset() }
        try ConnectionCloseTests.waitUntil("the budget has room") { try control.stats()["buffered_bytes"] ?? .max < 1 << 20 }
        let accepted = try appender.append(log, big).decode(AppendResponse.self)
        #expect(try control.read(log, from: accepted.offset).batches().batches.first?.payload == big)
    }
}
