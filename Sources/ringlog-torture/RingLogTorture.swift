import ArgumentParser
import RingLogIO

@main
struct RingLogTorture: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringlog-torture",
        abstract: "Fault and abuse testing against a real ringlogd (loopback only, bounded in time).",
        subcommands: [Crash.self, Hostile.self, MemoryAttack.self])

    static func log(_ line: String) { Console.error(line) }
}
