import Glibc
import Logging
import RingLogIO

/// ringlogd's log lines on standard error: time, level, the message first, then its metadata as
/// `key=value` (quoted when it holds spaces), so the line reads like a sentence and greps well:
///
///     2026-11-29T21:44:55Z notice ringlogd: started in 171 ms log=orders
struct LogLines: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        var line = "\(LogLines.timestamp()) \(event.level) \(label): \(event.message)"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            let text = "\(value)"
            line += " \(key)=" + (text.contains(" ") || text.isEmpty ? "\"\(text)\"" : text)
        }
        Console.error(line)
    }

    /// UTC, to the second, ISO 8601.
    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
