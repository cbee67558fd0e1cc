import RingLogStorage

/// How Kafka topics and partitions map onto RingLog logs (docs/kafka.md, "Topics are logs"):
/// partition `p` of topic `T` is the log named `T.p`, so a topic of P partitions is the logs
/// `T.0` ... `T.(P-1)`. The last `.N` of a log name is the partition, so `a.1.0` is partition 0 of
/// topic `a.1` and `a.1` partition 1 of `a`: no two topics share a log.
enum KafkaTopics {
    /// Kafka's own limit on topic names.
    static let maxTopicBytes = 249

    /// Why `topic` cannot be served, or nil. Kafka allows `[A-Za-z0-9._-]`, up to 249 bytes; log
    /// names must also start with a letter or digit and fit 128 bytes with the partition suffix.
    static func problem(with topic: String, partitions: Int = 1) -> String? {
        if topic.isEmpty { return "a topic name is empty" }
        if topic == "." || topic == ".." { return "a topic cannot be named \(topic)" }
        let bytes = Array(topic.utf8)
        if bytes.count > maxTopicBytes { return "topic name of \(bytes.count) bytes; Kafka's limit is \(maxTopicBytes)" }
        for byte in bytes where !(isAlphanumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")) {
            return "topic names may hold only letters, digits, '.', '_' and '-'"
        }
        if !isAlphanumeric(bytes[0]) {
            return "RingLog serves topics whose names start with a letter or digit (the name is its logs' names); \(topic) starts with '\(Character(Unicode.Scalar(bytes[0])))'"
        }
        let longest = logName(topic, max(partitions - 1, 0))
        if longest.utf8.count > LogName.maxBytes {
            return "topic name too long for RingLog: its partition logs' names (\(longest)) would pass \(LogName.maxBytes) bytes"
        }
        return nil
    }

    static func logName(_ topic: String, _ partition: Int) -> String { "\(topic).\(partition)" }

    /// The topic and partition a log name stands for, when it has the `T.p` shape.
    static func split(_ logName: String) -> (topic: String, partition: Int)? {
        guard let dot = logName.lastIndex(of: "."), dot != logName.startIndex else { return nil }
        let digits = logName[logName.index(after: dot)...]
        guard !digits.isEmpty, digits.count <= 6, digits.allSatisfy({ $0.isASCII && $0.isNumber }), digits == "0" || digits.first != "0",
            let partition = Int(digits)
        else { return nil }
        return (String(logName[..<dot]), partition)
    }

    /// Every topic and its partition count: the logs `T.0`, `T.1`, ... present without a gap.
    static func all(in store: LogStore) -> [(topic: String, partitions: Int)] {
        var partitions: [String: Set<Int>] = [:]
        for info in store.logs {
            guard let (topic, partition) = split(info.name) else { continue }
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
        while store.log(named: logName(topic, count)) != nil { count += 1 }
        return count
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}
