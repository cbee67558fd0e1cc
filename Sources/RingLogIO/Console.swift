import Glibc

/// Unbuffered writes to standard output and error: a line a script waits for (such as ringlogd's
/// `listening` line) must not sit in a stdio buffer.
public enum Console {
    public static func out(_ line: String) { write(to: 1, line + "\n") }
    public static func error(_ line: String) { write(to: 2, line + "\n") }

    private static func write(to fd: Int32, _ text: String) {
        var bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written <= 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
        bytes.removeAll()
    }
}
