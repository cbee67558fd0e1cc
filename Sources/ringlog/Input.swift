import ArgumentParser
import Dispatch
import Glibc
import RingLogClient
import RingLogIO
import RingLogWire
import Synchronization

/// How input is cut into records (`--delimiter`).
enum Delimiter: Equatable, ExpressibleByArgument {
    /// LF, and one CR just before it dropped, so CRLF text splits as lines.
    case line
    /// Any other separator, taken as given.
    case bytes([UInt8])
    /// The whole input is one record.
    case none

    init?(argument: String) {
        switch argument {
        case "line", "lf", "\\n": self = .line
        case "none": self = .none
        case "nul", "\\0": self = .bytes([0])
        default:
            guard let bytes = Delimiter.unescape(argument), !bytes.isEmpty else { return nil }
            self = .bytes(bytes)
        }
    }

    /// `\n`, `\r`, `\t`, `\0`, `\\` and `\xHH` in a separator typed on a command line.
    static func unescape(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        var bytes = Array(text.utf8)[...]
        while let byte = bytes.popFirst() {
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                continue
            }
            switch bytes.popFirst() {
            case UInt8(ascii: "n"): out.append(10)
            case UInt8(ascii: "r"): out.append(13)
            case UInt8(ascii: "t"): out.append(9)
            case UInt8(ascii: "0"): out.append(0)
            case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
            case UInt8(ascii: "x"):
                guard bytes.count >= 2, let value = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16) else { return nil }
                bytes = bytes.dropFirst(2)
                out.append(value)
            default: return nil
            }
        }
        return out
    }
}

/// A record longer than the server takes.
struct RecordTooLarge: Error {
    let bytes: Int
    let limit: Int
    /// Found while the record was still arriving: it is at least `bytes` long.
    var atLeast = false
    var message: String { "record of \(atLeast ? "at least " : "")\(bytes) B exceeds the largest record this server takes (\(limit) B)" }
}

/// Cuts a byte stream into records at `delimiter`; bytes are never decoded or re-encoded. A
/// record still growing past `maxRecordBytes` is refused as soon as that is known.
struct RecordSplitter {
    let delimiter: Delimiter
    let maxRecordBytes: Int
    private var pending: [UInt8] = []
    /// Bytes of `pending` already searched for the separator.
    private var searched = 0

    init(delimiter: Delimiter, maxRecordBytes: Int) {
        self.delimiter = delimiter
        self.maxRecordBytes = maxRecordBytes
    }

    mutating func feed(_ chunk: UnsafeRawBufferPointer, _ emit: (ArraySlice<UInt8>) throws -> Void) throws {
        pending.append(contentsOf: chunk)
        var consumed = 0
        switch delimiter {
        case .none:
            break
        case .line:
            while let newline = pending[(consumed + searched)...].firstIndex(of: 10) {
                var end = newline
                if end > consumed && pending[end - 1] == 13 { end -= 1 }
                try emit(checked(pending[consumed..<end]))
                consumed = newline + 1
                searched = 0
            }
        case .bytes(let separator):
            while let found = firstMatch(of: separator, from: consumed + searched) {
                try emit(checked(pending[consumed..<found]))
                consumed = found + separator.count
                searched = 0
            }
        }
        if consumed > 0 { pending.removeFirst(consumed) }
        // What is left is the start of a record; keep a separator's worth unsearched in case it
        // is cut between chunks.
        searched = max(0, pending.count - (delimiterLength - 1))
        if pending.count > maxRecordBytes + delimiterLength { throw RecordTooLarge(bytes: pending.count, limit: maxRecordBytes, atLeast: true) }
    }

    /// The last record, when the input did not end with a separator.
    mutating func finish(_ emit: (ArraySlice<UInt8>) throws -> Void) throws {
        if !pending.isEmpty { try emit(checked(pending[...])) }
        pending.removeAll()
        searched = 0
    }

    private var delimiterLength: Int {
        switch delimiter {
        case .line: 1
        case .bytes(let separator): separator.count
        case .none: 1
        }
    }

    private func checked(_ record: ArraySlice<UInt8>) throws -> ArraySlice<UInt8> {
        guard record.count <= maxRecordBytes else { throw RecordTooLarge(bytes: record.count, limit: maxRecordBytes) }
        return record
    }

    private func firstMatch(of separator: [UInt8], from start: Int) -> Int? {
        guard let first = separator.first, pending.count - start >= separator.count else { return nil }
        var index = start
        while let candidate = pending[index...].firstIndex(of: first) {
            guard pending.count - candidate >= separator.count else { return nil }
            if pending[candidate..<(candidate + separator.count)].elementsEqual(separator) { return candidate }
            index = candidate + 1
        }
        return nil
    }
}

/// Appends records as they come: from a file descriptor (standard input, a file) read on a
/// thread of its own, cut into records, gathered into batches of at most `batchBytes` that go
/// out when full or `lingerMillis` after their first record, whichever is first, so a slow
/// producer's records commit within milliseconds and a fast one's travel in full batches. Up to
/// `window` batches are in flight; positions are printed, in order, as acknowledgements arrive.
final class StreamingAppend: @unchecked Sendable {
    enum Source {
        case records([[UInt8]])
        case descriptor(Int32)
    }

    struct Settings {
        var log: LogID
        var mode: AckMode
        var batchBytes: Int
        var lingerMillis: Int
        var delimiter: Delimiter
        var window = 16
        /// How long an idempotent append keeps reconnecting before it gives up.
        var retryTimeoutMillis = 120_000
        var printPositions: Bool
        var json: Bool
        /// `--if-end`: the first batch goes only if the log ends here, each next one only if it
        /// ends where the one before left it.
        var expectedEnd: LogOffset? = nil
    }

    private let client: RingLogClient
    /// Plain appends (not `--if-end`) to a server with batch format 2 go through an idempotent
    /// producer: when the connection drops or ringlogd restarts, what was not acknowledged is
    /// sent again on a new connection, and each record is stored once.
    private var producer: Producer?
    private let settings: Settings
    private let watchdog: Watchdog
    private let room: DispatchSemaphore
    private let output = StandardOutput()
    /// The first failure; the reader stops at its next batch.
    private let failure = Mutex<Error?>(nil)
    private let inFlight = Mutex(0)
    /// The end the next conditional batch expects (reader thread only).
    private var nextExpectedEnd: LogOffset?
    /// Signalled on a failure, so a reader waiting for input stops at once instead of at its
    /// next line.
    private let failed = Wakeup()

    init(client: RingLogClient, settings: Settings, watchdog: Watchdog) {
        self.client = client
        self.settings = settings
        self.watchdog = watchdog
        room = DispatchSemaphore(value: settings.window)
        nextExpectedEnd = settings.expectedEnd
    }

    /// Runs to the end of the input; throws the first failure.
    func run(_ source: Source) async throws {
        if settings.expectedEnd == nil && client.server.features.contains(.batchFormat2) {
            producer = try await client.producer(
                for: settings.log,
                configuration: ProducerConfiguration(
                    lingerMillis: settings.lingerMillis, batchBytes: settings.batchBytes, mode: settings.mode, maxBatchesInFlight: settings.window,
                    retryTimeoutMillis: settings.retryTimeoutMillis))
        }
        let result: Error? = await withCheckedContinuation { continuation in
            let thread = spawnThread { [self] in
                produce(source)
                continuation.resume(returning: failure.withLock { $0 })
            }
            pthread_detach(thread)
        }
        if let result { throw result }
    }

    /// The reader thread: input to batches to sends.
    private func produce(_ source: Source) {
        var builder = BatchBuilder(reservingCapacity: settings.batchBytes, format: client.batchFormat)
        var firstRecordNanos: UInt64 = 0
        let lingerNanos = UInt64(settings.lingerMillis) * 1_000_000
        func add(_ record: ArraySlice<UInt8>) {
            if !builder.isEmpty && builder.sizeAdding(recordBytes: record.count) > settings.batchBytes { send(&builder) }
            if builder.isEmpty { firstRecordNanos = MonotonicClock.nanos() }
            record.withUnsafeBytes { builder.add($0) }
            if builder.batchBytes >= settings.batchBytes { send(&builder) }
        }
        switch source {
        case .records(let records):
            for record in records where !hasFailed {
                guard record.count <= client.maxRecordBytes else {
                    // What came before it goes out; then the command fails.
                    send(&builder)
                    fail(RecordTooLarge(bytes: record.count, limit: client.maxRecordBytes))
                    break
                }
                add(record[...])
            }
        case .descriptor(let fd):
            var splitter = RecordSplitter(delimiter: settings.delimiter, maxRecordBytes: client.maxRecordBytes)
            var chunk = [UInt8](repeating: 0, count: 64 << 10)
            reading: while !hasFailed {
                // Wait for input (or a failure), and with a batch open only until its linger
                // time is up.
                var waitMillis: Int32 = -1
                if !builder.isEmpty {
                    let now = MonotonicClock.nanos()
                    let due = firstRecordNanos + lingerNanos
                    waitMillis = due > now ? Int32(clamping: (due - now + 999_999) / 1_000_000) : 0
                }
                var pollers = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: failed.fd, events: Int16(POLLIN), revents: 0)]
                let ready = poll(&pollers, 2, waitMillis)
                if ready < 0 && errno == EINTR { continue }
                if pollers[1].revents != 0 { break reading }
                if ready == 0 {
                    send(&builder)
                    continue
                }
                let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
                if count < 0 && errno == EINTR { continue }
                do {
                    if count < 0 {
                        fail(CommandFailure(message: "cannot read the input: \(String(cString: strerror(errno)))"))
                        break reading
                    }
                    if count == 0 {
                        try splitter.finish(add)
                        break reading
                    }
                    try chunk.withUnsafeBytes { try splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<count]), add) }
                } catch {
                    // Records before a too-large one still go out, as from the arguments.
                    if error is RecordTooLarge { send(&builder) }
                    fail(error)
                    break reading
                }
            }
        }
        if !hasFailed { send(&builder) }
        // Every acknowledgement is in once all the window's room is back.
        // (libdispatch requires a semaphore's count back at its start when it is freed.)
        for _ in 0..<settings.window { room.wait() }
        for _ in 0..<settings.window { room.signal() }
        output.flush()
    }

    private var hasFailed: Bool { failure.withLock { $0 != nil } }

    private func fail(_ error: Error) {
        failure.withLock { if $0 == nil { $0 = error } }
        failed.signal()
    }

    private func send(_ builder: inout BatchBuilder) {
        guard !builder.isEmpty, !hasFailed else { return }
        let count = builder.recordCount
        var full = builder
        builder = BatchBuilder(reservingCapacity: settings.batchBytes, format: full.format)
        room.wait()
        if hasFailed {
            room.signal()
            return
        }
        // The count and the watchdog change together, so an acknowledgement that empties the
        // window cannot disarm the clock of a batch sent meanwhile.
        inFlight.withLock { inFlight in
            inFlight += 1
            watchdog.arm()
        }
        if let producer {
            producer.send(batch: full) { [self] result in acknowledged(result.map { AppendResponse(offset: $0, committedEnd: .zero) }, records: count) }
            return
        }
        let batch = full.finish()
        let expected = nextExpectedEnd
        let first = expected != nil && expected == settings.expectedEnd
        nextExpectedEnd = expected?.advanced(by: batch.count)
        client.sendAppend(to: settings.log, batch: batch, mode: settings.mode, ifEndIs: expected, newChain: first) { [self] result in
            acknowledged(result, records: count)
        }
    }

    /// On the client's loop thread, in send order.
    private func acknowledged(_ result: Result<AppendResponse, RingLogError>, records: Int) {
        switch result {
        case .success(let response):
            if settings.printPositions {
                for index in 0..<records {
                    output.line(settings.json ? "{\"offset\":\(response.offset),\"index\":\(index)}" : "\(response.offset)/\(index)")
                }
                output.flush()
            }
        case .failure(let error):
            fail(error)
        }
        inFlight.withLock { count in
            count -= 1
            if count == 0 { watchdog.disarm() } else { watchdog.arm() }
        }
        room.signal()
    }
}

/// The whole content of a (small) file, or nil when it cannot be opened.
func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        bytes += chunk[0..<count]
    }
    return bytes
}
