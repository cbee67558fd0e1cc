import CLiburing
import DequeModule
import Glibc
import RingLogIO
import RingLogWire

/// A response as it arrived. `body` is valid only during the callback unless `owner` is set, in
/// which case it stays valid as long as `owner` is kept.
package struct ClientResponse {
    package let header: ResponseHeader
    package let body: UnsafeRawBufferPointer
    package let owner: OwnedBytes?
    /// When the receive that completed it was handled (monotonic nanoseconds): one clock read
    /// for every response that arrived together.
    package let receivedNanos: UInt64

    /// The server's error, when the status says so.
    package var serverError: ServerError? {
        guard header.status != 0 else { return nil }
        let code = ErrorCode(rawValue: header.status) ?? .internalError
        let decoded = try? ErrorBody.decode(body)
        return ServerError(code: code, message: decoded?.message ?? "", detail1: decoded?.detail1 ?? 0, detail2: decoded?.detail2 ?? 0)
    }
}

extension Result where Success == ClientResponse, Failure == RingLogError {
    /// The response when the server answered with success; its error otherwise.
    package func checkingServerError() -> Result<ClientResponse, RingLogError> {
        flatMap { response in response.serverError.map { .failure(RingLogError($0)) } ?? .success(response) }
    }
}

/// One connection to ringlogd, a handler on the loop core. Requests are pipelined: each is written
/// to the send queue at once and its handler runs when its response (matched in order) arrives.
package final class ClientSocket: IOHandler {
    package typealias Handler = (Result<ClientResponse, RingLogError>) -> Void

    /// Its handle on the loop; also how async callers find it again (`LoopCore.socket`).
    package private(set) var handle = IOHandle.none
    package let address: SocketAddress
    /// Strong: a load through an unowned reference costs a retain and a release on every use.
    /// The cycle ends when the socket's handle is released, or when the loop ends
    /// (`LoopCore.run` lets go of every handler).
    let core: LoopCore
    private var fd: Int32 = -1
    private var onConnected: ((Result<ClientSocket, RingLogError>) -> Void)?
    private var addressStorage = sockaddr_storage()
    @exclusivity(unchecked) private(set) var closed: RingLogError?
    /// Called once when the connection ends (by either side).
    package var onClose: ((RingLogError) -> Void)?

    private let sendQueue = SendQueue()
    var flushScheduled = false
    /// A struct, not a tuple: a closure inside a tuple in a generic container is stored through a
    /// reabstraction thunk, allocated once per request.
    private struct PendingRequest {
        var requestID: UInt64
        /// Nil: the socket's `onResponse` answers it.
        var handler: Handler?
    }
    /// This and the other `@exclusivity(unchecked)` properties are on every request's path. They
    /// are touched only on the loop thread and no access to them overlaps another (a handler runs
    /// after its request has left the queue), so they skip the runtime exclusivity check.
    @exclusivity(unchecked) private var pending: Deque<PendingRequest> = []
    @exclusivity(unchecked) private var nextRequestID: UInt64 = 1
    private var released = false

    private let received = ByteStore()
    private var receivedNanos: UInt64 = 0
    private var receiveArmed = false
    /// A large response body being received straight into its own buffer.
    private var largeBody: (header: ResponseHeader, buffer: OwnedBytes, length: Int, filled: Int)?
    /// The last large-body buffer, kept when nothing else held it after delivery: a catch-up
    /// reader then receives every response into the same pages instead of faulting in fresh ones
    /// (page faults were a third of a catch-up reader's CPU). At most one, at most the largest
    /// read response this connection has received.
    private var spareLargeBuffer: OwnedBytes?
    static let receiveChunk = 256 << 10
    static let largeBodyThreshold = 128 << 10
    /// Batches up to this size are copied into the send buffer rather than referenced.
    package static let copiedBatchBytes = 2 << 10

    init(core: LoopCore, address: SocketAddress, onConnected: @escaping (Result<ClientSocket, RingLogError>) -> Void) {
        self.core = core
        self.address = address
        self.onConnected = onConnected
        handle = core.io.register(self)
    }

    /// Requests sent and not yet answered.
    package var requestsInFlight: Int { pending.count }
    package var isOpen: Bool { closed == nil && onConnected == nil }

    package func completed(_ completion: IOCompletion) {
        switch completion.kind {
        case .connect: connected(result: completion.result)
        case .receive: received(result: completion.result)
        case .sendMessage: sent(result: completion.result)
        default: break  // the shutdown that ends pending operations
        }
        releaseIfDone()
    }

    // MARK: Connecting

    func startConnecting() {
        let domain = address.family == .v6 ? AF_INET6 : AF_INET
        fd = socket(domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            fail(connecting: "socket: \(String(cString: strerror(errno)))")
            return
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let length = address.withSockaddr { pointer, length in
            withUnsafeMutableBytes(of: &addressStorage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: pointer, count: Int(length))) }
            return length
        }
        withUnsafeMutablePointer(to: &addressStorage) { storage in
            storage.withMemoryRebound(to: sockaddr.self, capacity: 1) { core.io.submit(.connect(fd: fd, address: $0, length: length), for: handle) }
        }
    }

    private func connected(result: Int32) {
        guard result == 0 else {
            fail(connecting: String(cString: strerror(-result)))
            return
        }
        let callback = onConnected
        onConnected = nil
        armReceive()
        callback?(.success(self))
    }

    private func fail(connecting reason: String) {
        let callback = onConnected
        onConnected = nil
        closed = .connectFailed(address: address.description, reason: reason)
        callback?(.failure(.connectFailed(address: address.description, reason: reason)))
        releaseIfDone()
    }

    // MARK: Sending

    /// Queues a request whose body is copied now; `handler` runs with its response.
    package func send(_ opcode: Opcode, body: UnsafeRawBufferPointer, logID: LogID = .none, flags: UInt32 = 0, handler: @escaping Handler) {
        guard let id = admit(handler) else { return }
        let header = RequestHeader(opcode: opcode, bodyLength: body.count, requestID: id, logID: logID, flags: flags)
        sendQueue.filling.appendInline(count: WireProtocol.headerBytes + body.count) { pointer in
            header.encode(into: pointer)
            if body.count > 0 { (pointer + WireProtocol.headerBytes).copyMemory(from: body.baseAddress!, byteCount: body.count) }
        }
        if !flushScheduled { core.markDirty(self) }
    }

    /// Answers the requests sent without a handler of their own: a caller that sends many alike
    /// sets it once instead of storing (and retaining) a closure per request.
    @exclusivity(unchecked) package var onResponse: Handler = { _ in }

    /// Queues an append of a complete batch. A small batch is copied into the send buffer (cheaper
    /// than holding a reference to it until the send is done); a larger one is sent from where it
    /// is, not copied.
    package func sendAppend(logID: LogID, mode: AckMode, batch: OwnedBytes, handler: Handler? = nil) {
        guard let id = admit(handler) else { return }
        let header = RequestHeader(opcode: .append, bodyLength: batch.count, requestID: id, logID: logID, flags: mode.rawValue)
        let output = sendQueue.filling
        if batch.count <= ClientSocket.copiedBatchBytes {
            let bytes = batch.bytes
            output.appendInline(count: WireProtocol.headerBytes + bytes.count) { pointer in
                header.encode(into: pointer)
                (pointer + WireProtocol.headerBytes).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            }
        } else {
            output.appendInline(count: WireProtocol.headerBytes) { header.encode(into: $0) }
            output.appendExternal(batch, 0..<batch.count)
        }
        if !flushScheduled { core.markDirty(self) }
    }

    private func admit(_ handler: Handler?) -> UInt64? {
        if let closed {
            (handler ?? onResponse)(.failure(closed))
            return nil
        }
        let id = nextRequestID
        nextRequestID += 1
        pending.append(PendingRequest(requestID: id, handler: handler))
        return id
    }

    func flush() {
        guard closed == nil, fd >= 0, sendQueue.prepareSend() else { return }
        core.io.submit(.sendMessage(fd: fd, message: sendQueue.message), for: handle)
    }

    private func sent(result: Int32) {
        guard result >= 0 else {
            sendQueue.sendFinished(bytes: 0)
            close(reason: "send failed: \(String(cString: strerror(-result)))")
            return
        }
        sendQueue.sendFinished(bytes: Int(result))
        core.markDirty(self)
    }

    // MARK: Receiving

    private func armReceive() {
        guard closed == nil, !receiveArmed else { return }
        let target: UnsafeMutableRawPointer
        let length: Int
        if let large = largeBody {
            target = large.buffer.buffer.baseAddress! + large.filled
            length = large.length - large.filled
        } else {
            target = received.reserve(ClientSocket.receiveChunk)
            length = ClientSocket.receiveChunk
        }
        core.io.submit(.receive(fd: fd, into: UnsafeMutableRawBufferPointer(start: target, count: length)), for: handle)
        receiveArmed = true
    }

    private func received(result: Int32) {
        receiveArmed = false
        guard closed == nil else { return }
        guard result > 0 else {
            close(reason: result == 0 ? "the server closed the connection" : "receive failed: \(String(cString: strerror(-result)))")
            return
        }
        receivedNanos = MonotonicClock.nanos()
        if largeBody != nil {
            largeBody!.filled += Int(result)
            if largeBody!.filled == largeBody!.length { deliverLargeBody() }
        } else {
            received.commit(Int(result))
        }
        parseResponses()
        if closed == nil { armReceive() }
    }

    /// Hands out every complete response in the receive buffer; starts a direct receive for a
    /// large body that is still arriving.
    private func parseResponses() {
        var index = 0
        let bytes = received.bytes
        while closed == nil && largeBody == nil && bytes.count - index >= WireProtocol.headerBytes {
            let header: ResponseHeader
            switch ResponseHeader.decode(bytes.baseAddress! + index) {
            case .failure(let error):
                close(reason: "bad response header (\(error))", violation: true)
                return
            case .success(let decoded): header = decoded
            }
            let bodyLength = Int(header.bodyLength)
            let available = bytes.count - index - WireProtocol.headerBytes
            if available >= bodyLength {
                let body = UnsafeRawBufferPointer(start: bytes.baseAddress! + index + WireProtocol.headerBytes, count: bodyLength)
                index += WireProtocol.headerBytes + bodyLength
                deliver(header, body: body, owner: nil)
            } else if bodyLength >= ClientSocket.largeBodyThreshold {
                let buffer: OwnedBytes
                if let spare = spareLargeBuffer, spare.count >= bodyLength {
                    buffer = spare
                } else {
                    buffer = OwnedBytes(uninitializedCount: bodyLength)
                }
                spareLargeBuffer = nil
                buffer.buffer.baseAddress!.copyMemory(from: bytes.baseAddress! + index + WireProtocol.headerBytes, byteCount: available)
                largeBody = (header, buffer, bodyLength, available)
                index = bytes.count
            } else {
                break
            }
        }
        received.removeFirst(index)
    }

    private func deliverLargeBody() {
        guard let (header, delivered, length, _) = largeBody else { return }
        largeBody = nil
        var buffer = delivered
        deliver(header, body: UnsafeRawBufferPointer(rebasing: buffer.bytes[0..<length]), owner: buffer)
        if isKnownUniquelyReferenced(&buffer) { spareLargeBuffer = buffer }
    }

    private func deliver(_ header: ResponseHeader, body: UnsafeRawBufferPointer, owner: OwnedBytes?) {
        guard let expected = pending.first?.requestID else {
            close(reason: "a response arrived with no request waiting (id \(header.requestID))", violation: true)
            return
        }
        guard expected == header.requestID || (header.requestID == 0 && header.status != 0) else {
            close(reason: "response for request \(header.requestID) arrived while \(expected) was next", violation: true)
            return
        }
        let response = ClientResponse(header: header, body: body, owner: owner, receivedNanos: receivedNanos)
        if let handler = pending.removeFirst().handler { handler(.success(response)) } else { onResponse(.success(response)) }
    }

    // MARK: Closing

    /// Ends the connection: every request still waiting fails with `connectionClosed`.
    package func close(reason: String = "closed by the client", violation: Bool = false) {
        guard closed == nil else { return }
        let error: RingLogError = violation ? .protocolViolation(reason) : .connectionClosed(reason)
        closed = error
        if fd >= 0 && core.io.operationsInFlight(handle) > 0 { core.io.submit(.shutdown(fd: fd), for: handle) }
        let waiting = pending
        pending.removeAll()
        for request in waiting { (request.handler ?? onResponse)(.failure(error)) }
        onClose?(error)
        onClose = nil
        releaseIfDone()
    }

    /// Once closed and nothing of it is in the ring: the descriptor closes and the handle goes.
    private func releaseIfDone() {
        guard closed != nil, !released, core.io.operationsInFlight(handle) == 0 else { return }
        released = true
        if fd >= 0 { core.io.submitUnobserved(.close(fd: fd)) }
        fd = -1
        core.forget(self)
        core.io.release(handle)
    }
}
