import RingLogWire
import Testing

@Suite struct RequestFramerTests {
    let limits = RequestFramer.Limits(maxAppendBodyBytes: 1000, maxControlBodyBytes: 100)

    func request(_ opcode: Opcode, body: [UInt8], id: UInt64) -> [UInt8] {
        RequestHeader(opcode: opcode, bodyLength: body.count, requestID: id).encoded() + body
    }

    /// Frames `stream` fed in chunks of the given sizes; returns (id, body) of each delivered request.
    func frame(_ stream: [UInt8], chunks: [Int]) -> (delivered: [(UInt64, [UInt8])], failure: RequestFramer.Failure?) {
        var framer = RequestFramer(limits: limits)
        var delivered: [(UInt64, [UInt8])] = []
        var index = 0
        var chunkIndex = 0
        while index < stream.count {
            let size = min(chunks[chunkIndex % chunks.count], stream.count - index)
            chunkIndex += 1
            let (consumed, failure) = stream.withUnsafeBytes { bytes in
                framer.frame(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + size)])) { header, body in
                    delivered.append((header.requestID, Array(body)))
                    return true
                }
            }
            if let failure { return (delivered, failure) }
            #expect(consumed == size)
            index += size
        }
        #expect(framer.partialBytes == 0)
        return (delivered, nil)
    }

    @Test func aRequestSplitAtAnyByteIsDeliveredOnceAndWhole() {
        let body = (0..<70).map { UInt8($0) }
        let stream = request(.read, body: body, id: 7) + request(.ping, body: [], id: 8)
        for split in 1..<stream.count {
            let (delivered, failure) = frame(stream, chunks: [split, stream.count])
            #expect(failure == nil)
            #expect(delivered.map(\.0) == [7, 8], "split at \(split)")
            #expect(delivered.first?.1 == body)
        }
        let (bytewise, _) = frame(stream, chunks: [1])
        #expect(bytewise.map(\.0) == [7, 8])
    }

    @Test func pipelinedRequestsInOneChunkAreAllDeliveredAndDeliveryCanStop() {
        let stream = (1...5).flatMap { request(.ping, body: [], id: UInt64($0)) }
        #expect(frame(stream, chunks: [stream.count]).delivered.map(\.0) == [1, 2, 3, 4, 5])
        var framer = RequestFramer(limits: limits)
        var seen = 0
        let (consumed, _) = stream.withUnsafeBytes { bytes in framer.frame(bytes) { _, _ in seen += 1; return seen < 2 } }
        #expect(seen == 2)
        #expect(consumed == 64, "it stops right after the request that said stop")
    }

    @Test func headerFailuresNameTheirCodeAndTrustTheIDOnlyWhenTheCRCHeld() {
        let garbage = [UInt8](repeating: 0x41, count: 32)
        #expect(frame(garbage, chunks: [32]).failure?.code == .badMagic)
        var damaged = request(.ping, body: [], id: 3)
        damaged[12] ^= 1
        let crcFailure = frame(damaged, chunks: [32]).failure
        #expect(crcFailure?.code == .malformedRequest)
        #expect(crcFailure?.requestID == 0)
        let tooLong = RequestHeader(opcode: .append, bodyLength: 1001, requestID: 9).encoded()
        let overLimit = frame(tooLong, chunks: [32]).failure
        #expect(overLimit?.code == .lengthOverLimit)
        #expect(overLimit?.body.detail1 == 1000)
        #expect(overLimit?.requestID == 9)
        let control = RequestHeader(opcode: .listLogs, bodyLength: 101, requestID: 4).encoded()
        #expect(frame(control, chunks: [7]).failure?.body.detail1 == 100)
    }
}
