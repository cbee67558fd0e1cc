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
        if !isAlphanumeric(bytes[0]) { return "log name must start with a letter or digit" }
        for byte in bytes where !(isAlphanumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")) {
            return "log name may hold only letters, digits, '.', '_' and '-' (found byte 0x\(String(byte, radix: 16)))"
        }
        return nil
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
