import Glibc
import RingLogIO
import RingLogWire

/// A listening port (the native protocol's, or the Kafka listener's): one multishot accept on the loop core. Connections past the limit (or
/// arriving while the server stops) are answered TOO_MANY_CONNECTIONS and closed; each such answer
/// is its own small operation with its own handle, whose context is the descriptor to close.
final class Listener: IOHandler {
    unowned let server: ServerLoop
    private var fd: Int32
    private var handle: IOHandle!
    /// The rejection sent to connections over the limit, made once.
    private let rejection: OwnedBytes
    /// Its connections speak Kafka; one over the limit is closed without an answer (Kafka has no
    /// frame for that).
    private let kafka: Bool

    init(server: ServerLoop, fd: Int32, kafka: Bool = false) {
        self.server = server
        self.fd = fd
        self.kafka = kafka
        let limit = server.configuration.maxConnections
        var body = WireWriter()
        ErrorBody(detail1: UInt64(limit), message: "too many connections: the limit is \(limit)").encode(into: &body)
        var bytes = [UInt8](repeating: 0, count: WireProtocol.headerBytes)
        bytes.withUnsafeMutableBytes {
            ResponseHeader(opcode: 0, bodyLength: body.bytes.count, requestID: 0, status: ErrorCode.tooManyConnections.rawValue).encode(into: $0.baseAddress!)
        }
        rejection = OwnedBytes(bytes + body.bytes)
        handle = server.loop.register(self)
    }

    func arm() {
        guard fd >= 0 else { return }
        server.loop.submit(.acceptMultishot(fd: fd), for: handle)
    }

    func completed(_ completion: IOCompletion) {
        switch completion.kind {
        case .acceptMultishot:
            accepted(completion)
        case .send:
            // A rejection went out (or failed): close its descriptor and free its handle.
            server.loop.submitUnobserved(.close(fd: Int32(truncatingIfNeeded: completion.context)))
        default:
            break
        }
    }

    private func accepted(_ completion: IOCompletion) {
        if !completion.hasMore && fd >= 0 { arm() }
        switch completion.accepted {
        case .failure(let error):
            if error != .canceled { server.logger.warning("accept failed", metadata: ["errno": "\(error)"]) }
        case .success(let accepted):
            if server.acceptsConnections {
                server.accepted(fd: accepted, kafka: kafka)
            } else {
                reject(accepted)
            }
        }
    }

    /// Answers a connection over the limit with TOO_MANY_CONNECTIONS, then closes it.
    private func reject(_ accepted: Int32) {
        server.counters.connectionsRejected += 1
        if kafka {
            server.loop.submitUnobserved(.close(fd: accepted))
            return
        }
        let answer = server.loop.register(self, context: UInt64(UInt32(bitPattern: accepted)))
        server.loop.submit(.send(fd: accepted, bytes: rejection.bytes), for: answer)
        server.loop.release(answer)
    }

    /// Stops accepting (at shutdown).
    func close() {
        guard fd >= 0 else { return }
        server.loop.cancel(.acceptMultishot, of: handle)
        server.loop.submitUnobserved(.close(fd: fd))
        fd = -1
    }
}
