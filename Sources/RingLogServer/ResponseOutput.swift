import Glibc
import RingLogStorage

/// A growable byte buffer with a stable address between mutations (an io_uring send may point at
/// it) and explicit memory management, so nothing escapes a `withUnsafeBytes` closure.
final class ByteStore {
    private(set) var base: UnsafeMutableRawPointer?
    private(set) var capacity = 0
    private(set) var count = 0

    deinit { free(base) }

    /// Room for `more` bytes past `count`; returns where to write them.
    func reserve(_ more: Int) -> UnsafeMutableRawPointer {
        if count + more > capacity {
            let grown = max(count + more, capacity * 2, 256)
            base = realloc(base, grown)
            precondition(base != nil, "out of memory growing a buffer to \(grown) bytes")
            capacity = grown
        }
        return base! + count
    }

    func commit(_ written: Int) { count += written }

    func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    /// Drops the first `prefix` bytes, moving the rest to the front.
    func removeFirst(_ prefix: Int) {
        precondition(prefix <= count)
        if prefix < count { memmove(base!, base! + prefix, count - prefix) }
        count -= prefix
    }

    func removeAll(keepingCapacityUpTo limit: Int) {
        count = 0
        if capacity > limit {
            free(base)
            base = nil
            capacity = 0
        }
    }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }
}

/// Responses queued on one connection as a list of pieces: small ones (headers, acknowledgements)
/// copied into `inline`, read data referenced where the storage engine put it.
final class OutgoingBytes {
    enum Piece {
        case inline(start: Int, count: Int)
        case external(OwnedBytes, Range<Int>)
    }

    let inline = ByteStore()
    private(set) var pieces: [Piece] = []
    private(set) var totalBytes = 0

    /// Lets `write` fill up to `count` bytes at the end of the inline store.
    func appendInline(count: Int, _ write: (UnsafeMutableRawPointer) -> Void) {
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

    func appendExternal(_ owner: OwnedBytes, _ range: Range<Int>) {
        guard !range.isEmpty else { return }
        pieces.append(.external(owner, range))
        totalBytes += range.count
    }

    func removeAll() {
        inline.removeAll(keepingCapacityUpTo: 256 << 10)
        pieces.removeAll(keepingCapacity: pieces.count <= 64)
        totalBytes = 0
    }
}

/// What one connection has to send, double-buffered: `sending` is frozen while a sendmsg is in
/// flight (the kernel reads from it), new responses go to `filling`, and the two swap when
/// `sending` is done.
final class ResponseOutput {
    static let maxIovecs = 64

    private(set) var sending = OutgoingBytes()
    private(set) var filling = OutgoingBytes()
    private var sentBytes = 0
    private(set) var sendInFlight = false
    private let iovecs: UnsafeMutablePointer<iovec>
    let message: UnsafeMutablePointer<msghdr>

    init() {
        iovecs = .allocate(capacity: ResponseOutput.maxIovecs)
        message = .allocate(capacity: 1)
        message.initialize(to: msghdr())
    }

    deinit {
        iovecs.deallocate()
        message.deallocate()
    }

    /// Bytes queued and not yet sent.
    var backlogBytes: Int { sending.totalBytes - sentBytes + filling.totalBytes }

    /// Points `message` at the next bytes to send, or returns false when there are none (or a
    /// send is already in flight).
    func prepareSend() -> Bool {
        guard !sendInFlight else { return false }
        if sentBytes == sending.totalBytes {
            guard filling.totalBytes > 0 else { return false }
            sending.removeAll()
            swap(&sending, &filling)
            sentBytes = 0
        }
        var skip = sentBytes
        var count = 0
        for piece in sending.pieces where count < ResponseOutput.maxIovecs {
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

    /// Records a send's result (bytes sent).
    func sendFinished(bytes: Int) {
        sendInFlight = false
        sentBytes += bytes
        if sentBytes == sending.totalBytes && filling.totalBytes == 0 {
            sending.removeAll()
            sentBytes = 0
        }
    }
}
