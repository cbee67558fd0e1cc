/// Cuts a byte stream into requests: a 32-byte header first (checked before anything else is
/// believed), then exactly the body it announces. It never trusts a length it has not checked
/// against a limit, never reads past what it was given, and keeps at most one partial request.
///
/// Pure: no sockets, no clocks. The server feeds it each chunk it receives; the fuzzer feeds it
/// anything at all.
public struct RequestFramer {
    public struct Limits: Sendable {
        /// Largest APPEND body (one batch).
        public var maxAppendBodyBytes: Int
        /// Largest body of any other operation.
        public var maxControlBodyBytes: Int

        public init(maxAppendBodyBytes: Int, maxControlBodyBytes: Int = WireProtocol.maxControlBodyBytes) {
            self.maxAppendBodyBytes = maxAppendBodyBytes
            self.maxControlBodyBytes = maxControlBodyBytes
        }
    }

    /// Why the stream could not be framed, and what the error response says. After a failure the
    /// stream cannot be trusted: the connection is closed.
    public struct Failure: Error, Equatable, Sendable {
        public var code: ErrorCode
        public var body: ErrorBody
        /// The request's id and opcode when its header's CRC held (so they can be trusted).
        public var requestID: UInt64 = 0
        public var opcode: UInt8 = 0
    }

    public let limits: Limits
    private var headerBytes: [UInt8] = []
    private var body: [UInt8] = []
    /// The header of the request whose body is arriving.
    public private(set) var pendingHeader: RequestHeader?
    /// The body arriving is being skipped (the caller would not assemble it); bytes still to skip.
    private var discardRemaining: Int?
    /// The caller agreed to assemble the body arriving.
    private var assembling = false

    public init(limits: Limits) {
        self.limits = limits
        headerBytes.reserveCapacity(WireProtocol.headerBytes)
    }

    /// Bytes held for a request not yet complete.
    public var partialBytes: Int { headerBytes.count + body.count }

    /// Frames requests out of `bytes`, calling `deliver` with each complete one (the body pointer
    /// is valid only during the call). Stops when the bytes run out, when `deliver` (or
    /// `discarded`) returns false, or at a failure. Returns the bytes consumed. Bodies that arrive
    /// whole are not copied.
    ///
    /// A body that does not arrive whole must be assembled; `assemble` is asked first, with the
    /// header. When it says no, the body is skipped as it arrives, holding no memory, and
    /// `discarded` is called with the header once it has passed, so the stream stays in step.
    public mutating func frame(
        _ bytes: UnsafeRawBufferPointer, assemble: (RequestHeader) -> Bool = { _ in true },
        discarded: (RequestHeader) -> Bool = { _ in true },
        deliver: (RequestHeader, UnsafeRawBufferPointer) -> Bool
    ) -> (consumed: Int, failure: Failure?) {
        var index = 0
        while index < bytes.count {
            if pendingHeader == nil {
                let outcome = takeHeader(bytes, at: &index)
                switch outcome {
                case .needMore: return (index, nil)
                case .failed(let failure): return (index, failure)
                case .complete(let header): pendingHeader = header
                }
            }
            let expected = Int(pendingHeader!.bodyLength)
            if !assembling && discardRemaining == nil && bytes.count - index < expected {
                if assemble(pendingHeader!) { assembling = true } else { discardRemaining = expected }
            }
            if let remaining = discardRemaining {
                let take = min(remaining, bytes.count - index)
                index += take
                guard remaining == take else {
                    discardRemaining = remaining - take
                    return (index, nil)
                }
                discardRemaining = nil
                let header = pendingHeader!
                pendingHeader = nil
                if !discarded(header) { return (index, nil) }
                continue
            }
            let request: UnsafeRawBufferPointer
            if body.isEmpty && bytes.count - index >= expected {
                request = UnsafeRawBufferPointer(rebasing: bytes[index..<(index + expected)])
                index += expected
            } else {
                if body.isEmpty { body.reserveCapacity(expected) }
                let take = min(expected - body.count, bytes.count - index)
                body.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
                index += take
                if body.count < expected { return (index, nil) }
                request = UnsafeRawBufferPointer(start: nil, count: 0)
            }
            let header = pendingHeader!
            pendingHeader = nil
            assembling = false
            let proceed = body.isEmpty ? deliver(header, request) : body.withUnsafeBytes { deliver(header, $0) }
            // Small bodies keep their room for the next; a large one's is freed at once.
            body.removeAll(keepingCapacity: body.capacity <= 4 << 10)
            if !proceed { return (index, nil) }
        }
        return (index, nil)
    }

    private enum HeaderOutcome {
        case needMore
        case complete(RequestHeader)
        case failed(Failure)
    }

    private mutating func takeHeader(_ bytes: UnsafeRawBufferPointer, at index: inout Int) -> HeaderOutcome {
        let decoded: Result<RequestHeader, RequestHeader.DecodeError>
        let claimedID: UInt64
        let claimedOpcode: UInt8
        if headerBytes.isEmpty && bytes.count - index >= WireProtocol.headerBytes {
            let pointer = bytes.baseAddress! + index
            decoded = RequestHeader.decode(pointer)
            claimedID = pointer.loadLittleEndian(at: 8)
            claimedOpcode = pointer.load(fromByteOffset: 3, as: UInt8.self)
            index += WireProtocol.headerBytes
        } else {
            let take = min(WireProtocol.headerBytes - headerBytes.count, bytes.count - index)
            headerBytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + take)]))
            index += take
            guard headerBytes.count == WireProtocol.headerBytes else { return .needMore }
            (decoded, claimedID, claimedOpcode) = headerBytes.withUnsafeBytes { header in
                (RequestHeader.decode(header.baseAddress!), header.loadLittleEndian(at: 8), header[3])
            }
            headerBytes.removeAll(keepingCapacity: true)
        }
        switch decoded {
        case .failure(let error):
            var failure = RequestFramer.describe(error)
            switch error {
            case .unsupportedVersion, .reservedNotZero: (failure.requestID, failure.opcode) = (claimedID, claimedOpcode)
            case .badMagic, .checksumMismatch: break
            }
            return .failed(failure)
        case .success(let header):
            let limit =
                switch Opcode.named(header.opcode) {
                case .append?: limits.maxAppendBodyBytes
                case .appendIf?: limits.maxAppendBodyBytes + AppendIfRequest.prefixBytes
                default: limits.maxControlBodyBytes
                }
            guard Int(header.bodyLength) <= limit else {
                return .failed(Failure(
                    code: .lengthOverLimit,
                    body: ErrorBody(detail1: UInt64(limit), message: "request body of \(header.bodyLength) bytes exceeds the limit of \(limit)"),
                    requestID: header.requestID, opcode: header.opcode))
            }
            return .complete(header)
        }
    }

    static func describe(_ error: RequestHeader.DecodeError) -> Failure {
        let version = UInt64(WireProtocol.version)
        switch error {
        case .badMagic(let magic):
            return Failure(code: .badMagic, body: ErrorBody(message: "request header magic 0x\(String(magic, radix: 16)) is not \"RL\" (0x4c52)"))
        case .unsupportedVersion(let got):
            return Failure(
                code: .unsupportedVersion,
                body: ErrorBody(detail1: version, detail2: version, message: "protocol version \(got) is not supported; this server speaks 1"))
        case .checksumMismatch:
            return Failure(code: .malformedRequest, body: ErrorBody(message: "request header CRC32C does not match"))
        case .reservedNotZero:
            return Failure(code: .malformedRequest, body: ErrorBody(message: "request header reserved field is not zero"))
        }
    }
}
