import RingLogWire
import Testing

/// Sizes in flags and config files: what operators type, and what `--help` shows back.
struct ByteSizeTests {
    @Test func unitsAreBinaryAndTheBIsOptional() {
        #expect(parseByteSize("4096") == 4096)
        #expect(parseByteSize("64KiB") == 65_536)
        #expect(parseByteSize("64k") == 65_536)
        #expect(parseByteSize("16MB") == 16 << 20)
        #expect(parseByteSize(" 1GiB ") == 1 << 30)
        #expect(parseByteSize("2TiB") == 2 << 40)
    }

    @Test func nonsenseAndOverflowAreRefused() {
        for text in ["", "GiB", "-1", "1.5GiB", "12 parsecs", "1PiB", "9223372036854775807KiB", "99999999999999999999"] {
            #expect(parseByteSize(text) == nil, "\(text) was accepted")
        }
    }

    @Test func formattingPicksTheLargestExactUnitAndParsesBack() {
        #expect(formatByteSize(1 << 30) == "1GiB")
        #expect(formatByteSize(16_384) == "16KiB")
        #expect(formatByteSize(1536) == "1536")
        #expect(formatByteSize(0) == "0")
        for bytes in [0, 1, 1023, 1024, 3 << 20, 5 << 30 + 1, 7 << 40] {
            #expect(parseByteSize(formatByteSize(bytes)) == bytes)
        }
    }
}
