/// The Kafka APIs the listener answers, and the version at which each one's messages (and
/// headers) become "flexible": compact strings and arrays, tagged fields.
public enum KafkaApiKey: Int16, Sendable, CaseIterable {
    case produce = 0
    case fetch = 1
    case listOffsets = 2
    case metadata = 3
    case offsetCommit = 8
    case offsetFetch = 9
    case findCoordinator = 10
    case joinGroup = 11
    case heartbeat = 12
    case leaveGroup = 13
    case syncGroup = 14
    case apiVersions = 18
    case createTopics = 19
    case deleteTopics = 20
    case initProducerId = 22

    public var firstFlexibleVersion: Int16 {
        switch self {
        case .produce: 9
        case .fetch: 12
        case .listOffsets: 6
        case .metadata: 9
        case .offsetCommit: 8
        case .offsetFetch: 6
        case .findCoordinator: 3
        case .joinGroup: 6
        case .heartbeat, .leaveGroup, .syncGroup: 4
        case .apiVersions: 3
        case .createTopics: 5
        case .deleteTopics: 4
        case .initProducerId: 2
        }
    }

    /// Whether `version`'s request uses request header v2 (its response, response header v1,
    /// except ApiVersions, whose response header is always v0).
    public func isFlexible(_ version: Int16) -> Bool { version >= firstFlexibleVersion }
}

/// Kafka error codes the listener answers with (Kafka's `Errors`).
public enum KafkaErrorCode: Int16, Error, Sendable {
    case none = 0
    case unknownServerError = -1
    case offsetOutOfRange = 1
    case corruptMessage = 2
    case unknownTopicOrPartition = 3
    case leaderNotAvailable = 5
    case requestTimedOut = 7
    case messageTooLarge = 10
    case coordinatorNotAvailable = 15
    case notCoordinator = 16
    case invalidTopic = 17
    case invalidRequiredAcks = 21
    case illegalGeneration = 22
    case inconsistentGroupProtocol = 23
    case invalidGroupId = 24
    case unknownMemberId = 25
    case invalidSessionTimeout = 26
    case rebalanceInProgress = 27
    case unsupportedVersion = 35
    case topicAlreadyExists = 36
    case invalidPartitions = 37
    case invalidReplicationFactor = 38
    case invalidRequest = 42
    case unsupportedForMessageFormat = 43
    case outOfOrderSequenceNumber = 45
    case duplicateSequenceNumber = 46
    case invalidProducerEpoch = 47
    case invalidTxnState = 48
    case transactionalIdAuthorizationFailed = 53
    case kafkaStorageError = 56
    case unknownProducerId = 59
    case unsupportedCompressionType = 76
    case memberIdRequired = 79
    case groupMaxSizeReached = 81
    case invalidRecord = 87
}

/// The header of a Kafka request (v1, or v2 for flexible versions): the frame's size prefix has
/// been taken off already.
public struct KafkaRequestHeader: Equatable, Sendable {
    /// Raw, so an unknown API can still be answered (or refused) by its correlation id.
    public var apiKey: Int16
    public var apiVersion: Int16
    public var correlationID: Int32
    public var clientID: String?
    /// Where the body starts in the frame.
    public var bodyStart: Int

    public var api: KafkaApiKey? { KafkaApiKey(rawValue: apiKey) }

    public init(apiKey: Int16, apiVersion: Int16, correlationID: Int32, clientID: String?, bodyStart: Int) {
        self.apiKey = apiKey
        self.apiVersion = apiVersion
        self.correlationID = correlationID
        self.clientID = clientID
        self.bodyStart = bodyStart
    }

    /// The correlation id of any frame of at least 8 bytes, even one whose header does not
    /// parse: it always sits at bytes 4-7.
    public static func correlationID(_ frame: UnsafeRawBufferPointer) -> Int32? {
        guard frame.count >= 8 else { return nil }
        var reader = KafkaReader(UnsafeRawBufferPointer(rebasing: frame[4..<8]))
        return try? reader.int32()
    }

    /// Decodes the header of `frame`. The client id is the classic nullable string in both header
    /// versions; v2 (an API's flexible versions) ends with a tagged-field section.
    public static func decode(_ frame: UnsafeRawBufferPointer) throws(KafkaDecodeError) -> KafkaRequestHeader {
        var reader = KafkaReader(frame)
        let apiKey = try reader.int16()
        let apiVersion = try reader.int16()
        let correlationID = try reader.int32()
        let clientID = try reader.nullableString()
        if let api = KafkaApiKey(rawValue: apiKey), api.isFlexible(apiVersion) { try reader.skipTaggedFields() }
        return KafkaRequestHeader(apiKey: apiKey, apiVersion: apiVersion, correlationID: correlationID, clientID: clientID, bodyStart: reader.position)
    }
}

/// A whole response frame: size, correlation id, (for response header v1) an empty tagged-field
/// section, then the body.
public func kafkaResponseFrame(correlationID: Int32, headerVersion: Int, body: [UInt8]) -> [UInt8] {
    var writer = KafkaWriter(reservingCapacity: body.count + 9)
    writer.int32(Int32(clamping: 4 + (headerVersion >= 1 ? 1 : 0) + body.count))
    writer.int32(correlationID)
    if headerVersion >= 1 { writer.noTaggedFields() }
    writer.raw(body)
    return writer.bytes
}

/// Cuts a byte stream into Kafka frames (an `i32` size, then that many bytes), at most
/// `maxFrameBytes` each: a larger or negative size is an error (the connection closes), so a
/// client cannot make the server hold more than one frame's worth of bytes.
public struct KafkaFramer: Sendable {
    public let maxFrameBytes: Int
    private var buffer: [UInt8] = []

    public init(maxFrameBytes: Int) { self.maxFrameBytes = maxFrameBytes }

    /// Bytes held for the frame being assembled.
    public var pendingBytes: Int { buffer.count }

    /// Adds `bytes` and calls `frame` with each complete frame (the bytes after the size).
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ frame: (UnsafeRawBufferPointer) -> Void) throws(KafkaDecodeError) {
        buffer.append(contentsOf: bytes)
        var start = 0
        defer { buffer.removeFirst(start) }
        while buffer.count - start >= 4 {
            let size = Int(Int32(bitPattern: UInt32(buffer[start]) << 24 | UInt32(buffer[start + 1]) << 16 | UInt32(buffer[start + 2]) << 8 | UInt32(buffer[start + 3])))
            guard size >= 0, size <= maxFrameBytes else {
                throw KafkaDecodeError("a request frame of \(size) bytes (the limit is \(maxFrameBytes))")
            }
            guard buffer.count - start - 4 >= size else { break }
            buffer.withUnsafeBytes { all in frame(UnsafeRawBufferPointer(rebasing: all[(start + 4)..<(start + 4 + size)])) }
            start += 4 + size
        }
    }
}

/// ApiVersions (key 18): what the listener supports, in the shape of the version asked for.
public enum KafkaApiVersions {
    public struct Range: Equatable, Sendable {
        public var api: KafkaApiKey
        public var min: Int16
        public var max: Int16
        public init(_ api: KafkaApiKey, _ min: Int16, _ max: Int16) {
            self.api = api
            self.min = min
            self.max = max
        }
    }

    /// The response body for `version` (0-4; v4 is v3's bytes). A version outside `supported`'s
    /// range for ApiVersions itself gets a v0-shaped body with UNSUPPORTED_VERSION and only the
    /// ApiVersions entry, so the client can retry lower (KIP-511); its header is v0 as always.
    public static func responseBody(version: Int16, supported: [Range]) -> [UInt8] {
        var writer = KafkaWriter()
        let own = supported.first { $0.api == .apiVersions }
        guard let own, version >= own.min, version <= own.max else {
            writer.int16(KafkaErrorCode.unsupportedVersion.rawValue)
            let entries = own.map { [$0] } ?? []
            writer.arrayCount(entries.count)
            for entry in entries { write(entry, &writer) }
            return writer.bytes
        }
        writer.int16(KafkaErrorCode.none.rawValue)
        if version >= 3 {
            writer.compactArrayCount(supported.count)
            for entry in supported {
                write(entry, &writer)
                writer.noTaggedFields()
            }
            writer.int32(0)
            writer.noTaggedFields()
        } else {
            writer.arrayCount(supported.count)
            for entry in supported { write(entry, &writer) }
            if version >= 1 { writer.int32(0) }
        }
        return writer.bytes
    }

    private static func write(_ entry: Range, _ writer: inout KafkaWriter) {
        writer.int16(entry.api.rawValue)
        writer.int16(entry.min)
        writer.int16(entry.max)
    }
}
