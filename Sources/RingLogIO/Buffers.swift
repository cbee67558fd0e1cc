import Glibc
import RingLogWire

// Exclusivity: the stored properties of ByteStore, OutgoingBytes and SendQueue are marked
// `@exclusivity(unchecked)`. They sit on the path of every response (several accesses per
// request), the run-time checks cost more than the work they guard, and each class is closed:
// no method calls out to code that could reach back into the same object while it is mutating
// a property (`appendInline`'s closure only writes raw memory it is handed).

/// A growable byte buffer with a stable address between mutations (an io_uring send may point at
/// it) and explicit memory management, so nothing escapes a `withUnsafeBytes` closure.
public final class ByteStore {
    @exclusivity(unchecked) public private(set) var base: UnsafeMutableRawPointer?
    @exclusivity(unchecked) public private(set) var capacity = 0
    @exclusivity(unchecked) public private(set) var count = 0

    public init() {}

    deinit { free(base) }

    /// Room for `more` bytes past `count`; returns where to write them.
    public func reserve(_ more: Int) -> UnsafeMutableRawPointer {
        if count + more > capacity {
            let grown = max(count + more, capacity * 2, 256)
            base = realloc(base, grown)
            precondition(base != nil, "out of memory growing a buffer to \(grown) bytes")
            capacity = grown
        }
        return base! + count
    }

    public func commit(_ written: Int) { count += written }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    /// Drops the first `prefix` bytes, moving the rest to the front.
    public func removeFirst(_ prefix: Int) {
        precondition(prefix <= count)
        if prefix < count { memmove(base!, base! + prefix, count - prefix) }
        count -= prefix
    }

    public func removeAll(keepingCapacityUpTo limit: Int) {
        count = 0
        if capacity > limit {
            free(base)
            base = nil
            capacity = 0
        }
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// Responses queued on one connection as a list of pieces: small ones (headers, acknowledgements)
/// copied into `inline`, read data referenced where the storage engine put it.
public final class OutgoingBytes {
    public enum Piece {
        case inline(start: Int, count: Int)
        case external(OwnedBytes, Range<Int>)
    }

    public let inline = ByteStore()
    @exclusivity(unchecked) public private(set) var pieces: [Piece] = []
    @exclusivity(unchecked) public private(set) var totalBytes = 0

    public init() {}

    /// Lets `write` fill up to `count` bytes at the end of the inline store.
    public func appendInline(count: Int, _ write: (UnsafeMutableRawPointer) -> Void) {
        write(inline.reserve(count))
        let start = inline.count
        inline.commit(count)
        if case .inline(let lastStart, let lastCount)? = pieces.last, lastStart + lastCount == start {
            pieces[pieces.count - 1] = .inline(start: lastStart, count: lastCount + count)
        } else {
            pieces.append(.inline(start: start, count: count))
        }
        totalBytes += count
    }

    public func appendExternal(_ owner: OwnedBytes, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        pieces.append(.external(owner, range))
        totalBytes += range.count
    }

    /// Empties the list. A little inline capacity is kept for the next responses (enough for a
    /// deep pipeline of acknowledgements); more is freed, so an idle connection holds little.
    public func removeAll() {
        inline.removeAll(keepingCapacityUpTo: OutgoingBytes.retainedInlineBytes)
        pieces.removeAll(keepingCapacity: pieces.count <= 64)
        totalBytes = 0
    }

    public static let retainedInlineBytes = 16 << 10
}

/// What one connection has to send, double-buffered: `sending` is frozen while a sendmsg is in
/// flight (the kernel reads from it), new responses go to `filling`, and the two swap when
/// `sending` is done.
public final class SendQueue {
    public static let maxIovecs = 64

    @exclusivity(unchecked) public private(set) var sending = OutgoingBytes()
    @exclusivity(unchecked) public private(set) var filling = OutgoingBytes()
    @exclusivity(unchecked) private var sentBytes = 0
    @exclusivity(unchecked) public private(set) var sendInFlight = false
    private let iovecs: UnsafeMutablePointer<iovec>
    public let message: UnsafeMutablePointer<msghdr>

    public init() {
        iovecs = .allocate(capacity: SendQueue.maxIovecs)
        message = .allocate(capacity: 1)
        message.initialize(to: msghdr())
    }

    deinit {
        iovecs.deallocate()
        message.deallocate()
    }

    /// Bytes queued and not yet sent.
    public var backlogBytes: Int { sending.totalBytes - sentBytes + filling.totalBytes }

    /// Bytes the queue keeps alive: what is being sent stays whole until the send finishes, even
    /// the part the kernel has taken.
    public var heldBytes: Int { sending.totalBytes + filling.totalBytes }

    /// Points `message` at the next bytes to send, or returns false when there are none (or a
    /// send is already in flight).
    public func prepareSend() -> Bool {
        guard !sendInFlight else { return false }
        if sentBytes == sending.totalBytes {
            guard filling.totalBytes > 0 else { return false }
            sending.removeAll()
            swap(&sending, &filling)
            sentBytes = 0
        }
        var skip = sentBytes
        var count = 0
        for piece in sending.pieces where count < SendQueue.maxIovecs {
            let (start, length): (UnsafeRawPointer, Int)
            switch piece {
            case .inline(let offset, let size): (start, length) = (UnsafeRawPointer(sending.inline.base!) + offset, size)
            case .external(let owner, let range): (start, length) = (owner.bytes.baseAddress! + range.lowerBound, range.count)
            }
            if skip >= length {
                skip -= length
                continue
            }
            iovecs[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: start + skip), iov_len: length - skip)
            skip = 0
            count += 1
        }
        message.pointee = msghdr()
        message.pointee.msg_iov = iovecs
        message.pointee.msg_iovlen = count
        sendInFlight = true
        return true
    }

    /// Drops everything queued (the connection is gone; nothing is in flight).
    public func discardAll() {
        precondition(!sendInFlight, "discarding bytes a send still points at")
        sending.removeAll()
        filling.removeAll()
        sentBytes = 0
    }

    /// Records a send's result (bytes sent).
    public func sendFinished(bytes: Int) {
        sendInFlight = false
        sentBytes += bytes
        if sentBytes == sending.totalBytes && filling.totalBytes == 0 {
            sending.removeAll()
            sentBytes = 0
        }
    }
}
