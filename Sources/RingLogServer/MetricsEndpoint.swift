import Glibc
import RingLogIO
import RingLogWire

/// `GET /metrics` over HTTP/1.0 for Prometheus, served on the loop core like everything else.
/// Deliberately tiny and bounded: a few clients at a time, one request each, 8 KiB of request,
/// 5 s to finish, then the connection closes. Each client is a handler with its own handle.
final class MetricsEndpoint: IOHandler {
    static let maxClients = 16
    static let maxRequestBytes = 8 << 10
    static let deadlineNanos: UInt64 = 5_000_000_000

    /// One scrape in progress.
    final class Client: IOHandler {
        unowned let endpoint: MetricsEndpoint
        let fd: Int32
        private(set) var handle: IOHandle!
        let request = ByteStore()
        var response: OwnedBytes?
        var sent = 0
        let openedNanos: UInt64
        var done = false
        var closed = false

        init(endpoint: MetricsEndpoint, fd: Int32, openedNanos: UInt64) {
            self.endpoint = endpoint
            self.fd = fd
            self.openedNanos = openedNanos
            handle = endpoint.loop.register(self)
        }

        func completed(_ completion: IOCompletion) { endpoint.completed(self, completion) }

        func released(_ handle: IOHandle) { endpoint.clients.removeAll { $0 === self } }
    }

    let loop: IOLoop
    private var listenFD: Int32
    private var handle: IOHandle!
    private(set) var clients: [Client] = []
    /// The metrics text as of now (on the loop thread).
    private let exporter: () -> [UInt8]

    init(loop: IOLoop, listenFD: Int32, exporter: @escaping () -> [UInt8]) {
        self.loop = loop
        self.listenFD = listenFD
        self.exporter = exporter
        handle = loop.register(self)
    }

    func arm() {
        guard listenFD >= 0 else { return }
        loop.submit(.acceptMultishot(fd: listenFD), for: handle)
    }

    /// The listening socket's completions: new scrapers.
    func completed(_ completion: IOCompletion) {
        if !completion.hasMore && listenFD >= 0 { arm() }
        guard case .success(let fd) = completion.accepted else { return }
        guard listenFD >= 0, clients.count < MetricsEndpoint.maxClients else {
            loop.submitUnobserved(.close(fd: fd))
            return
        }
        let client = Client(endpoint: self, fd: fd, openedNanos: MonotonicClock.nanos())
        clients.append(client)
        receive(client)
    }

    private func receive(_ client: Client) {
        let space = MetricsEndpoint.maxRequestBytes - client.request.count
        loop.submit(.receive(fd: client.fd, into: UnsafeMutableRawBufferPointer(start: client.request.reserve(space), count: space)), for: client.handle)
    }

    fileprivate func completed(_ client: Client, _ completion: IOCompletion) {
        switch completion.kind {
        case .receive:
            guard completion.result > 0, !client.done else { return finish(client) }
            client.request.commit(Int(completion.result))
            let text = String(decoding: client.request.bytes, as: UTF8.self)
            if text.contains("\r\n\r\n") || text.contains("\n\n") {
                client.response = OwnedBytes(response(to: text))
                sendRest(client)
            } else if client.request.count >= MetricsEndpoint.maxRequestBytes {
                finish(client)
            } else {
                receive(client)
            }
        case .send:
            guard completion.result > 0, let response = client.response else { return finish(client) }
            client.sent += Int(completion.result)
            if client.sent < response.count { sendRest(client) } else { finish(client) }
        default:
            // The shutdown that ended its pending operations.
            if client.done { finish(client) }
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

    private func sendRest(_ client: Client) {
        guard let response = client.response else { return }
        loop.submit(.send(fd: client.fd, bytes: UnsafeRawBufferPointer(rebasing: response.bytes[client.sent...])), for: client.handle)
    }

    /// Ends a scrape: the socket is shut down so anything pending completes, then closed once
    /// nothing of the client is left in the ring; the loop then releases its handle.
    private func finish(_ client: Client) {
        if !client.done {
            client.done = true
            if loop.operationsInFlight(client.handle) > 0 { loop.submit(.shutdown(fd: client.fd), for: client.handle) }
        }
        guard loop.operationsInFlight(client.handle) == 0, !client.closed else { return }
        client.closed = true
        loop.submitUnobserved(.close(fd: client.fd))
        loop.release(client.handle)
    }

    /// Ends clients past their deadline.
    func sweep(now: UInt64) {
        for client in clients where !client.done && now > client.openedNanos + MetricsEndpoint.deadlineNanos { finish(client) }
    }

    /// Stops accepting (at shutdown) and ends every scrape.
    func close() {
        guard listenFD >= 0 else { return }
        loop.cancel(.acceptMultishot, of: handle)
        loop.submitUnobserved(.close(fd: listenFD))
        listenFD = -1
        for client in clients { finish(client) }
    }
}
