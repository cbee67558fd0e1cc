import Foundation
import Glibc
import RingLogIO

/// A fresh directory `/tmp/<prefix>-XXXXXX`.
public func makeTemporaryDirectory(prefix: String = "ringlog-test") -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    return String(cString: made)
}

public func removeDirectory(_ path: String) {
    guard path.hasPrefix("/tmp/ringlog-test-") else { return }
    try? FileManager.default.removeItem(atPath: path)
}

/// TCP sockets on the machine whose local port is `port`, by kernel state (`/proc/net/tcp*`
/// codes: 01 established, 08 close-wait, 0A listen, ...). A server socket stuck in close-wait is a
/// descriptor the server never closed.
public func socketStates(localPort port: UInt16) -> [String] {
    var states: [String] = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":"),
                UInt16(fields[1][fields[1].index(after: colon)...], radix: 16) == port
            else { continue }
            states.append(String(fields[3]))
        }
    }
    return states
}

/// A ringlogd child process on a kernel-chosen loopback port: what the tests and the torture
/// runs start, kill and restart.
public struct Daemon {
    public let process: Process
    public let address: SocketAddress
    /// Set when ringlogd was started with --metrics-listen.
    public let metricsAddress: SocketAddress?

    /// A binary built next to the running test bundle or tool (`swift build --build-tests` builds
    /// them all into one directory).
    public static func binary(_ name: String) -> URL {
        let tests = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = tests.deletingLastPathComponent()
        while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path) {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent(name)
    }

    static var executable: URL { binary("ringlogd") }

    /// Starts `executable` over `directory`, with 16 MiB segments and warnings only unless
    /// `arguments` say otherwise (the last occurrence of an option wins). With `quiet`, its
    /// standard error goes nowhere.
    public init(executable: URL? = nil, directory: String, quiet: Bool = false, arguments: [String] = []) throws {
        process = Process()
        process.executableURL = executable ?? Daemon.executable
        // The Kafka listener's default port is one for the whole machine: off unless a test asks.
        let kafka = arguments.contains("--kafka-listen") ? [] : ["--kafka-listen", "off"]
        process.arguments = ["--data-dir", directory, "--listen", "127.0.0.1:0", "--segment-bytes", "16MiB", "--log-level", "warning"] + kafka + arguments
        let output = Pipe()
        process.standardOutput = output
        if quiet { process.standardError = FileHandle(forWritingAtPath: "/dev/null") }
        try process.run()
        var line: [UInt8] = []
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw TestFailure("ringlogd exited before listening") }
            line += chunk
        }
        let wantsMetrics = arguments.contains("--metrics-listen")
        while wantsMetrics && line.filter({ $0 == UInt8(ascii: "\n") }).count < 2 {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw TestFailure("ringlogd exited before printing its metrics address") }
            line += chunk
        }
        let lines = String(decoding: line, as: UTF8.self).split(separator: "\n")
        guard lines[0].hasPrefix("listening ") else { throw TestFailure("unexpected first line: \(lines[0])") }
        address = try SocketAddress(parsing: String(lines[0].dropFirst("listening ".count)))
        metricsAddress = try wantsMetrics ? SocketAddress(parsing: String(lines[1].dropFirst("metrics ".count))) : nil
    }

    public var pid: Int32 { process.processIdentifier }

    /// Sends `signal`; waits for the exit only for SIGKILL (a graceful stop is for the caller to
    /// watch, see `stop`).
    public func kill(_ signal: Int32) {
        Glibc.kill(process.processIdentifier, signal)
        if signal == SIGKILL { process.waitUntilExit() }
    }

    /// Stops gracefully (SIGTERM) and waits; returns the exit status.
    @discardableResult
    public func stop() -> Int32 {
        kill(SIGTERM)
        return waitForExit()
    }

    /// Resident memory in bytes, from /proc.
    public var residentBytes: Int { Daemon.residentBytes(pid: pid) }

    public static func residentBytes(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kilobytes * 1024
    }

    /// Open socket descriptors (files come and go with segments; sockets must not leak).
    public var socketCount: Int {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)")) ?? "").hasPrefix("socket:") }.count
    }

    public func waitForExit() -> Int32 {
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Runs ringlogd to completion (for start-up failures); returns its status and standard error.
    public static func run(_ arguments: [String]) throws -> (status: Int32, standardError: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let error = Pipe()
        process.standardError = error
        process.standardOutput = Pipe()
        try process.run()
        let data = error.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// Runs a built binary with `arguments` (and `input` on its standard input) to completion.
public func runTool(_ name: String, _ arguments: [String], input: String? = nil, environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
    try runTool(name, arguments, bytes: input.map { Array($0.utf8) }, environment: environment)
}

/// Runs a built binary with `arguments` and `bytes` on its standard input to completion.
public func runTool(_ name: String, _ arguments: [String], bytes: [UInt8]?, environment: [String: String] = [:]) throws -> (status: Int32, output: String, error: String) {
    let tool = try ToolProcess(name, arguments, environment: environment)
    if let bytes { tool.write(bytes) }
    tool.closeInput()
    let status = tool.wait()
    return (status, tool.output, tool.error)
}

/// A built binary running with pipes on all three standard streams, for tests that talk to it
/// while it runs: write to its input a little at a time, watch its output as it comes.
public final class ToolProcess {
    public let process = Process()
    private let input = Pipe()
    private let outputPipe = Pipe()
    private let errorPipe = Pipe()
    private var outputBytes: [UInt8] = []
    private var errorBytes: [UInt8] = []

    public init(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = Daemon.binary(name)
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        for (key, value) in environment { merged[key] = value }
        process.environment = merged
        process.standardInput = input
        process.standardOutput = outputPipe
        process.standardError = errorPipe
        try process.run()
    }

    public func write(_ bytes: [UInt8]) { input.fileHandleForWriting.write(Data(bytes)) }

    public func write(_ text: String) { write(Array(text.utf8)) }

    public func closeInput() { try? input.fileHandleForWriting.close() }

    /// Standard output so far, as text.
    public var output: String {
        drain()
        return String(decoding: outputBytes, as: UTF8.self)
    }

    public var error: String {
        drain()
        return String(decoding: errorBytes, as: UTF8.self)
    }

    /// Waits up to `seconds` for standard output to satisfy `condition`; returns whether it did.
    public func waitForOutput(seconds: Double, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition(output) { return true }
            usleep(20_000)
        }
        return condition(output)
    }

    /// Waits up to `seconds` for standard error to satisfy `condition`.
    public func waitForError(seconds: Double, _ condition: (String) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition(error) { return true }
            usleep(20_000)
        }
        return condition(error)
    }

    public func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the exit (reading its output meanwhile, so a full pipe cannot block it).
    public func wait() -> Int32 {
        while process.isRunning {
            drain()
            usleep(10_000)
        }
        process.waitUntilExit()
        drain()
        outputBytes += outputPipe.fileHandleForReading.readDataToEndOfFile()
        errorBytes += errorPipe.fileHandleForReading.readDataToEndOfFile()
        return process.terminationStatus
    }

    /// Takes whatever the pipes hold now, without blocking.
    private func drain() {
        for (pipe, isOutput) in [(outputPipe, true), (errorPipe, false)] {
            let fd = pipe.fileHandleForReading.fileDescriptor
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while poll(&poller, 1, 0) > 0 && poller.revents & Int16(POLLIN) != 0 {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if count <= 0 { break }
                if isOutput { outputBytes += chunk[0..<count] } else { errorBytes += chunk[0..<count] }
            }
        }
    }
}

/// A loopback TCP port free at the time of asking (for a daemon that must come back on the same
/// port after a restart).
public func freeLoopbackPort() throws -> UInt16 {
    let address = try SocketAddress(parsing: "127.0.0.1:0")
    let (fd, bound) = try Sockets.listen(on: address)
    close(fd)
    return bound.port
}


/// A loopback listening socket that never accepts: the kernel completes connections into its
/// backlog and nothing ever answers (a hung server).
public func silentListener() throws -> (fd: Int32, port: UInt16) {
    let (fd, bound) = try Sockets.listen(on: try SocketAddress(parsing: "127.0.0.1:0"))
    return (fd, bound.port)
}
