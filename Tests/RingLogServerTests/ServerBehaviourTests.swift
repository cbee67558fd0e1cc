import Dispatch
import Foundation
import Glibc
import RingLogIO
import RingLogTestKit
import RingLogTesting
@testable import RingLogServer
import RingLogStorage
import RingLogWire
import Synchronization
import Testing

@Suite struct ConcurrencyTests {
    /// Many connections, each with a deep pipeline of durable appends: every offset is unique, the
    /// offsets tile the log with no gap, each connection's acknowledgements arrive in its request
    /// order, and every acknowledged batch reads back byte for byte.
    @Test func concurrentPipelinedAppendersGetContiguousOffsetsAndReadableAcks() throws {
        let server = try TestServer()
        let log = try server.client().createLog("shared").logID
        let address = server.address
        let connections = 16
        let perConnection = 200
        let depth = 32
        let acknowledged = Mutex<[(offset: LogOffset, payload: [UInt8])]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: connections) { worker in
            do {
                let client = try RawClient(address)
                var sent = 0
                var received = 0
                var lastOffset: LogOffset?
                var mine: [(LogOffset, [UInt8])] = []
                while received < perConnection {
                    var bytes: [UInt8] = []
                    while sent < perConnection && sent - received < depth {
                        bytes += client.encode(.append, Batch.make(payload: payload(20 + (sent % 50), seed: worker * 10_000 + sent)), logID: log)
                        sent += 1
                    }
                    if !bytes.isEmpty { try client.send(bytes) }
                    let ack = try client.receive().decode(AppendResponse.self)
                    if let lastOffset, ack.offset <= lastOffset { throw TestFailure("acks out of order on connection \(worker)") }
                    lastOffset = ack.offset
                    mine.append((ack.offset, payload(20 + (received % 50), seed: worker * 10_000 + received)))
                    received += 1
                }
                acknowledged.withLock { $0.append(contentsOf: mine) }
            } catch {
                failures.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let acks = acknowledged.withLock { $0 }.sorted { $0.offset < $1.offset }
        #expect(acks.count == connections * perConnection)
        var expected = LogOffset.zero
        for ack in acks {
            #expect(ack.offset == expected, "gap or overlap at \(ack.offset)")
            expected = ack.offset.advanced(by: 48 + ack.payload.count)
        }
        let stored = try server.client().readAll(log)
        #expect(stored.map(\.offset) == acks.map(\.offset))
        #expect(stored.map(\.payload) == acks.map(\.payload))
    }
}

@Suite struct LongPollTests {
    @Test func aWaitingReadIsAnsweredAsSoonAsDataCommits() throws {
        let server = try TestServer()
        let reader = try server.client()
        let writer = try server.client()
        let log = try writer.createLog("poll").logID
        let requestID = reader.takeRequestID()
        try reader.send(reader.encode(.read, ReadRequest(offset: .zero, maxBytes: 4096, maxWaitMillis: 10_000).encoded(), logID: log, requestID: requestID))
        usleep(200_000)
        let appended = MonotonicClock.millis()
        _ = try writer.append(log, payload(77, seed: 1)).decode(AppendResponse.self)
        let response = try reader.receive()
        let waited = MonotonicClock.millis() - appended
        #expect(response.header.requestID == requestID)
        #expect(try response.batches().batches.map(\.payload) == [payload(77, seed: 1)])
        #expect(waited < 2_000, "answered on commit, not at the 10 s deadline (took \(waited) ms)")
    }

    @Test func aWaitingReadTimesOutEmptyAtItsDeadline() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("quiet").logID
        let started = MonotonicClock.millis()
        let response = try client.read(log, from: .zero, waitMillis: 300)
        let waited = MonotonicClock.millis() - started
        let read = try response.batches()
        #expect(read.batches.isEmpty)
        #expect(read.head.committedEnd == .zero)
        #expect(waited >= 290 && waited < 2_000, "waited \(waited) ms for a 300 ms deadline")
    }

    @Test func waitsAreCappedByTheServerLimit() throws {
        let server = try TestServer { $0.maxWaitMillis = 200 }
        let client = try server.client()
        let log = try client.createLog("capped").logID
        let started = MonotonicClock.millis()
        _ = try client.read(log, from: .zero, waitMillis: 60_000).batches()
        #expect(MonotonicClock.millis() - started < 2_000)
    }
}

@Suite struct StalledClientTests {
    /// One client sends an append header and withholds the body; another disconnects halfway
    /// through a body. Neither holds back anyone's commits, and neither leaves bytes a reader sees.
    @Test func stalledAndVanishedAppendersNeitherBlockOthersNorLeaveBytes() throws {
        let server = try TestServer { $0.payloadTimeoutMillis = 1_000 }
        let setup = try server.client()
        let log = try setup.createLog("stall").logID
        _ = try setup.append(log, payload(10, seed: 0)).decode(AppendResponse.self)

        let stalled = try server.client()
        let batch = Batch.make(payload: payload(5_000, seed: 1))
        try stalled.send(RequestHeader(opcode: .append, bodyLength: batch.count, requestID: 1, logID: log).encoded() + Array(batch[0..<100]))

        let vanishing = try server.client()
        try vanishing.send(RequestHeader(opcode: .append, bodyLength: batch.count, requestID: 1, logID: log).encoded() + Array(batch[0..<2_000]))
        shutdown(vanishing.fd, Int32(SHUT_RDWR))

        let honest = try server.client()
        var offsets: [LogOffset] = []
        for seed in 2..<22 {
            let started = MonotonicClock.millis()
            offsets.append(try honest.append(log, payload(100, seed: seed)).decode(AppendResponse.self).offset)
            #expect(MonotonicClock.millis() - started < 1_000, "an honest append waited behind a stalled one")
        }
        let all = try honest.readAll(log)
        #expect(all.map(\.payload) == [payload(10, seed: 0)] + (2..<22).map { payload(100, seed: $0) })
        #expect(all.dropFirst().map(\.offset) == offsets)

        // The stalled client is cut off at its payload deadline and its bytes never appear.
        let response = try stalled.receive()
        #expect(response.errorCode == .timedOut)
        #expect(stalled.waitForClose())
        #expect(try honest.readAll(log).count == 21)
    }
    /// The send deadline measures how long queued output has waited, not how long ago the
    /// connection last sent anything. (Found by the hostile test: its set-up connection sat idle
    /// through the attack and was closed as a non-reader when a sweep ran in the same loop turn
    /// that queued its next response.)
    @Test func theSendDeadlineCountsFromWhenOutputStartedWaiting() {
        let second: UInt64 = 1_000_000_000
        var clock = SendClock(nowNanos: 0)
        #expect(!clock.isLate(backlogBytes: 0, nowNanos: 10 * second, timeoutNanos: second), "nothing waiting is never late")
        clock.outputStarted(nowNanos: 10 * second)
        #expect(!clock.isLate(backlogBytes: 4 << 20, nowNanos: 10 * second + second / 2, timeoutNanos: second))
        #expect(clock.isLate(backlogBytes: 4 << 20, nowNanos: 11 * second + 1, timeoutNanos: second), "a reader that takes nothing for the deadline is late")
        clock.progressed(nowNanos: 11 * second)
        #expect(!clock.isLate(backlogBytes: 1, nowNanos: 11 * second + second / 2, timeoutNanos: second), "any progress restarts the clock")
    }

    /// End to end: a client idle for longer than the send deadline, then slow to drain a large
    /// response (well within the deadline), gets all of it.
    @Test func aConnectionIdleLongerThanTheSendDeadlineKeepsItsNextLargeResponse() throws {
        let server = try TestServer { $0.sendTimeoutMillis = 1_000 }
        let setup = try server.client()
        let log = try setup.createLog("idle").logID
        let payloads = (0..<4).map { payload(900_000, seed: $0) }
        for bytes in payloads { _ = try setup.append(log, bytes).decode(AppendResponse.self) }

        let reader = try server.client()
        var small: Int32 = 16 << 10
        setsockopt(reader.fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        _ = try reader.call(.ping)
        usleep(1_500_000)
        try reader.send(reader.encode(.read, ReadRequest(offset: .zero, maxBytes: 4 << 20).encoded(), logID: log))
        usleep(400_000)  // several sweeps run while the response waits in the server
        let response = try reader.receive()
        let batches = try storedBatches(Array(response.body[ReadResponseHead.encodedBytes...]), from: .zero)
        #expect(batches.map(\.payload) == payloads)
    }
}

@Suite struct DaemonTests {
    /// `listening` means ready, including ready to stop cleanly: a SIGTERM sent the moment it
    /// appears is a graceful stop (exit 0), never the default action that kills the process.
    @Test func aSIGTERMRightAfterListeningIsAGracefulStop() throws {
        for _ in 0..<5 {
            let directory = makeTemporaryDirectory()
            defer { removeDirectory(directory) }
            let daemon = try Daemon(directory: directory)
            daemon.kill(SIGTERM)
            #expect(daemon.waitForExit() == 0)
        }
    }

    /// The real ringlogd process: append, kill -9, start again on the same directory, read
    /// everything that was acknowledged.
    @Test func everyAcknowledgedAppendSurvivesKillNine() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        var daemon = try Daemon(directory: directory)
        let client = try RawClient(daemon.address)
        let log = try client.createLog("durable").logID
        var acknowledged: [(LogOffset, [UInt8])] = []
        for seed in 0..<300 {
            let bytes = payload(50 + seed % 200, seed: seed)
            acknowledged.append((try client.append(log, bytes).decode(AppendResponse.self).offset, bytes))
        }
        daemon.kill(SIGKILL)
        daemon = try Daemon(directory: directory)
        let reader = try RawClient(daemon.address)
        let stored = try reader.readAll(log)
        #expect(stored.map(\.offset) == acknowledged.map(\.0))
        #expect(stored.map(\.payload) == acknowledged.map(\.1))
        #expect(try reader.append(log, [1]).decode(AppendResponse.self).offset == stored.last.map { $0.offset.advanced(by: 48 + $0.payload.count) })
        daemon.kill(SIGTERM)
        #expect(daemon.waitForExit() == 0, "SIGTERM stops it cleanly")
    }

    @Test func theDaemonExplainsWhyItCannotStart() throws {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let first = try Daemon(directory: directory)
        let second = try Daemon.run(["--data-dir", directory, "--listen", "127.0.0.1:0"])
        #expect(second.status != 0)
        #expect(second.standardError.contains("locked by another process"))
        let badAddress = try Daemon.run(["--data-dir", directory + "/x", "--listen", "127.0.0.1:99999"])
        #expect(badAddress.status != 0)
        #expect(badAddress.standardError.contains("--listen"))
        let badSizes = try Daemon.run(["--data-dir", directory + "/y", "--segment-bytes", "1MiB"])
        #expect(badSizes.status == 64)
        #expect(badSizes.standardError.contains("--segment-bytes 1MiB (on the command line) is out of range"))
        first.kill(SIGTERM)
        #expect(first.waitForExit() == 0)
    }
}

