/// Log names are directory names, so they are held to a small, safe alphabet.
///
/// Rules: 1 to 128 bytes of ASCII letters, digits, `.`, `_` and `-`; the first byte is a letter or
/// digit (which rules out `.`, `..` and hidden files). Names are case-sensitive.
public enum LogName {
    public static let maxBytes = 128

    /// Why `name` is not a valid log name, or `nil` when it is.
    public static func problem(with name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "log name is empty" }
        if bytes.count > maxBytes { return "log name is \(bytes.count) bytes; the limit is \(maxBytes)" }
        if !isAlphanumeric(bytes[0]) {
            return "log name must start with a letter or digit, not \(describe(name.unicodeScalars.first!))"
        }
        for (position, scalar) in name.unicodeScalars.enumerated() where !isAllowed(scalar) {
            return "log name may hold only letters, digits, '.', '_' and '-': \(describe(scalar)) at character \(position + 1) is not allowed"
        }
        return nil
    }

    private static func isAllowed(_ scalar: Unicode.Scalar) -> Bool {
        scalar.isASCII && isAllowed(UInt8(scalar.value))
    }

    /// Whether `byte` may stand in a name: an ASCII letter or digit, `.`, `_` or `-` (also the
    /// characters Kafka allows in topic names).
    public static func isAllowed(_ byte: UInt8) -> Bool {
        isAlphanumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }

    /// `'/' (U+002F)`, `a space (U+0020)`: the character as a person can find it in what they typed.
    private static func describe(_ scalar: Unicode.Scalar) -> String {
        let code = "U+" + String(repeating: "0", count: max(0, 4 - String(scalar.value, radix: 16).count)) + String(scalar.value, radix: 16, uppercase: true)
        switch scalar {
        case " ": return "a space (\(code))"
        case "\t": return "a tab (\(code))"
        default: return scalar.properties.generalCategory == .control ? "a control character (\(code))" : "'\(scalar)' (\(code))"
        }
    }

    /// Whether `byte` is an ASCII letter or digit (what a name must start with).
    public static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
