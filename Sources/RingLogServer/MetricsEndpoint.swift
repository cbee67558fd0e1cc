import CLiburing
import Glibc
import RingLogIO

/// `GET /metrics` over HTTP/1.0 for Prometheus, served on the event loop's own ring like
/// everything else. Deliberately tiny and bounded: a few clients at a time, one request each,
/// 8 KiB of request, 5 s to finish, then the connection closes.
final class MetricsEndpoint {
    static let maxClients = 16
    static let maxRequestBytes = 8 << 10
    static let deadlineNanos: UInt64 = 5_000_000_000

    final class Client {
        let fd: Int32
        let slot: Int
        let generation: UInt16
        let request = ByteStore()
        var response: OwnedBytes?
        var sent = 0
        let openedNanos: UInt64
        var operations = 0
        var done = false

        init(fd: Int32, slot: Int, generation: UInt16, openedNanos: UInt64) {
            self.fd = fd
            self.slot = slot
            self.generation = generation
            self.openedNanos = openedNanos
        }
    }

    private(set) var listenFD: Int32
    private var clients: [Client?] = Array(repeating: nil, count: MetricsEndpoint.maxClients)
    private var generations: [UInt16] = Array(repeating: 0, count: MetricsEndpoint.maxClients)
    private let exporter: @Sendable () -> [UInt8]

    init(listenFD: Int32, exporter: @escaping @Sendable () -> [UInt8]) {
        self.listenFD = listenFD
        self.exporter = exporter
    }

    func armAccept(on ring: Ring) {
        guard listenFD >= 0 else { return }
        let entry = ring.submissionEntry()
        io_uring_prep_multishot_accept(entry, listenFD, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        io_uring_sqe_set_data64(entry, EventLoop.userData(.metricsAccept))
    }

    func accepted(result: Int32, flags: UInt32, ring: Ring) {
        if flags & IORING_CQE_F_MORE == 0 { armAccept(on: ring) }
        guard result >= 0 else { return }
        guard let slot = clients.firstIndex(where: { $0 == nil }) else {
            submitClose(result, ring: ring)
            return
        }
        generations[slot] &+= 1
        let client = Client(fd: result, slot: slot, generation: generations[slot], openedNanos: monotonicNanos())
        clients[slot] = client
        receive(client, ring: ring)
    }

    private func receive(_ client: Client, ring: Ring) {
        let space = MetricsEndpoint.maxRequestBytes - client.request.count
        let entry = ring.submissionEntry()
        io_uring_prep_recv(entry, client.fd, client.request.reserve(space), space, 0)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.metricsReceive, slot: client.slot, generation: client.generation))
        client.operations += 1
    }

    /// A completion for one of this endpoint's clients; `respond` builds the body for a scrape.
    func completed(
        _ kind: EventLoop.Kind, slot: Int, generation: UInt16, result: Int32, ring: Ring, refresh: () -> Void
    ) {
        guard slot < clients.count, let client = clients[slot], client.generation == generation else { return }
        client.operations -= 1
        if kind == .metricsReceive {
            guard result > 0, !client.done else { return finish(client, ring: ring) }
            client.request.commit(Int(result))
            let text = String(decoding: client.request.bytes, as: UTF8.self)
            if text.contains("\r\n\r\n") || text.contains("\n\n") {
                refresh()
                client.response = OwnedBytes(response(to: text))
                sendRest(client, ring: ring)
            } else if client.request.count >= MetricsEndpoint.maxRequestBytes {
                finish(client, ring: ring)
            } else {
                receive(client, ring: ring)
            }
        } else {
            guard result > 0, let response = client.response else { return finish(client, ring: ring) }
            client.sent += Int(result)
            if client.sent < response.count { sendRest(client, ring: ring) } else { finish(client, ring: ring) }
        }
    }

    private func response(to request: String) -> [UInt8] {
        let line = request.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).first.map(String.init) ?? ""
        let parts = line.split(separator: " ")
        let (status, type, body): (String, String, [UInt8])
        if parts.count >= 2 && parts[0] == "GET" && (parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?")) {
            (status, type, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", exporter())
        } else if parts.first != "GET" {
            (status, type, body) = ("405 Method Not Allowed", "text/plain", Array("only GET /metrics is served here\n".utf8))
        } else {
            (status, type, body) = ("404 Not Found", "text/plain", Array("try GET /metrics\n".utf8))
        }
        let head = "HTTP/1.0 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    private func sendRest(_ client: Client, ring: Ring) {
        guard let response = client.response else { return }
        let entry = ring.submissionEntry()
        io_uring_prep_send(entry, client.fd, response.bytes.baseAddress! + client.sent, response.count - client.sent, Int32(MSG_NOSIGNAL))
        io_uring_sqe_set_data64(entry, EventLoop.userData(.metricsSend, slot: client.slot, generation: client.generation))
        client.operations += 1
    }

    private func finish(_ client: Client, ring: Ring) {
        client.done = true
        guard client.operations == 0 else {
            let entry = ring.submissionEntry()
            io_uring_prep_shutdown(entry, client.fd, Int32(SHUT_RDWR))
            io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
            return
        }
        submitClose(client.fd, ring: ring)
        clients[client.slot] = nil
    }

    /// Ends clients past their deadline.
    func sweep(now: UInt64, ring: Ring) {
        for case let client? in clients where !client.done && now > client.openedNanos + MetricsEndpoint.deadlineNanos {
            finish(client, ring: ring)
        }
    }

    /// Stops accepting (at shutdown).
    func close(ring: Ring) {
        guard listenFD >= 0 else { return }
        let entry = ring.submissionEntry()
        io_uring_prep_cancel64(entry, EventLoop.userData(.metricsAccept), 0)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
        submitClose(listenFD, ring: ring)
        listenFD = -1
        for case let client? in clients { finish(client, ring: ring) }
    }

    private func submitClose(_ fd: Int32, ring: Ring) {
        let entry = ring.submissionEntry()
        io_uring_prep_close(entry, fd)
        io_uring_sqe_set_data64(entry, EventLoop.userData(.ignored))
    }
}
