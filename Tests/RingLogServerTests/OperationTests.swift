import CRingLogSupport
import Foundation
import Glibc
import RingLogDiskIO
import RingLogIO
import RingLogTestKit
import RingLogTesting
import RingLogServer
import RingLogStorage
import RingLogWire
import Testing

/// Every operation, over real TCP against an in-process server.
@Suite struct OperationTests {
    @Test func helloReportsVersionAndLimits() throws {
        let server = try TestServer()
        let client = try server.client()
        let hello = try client.call(.hello, HelloRequest().encoded()).decode(HelloResponse.self)
        #expect(hello.version == 1)
        #expect(hello.maxBatchBytes == 1 << 20)
        #expect(hello.maxInFlight == 256)
        #expect(hello.serverName.hasPrefix("ringlogd "))
        #expect(try client.call(.ping).header.status == 0)
    }

    @Test func createAppendReadInfoListTrimDelete() throws {
        let server = try TestServer()
        let client = try server.client()
        let created = try client.createLog("orders")
        #expect(created.name == "orders")
        #expect(created.committedEnd == .zero)
        #expect(created.segmentBytes == 4 << 20)

        let first = try client.append(created.logID, payload(100, seed: 1)).decode(AppendResponse.self)
        let second = try client.append(created.logID, payload(200, seed: 2)).decode(AppendResponse.self)
        #expect(first.offset == .zero)
        #expect(second.offset == LogOffset(148))
        #expect(second.committedEnd == LogOffset(148 + 248), "a durable ack is sent once the batch is committed")

        let read = try client.read(created.logID, from: .zero).batches()
        #expect(read.batches.map(\.offset) == [first.offset, second.offset])
        #expect(read.batches.map(\.payload) == [payload(100, seed: 1), payload(200, seed: 2)])
        #expect(read.head.committedEnd == LogOffset(396))

        let byName = try client.call(.logInfo, LogNameRequest(name: "orders").encoded()).decode(LogDescription.self)
        let byID = try client.call(.logInfo, LogNameRequest(name: "").encoded(), logID: created.logID).decode(LogDescription.self)
        #expect(byName == byID)
        #expect(byName.committedEnd == LogOffset(396))
        #expect(byName.segmentCount == 1)

        _ = try client.createLog("audit")
        let list = try client.call(.listLogs).decode(LogList.self)
        #expect(list.logs.map(\.name) == ["audit", "orders"])

        let trimmed = try client.call(.trim, OffsetMessage(offset: second.offset).encoded(), logID: created.logID).decode(OffsetMessage.self)
        #expect(trimmed.offset == second.offset)
        #expect(try client.read(created.logID, from: .zero).errorCode == .offsetOutOfRange)

        #expect(try client.call(.deleteLog, LogNameRequest(name: "orders").encoded()).header.status == 0)
        #expect(try client.append(created.logID, [1]).errorCode == .unknownLog)
        #expect(try client.call(.listLogs).decode(LogList.self).logs.map(\.name) == ["audit"])
    }

    @Test func writtenModeAcknowledgesAndTheDataIsReadableOnceCommitted() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("fast").logID
        let ack = try client.append(log, payload(64, seed: 3), mode: .written).decode(AppendResponse.self)
        #expect(ack.offset == .zero)
        let deadline = MonotonicClock.millis() + 5_000
        var read = try client.read(log, from: .zero).batches()
        while read.batches.isEmpty && MonotonicClock.millis() < deadline {
            read = try client.read(log, from: .zero, waitMillis: 100).batches()
        }
        #expect(read.batches.map(\.payload) == [payload(64, seed: 3)])
    }

    /// Every append in flight on a log being deleted is answered UNKNOWN_LOG no later than the
    /// DELETE_LOG response, in both acknowledgement modes, on other connections too. Here the
    /// deletion itself waits behind an fdatasync the test holds back, and the appends' answers
    /// must not wait with it.
    @Test func appendsInFlightOnADeletedLogAreAnsweredBeforeTheDeletion() throws {
        let faults = DiskFaults()
        let server = try TestServer { $0.diskFaults = faults }
        let control = try server.client()
        let log = try control.createLog("doomed").logID
        _ = try control.append(log, [1]).decode(AppendResponse.self)
        let appender = try server.client()
        faults.hold("fdatasync")
        defer { faults.release("fdatasync") }
        var bytes: [UInt8] = []
        for seed in 0..<6 {
            bytes += appender.encode(.append, Batch.make(payload: payload(100, seed: seed)), logID: log, flags: seed % 2 == 0 ? 0 : 1)
        }
        try appender.send(bytes)
        try ConnectionCloseTests.waitUntil("the appends wait") { try control.stats()["acks_waiting"] == 3 }
        let deleter = try server.client()
        try deleter.send(deleter.encode(.deleteLog, LogNameRequest(name: "doomed").encoded()))
        for _ in 0..<6 {
            let answer = try appender.receive()
            // Written-mode appends whose write finished were acknowledged already; the rest fail.
            #expect(answer.errorCode == .unknownLog || (answer.errorCode == nil && answer.header.opcode == Opcode.append.rawValue))
        }
        #expect(!deleter.hasData(withinMillis: 200), "the deletion itself waits for the held fdatasync")
        faults.release("fdatasync")
        #expect(try deleter.receive().header.status == 0)
        #expect(try control.stats()["acks_waiting"] == 0)
    }

    @Test func serverStatsCountTraffic() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("stats").logID
        for seed in 0..<5 { _ = try client.append(log, payload(10, seed: seed)) }
        let stats = try client.call(.serverStats).decode(ServerStats.self)
        let values = Dictionary(uniqueKeysWithValues: stats.entries.map { ($0.name, $0.value) })
        #expect(values["appends_total"] == 5)
        #expect(values["connections_open"] == 1)
        #expect((values["fdatasyncs_total"] ?? 0) >= 1)
    }

    /// Whether pwritev2 accepts RWF_DONTCACHE here (Linux 6.14+, and the file system must
    /// support it): the tests of what the kernel does with the flag run only where it does.
    static let kernelTakesUncachedWrites: Bool = {
        let directory = makeTemporaryDirectory()
        defer { removeDirectory(directory) }
        let path = directory + "/uncached-probe"
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        precondition(fd >= 0, "cannot create \(path)")
        defer { close(fd) }
        var byte: UInt8 = 1
        return ringlog_pwrite_with_flags(fd, &byte, 1, 0, 0x80) == 1
    }()

    /// Appends 8 small batches and 3 of 200 KiB to a log `bulk` with uncached writes from 64 KiB;
    /// returns the payloads and the count of uncached writes after each group.
    private func appendSmallThenLarge(_ server: TestServer) throws -> (payloads: [[UInt8]], afterSmall: UInt64, afterLarge: UInt64) {
        let client = try server.client()
        let log = try client.createLog("bulk").logID
        func uncachedWrites() throws -> UInt64 { try client.stats()["uncached_segment_writes_total"] ?? .max }
        var payloads = (0..<8).map { payload(1_000, seed: $0) }
        for data in payloads { _ = try client.append(log, data).decode(AppendResponse.self) }
        let afterSmall = try uncachedWrites()
        for seed in 0..<3 {
            let data = payload(200 << 10, seed: 100 + seed)
            _ = try client.append(log, data).decode(AppendResponse.self)
            payloads.append(data)
        }
        #expect(try client.readAll(log).map(\.payload) == payloads)
        return (payloads, afterSmall, try uncachedWrites())
    }

    /// Batches at or over `uncachedBatchBytes` go out with RWF_DONTCACHE on the real ring; small
    /// ones never do. Where the kernel takes the flag, the large batches' pages leave the page
    /// cache once written back and the small ones' stay.
    @Test(.enabled(if: OperationTests.kernelTakesUncachedWrites, "needs RWF_DONTCACHE (Linux 6.14+)"))
    func largeBatchesAreWrittenUncached() throws {
        let server = try TestServer {
            $0.storage.uncachedBatchBytes = 64 << 10
            $0.storage.zeroAheadBytes = 0
        }
        let (_, afterSmall, afterLarge) = try appendSmallThenLarge(server)
        #expect(afterSmall == 0, "small batches were written uncached")
        #expect(afterLarge >= 3)
        // The small batches' pages are still cached, the large ones' were dropped once written
        // back. (Zero-ahead is off: pages it zeroed are already cached, and the kernel keeps a
        // cached page an uncached write lands in.)
        let smallEnd = 8 * (1_000 + Batch.minHeaderBytes)
        let resident = try residentPages(segmentOf: "bulk", in: server.directory)
        let largeEnd = smallEnd + 3 * ((200 << 10) + Batch.minHeaderBytes)
        let smallPages = resident[0..<smallEnd / 4096]
        let largePages = resident[(smallEnd + 4095) / 4096..<largeEnd / 4096]
        #expect(smallPages.allSatisfy { $0 })
        // Dropping is best effort in the kernel (a page it cannot lock stays); without the flag
        // all of them stay.
        #expect(largePages.filter { $0 }.count < largePages.count / 4, "\(largePages.filter { $0 }.count) of \(largePages.count) pages still cached")
    }

    /// On a kernel that refuses the flag, every write goes out the ordinary way and nothing is lost.
    @Test(.disabled(if: OperationTests.kernelTakesUncachedWrites, "this kernel takes RWF_DONTCACHE"))
    func withoutUncachedWritesEveryWriteIsOrdinary() throws {
        let server = try TestServer { $0.storage.uncachedBatchBytes = 64 << 10 }
        let (_, afterSmall, afterLarge) = try appendSmallThenLarge(server)
        #expect(afterSmall == 0)
        #expect(afterLarge == 0)
    }

    private func firstSegmentPath(of log: String, in directory: String) throws -> String {
        let name = LogFileNames.segment(.zero)
        let found = FileManager.default.enumerator(atPath: directory)?.compactMap { $0 as? String }
        return directory + "/" + (try #require(found?.first { $0.hasSuffix("/\(log)/\(name)") }))
    }

    /// For each page of the log's first segment, whether it is in the page cache (mincore).
    private func residentPages(segmentOf log: String, in directory: String) throws -> [Bool] {
        let fd = open(try firstSegmentPath(of: log, in: directory), O_RDONLY)
        defer { close(fd) }
        let length = Int(lseek(fd, 0, SEEK_END))
        let mapping = try #require(mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0).flatMap { $0 == MAP_FAILED ? nil : $0 })
        defer { munmap(mapping, length) }
        let pages = (length + 4095) / 4096
        var vector = [UInt8](repeating: 0, count: pages)
        #expect(mincore(mapping, length, &vector) == 0)
        return vector.map { $0 & 1 == 1 }
    }

    /// Reads from the disk are uncached: pages a read had to bring in are dropped after, pages
    /// that were cached stay cached, and the bytes are right.
    @Test(.enabled(if: OperationTests.kernelTakesUncachedWrites, "needs RWF_DONTCACHE (Linux 6.14+)"))
    func coldReadsDoNotStayCachedAndCachedPagesDo() throws {
        let server = try TestServer { $0.storage.zeroAheadBytes = 0 }
        let client = try server.client()
        let log = try client.createLog("history").logID
        // 12 MiB in 200 KiB batches: three 4 MiB segments, the first long gone from the 8 MiB
        // tail cache, its pages still in the page cache (these batches are written cached).
        var payloads: [[UInt8]] = []
        for seed in 0..<60 {
            let data = payload(200 << 10, seed: seed)
            _ = try client.append(log, data).decode(AppendResponse.self)
            payloads.append(data)
        }
        let path = try firstSegmentPath(of: "history", in: server.directory)
        let fd = open(path, O_RDONLY)
        #expect(fdatasync(fd) == 0 && posix_fadvise(fd, 0, 1 << 20, POSIX_FADV_DONTNEED) == 0)
        close(fd)
        let before = try residentPages(segmentOf: "history", in: server.directory)
        #expect(before[0..<256].allSatisfy { !$0 } && before[256..<512].allSatisfy { $0 }, "the test could not set up the page cache")

        let read = try client.read(log, from: .zero, maxBytes: 2 << 20).batches()
        #expect(read.batches.map(\.payload) == Array(payloads.prefix(read.batches.count)))
        #expect(read.batches.count >= 9)
        let after = try residentPages(segmentOf: "history", in: server.directory)
        #expect(after[256..<512].allSatisfy { $0 }, "cached pages were dropped")
        let kept = after[0..<256].filter { $0 }.count
        #expect(kept < 64, "\(kept) of the 256 pages read from disk stayed cached")
        #expect(try client.readAll(log).map(\.payload) == payloads)
    }

    @Test func responsesComeBackInRequestOrderWithTheirIDs() throws {
        let server = try TestServer()
        let client = try server.client()
        let log = try client.createLog("pipeline").logID
        // A durable append (waits for fdatasync) followed by pings (answered at once): the pings'
        // responses must still come after the append's.
        var bytes: [UInt8] = []
        var ids: [UInt64] = []
        for index in 0..<40 {
            let id = UInt64(1000 + index)
            ids.append(id)
            bytes += index % 4 == 0
                ? client.encode(.append, Batch.make(payload: payload(50, seed: index)), logID: log, requestID: id)
                : client.encode(.ping, requestID: id)
        }
        try client.send(bytes)
        var received: [UInt64] = []
        var offsets: [LogOffset] = []
        for _ in 0..<40 {
            let response = try client.receive()
            received.append(response.header.requestID)
            if response.header.opcode == Opcode.append.rawValue { offsets.append(try response.decode(AppendResponse.self).offset) }
        }
        #expect(received == ids)
        #expect(offsets == (0..<10).map { LogOffset(UInt64($0 * 98)) })
    }
}
