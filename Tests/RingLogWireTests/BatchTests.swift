import Testing
import RingLogWire

@Suite struct BatchTests {
    let payload = Array("hello, batch".utf8)

    @Test func encodedBatchHasTheDocumentedLayout() {
        let batch = Batch.make(payload: payload, recordCount: 3)
        #expect(batch.count == 48 + payload.count)
        #expect(Array(batch[0..<4]) == [0x52, 0x4C, 0x42, 0x31], "magic RLB1")
        batch.withUnsafeBytes { bytes in
            #expect(bytes.loadLittleEndian(at: 32, as: UInt32.self) == UInt32(payload.count))
            #expect(bytes.loadLittleEndian(at: 36, as: UInt32.self) == 3)
            let crc: UInt32 = bytes.loadLittleEndian(at: 28)
            #expect(crc == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[32...])))
        }
        #expect(Array(batch[4..<28]) == [UInt8](repeating: 0, count: 24), "server fields are zero from a client")
        #expect(Array(batch[48...]) == payload)
    }

    @Test func validBatchPassesIncomingValidation() {
        let batch = Batch.make(payload: payload)
        batch.withUnsafeBytes { #expect(Batch.validateIncoming($0, maxBatchBytes: 1024) == nil) }
    }

    @Test func serverFieldsDoNotAffectTheClientChecksum() {
        var batch = Batch.make(payload: payload)
        batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: LogOffset(4096), appendTimeMicros: 123, epoch: 9, firstRecord: 0) }
        batch.withUnsafeBytes { #expect(Batch.validateIncoming($0, maxBatchBytes: 1024) == nil) }
    }

    @Test func incomingValidationRejectsEachKindOfDamage() {
        func check(_ mutate: (inout [UInt8]) -> Void, limit: Int = 1024, expect: (BatchError?) -> Bool) {
            var batch = Batch.make(payload: payload)
            mutate(&batch)
            let error = batch.withUnsafeBytes { Batch.validateIncoming($0, maxBatchBytes: limit) }
            #expect(expect(error), "got \(String(describing: error))")
        }
        check({ $0[0] = 0x58 }) { if case .badMagic = $0 { true } else { false } }
        check({ $0[48] ^= 1 }) { if case .checksumMismatch = $0 { true } else { false } }
        check({ $0[40] = 1 }) { if case .unsupportedFlags(1, format: 1) = $0 { true } else { false } }
        check({ $0[44] = 1 }) { $0 == .reservedNotZero }
        check({ $0.append(0) }) { if case .lengthMismatch = $0 { true } else { false } }
        check({ $0.removeLast() }) { if case .lengthMismatch = $0 { true } else { false } }
        check({ $0.removeLast($0.count - 20) }) { if case .truncated = $0 { true } else { false } }
        check({ _ in }, limit: 52) { if case .payloadTooLarge(_, 4) = $0 { true } else { false } }
    }

    @Test func stampedBatchVerifiesAsStoredAndDetectsHeaderDamage() {
        var batch = Batch.make(payload: payload, recordCount: 2)
        batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: LogOffset(96), appendTimeMicros: 55, epoch: 4, firstRecord: 0) }
        batch.withUnsafeBytes { bytes in
            let header = try? Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: LogOffset(96), maxPayloadBytes: 1 << 20).get()
            #expect(header?.epoch == 4)
            #expect(header?.appendTimeMicros == 55)
            #expect(header?.recordCount == 2)
            #expect(Batch.verifyPayload(bytes.baseAddress!, header: header!) == nil)
            let misplaced = Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: LogOffset(100), maxPayloadBytes: 1 << 20)
            #expect(misplaced == .failure(.offsetMismatch(stored: LogOffset(96), expected: LogOffset(100))))
        }
        for position in [8, 16, 24, 28, 33, 40] {
            var damaged = batch
            damaged[position] ^= 0x10
            damaged.withUnsafeBytes { bytes in
                let result = Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: LogOffset(96), maxPayloadBytes: 1 << 20)
                guard case .failure(.headerChecksumMismatch) = result else {
                    Issue.record("byte \(position) flipped, got \(result)")
                    return
                }
            }
        }
    }

    @Test func payloadDamageIsFoundWhileTheHeaderStaysTrustworthy() {
        var batch = Batch.make(payload: payload)
        batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: .zero, appendTimeMicros: 1, epoch: 1, firstRecord: 0) }
        batch[50] ^= 0x80
        batch.withUnsafeBytes { bytes in
            let header = try? Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: .zero, maxPayloadBytes: 1024).get()
            #expect(header != nil)
            guard case .checksumMismatch? = Batch.verifyPayload(bytes.baseAddress!, header: header!) else {
                Issue.record("payload damage not detected")
                return
            }
        }
    }

    // MARK: Format 2

    let producer = ProducerStamp(id: 0x0102_0304_0506_0708, epoch: 3, baseSequence: 41)

    @Test func formatTwoHasTheDocumentedLayout() {
        let batch = Batch.make(payload: payload, recordCount: 2, format: .v2, producer: producer)
        #expect(batch.count == 64 + payload.count)
        #expect(Array(batch[0..<4]) == [0x52, 0x4C, 0x42, 0x32], "magic RLB2")
        batch.withUnsafeBytes { bytes in
            #expect(bytes.loadLittleEndian(at: 40, as: UInt32.self) == UInt32(payload.count))
            #expect(bytes.loadLittleEndian(at: 44, as: UInt32.self) == 2)
            #expect(bytes.loadLittleEndian(at: 48, as: UInt64.self) == producer.id)
            #expect(bytes.loadLittleEndian(at: 56, as: UInt32.self) == 41)
            #expect(bytes.loadLittleEndian(at: 60, as: UInt16.self) == 3)
            #expect(bytes.loadLittleEndian(at: 62, as: UInt16.self) == 0)
            #expect(bytes.loadLittleEndian(at: 36, as: UInt32.self) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[40...])))
            #expect(Batch.headerLength(at: bytes.baseAddress!, available: bytes.count) == 64)
            #expect(Batch.headerLength(at: bytes.baseAddress!, available: 3) == 48, "too few bytes to tell: the smaller header first")
        }
        #expect(Array(batch[4..<36]) == [UInt8](repeating: 0, count: 32), "server fields are zero from a client")
        #expect(Array(batch[64...]) == payload)
        batch.withUnsafeBytes { #expect(Batch.validateIncoming($0, maxBatchBytes: 1024) == nil) }
    }

    @Test func formatTwoStampsTheRecordNumberAndEpochOutsideTheClientChecksum() {
        var batch = Batch.make(payload: payload, recordCount: 2, format: .v2, producer: producer)
        batch.withUnsafeMutableBytes { Batch.stamp($0.baseAddress!, offset: LogOffset(640), appendTimeMicros: 77, epoch: 5, firstRecord: 1_000) }
        batch.withUnsafeBytes { bytes in
            #expect(Batch.validateIncoming(bytes, maxBatchBytes: 1024) == nil, "the client's CRC still holds")
            let header = try? Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: LogOffset(640), maxPayloadBytes: 1024).get()
            #expect(header?.firstRecord == 1_000)
            #expect(header?.epoch == 5)
            #expect(header?.producer == producer)
            #expect(header?.totalBytes == bytes.count)
            #expect(header.map { Batch.verifyPayload(bytes.baseAddress!, header: $0) } == .some(nil))
        }
        for position in [8, 16, 24, 32, 36, 40, 44, 48, 56, 60, 62] {
            var damaged = batch
            damaged[position] ^= 0x04
            damaged.withUnsafeBytes { bytes in
                let result = Batch.verifyStoredHeader(bytes.baseAddress!, expectedOffset: LogOffset(640), maxPayloadBytes: 1024)
                guard case .failure(.headerChecksumMismatch) = result else {
                    Issue.record("byte \(position) flipped, got \(result)")
                    return
                }
            }
        }
    }

    @Test func formatTwoValidationRefusesBadProducerFields() {
        func error(recordCount: UInt32 = 1, producer: ProducerStamp, mutate: (inout [UInt8]) -> Void = { _ in }) -> BatchError? {
            var batch = Batch.make(payload: payload, recordCount: recordCount, format: .v2, producer: producer)
            mutate(&batch)
            return batch.withUnsafeBytes { Batch.validateIncoming($0, maxBatchBytes: 1024) }
        }
        #expect(error(recordCount: 0, producer: .none) == .noRecords)
        #expect(error(producer: ProducerStamp(id: 9, epoch: 0, baseSequence: 1 << 31)) == .badProducerFields("baseSequence 2147483648 is not below 2^31"))
        if case .badProducerFields = error(producer: ProducerStamp(id: 0, epoch: 1, baseSequence: 0)) {} else { Issue.record("epoch without an id accepted") }
        if case .badProducerFields = error(producer: ProducerStamp(id: 0, epoch: 0, baseSequence: 5)) {} else { Issue.record("sequence without an id accepted") }
        #expect(error(producer: producer) { $0[62] = 1 } == .unsupportedFlags(1, format: 2))
        if case .checksumMismatch = error(producer: producer, mutate: { $0[56] ^= 1 }) {} else { Issue.record("a changed sequence passed the client CRC") }
        if case .truncated(64, 50) = error(producer: producer, mutate: { $0.removeLast($0.count - 50) }) {} else { Issue.record("a cut format-2 header passed") }
        #expect(error(producer: .none) == nil, "a plain format-2 batch")
    }

    @Test func offsetsAndIdsAreDistinctOrderedTypes() {
        let offset = LogOffset(100)
        #expect(offset.advanced(by: 28) == LogOffset(128))
        #expect(offset.advanced(by: -100) == .zero)
        #expect(offset.distance(to: LogOffset(40)) == -60)
        #expect(LogOffset(3) < LogOffset(4))
        #expect(LogID(7).description == "7")
    }
}

@Suite struct RecordFramingTests {
    @Test func recordsRoundTripThroughABatch() throws {
        let records: [[UInt8]] = [Array("a".utf8), [], Array("third record".utf8), [UInt8](repeating: 7, count: 1000)]
        let batch = RecordFraming.batch(records)
        #expect(batch.count == RecordFraming.batchBytes(recordBytes: 1013, count: 4))
        try batch.withUnsafeBytes { bytes in
            #expect(Batch.validateIncoming(bytes, maxBatchBytes: 1 << 20) == nil)
            let header = BatchHeader(unchecked: bytes.baseAddress!)
            #expect(header.recordCount == 4)
            let payload = UnsafeRawBufferPointer(rebasing: bytes[64...])
            let ranges = try RecordFraming.records(in: payload, expectedCount: 4)
            #expect(ranges.map { Array(payload[$0]) } == records)
        }
    }

    @Test func brokenFramingIsAnErrorNotAGarbledRecord() {
        func framing(_ payload: [UInt8], count: Int) -> Bool {
            payload.withUnsafeBytes { (try? RecordFraming.records(in: $0, expectedCount: count)) != nil }
        }
        #expect(!framing([5, 0, 0, 0, 1, 2, 3], count: 1), "a record running past the payload")
        #expect(!framing([1, 0, 0, 0, 9, 1, 0, 0, 0, 8], count: 3), "a count the payload does not hold")
        #expect(!framing([1, 0, 0, 0, 9, 1, 0], count: 2), "a length cut off")
        #expect(framing([1, 0, 0, 0, 9, 1, 0, 0, 0, 8], count: 2))
        // Found by the fuzzer: a count the payload cannot hold must not size an allocation.
        #expect(!framing([1, 0, 0, 0, 9], count: Int(UInt32.max)))
    }

    @Test func aBuilderWritesEitherFormat() throws {
        var builder = BatchBuilder(format: .v1)
        builder.add([1, 2])
        let plain = builder.finish()
        #expect(plain.count == 48 + 6)
        var numbered = BatchBuilder(format: .v2)
        numbered.add([1, 2])
        let stamp = ProducerStamp(id: 7, epoch: 0, baseSequence: 12)
        let idempotent = numbered.finish(producer: stamp)
        #expect(idempotent.count == 64 + 6)
        idempotent.withUnsafeBytes { bytes in
            #expect(Batch.validateIncoming(bytes, maxBatchBytes: 1024) == nil)
            #expect(BatchHeader(unchecked: bytes.baseAddress!).producer == stamp)
        }
    }

    @Test func aBuilderIsReusableAfterFinishing() {
        var builder = BatchBuilder()
        builder.add([1, 2, 3])
        let first = builder.finish()
        #expect(builder.isEmpty)
        builder.add([4])
        let second = builder.finish()
        #expect(first == RecordFraming.batch([[1, 2, 3] as [UInt8]]))
        #expect(second == RecordFraming.batch([[4] as [UInt8]]))
    }
}
