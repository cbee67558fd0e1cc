import Glibc
import RingLogDiskIO
import RingLogIO
import RingLogTestKit
import RingLogTesting
@testable import RingLogServer
import RingLogStorage
import RingLogWire
import Testing

/// Closing a connection, by whichever path, removes everything that waits on its behalf: a
/// long-poll or a pending acknowledgement of a closed connection is never answered into the
/// connection that gets its slot next (the cross-client leak of issue 12), and the server's
/// counts of waiters and slots return to their idle values.
@Suite struct ConnectionCloseTests {
    enum CloseMode: String, CaseIterable, CustomStringConvertible {
        /// The client closes normally (FIN).
        case fin
        /// The client is killed with data unread (RST).
        case reset
        /// The server closes it: a request header stalls half-way.
        case headerTimeout
        /// The server closes it: a request body stalls half-way.
        case payloadTimeout
        /// The server closes it: the client stops reading its responses.
        case sendTimeout

        var description: String { rawValue }
    }

    static func server(faults: DiskFaults? = nil, shutdownTimeoutMillis: Int? = nil) throws -> TestServer {
        try TestServer { configuration in
            if let shutdownTimeoutMillis { configuration.shutdownTimeoutMillis = shutdownTimeoutMillis }
            configuration.headerTimeoutMillis = 300
            configuration.payloadTimeoutMillis = 300
            configuration.sendTimeoutMillis = 1_000
            // A read window (the larger of this and the largest batch) that holds four reads of
            // `makeBigLog`'s first segment, together larger than the kernel's socket buffers.
            configuration.maxReadBytes = 16 << 20
            configuration.diskFaults = faults
        }
    }

    /// Makes `client`'s connection end the way `mode` says. Requests it already sent stay in flight.
    static func close(_ client: RawClient, _ mode: CloseMode, bigLog: LogID) throws {
        switch mode {
        case .fin: Glibc.shutdown(client.fd, Int32(SHUT_RDWR))
        case .reset: client.reset()
        case .headerTimeout: try client.send([0x52, 0x4C, 1, 2])
        case .payloadTimeout:
            try client.send(RequestHeader(opcode: .append, bodyLength: 1_000, requestID: 99, logID: bigLog).encoded() + [1, 2, 3])
        case .sendTimeout:
            // Responses larger than the socket buffers that the client never reads: the server's
            // output cannot drain. (Four reads of one 3.6 MB segment: within the read window.)
            for _ in 0..<4 {
                try client.send(client.encode(.read, ReadRequest(offset: .zero, maxBytes: 4 << 20).encoded(), logID: bigLog))
            }
        }
    }

    /// A log holding a few MiB, for reads whose responses do not fit in the socket buffers.
    static func makeBigLog(_ client: RawClient) throws -> LogID {
        let log = try client.createLog("big").logID
        for seed in 0..<6 { _ = try client.append(log, payload(900_000, seed: seed)).decode(AppendResponse.self) }
        return log
    }

    static func sendLongPoll(_ client: RawClient, log: LogID, at offset: LogOffset, waitMillis: UInt32, requestID: UInt64) throws {
        try client.send(client.encode(.read, ReadRequest(offset: offset, maxBytes: 4096, maxWaitMillis: waitMillis).encoded(), logID: log, requestID: requestID))
    }

    static func waitUntil(_ what: String, timeoutMillis: Int = 5_000, _ condition: () throws -> Bool) throws {
        let deadline = MonotonicClock.millis() + timeoutMillis
        while try !condition() {
            if MonotonicClock.millis() > deadline { throw TestFailure("timed out waiting until \(what)") }
            usleep(20_000)
        }
    }

    /// A long-polls log X at its end and its connection ends; B gets A's slot and long-polls log
    /// Y as its first request (the same per-connection sequence number A's read had). An append
    /// to X must not reach B; an append to Y must.
    @Test(arguments: CloseMode.allCases)
    func aClosedConnectionsLongPollIsNeverAnsweredIntoTheNextConnection(_ mode: CloseMode) throws {
        let server = try Self.server()
        let control = try server.client()
        let big = try Self.makeBigLog(control)
        let x = try control.createLog("x").logID
        let y = try control.createLog("y").logID
        let idle = try Self.settledStats(control)

        let a = try server.client()
        if mode == .sendTimeout {
            var small: Int32 = 4096
            setsockopt(a.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        // A stalled reader's output must be queued ahead of its long-poll to hold the send up.
        if mode == .sendTimeout { try Self.close(a, mode, bigLog: big) }
        try Self.sendLongPoll(a, log: x, at: .zero, waitMillis: 20_000, requestID: 7)
        try Self.waitUntil("A's long-poll waits") { try control.stats()["long_polls_waiting"] == 1 }
        if mode != .sendTimeout { try Self.close(a, mode, bigLog: big) }
        try Self.waitUntil("A's connection is gone") { try control.stats()["connections_open"] == idle["connections_open"] }
        #expect(try control.stats()["long_polls_waiting"] == 0, "closing removes the long-poll")

        let b = try server.client()
        try Self.sendLongPoll(b, log: y, at: .zero, waitMillis: 20_000, requestID: 1)
        try Self.waitUntil("B's long-poll waits") { try control.stats()["long_polls_waiting"] == 1 }
        _ = try control.append(x, Array("for X only".utf8)).decode(AppendResponse.self)
        #expect(!b.hasData(withinMillis: 300), "B received an answer for a read it did not make")
        _ = try control.append(y, Array("for Y".utf8)).decode(AppendResponse.self)
        let answer = try b.receive()
        #expect(answer.header.requestID == 1)
        #expect(try answer.batches().batches.map(\.payload) == [Array("for Y".utf8)])

        b.reset()
        try Self.waitUntil("every connection but control is gone") { try control.stats()["connections_open"] == idle["connections_open"] }
        try Self.expectIdle(control, like: idle)
    }

    /// The server's statistics once the work the set-up started (log creation, the first
    /// segment writes and their syncs) is done: the loop's handle count unchanged over several
    /// reads. Taken while a disk operation was still in flight, the count would be one too high
    /// for `expectIdle` to ever see again (seen once on a loaded machine).
    static func settledStats(_ control: RawClient) throws -> [String: UInt64] {
        var previous = try control.stats()
        var unchanged = 0
        let deadline = MonotonicClock.millis() + 5_000
        while unchanged < 3 && MonotonicClock.millis() < deadline {
            usleep(30_000)
            let now = try control.stats()
            unchanged = now["loop_handles_in_use"] == previous["loop_handles_in_use"] && now["acks_waiting"] == 0 ? unchanged + 1 : 0
            previous = now
        }
        return previous
    }

    /// Nothing waits, no handle and no pooled read buffer is held, no memory is charged: the
    /// counts are back to what they were before the test's connections.
    static func expectIdle(_ control: RawClient, like idle: [String: UInt64]) throws {
        try waitUntil("the loop's handles are back to idle") { try control.stats()["loop_handles_in_use"] == idle["loop_handles_in_use"] }
        let after = try control.stats()
        #expect(after["long_polls_waiting"] == 0)
        #expect(after["acks_waiting"] == 0)
        #expect(after["reads_waiting"] == 0)
        #expect(after["read_buffers_in_use_bytes"] == idle["read_buffers_in_use_bytes"])
        #expect(after["buffered_bytes"] == idle["buffered_bytes"])
    }

    /// The same for an acknowledgement: A's durable append waits for an fdatasync held back by
    /// the test; A's connection ends; B, on A's slot, appends to another log. When the disk is
    /// released B gets exactly its own acknowledgement, and nothing waits any more.
    @Test(arguments: CloseMode.allCases)
    func aClosedConnectionsPendingAcknowledgementIsRemoved(_ mode: CloseMode) throws {
        let faults = DiskFaults()
        let server = try Self.server(faults: faults)
        let control = try server.client()
        let big = try Self.makeBigLog(control)
        let x = try control.createLog("x").logID
        let y = try control.createLog("y").logID
        let idle = try Self.settledStats(control)

        let a = try server.client()
        if mode == .sendTimeout {
            var small: Int32 = 4096
            setsockopt(a.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        }
        faults.hold("fdatasync")
        defer { faults.release("fdatasync") }
        if mode == .sendTimeout { try Self.close(a, mode, bigLog: big) }
        try a.send(a.encode(.append, Batch.make(payload: Array("A's batch".utf8)), logID: x))
        try Self.waitUntil("A's acknowledgement waits") { try control.stats()["acks_waiting"] == 1 }
        if mode != .sendTimeout { try Self.close(a, mode, bigLog: big) }
        if mode == .fin || mode == .headerTimeout || mode == .payloadTimeout {
            // A half-closed client, and one closed after an error, are still owed the answers to
            // requests before it: the connection stays until they are sent.
            usleep(600_000)
            #expect(try control.stats()["acks_waiting"] == 1)
            faults.release("fdatasync")
            if mode != .fin {
                #expect(try a.receive().decode(AppendResponse.self).offset == .zero)
                #expect(try a.receive().errorCode == .timedOut)
            }
        }
        try Self.waitUntil("A's connection is gone", timeoutMillis: 10_000) {
            try control.stats()["connections_open"] == idle["connections_open"]
        }
        #expect(try control.stats()["acks_waiting"] == 0, "closing removes the acknowledgement")

        faults.hold("fdatasync")
        let b = try server.client()
        let requestID = b.takeRequestID()
        try b.send(b.encode(.append, Batch.make(payload: Array("B's batch".utf8)), logID: y, requestID: requestID))
        try Self.waitUntil("B's acknowledgement waits") { try control.stats()["acks_waiting"] == 1 }
        faults.release("fdatasync")
        let answer = try b.receive()
        #expect(answer.header.requestID == requestID)
        let ack = try answer.decode(AppendResponse.self)
        #expect(ack.offset == .zero, "B's batch is the first in Y")
        #expect(!b.hasData(withinMillis: 200), "B got a second answer")
        #expect(try control.readAll(y).map(\.payload) == [Array("B's batch".utf8)])
        b.reset()
        try Self.waitUntil("every connection but control is gone") { try control.stats()["connections_open"] == idle["connections_open"] }
        try Self.expectIdle(control, like: idle)
    }

    /// A graceful stop answers every waiting long-poll with SHUTTING_DOWN, finishes and
    /// acknowledges appends already in flight, then closes the connections.
    @Test func aGracefulStopAnswersLongPollsShuttingDownAndAcknowledgesAppendsInFlight() throws {
        let faults = DiskFaults()
        // The stop must wait for the held fdatasync, however slowly this test gets to release it
        // on a loaded machine (the default 5 s once ran out under the full parallel suite, and
        // the stop then closed the appender's connection before its acknowledgement).
        let server = try Self.server(faults: faults, shutdownTimeoutMillis: 120_000)
        let control = try server.client()
        let x = try control.createLog("x").logID
        let poller = try server.client()
        try Self.sendLongPoll(poller, log: x, at: .zero, waitMillis: 20_000, requestID: 5)
        let appender = try server.client()
        faults.hold("fdatasync")
        try appender.send(appender.encode(.append, Batch.make(payload: [1, 2, 3]), logID: x, requestID: 9))
        try Self.waitUntil("both wait") {
            let stats = try control.stats()
            return stats["acks_waiting"] == 1 && stats["long_polls_waiting"] == 1
        }
        server.server.stop()
        let polled = try poller.receive()
        #expect(polled.header.requestID == 5)
        #expect(polled.errorCode == .shuttingDown)
        #expect(poller.waitForClose())
        faults.release("fdatasync")
        let acked = try appender.receive()
        #expect(acked.header.requestID == 9)
        #expect(try acked.decode(AppendResponse.self).offset == .zero)
        #expect(appender.waitForClose())
        #expect(server.server.wait(), "the stop was clean")
    }

    /// Connections closed by the idle timeout leave nothing behind either.
    @Test func idleClosesReturnEveryCountToIdle() throws {
        let server = try TestServer { $0.idleTimeoutMillis = 1_000 }
        let control = try server.client()
        let log = try control.createLog("x").logID
        let idle = try Self.settledStats(control)
        var clients: [RawClient] = []
        for _ in 0..<5 {
            let client = try server.client()
            _ = try client.read(log, from: .zero, waitMillis: 50).batches()
            clients.append(client)
        }
        try Self.waitUntil("the idle connections are closed") {
            _ = try control.call(.ping)
            return try control.stats()["connections_open"] == idle["connections_open"]
        }
        for client in clients { #expect(client.waitForClose()) }
        try Self.expectIdle(control, like: idle)
    }
}
