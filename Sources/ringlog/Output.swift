import ArgumentParser
import Glibc
import RingLogClient
import RingLogIO
import RingLogWire

/// How records are printed.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, hex, json
    }

    @Option(help: "text (each record's bytes as they are, then a newline), hex, or json (JSON Lines, with positions).")
    var format: Format = .text
    @Flag(help: "Short for --format json.") var json = false
    @Flag(help: "Prefix text and hex lines with the record's position, OFFSET/INDEX and a tab.")
    var positions = false

    var effectiveFormat: Format { json ? .json : format }

    /// Adds one record to `output` (written out by the caller's `flush`).
    func write(_ record: Record, to output: StandardOutput) {
        switch effectiveFormat {
        case .text:
            if positions { output.append("\(record.position)\t") }
            output.append(bytes: record.bytes)
            output.append("\n")
        case .hex:
            if positions { output.append("\(record.position)\t") }
            output.append(hexString(record.bytes))
            output.append("\n")
        case .json:
            output.append("{\"offset\":\(record.position.batchOffset),\"index\":\(record.position.index),\"appendTimeMicros\":\(record.appendTimeMicros),")
            output.appendJSONValue(record.bytes)
            output.append("}\n")
        }
    }
}

/// Standard output, buffered by the program and written with write(2) when `flush` says: after
/// each response's records and before any wait, whether stdout is a terminal, a pipe or a file.
/// (stdio would hold a pipe's output until exit, and lose it on Ctrl-C.)
final class StandardOutput {
    private var buffer: [UInt8] = []
    private let limit = 1 << 20

    init() { buffer.reserveCapacity(64 << 10) }

    func append(_ text: String) {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= limit { flush() }
    }

    func append(bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= limit { flush() }
    }

    func line(_ text: String) { append(text + "\n") }

    /// `"value":...,"encoding":...` for a record: a JSON string when its bytes are UTF-8, else
    /// base64, marked by `"encoding"` either way; escaped byte by byte into the buffer, so a read
    /// of a large log in JSON stays within a few times the text output's cost.
    func appendJSONValue(_ bytes: [UInt8]) {
        let isText = bytes.allSatisfy { $0 < 0x80 } || String(validating: bytes, as: UTF8.self) != nil
        guard isText else {
            append("\"value\":\"\(base64(bytes))\",\"encoding\":\"base64\"")
            return
        }
        buffer.append(contentsOf: "\"value\":".utf8)
        appendJSONString(bytes, to: &buffer)
        buffer.append(contentsOf: ",\"encoding\":\"utf8\"".utf8)
        if buffer.count >= limit { flush() }
    }

    /// Writes everything buffered. A closed pipe (`ringlog tail LOG | head`) ends the program
    /// quietly, as it ends `cat`.
    func flush() {
        var written = 0
        while written < buffer.count {
            let result = buffer.withUnsafeBytes { Glibc.write(1, $0.baseAddress! + written, $0.count - written) }
            if result < 0 {
                if errno == EINTR { continue }
                // The reader went away (`| head`): nothing more to do, and nothing went wrong.
                if errno == EPIPE { exit(0) }
                Console.error("ringlog: cannot write to standard output: \(String(cString: strerror(errno)))")
                exit(74)
            }
            written += result
        }
        buffer.removeAll(keepingCapacity: true)
    }

    deinit { flush() }
}

func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

func base64(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count + 2) / 3 * 4)
    var index = 0
    while index < bytes.count {
        let chunk = bytes[index..<min(index + 3, bytes.count)]
        var value = UInt32(0)
        for (position, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * position) }
        for position in 0..<4 {
            out.append(position <= chunk.count ? alphabet[Int((value >> (18 - 6 * position)) & 63)] : UInt8(ascii: "="))
        }
        index += 3
    }
    return String(decoding: out, as: UTF8.self)
}

/// A JSON string literal (control characters escaped).
func jsonString(_ text: String) -> String {
    var out: [UInt8] = []
    appendJSONString(text.utf8, to: &out)
    return String(decoding: out, as: UTF8.self)
}

/// Appends valid UTF-8 `bytes` as a JSON string literal: quotes, backslashes and control
/// characters escaped, everything else as it is.
func appendJSONString(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    out.append(UInt8(ascii: "\""))
    for byte in bytes {
        switch byte {
        case UInt8(ascii: "\""): out.append(contentsOf: "\\\"".utf8)
        case UInt8(ascii: "\\"): out.append(contentsOf: "\\\\".utf8)
        case UInt8(ascii: "\n"): out.append(contentsOf: "\\n".utf8)
        case UInt8(ascii: "\r"): out.append(contentsOf: "\\r".utf8)
        case UInt8(ascii: "\t"): out.append(contentsOf: "\\t".utf8)
        case 0..<0x20:
            out.append(contentsOf: "\\u00".utf8)
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 15)])
        default: out.append(byte)
        }
    }
    out.append(UInt8(ascii: "\""))
}

/// A JSON string, or null when absent or empty.
func jsonOptionalString(_ text: String?) -> String {
    guard let text, !text.isEmpty else { return "null" }
    return jsonString(text)
}

/// A log's description as one JSON object (absent limits and failures are null).
func describeJSON(_ log: LogDescription) -> String {
    "{\"name\":\(jsonString(log.name)),\"id\":\(log.logID),\"startOffset\":\(log.startOffset),\"committedEnd\":\(log.committedEnd),"
        + "\"segments\":\(log.segmentCount),\"storedBytes\":\(log.storedBytes),\"diskBytes\":\(log.diskBytes),"
        + "\"segmentBytes\":\(log.segmentBytes),\"retentionBytes\":\(log.retentionBytes == 0 ? "null" : "\(log.retentionBytes)"),"
        + "\"retentionSeconds\":\(log.retentionMillis == 0 ? "null" : "\(Double(log.retentionMillis) / 1000)"),"
        + "\"failure\":\(jsonOptionalString(log.failure))}"
}

/// `appends_total` -> `appendsTotal`: the server's statistic names in JSON's convention.
func camelCase(_ name: String) -> String {
    var out = ""
    var upper = false
    for character in name {
        if character == "_" {
            upper = true
        } else {
            out.append(upper ? Character(character.uppercased()) : character)
            upper = false
        }
    }
    return out
}
