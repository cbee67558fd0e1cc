import ArgumentParser
import RingLogClient
import RingLogWire

/// How records are printed.
struct OutputOptions: ParsableArguments {
    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, hex, json
    }

    @Option(help: "text (the record as a line), hex, or json (one object per line, with positions).")
    var format: Format = .text
    @Flag(help: "Prefix text and hex lines with the record's position, OFFSET/INDEX and a tab.")
    var positions = false

    func print(_ record: Record) {
        switch format {
        case .text: Swift.print((positions ? "\(record.position)\t" : "") + String(decoding: record.bytes, as: UTF8.self))
        case .hex: Swift.print((positions ? "\(record.position)\t" : "") + record.bytes.map { hexByte($0) }.joined())
        case .json:
            Swift.print(
                "{\"offset\":\(record.position.batchOffset),\"index\":\(record.position.index),\"appendTimeMicros\":\(record.appendTimeMicros),"
                    + "\"value\":\(jsonString(String(decoding: record.bytes, as: UTF8.self))),\"hex\":\"\(record.bytes.map { hexByte($0) }.joined())\"}")
        }
    }
}

func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

/// A JSON string literal (control characters escaped).
func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                out += "\\u00" + hexByte(UInt8(scalar.value))
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

func describeJSON(_ log: LogDescription) -> String {
    "{\"name\":\(jsonString(log.name)),\"id\":\(log.logID),\"startOffset\":\(log.startOffset),\"committedEnd\":\(log.committedEnd),"
        + "\"segments\":\(log.segmentCount),\"storedBytes\":\(log.storedBytes),\"diskBytes\":\(log.diskBytes),"
        + "\"segmentBytes\":\(log.segmentBytes),\"retentionBytes\":\(log.retentionBytes),\"retentionMillis\":\(log.retentionMillis),"
        + "\"failure\":\(jsonString(log.failure))}"
}
