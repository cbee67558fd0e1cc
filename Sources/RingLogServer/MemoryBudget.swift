import DequeModule
import RingLogStorage
import RingLogWire

/// The bytes all connections together hold for requests and responses in flight
/// (`--max-buffered-bytes-total`): bodies being assembled, read results waiting to be sent,
/// responses queued, bytes received while a connection was paused. With the tail cache, the
/// receive buffers and the idle read-buffer pool, it is what bounds the server's memory
/// (docs/operations.md#memory), however many connections there are and whatever they send.
///
/// The rules, so that a greedy client cannot stall a polite one:
/// - A read starts only while the budget has room, and is charged the buffer its result takes
///   (known before a disk read is issued). Without room it waits (`ParkedRead`) holding nothing.
///   Waiting reads are served one per connection in turn, connections that hold little first:
///   a reader is not queued behind the piled-up reads of clients that never collect results.
///   While reads wait, a connection holding more than `contendedShare` is given nothing more.
/// - A request body that spans receive buffers is assembled only if the budget can hold all of
///   it; otherwise it is read and dropped and the request answered SERVER_BUSY. (Bodies up to
///   the allowance are always assembled.)
/// - A connection may always hold up to `allowance` (one receive buffer), so clients whose
///   requests arrive whole and whose responses are small (appenders, most control requests) are
///   never paused; beyond that it reads more only while the budget has room.
/// - While anything waits for room, a connection holding more than the allowance whose output
///   makes no progress, or whose request body stops arriving, for `pressureSendTimeoutNanos` is
///   closed (the send and payload deadlines, shortened).
///
/// The budget can be exceeded by at most one read result (the read admitted just below the
/// limit) plus what connections under their allowance hold.
struct MemoryBudget {
    let limit: Int
    let allowance: Int
    private(set) var used = 0
    /// Connections whose next read waits for room, served in turn (each listed once).
    private(set) var waiting: Deque<Connection> = []
    /// Connections that stopped reading because the budget was full; pumped when room frees.
    var pausedConnections: [Connection] = []
    /// Reads waiting, for room here or for their connection's read window.
    var parkedReadCount = 0

    /// The send deadline while something waits for room (or the configured one, if shorter).
    static let pressureSendTimeoutNanos: UInt64 = 1_000_000_000

    init(limit: Int, allowance: Int) {
        self.limit = limit
        self.allowance = allowance
    }

    var hasRoom: Bool { used < limit }

    func fits(_ bytes: Int) -> Bool { used + bytes <= limit }

    /// While something waits for room, the most one connection may hold and still be given more:
    /// a sixteenth of the budget, so that a few clients that never collect their results cannot
    /// take all of it before the shortened send deadline removes them.
    var contendedShare: Int { max(allowance, limit / 16) }

    /// Whether a connection holding `held` must wait before it is given more memory.
    func mustWait(holding held: Int) -> Bool {
        !hasRoom || (isContended && held >= contendedShare)
    }

    /// Something is waiting for room.
    var isContended: Bool { !waiting.isEmpty || !pausedConnections.isEmpty }

    /// Records that a connection now holds `held` bytes instead of `charged`.
    mutating func charge(from charged: Int, to held: Int) {
        used += held - charged
    }

    /// Puts `connection` in line for room (once).
    mutating func enqueue(_ connection: Connection) {
        guard !connection.queuedForMemory else { return }
        connection.queuedForMemory = true
        waiting.append(connection)
    }

    /// The next connection in line to start a read: the first holding less than the allowance,
    /// else the first `eligible` one. Connections that are gone or have nothing waiting are
    /// dropped from the line.
    mutating func dequeue(isCurrent: (Connection) -> Bool, eligible: (Connection) -> Bool) -> Connection? {
        waiting.removeAll { connection in
            let stale = !isCurrent(connection) || connection.parkedReads.isEmpty
            if stale { connection.queuedForMemory = false }
            return stale
        }
        let light = allowance
        guard let index = waiting.firstIndex(where: { $0.charged < light && eligible($0) }) ?? waiting.firstIndex(where: eligible) else {
            return nil
        }
        let connection = waiting.remove(at: index)
        connection.queuedForMemory = false
        return connection
    }

    mutating func remove(_ connection: Connection) {
        guard connection.queuedForMemory else { return }
        waiting.removeAll { $0 === connection }
        connection.queuedForMemory = false
    }
}

/// A read waiting for room in the memory budget or in its connection's read window: just its
/// place and its parameters.
struct ParkedRead {
    var sequence: UInt32
    var logID: LogID
    var offset: LogOffset
    var maxBytes: Int
    var waitMillis: Int
}
