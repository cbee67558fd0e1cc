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

/// A size for people to read: `512 B`, `16 MiB`, `1.5 GiB` (one decimal at most).
public func describeByteSize(_ bytes: UInt64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= UInt64(1) << shift {
        let tenths = (bytes * 10 + (UInt64(1) << shift) / 2) >> shift
        return tenths % 10 == 0 ? "\(tenths / 10) \(unit)" : "\(tenths / 10).\(tenths % 10) \(unit)"
    }
    return "\(bytes) B"
}

/// Parses durations such as `90`, `90s`, `15m`, `12h`, `7d`, `2w` (a bare number is seconds);
/// returns seconds.
public func parseDuration(_ text: String) -> UInt64? {
    let digits = text.prefix { $0.isNumber }
    guard let value = UInt64(digits) else { return nil }
    let multiplier: UInt64
    switch text.dropFirst(digits.count).lowercased() {
    case "", "s", "sec", "second", "seconds": multiplier = 1
    case "m", "min", "minute", "minutes": multiplier = 60
    case "h", "hour", "hours": multiplier = 3_600
    case "d", "day", "days": multiplier = 86_400
    case "w", "week", "weeks": multiplier = 604_800
    default: return nil
    }
    let (seconds, overflow) = value.multipliedReportingOverflow(by: multiplier)
    return overflow ? nil : seconds
}

/// A duration for people to read, in the largest unit that divides it (`7 days`, `36 hours`,
/// `90 seconds`).
public func describeDuration(seconds: UInt64) -> String {
    for (unit, name) in [(UInt64(604_800), "week"), (86_400, "day"), (3_600, "hour"), (60, "minute")] where seconds >= unit && seconds % unit == 0 {
        let count = seconds / unit
        return "\(count) \(name)\(count == 1 ? "" : "s")"
    }
    return "\(seconds) second\(seconds == 1 ? "" : "s")"
}
