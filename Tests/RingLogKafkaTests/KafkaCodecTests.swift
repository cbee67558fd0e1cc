import RingLogKafka
import RingLogWire
import Testing

@Suite struct KafkaCodecTests {
    func read<T>(_ bytes: [UInt8], _ body: (inout KafkaReader) throws(KafkaDecodeError) -> T) throws -> T {
        try bytes.withUnsafeBytes { buffer in
            var reader = KafkaReader(buffer)
            let value = try body(&reader)
            try reader.finish()
            return value
        }
    }

    /// The examples of the Kafka protocol guide, both ways.
    @Test func varintsAreZigZagBase128() throws {
        let cases: [(Int32, [UInt8])] = [(0, [0x00]), (-1, [0x01]), (1, [0x02]), (-64, [0x7F]), (64, [0x80, 0x01]), (Int32.max, [0xFE, 0xFF, 0xFF, 0xFF, 0x0F]), (Int32.min, [0xFF, 0xFF, 0xFF, 0xFF, 0x0F])]
        for (value, encoded) in cases {
            var writer = KafkaWriter()
            writer.varint(value)
            #expect(writer.bytes == encoded, "\(value)")
            #expect(try read(encoded) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.varint() } == value)
        }
        var writer = KafkaWriter()
        writer.varlong(Int64.min)
        #expect(writer.bytes.count == 10)
        #expect(try read(writer.bytes) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.varlong() } == Int64.min)
    }

    @Test func malformedInputIsAnErrorNeverACrash() {
        #expect(throws: KafkaDecodeError.self) { try read([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.varint() } }
        #expect(throws: KafkaDecodeError.self) { try read([0x80]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.unsignedVarint() } }
        #expect(throws: KafkaDecodeError.self) { try read([0x00, 0x05, 0x61]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.string() } }
        #expect(throws: KafkaDecodeError.self) { try read([0xFF, 0xFE]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.nullableString() } }
        #expect(throws: KafkaDecodeError.self) { try read([0x00, 0x01, 0xFF]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.string() } }
        // A count larger than the bytes left could ever hold is refused before anything is sized by it.
        #expect(throws: KafkaDecodeError.self) { try read([0x7F, 0xFF, 0xFF, 0xFF]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.arrayCount() } }
        // Tagged fields must ascend.
        #expect(throws: KafkaDecodeError.self) { try read([0x02, 0x05, 0x00, 0x01, 0x00]) { (reader: inout KafkaReader) throws(KafkaDecodeError) in try reader.skipTaggedFields() } }
    }

    @Test func stringsBytesAndArraysRoundTripInBothShapes() throws {
        var writer = KafkaWriter()
        writer.int16(-2)
        writer.int32(7)
        writer.int64(-9)
        writer.nullableString("topic-ä")
        writer.nullableString(nil)
        writer.compactNullableString("group")
        writer.compactNullableString(nil)
        writer.nullableBytes([1, 2, 3])
        writer.nullableBytes(nil)
        writer.arrayCount(2)
        writer.compactArrayCount(nil)
        writer.noTaggedFields()
        let decoded = try read(writer.bytes) { (reader: inout KafkaReader) throws(KafkaDecodeError) in
            (
                try reader.int16(), try reader.int32(), try reader.int64(), try reader.nullableString(), try reader.nullableString(),
                try reader.compactNullableString(), try reader.compactNullableString(), try reader.nullableBytes().map(Array.init),
                try reader.nullableBytes().map(Array.init), try reader.arrayCount(), try reader.compactArrayCount(), try reader.skipTaggedFields()
            )
        }
        #expect(decoded.0 == -2 && decoded.1 == 7 && decoded.2 == -9)
        #expect(decoded.3 == "topic-ä" && decoded.4 == nil && decoded.5 == "group" && decoded.6 == nil)
        #expect(decoded.7 == [1, 2, 3] && decoded.8 == nil)
        #expect(decoded.9 == 2 && decoded.10 == nil)
    }
}

@Suite struct KafkaRecordBatchTests {
    /// Built by kafka-python 2.0.2's DefaultRecordBatchBuilder (magic 2, producer id 3<<32|1,
    /// epoch 3, base sequence 41; "k1"/"hello" with header h=v at 1764460800000, then a null
    /// key and "world" 5 ms later): an implementation nobody here wrote.
    static let fromKafkaPython = hex(
        "00000000000000000000004f000000000285369f2d0000000000010000019ad20f28000000019ad20f280500000003000000010003000000290000000222000000046b310a68656c6c6f020268027616000a02010a776f726c6400")

    static func hex(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            bytes.append(UInt8(text[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    @Test func aBatchFromAnotherImplementationValidatesAndDecodes() throws {
        let batch = Self.fromKafkaPython
        try batch.withUnsafeBytes { bytes in
            let header = try KafkaRecordBatch.validateProduced(bytes).get()
            #expect(header.producerId == 3 << 32 | 1 && header.producerEpoch == 3 && header.baseSequence == 41)
            #expect(header.recordsCount == 2 && header.compression == 0)
            #expect(header.baseTimestamp == 1_764_460_800_000 && header.maxTimestamp == 1_764_460_800_005)
            let records = try KafkaRecordBatch.records(bytes)
            #expect(records.count == 2)
            #expect(records[0].key == Array("k1".utf8) && records[0].value == Array("hello".utf8))
            #expect(records[0].headers.count == 1 && records[0].headers[0].key == "h" && records[0].headers[0].value == Array("v".utf8))
            #expect(records[1].key == nil && records[1].value == Array("world".utf8) && records[1].offsetDelta == 1 && records[1].timestampDelta == 5)
        }
        // Our builder makes the same bytes from the same records (kafka-python writes epoch 0).
        let rebuilt = KafkaRecordBatch.build(
            [
                KafkaRecord(offsetDelta: 0, timestampDelta: 0, key: Array("k1".utf8), value: Array("hello".utf8), headers: [("h", Array("v".utf8))]),
                KafkaRecord(offsetDelta: 1, timestampDelta: 5, key: nil, value: Array("world".utf8)),
            ], baseTimestamp: 1_764_460_800_000, producerId: 3 << 32 | 1, producerEpoch: 3, baseSequence: 41, partitionLeaderEpoch: 0)
        #expect(rebuilt == batch)
    }

    /// Stored as RingLog keeps it and served back with a new base offset and epoch: the bytes a
    /// consumer gets are the producer's from `crc` on, and Kafka's CRC still holds.
    @Test func storedAndFetchedAgainTheCRCStillHolds() throws {
        let batch = Self.fromKafkaPython
        let payload = batch.withUnsafeBytes { KafkaRecordBatch.storedPayload($0) }
        #expect(payload.count == batch.count - KafkaRecordBatch.prefixBytes)
        let fetched = KafkaRecordBatch.fetchPrefix(baseOffset: 1_000, partitionLeaderEpoch: -1, storedPayloadBytes: payload.count) + payload
        try fetched.withUnsafeBytes { bytes in
            let header = try KafkaRecordBatch.header(bytes)
            #expect(header.baseOffset == 1_000 && header.partitionLeaderEpoch == -1 && header.magic == 2)
            #expect(Int(header.batchLength) + 12 == fetched.count)
            #expect(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[KafkaRecordBatch.crcStart...])) == header.crc)
            #expect(try KafkaRecordBatch.records(bytes).count == 2)
        }
    }

    @Test func producedBatchesThatBreakTheRulesAreRefusedWithTheirKafkaCode() {
        func problem(_ mutate: (inout [UInt8]) -> Void) -> KafkaRecordBatch.Problem? {
            var batch = Self.fromKafkaPython
            mutate(&batch)
            return batch.withUnsafeBytes { bytes in
                if case .failure(let problem) = KafkaRecordBatch.validateProduced(bytes) { problem } else { nil }
            }
        }
        func recrc(_ batch: inout [UInt8]) {
            let crc = CRC32C.checksum(batch[21...])
            for index in 0..<4 { batch[17 + index] = UInt8(truncatingIfNeeded: crc >> (8 * (3 - index))) }
        }
        #expect(problem { $0[70] ^= 1 }?.kafkaErrorCode == 2, "a flipped byte fails the CRC")
        #expect(problem { $0[16] = 1 } == .unsupportedMagic(1))
        #expect(problem { $0.removeLast() } == .lengthMismatch(declared: 91, actual: 90))
        #expect(problem { $0.removeLast($0.count - 40) } == .truncated(40))
        #expect(problem { $0[7] = 5 }?.kafkaErrorCode == 87, "a producer does not choose the base offset")
        #expect(problem { batch in batch[22] = 0x20; recrc(&batch) }?.kafkaErrorCode == 87, "a control batch")
        #expect(problem { batch in batch[22] = 0x10; recrc(&batch) } == .invalid("transactions are not supported"))
        #expect(problem { batch in batch[60] = 3; recrc(&batch) } != nil, "records count and last offset delta disagree")
        #expect(problem { _ in } == nil)
        // Found by the fuzzer: a negative record count is an error, not a trap.
        var negative = Self.fromKafkaPython
        negative[57] = 0xFF
        #expect(negative.withUnsafeBytes { (try? KafkaRecordBatch.records($0)) == nil })
        // Compressed records are never opened: decoding says so instead of guessing.
        var compressed = Self.fromKafkaPython
        compressed[22] = 0x01
        recrc(&compressed)
        compressed.withUnsafeBytes { bytes in
            #expect((try? KafkaRecordBatch.validateProduced(bytes).get().compression) == 1)
            #expect(throws: KafkaDecodeError.self) { try KafkaRecordBatch.records(bytes) }
        }
    }
}
