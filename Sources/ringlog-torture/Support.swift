import Foundation
import Glibc
import RingLogIO
import RingLogTestKit
import Synchronization

/// ringlogd as `--ringlogd` names it, else the one built next to this tool.
func ringlogdExecutable(_ path: String?) -> URL { path.map { URL(fileURLWithPath: $0) } ?? Daemon.binary("ringlogd") }

func log(_ line: String) { Console.error(line) }

/// A value several tasks or threads update.
final class Shared<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    init(_ value: Value) { state = Mutex(value) }
    var value: Value { state.withLock { $0 } }
    func update<T>(_ change: (inout Value) -> T) -> T { state.withLock { change(&$0) } }
}
