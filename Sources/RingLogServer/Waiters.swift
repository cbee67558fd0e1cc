import DequeModule
import HeapModule
import RingLogIO
import RingLogStorage
import RingLogWire

/// An append waiting for its acknowledgement: answered once the log's committed end (durable) or
/// written end (written) reaches `end`.
struct PendingAck {
    var offset: LogOffset
    var end: LogOffset
    var sequence: UInt32
    /// An idempotent retry answered with the batch it repeats (the response says so).
    var duplicate = false
}

/// A read waiting at a log's end for new batches.
struct LongPoll {
    var offset: LogOffset
    var maxBytes: Int
}

/// The waits on one log that have something waiting, in no order. Every `LogWait` of the log
/// keeps a reference to it, so joining and leaving it looks nothing up.
final class WaitList {
    fileprivate var waits: [LogWait] = []
}

/// What one connection waits for on one log: acknowledgements of its appends, in offset order,
/// and its long-polls. The connection owns it; while something waits, the log's list in `Waiters`
/// holds it too, and closing the connection takes it out of there (`Waiters.remove`), so nothing
/// that waits can outlive its connection or be answered into another.
final class LogWait {
    /// Strong, though the connection owns the wait: a load through an unowned reference costs a
    /// retain and a release, once per acknowledgement. `Waiters.remove` ends the cycle when the
    /// connection closes (long-poll deadlines hold waits weakly).
    let connection: Connection
    let logID: LogID
    fileprivate let list: WaitList
    var durable: Deque<PendingAck> = []
    var written: Deque<PendingAck> = []
    /// By the response's sequence number.
    var longPolls: [UInt32: LongPoll] = [:]
    /// Where it sits in its log's list, or -1 when it is not there (nothing waits).
    fileprivate var position = -1

    fileprivate init(connection: Connection, logID: LogID, list: WaitList) {
        self.connection = connection
        self.logID = logID
        self.list = list
    }

    var isEmpty: Bool { durable.isEmpty && written.isEmpty && longPolls.isEmpty }
}

/// Everything waiting on the server's logs: for each log, the `LogWait`s of the connections with
/// something waiting there, and the long-polls' deadlines. Answers go back through the
/// connection that owns each wait.
final class Waiters {
    /// A log's list lives while some connection has a wait on the log (`remove` drops it).
    private var byLog: [LogID: WaitList] = [:]

    private struct Deadline: Comparable {
        var nanos: UInt64
        weak var wait: LogWait?
        var sequence: UInt32
        static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanos < rhs.nanos }
        static func == (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanos == rhs.nanos && lhs.sequence == rhs.sequence }
    }
    private var deadlines = Heap<Deadline>()

    private(set) var acksWaiting = 0
    private(set) var longPollsWaiting = 0

    // MARK: Registering

    /// `connection`'s wait on `log`, made on first use and kept by the connection.
    func wait(of connection: Connection, on log: LogID) -> LogWait {
        if let last = connection.lastWait, last.logID == log { return last }
        let found = connection.waits.first { $0.logID == log } ?? {
            let list = byLog[log] ?? {
                let made = WaitList()
                byLog[log] = made
                return made
            }()
            let made = LogWait(connection: connection, logID: log, list: list)
            connection.waits.append(made)
            return made
        }()
        connection.lastWait = found
        return found
    }

    func addAcknowledgement(_ ack: PendingAck, durable: Bool, to wait: LogWait) {
        if durable { wait.durable.append(ack) } else { wait.written.append(ack) }
        acksWaiting += 1
        attach(wait)
    }

    func addLongPoll(_ poll: LongPoll, sequence: UInt32, deadlineNanos: UInt64, to wait: LogWait) {
        wait.longPolls[sequence] = poll
        longPollsWaiting += 1
        deadlines.insert(Deadline(nanos: deadlineNanos, wait: wait, sequence: sequence))
        attach(wait)
    }

    private func attach(_ wait: LogWait) {
        guard wait.position < 0 else { return }
        wait.position = wait.list.waits.count
        wait.list.waits.append(wait)
    }

    private func detachIfEmpty(_ wait: LogWait) {
        guard wait.isEmpty, wait.position >= 0 else { return }
        let position = wait.position
        wait.position = -1
        let last = wait.list.waits.removeLast()
        if last !== wait {
            wait.list.waits[position] = last
            last.position = position
        }
    }

    /// Visits the waits of `log` that have something waiting. `body` may detach the wait it is
    /// given (or others: a closing connection takes its waits out); the visit goes backwards, so
    /// a detached wait's place is taken by one already visited.
    private func forEachWait(on log: LogID, _ body: (LogWait) -> Void) {
        guard let list = byLog[log] else { return }
        var index = list.waits.count
        while index > 0 {
            index = min(index, list.waits.count) - 1
            guard index >= 0 else { return }
            body(list.waits[index])
        }
    }

    /// Takes everything `connection` waits for out of the logs' lists: it will never be answered.
    func remove(_ connection: Connection) {
        for wait in connection.waits {
            acksWaiting -= wait.durable.count + wait.written.count
            longPollsWaiting -= wait.longPolls.count
            wait.durable.removeAll()
            wait.written.removeAll()
            wait.longPolls.removeAll()
            detachIfEmpty(wait)
        }
        let logs = connection.waits.map(\.logID)
        connection.waits.removeAll()
        connection.lastWait = nil
        // A list no other connection's wait refers to goes, so lists do not pile up with logs.
        for log in logs where byLog[log]?.waits.isEmpty == true {
            if isKnownUniquelyReferenced(&byLog[log]!) { byLog[log] = nil }
        }
    }

    // MARK: Answering

    /// Acknowledges the appends to `log` that end at or below `end`: written-mode ones always,
    /// durable ones when `durable`.
    func acknowledge(_ log: LogID, upTo end: LogOffset, durable: Bool, committedEnd: LogOffset) {
        forEachWait(on: log) { wait in
            while let first = wait.written.first, first.end <= end {
                wait.written.removeFirst()
                acksWaiting -= 1
                wait.connection.answer(first.sequence, .append(AppendResponse(offset: first.offset, committedEnd: committedEnd, duplicate: first.duplicate)))
            }
            if durable {
                while let first = wait.durable.first, first.end <= end {
                    wait.durable.removeFirst()
                    acksWaiting -= 1
                    wait.connection.answer(first.sequence, .append(AppendResponse(offset: first.offset, committedEnd: committedEnd, duplicate: first.duplicate)))
                }
            }
            detachIfEmpty(wait)
        }
    }

    /// Fails the appends to `log` at and after `offset` (their reservations were undone, or the
    /// log is gone or failed).
    func failAcknowledgements(_ log: LogID, from offset: LogOffset, error: StorageError) {
        let (code, body) = RequestDispatcher.wireError(error)
        forEachWait(on: log) { wait in
            // Not only from the back: a duplicate's acknowledgement waits for an earlier batch
            // than those queued before it.
            for durable in [true, false] {
                let queue = durable ? wait.durable : wait.written
                guard queue.contains(where: { $0.offset >= offset }) else { continue }
                var kept: Deque<PendingAck> = []
                for ack in queue {
                    if ack.offset >= offset {
                        acksWaiting -= 1
                        wait.connection.answer(ack.sequence, code: code, body)
                    } else {
                        kept.append(ack)
                    }
                }
                if durable { wait.durable = kept } else { wait.written = kept }
            }
            detachIfEmpty(wait)
        }
    }

    /// Takes the long-polls of `log` that new data past their offset can answer; the caller reads.
    func takeReadersToWake(_ log: LogID, committedEnd: LogOffset) -> [(Connection, UInt32, LongPoll)] {
        var ready: [(Connection, UInt32, LongPoll)] = []
        forEachWait(on: log) { wait in
            guard !wait.longPolls.isEmpty else { return }
            for (sequence, poll) in wait.longPolls where poll.offset < committedEnd {
                wait.longPolls[sequence] = nil
                longPollsWaiting -= 1
                ready.append((wait.connection, sequence, poll))
            }
            detachIfEmpty(wait)
        }
        return ready
    }

    /// Answers every long-poll of `log` with `error` (the log was deleted).
    func failReaders(_ log: LogID, error: StorageError) {
        let (code, body) = RequestDispatcher.wireError(error)
        forEachWait(on: log) { wait in
            guard !wait.longPolls.isEmpty else { return }
            for sequence in wait.longPolls.keys { wait.connection.answer(sequence, code: code, body) }
            longPollsWaiting -= wait.longPolls.count
            wait.longPolls.removeAll()
            detachIfEmpty(wait)
        }
    }

    /// Drops one long-poll of `connection` on `log` without answering it (a Kafka Fetch waiting on
    /// several partitions stops waiting on the others once one answers).
    func cancelLongPoll(of connection: Connection, on log: LogID, sequence: UInt32) {
        guard let wait = connection.waits.first(where: { $0.logID == log }), wait.longPolls.removeValue(forKey: sequence) != nil else { return }
        longPollsWaiting -= 1
        detachIfEmpty(wait)
    }

    /// Takes `connection`'s long-polls (to answer them now, empty: it is closing).
    func takeLongPolls(of connection: Connection) -> [(LogID, UInt32)] {
        var taken: [(LogID, UInt32)] = []
        for wait in connection.waits where !wait.longPolls.isEmpty {
            taken += wait.longPolls.keys.map { (wait.logID, $0) }
            longPollsWaiting -= wait.longPolls.count
            wait.longPolls.removeAll()
            detachIfEmpty(wait)
        }
        return taken
    }

    /// Takes the long-polls whose deadline has passed.
    func takeExpired(nowNanos: UInt64) -> [(Connection, LogID, UInt32)] {
        var expired: [(Connection, LogID, UInt32)] = []
        while let first = deadlines.min, first.nanos <= nowNanos {
            _ = deadlines.removeMin()
            guard let wait = first.wait, wait.longPolls.removeValue(forKey: first.sequence) != nil else { continue }
            longPollsWaiting -= 1
            expired.append((wait.connection, wait.logID, first.sequence))
            detachIfEmpty(wait)
        }
        return expired
    }

    /// Takes every long-poll (the server is stopping).
    func takeAllLongPolls() -> [(Connection, UInt32)] {
        var all: [(Connection, UInt32)] = []
        for log in Array(byLog.keys) {
            forEachWait(on: log) { wait in
                guard !wait.longPolls.isEmpty else { return }
                all += wait.longPolls.keys.map { (wait.connection, $0) }
                longPollsWaiting -= wait.longPolls.count
                wait.longPolls.removeAll()
                detachIfEmpty(wait)
            }
        }
        deadlines = Heap()
        return all
    }

    /// The next long-poll deadline, if any.
    var nextDeadlineNanos: UInt64? { deadlines.min?.nanos }
}
