import CLiburing  // in a whole-module build, SOCK_STREAM and friends belong to the C module that includes sys/socket.h first: CLiburing's shim
import Glibc

/// An IPv4 or IPv6 address and port, parsed from `host:port` or `[v6host]:port`.
public struct SocketAddress: Equatable, Sendable, CustomStringConvertible {
    public enum Family: Sendable, Equatable { case v4, v6 }

    public var host: String
    public var port: UInt16
    public var family: Family

    public init(host: String, port: UInt16) throws(AddressError) {
        self.host = host
        self.port = port
        if host.contains(":") {
            family = .v6
            var probe = in6_addr()
            guard inet_pton(AF_INET6, host, &probe) == 1 else { throw AddressError("\(host) is not an IPv6 address") }
        } else {
            family = .v4
            var probe = in_addr()
            guard inet_pton(AF_INET, host, &probe) == 1 else {
                throw AddressError("\(host) is not an IPv4 address (use a numeric address such as 127.0.0.1, or [::1] for IPv6)")
            }
        }
    }

    /// Parses `127.0.0.1:7400`, `[::1]:7400`, or `localhost:7400` (taken as 127.0.0.1): for
    /// addresses to listen on. Clients resolve host names with `resolve`.
    public init(parsing text: String) throws(AddressError) {
        let (host, port) = try SocketAddress.split(text)
        try self.init(host: host == "localhost" ? "127.0.0.1" : host, port: port)
    }

    public var description: String { family == .v6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Calls `body` with this address as a `sockaddr`.
    public func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        switch family {
        case .v4:
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            _ = inet_pton(AF_INET, host, &address.sin_addr)
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6:
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            _ = inet_pton(AF_INET6, host, &address.sin6_addr)
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    var domain: Int32 { family == .v6 ? AF_INET6 : AF_INET }
}

public struct AddressError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Socket set-up that happens once, before the event loop takes over (io_uring on the kernels we
/// support has no bind or listen).
public enum Sockets {
    /// A non-blocking listening TCP socket with TCP_NODELAY (accepted sockets inherit it).
    /// Returns the descriptor and the bound address (the real port when `address.port` is 0).
    public static func listen(on address: SocketAddress, backlog: Int32 = 1024) throws(AddressError) -> (fd: Int32, bound: SocketAddress) {
        let fd = socket(address.domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AddressError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw AddressError("cannot listen on \(address): \(reason)")
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw AddressError("listen on \(address): \(reason)")
        }
        return (fd, try localAddress(of: fd))
    }

    /// A connected, blocking TCP socket with TCP_NODELAY.
    public static func connect(to address: SocketAddress) throws(AddressError) -> Int32 {
        let fd = socket(address.domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AddressError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connected = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw AddressError("cannot connect to \(address): \(reason)")
        }
        return fd
    }

    static func string(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func localAddress(of fd: Int32) throws(AddressError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0 else { throw AddressError("getsockname: \(String(cString: strerror(errno)))") }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        if Int32(storage.ss_family) == AF_INET6 {
            return try withUnsafePointer(to: &storage) { pointer throws(AddressError) in
                let address = UnsafeRawPointer(pointer).assumingMemoryBound(to: sockaddr_in6.self).pointee
                var raw = address.sin6_addr
                inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
                return try SocketAddress(host: Sockets.string(text), port: UInt16(bigEndian: address.sin6_port))
            }
        }
        return try withUnsafePointer(to: &storage) { pointer throws(AddressError) in
            let address = UnsafeRawPointer(pointer).assumingMemoryBound(to: sockaddr_in.self).pointee
            var raw = address.sin_addr
            inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
            return try SocketAddress(host: Sockets.string(text), port: UInt16(bigEndian: address.sin_port))
        }
    }
}

extension SocketAddress {
    /// Splits `host:port` or `[v6host]:port` without looking the host up.
    public static func split(_ text: String) throws(AddressError) -> (host: String, port: UInt16) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw AddressError("\(text) is not [address]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw AddressError("\(text) has no port (expected host:port)") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw AddressError("\(text) has no host (expected host:port)") }
        guard let port = UInt16(portText) else { throw AddressError("\(portText) is not a port number (0-65535)") }
        return (String(host), port)
    }

    /// Every address `host:port` names, in the resolver's order (`localhost` may give ::1 before
    /// 127.0.0.1): an address literal as itself, a host name through getaddrinfo, IPv4 and IPv6.
    /// getaddrinfo blocks (DNS): call this off any event loop thread.
    public static func resolve(_ text: String) throws(AddressError) -> [SocketAddress] {
        let (host, port) = try split(text)
        if let literal = try? SocketAddress(host: host, port: port) { return [literal] }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else { throw AddressError("cannot resolve \(host): \(String(cString: gai_strerror(status)))") }
        defer { freeaddrinfo(list) }
        var found: [SocketAddress] = []
        var entry = list
        while let current = entry {
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            if current.pointee.ai_family == AF_INET6 {
                var raw = UnsafeRawPointer(current.pointee.ai_addr).assumingMemoryBound(to: sockaddr_in6.self).pointee.sin6_addr
                inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
            } else if current.pointee.ai_family == AF_INET {
                var raw = UnsafeRawPointer(current.pointee.ai_addr).assumingMemoryBound(to: sockaddr_in.self).pointee.sin_addr
                inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
            }
            if let address = try? SocketAddress(host: Sockets.string(text), port: port), !found.contains(address) { found.append(address) }
            entry = current.pointee.ai_next
        }
        guard !found.isEmpty else { throw AddressError("\(host) has no IPv4 or IPv6 address") }
        return found
    }
}
