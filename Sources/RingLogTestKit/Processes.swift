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
        process.arguments = ["--data-dir", directory, "--listen", "127.0.0.1:0", "--segment-bytes", "16MiB", "--log-level", "warning"] + arguments
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
    let process = Process()
    process.executableURL = Daemon.binary(name)
    process.arguments = arguments
    var merged = ProcessInfo.processInfo.environment
    for (key, value) in environment { merged[key] = value }
    process.environment = merged
    let output = Pipe()
    let error = Pipe()
    process.standardOutput = output
    process.standardError = error
    let standardInput = Pipe()
    process.standardInput = standardInput
    try process.run()
    if let input { standardInput.fileHandleForWriting.write(Data(input.utf8)) }
    try standardInput.fileHandleForWriting.close()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outputData, as: UTF8.self), String(decoding: errorData, as: UTF8.self))
}

