import RingLogStorage

/// How Kafka topics and partitions map onto RingLog logs (docs/kafka.md, "Topics are logs").
///
/// Partition `p` of topic `T` is the log `base(T).p`. For a topic whose name starts with a letter
/// or digit and is at most 123 bytes (so `T.1023` fits a log name's 128), the base is the name
/// itself: `orders` partition 2 is the log `orders.2`, and the last `.N` of a log name is the
/// partition (`a.1.0` is partition 0 of topic `a.1`). Every other topic Kafka allows (starting with
/// `_`, `.` or `-`, or up to 249 bytes long) gets the base `k` + 32 hex digits of two 64-bit hashes
/// of its name, and its logs carry the full name as their label (`LogMeta.label`, written when the
/// log is created), which listing and every lookup check: a log belongs to a topic only if its
/// label is the topic's name (hashed bases) or it has none (plain bases), so neither a hash
/// collision nor a native log of the same name can be taken for the topic.
enum KafkaTopics {
    /// Kafka's own limit on topic names.
    static let maxTopicBytes = 249
    /// The longest plain base: room for `.1023`.
    static let maxPlainBytes = LogName.maxBytes - 5

    /// Why `topic` is not a topic name Kafka allows, or nil: 1 to 249 bytes of `[A-Za-z0-9._-]`,
    /// not `.` or `..`.
    static func problem(with topic: String) -> String? {
        if topic.isEmpty { return "a topic name is empty" }
        if topic == "." || topic == ".." { return "a topic cannot be named \(topic)" }
        let bytes = Array(topic.utf8)
        if bytes.count > maxTopicBytes { return "topic name of \(bytes.count) bytes; Kafka's limit is \(maxTopicBytes)" }
        // Kafka's alphabet is the one log names are written in.
        if !bytes.allSatisfy(LogName.isAllowed) { return "topic names may hold only letters, digits, '.', '_' and '-'" }
        return nil
    }

    /// Whether `topic` is its logs' base itself (else they are named by a hash and labelled).
    static func isPlain(_ topic: String) -> Bool {
        guard let first = topic.utf8.first else { return false }
        return LogName.isAlphanumeric(first) && topic.utf8.count <= maxPlainBytes
    }

    /// What the names of `topic`'s logs start with.
    static func base(_ topic: String) -> String {
        if isPlain(topic) { return topic }
        let bytes = Array(topic.utf8)
        return "k" + hex(fnv1a(bytes, basis: 0xCBF2_9CE4_8422_2325)) + hex(fnv1a(bytes, basis: 0x8422_2325_CBF2_9CE4))
    }

    static func logName(_ topic: String, _ partition: Int) -> String { "\(base(topic)).\(partition)" }

    /// The label `topic`'s logs carry: its name when the log names cannot carry it.
    static func label(_ topic: String) -> String? { isPlain(topic) ? nil : topic }

    /// Partition `partition` of `topic`, when that log exists and is the topic's.
    static func log(_ topic: String, _ partition: Int, in store: LogStore) -> Log? {
        guard partition >= 0, let log = store.log(named: logName(topic, partition)), log.label == label(topic) else { return nil }
        return log
    }

    /// The topic and partition a log name stands for, when it has the `T.p` shape.
    static func split(_ logName: String) -> (topic: String, partition: Int)? {
        guard let dot = logName.lastIndex(of: "."), dot != logName.startIndex else { return nil }
        let digits = logName[logName.index(after: dot)...]
        guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits == "0" || digits.first != "0",
            let partition = Int(digits)
        else { return nil }
        return (String(logName[..<dot]), partition)
    }

    /// Every topic and its partition count: the logs `base.0`, `base.1`, ... present without a gap.
    static func all(in store: LogStore) -> [(topic: String, partitions: Int)] {
        var partitions: [String: Set<Int>] = [:]
        for info in store.logs {
            guard let (base, partition) = split(info.name) else { continue }
            let topic = info.label ?? base
            // A labelled log under another name than its label's, or a plain one with a hashed
            // name's shape but no label: not a topic's.
            guard self.base(topic) == base, label(topic) == info.label else { continue }
            partitions[topic, default: []].insert(partition)
        }
        return partitions.compactMap { topic, present in
            var count = 0
            while present.contains(count) { count += 1 }
            return count > 0 ? (topic, count) : nil
        }.sorted { $0.topic < $1.topic }
    }

    /// How many partitions `topic` has (0: it does not exist).
    static func partitionCount(_ topic: String, in store: LogStore) -> Int {
        var count = 0
        while log(topic, count, in: store) != nil { count += 1 }
        return count
    }

    private static func fnv1a(_ bytes: [UInt8], basis: UInt64) -> UInt64 {
        var hash = basis
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return hash
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
