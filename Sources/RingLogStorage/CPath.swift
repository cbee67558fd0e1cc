import Glibc

/// A NUL-terminated path whose bytes stay put for as long as the object lives, so an operation
/// in flight in the kernel can point at it.
public final class CPath: CustomStringConvertible, @unchecked Sendable {
    public let string: String
    public let pointer: UnsafeMutablePointer<CChar>

    public init(_ string: String) {
        precondition(!string.utf8.contains(0), "paths never contain NUL")
        self.string = string
        pointer = strdup(string)!
    }

    deinit { free(pointer) }

    public var description: String { string }

    /// `self` joined with one more path component.
    public func appending(_ component: String) -> CPath { CPath(string + "/" + component) }
}
