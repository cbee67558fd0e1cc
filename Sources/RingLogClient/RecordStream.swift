import RingLogWire

/// The records of a log from an offset on, as an `AsyncSequence`. At the end of the log it waits
/// (long-polls) for new batches, so iteration ends only with an error or cancellation.
///
/// ```swift
/// for try await record in client.records(of: log, from: .zero) {
///     print(record.position, String(decoding: record.bytes, as: UTF8.self))
/// }
/// ```
public struct RecordStream: AsyncSequence, Sendable {
    public typealias Element = Record

    let client: RingLogClient
    let log: LogID
    let start: LogOffset
    let maxBytes: Int
    let waitMillis: Int

    public func makeAsyncIterator() -> Iterator {
        Iterator(client: client, log: log, offset: start, maxBytes: maxBytes, waitMillis: waitMillis)
    }

    public struct Iterator: AsyncIteratorProtocol {
        let client: RingLogClient
        let log: LogID
        /// Where the next read starts: the end of what has been fetched.
        public private(set) var offset: LogOffset
        let maxBytes: Int
        let waitMillis: Int
        private var buffered: [Record] = []
        private var next = 0

        init(client: RingLogClient, log: LogID, offset: LogOffset, maxBytes: Int, waitMillis: Int) {
            self.client = client
            self.log = log
            self.offset = offset
            self.maxBytes = maxBytes
            self.waitMillis = waitMillis
        }

        public mutating func next() async throws(RingLogError) -> Record? {
            while next == buffered.count {
                if Task.isCancelled { return nil }
                let fetched = try await client.read(from: log, offset: offset, maxBytes: maxBytes, maxWaitMillis: waitMillis)
                buffered = try fetched.records()
                next = 0
                offset = fetched.nextOffset
            }
            defer { next += 1 }
            return buffered[next]
        }
    }
}

extension RingLogClient {
    /// Every record of `log` from `offset` on, waiting at the end for more.
    public func records(of log: LogID, from offset: LogOffset, maxBytes: Int = 1 << 20, waitMillis: Int = 1_000) -> RecordStream {
        RecordStream(client: self, log: log, start: offset, maxBytes: maxBytes, waitMillis: waitMillis)
    }
}
