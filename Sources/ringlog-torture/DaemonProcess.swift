import Foundation
import Glibc
import RingLogIO
import Synchronization

/// A ringlogd child process on a loopback port the kernel picks.
final class DaemonProcess {
    let process = Process()
    let address: SocketAddress

    /// ringlogd next to this executable unless `path` says otherwise.
    static func defaultPath() -> String {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ringlogd").path
    }

    init(path: String, dataDirectory: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--log-level", "error"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        var line: [UInt8] = []
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { throw TortureError("ringlogd exited before it listened") }
            line += chunk
        }
        let text = String(decoding: line, as: UTF8.self).split(separator: "\n")[0]
        guard text.hasPrefix("listening ") else { throw TortureError("unexpected first line from ringlogd: \(text)") }
        address = try SocketAddress(parsing: String(text.dropFirst("listening ".count)))
    }

    var pid: Int32 { process.processIdentifier }

    func kill(_ signal: Int32) {
        Glibc.kill(pid, signal)
        process.waitUntilExit()
    }

    /// Resident memory in bytes (from /proc).
    var residentBytes: Int { DaemonProcess.residentBytes(pid: pid) }

    static func residentBytes(pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kilobytes * 1024
    }

    /// Open socket descriptors (files come and go with segments; sockets must not leak).
    var socketCount: Int {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)")) ?? "").hasPrefix("socket:") }.count
    }
}

struct TortureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func temporaryDirectory(_ prefix: String) -> String {
    var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed") }
    return String(cString: made)
}

func log(_ line: String) { Console.error(line) }

/// A value several tasks or threads update.
final class Shared<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    init(_ value: Value) { state = Mutex(value) }
    var value: Value { state.withLock { $0 } }
    func update<T>(_ change: (inout Value) -> T) -> T { state.withLock { change(&$0) } }
}
