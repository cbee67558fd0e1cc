import Testing
import RingLogWire

/// Published CRC32C vectors: RFC 3720 (iSCSI) appendix B.4 and the common "123456789" check value.
@Suite struct CRC32CTests {
    static let vectors: [(name: String, bytes: [UInt8], crc: UInt32)] = [
        ("check string", Array("123456789".utf8), 0xE306_9283),
        ("32 zero bytes", [UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ("32 bytes of 0xFF", [UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ("32 ascending bytes", (0..<32).map { UInt8($0) }, 0x46DD_794E),
        ("32 descending bytes", (0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        (
            "iSCSI read command PDU",
            [
                0x01, 0xC0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
                0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            ],
            0xD996_3A56
        ),
    ]

    @Test(arguments: 0..<vectors.count)
    func dispatchedImplementationMatchesPublishedVector(_ index: Int) {
        let vector = Self.vectors[index]
        #expect(CRC32C.checksum(vector.bytes) == vector.crc, "\(vector.name)")
    }

    @Test(arguments: 0..<vectors.count)
    func portableImplementationMatchesPublishedVector(_ index: Int) {
        let vector = Self.vectors[index]
        let crc = vector.bytes.withUnsafeBytes { CRC32C.portableChecksum($0) }
        #expect(crc == vector.crc, "\(vector.name)")
    }

    @Test func emptyInputHasChecksumZero() {
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    /// Lengths around the three-stream block sizes (3 x 256 and 3 x 8192 bytes) and odd alignments
    /// exercise every path of the hardware implementation against the table-driven one.
    @Test func hardwareAndPortablePathsAgreeOnAllLengthsAndAlignments() {
        var generator = LinearCongruential(seed: 7)
        let buffer = (0..<70_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let lengths = [0, 1, 7, 8, 9, 767, 768, 769, 1_535, 1_536, 24_575, 24_576, 24_577, 49_152, 60_001]
        buffer.withUnsafeBytes { all in
            for start in 0..<9 {
                for length in lengths {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    #expect(CRC32C.checksum(slice) == CRC32C.portableChecksum(slice), "start \(start) length \(length)")
                }
            }
        }
    }

    @Test func checksumsChainAcrossPieces() {
        let whole = Array("The quick brown fox jumps over the lazy dog".utf8)
        whole.withUnsafeBytes { bytes in
            for split in 0...bytes.count {
                let first = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<split]))
                let both = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[split...]), continuing: first)
                #expect(both == CRC32C.checksum(bytes))
            }
        }
    }
}

struct LinearCongruential {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 16
    }
}
