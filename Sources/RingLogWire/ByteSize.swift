/// Parses sizes such as `4096`, `64KiB`, `16MiB`, `1GiB`, `2TiB` (binary units; `KB`/`MB`/`GB` are
/// read as the same binary units, and a trailing `B` is optional).
public func parseByteSize(_ text: String) -> Int? {
    let trimmed = text.trimmingCharacters(in: " ")
    let digits = trimmed.prefix { $0.isNumber }
    guard let value = Int(digits) else { return nil }
    var unit = trimmed.dropFirst(digits.count).uppercased()
    if unit.hasSuffix("IB") { unit.removeLast(2) } else if unit.hasSuffix("B") { unit.removeLast() }
    let shift: Int
    switch unit {
    case "": shift = 0
    case "K": shift = 10
    case "M": shift = 20
    case "G": shift = 30
    case "T": shift = 40
    default: return nil
    }
    let (result, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
    return overflow ? nil : result
}

/// Writes a size in the largest binary unit that divides it exactly (`1GiB`, `16KiB`, `1536`),
/// so that `parseByteSize(formatByteSize(n)) == n`.
public func formatByteSize(_ bytes: Int) -> String {
    guard bytes != 0 else { return "0" }
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes % (1 << shift) == 0 {
        return "\(bytes >> shift)\(unit)"
    }
    return String(bytes)
}

extension String {
    fileprivate func trimmingCharacters(in character: Character) -> String {
        String(drop { $0 == character }.reversed().drop { $0 == character }.reversed())
    }
}
