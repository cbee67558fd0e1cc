import RingLogKafka
import Testing

@Suite struct KafkaRequestTests {
    static func hex(_ text: String) -> [UInt8] { KafkaRecordBatchTests.hex(text) }

    /// An ApiVersions v1 request as kafka-python 2.0.2 encodes it (correlation id 7).
    @Test func aClassicHeaderFromAnotherImplementationDecodes() throws {
        let frame = Self.hex("0012000100000007000c6b61666b612d707974686f6e")
        let header = try frame.withUnsafeBytes { try KafkaRequestHeader.decode($0) }
        #expect(header.api == .apiVersions && header.apiVersion == 1 && header.correlationID == 7)
        #expect(header.clientID == "kafka-python" && header.bodyStart == frame.count)
        #expect(frame.withUnsafeBytes { KafkaRequestHeader.correlationID($0) } == 7)
    }

    /// librdkafka's first request on every connection: ApiVersions v3, header v2 (client id
    /// still a classic string, then tags), a compact-string body.
    @Test func aFlexibleHeaderSkipsItsTags() throws {
        var writer = KafkaWriter()
        writer.int16(18)
        writer.int16(3)
        writer.int32(1)
        writer.nullableString("rdkafka")
        writer.noTaggedFields()
        writer.compactNullableString("librdkafka")
        writer.compactNullableString("2.0.2")
        writer.noTaggedFields()
        let frame = writer.bytes
        let header = try frame.withUnsafeBytes { try KafkaRequestHeader.decode($0) }
        #expect(header.apiVersion == 3 && header.clientID == "rdkafka")
        let software = try frame.withUnsafeBytes { bytes in
            var reader = KafkaReader(UnsafeRawBufferPointer(rebasing: bytes[header.bodyStart...]))
            let name = try reader.compactString()
            let version = try reader.compactString()
            try reader.skipTaggedFields()
            try reader.finish()
            return (name, version)
        }
        #expect(software.0 == "librdkafka" && software.1 == "2.0.2")
    }

    /// The bodies kafka-python 2.0.2 encodes for the same values: a v1 answer, and the v0-shaped
    /// UNSUPPORTED_VERSION answer to an ApiVersions version we do not speak.
    @Test func apiVersionsBodiesMatchAnotherImplementation() {
        let supported = [KafkaApiVersions.Range(.apiVersions, 0, 3), KafkaApiVersions.Range(.metadata, 0, 4)]
        #expect(KafkaApiVersions.responseBody(version: 1, supported: supported) == Self.hex("00000000000200120000000300030000000400000000"))
        #expect(KafkaApiVersions.responseBody(version: 9, supported: supported) == Self.hex("002300000001001200000003"))
        // v3: compact array of count + 1, a tag byte per entry, throttle time, a tag byte.
        #expect(KafkaApiVersions.responseBody(version: 3, supported: supported) == Self.hex("0000" + "03" + "001200000003" + "00" + "000300000004" + "00" + "00000000" + "00"))
        // v0: no throttle time.
        #expect(KafkaApiVersions.responseBody(version: 0, supported: supported) == Self.hex("0000" + "00000002" + "001200000003" + "000300000004"))
    }

    @Test func responseFramesCarryTheirSizeAndHeader() {
        #expect(kafkaResponseFrame(correlationID: 7, headerVersion: 0, body: [0xAA]) == [0, 0, 0, 5, 0, 0, 0, 7, 0xAA])
        #expect(kafkaResponseFrame(correlationID: 7, headerVersion: 1, body: [0xAA]) == [0, 0, 0, 6, 0, 0, 0, 7, 0, 0xAA])
    }

    @Test func theFramerCutsAStreamAnywhereAndRefusesHugeOrNegativeSizes() throws {
        let frames: [[UInt8]] = [[1, 2, 3], [], [9]]
        let stream: [UInt8] = frames.flatMap { (frame: [UInt8]) -> [UInt8] in [0, 0, 0, UInt8(frame.count)] + frame }
        for cut in 0...stream.count {
            var framer = KafkaFramer(maxFrameBytes: 16)
            var seen: [[UInt8]] = []
            for part in [Array(stream[..<cut]), Array(stream[cut...])] {
                try part.withUnsafeBytes { try framer.feed($0) { seen.append(Array($0)) } }
            }
            #expect(seen == frames, "cut at \(cut)")
            #expect(framer.pendingBytes == 0)
        }
        var framer = KafkaFramer(maxFrameBytes: 16)
        #expect(throws: KafkaDecodeError.self) { try [0, 0, 0, 17].withUnsafeBytes { try framer.feed($0) { _ in } } }
        var negative = KafkaFramer(maxFrameBytes: 16)
        #expect(throws: KafkaDecodeError.self) { try [0xFF, 0xFF, 0xFF, 0xFF].withUnsafeBytes { try negative.feed($0) { _ in } } }
    }
}
