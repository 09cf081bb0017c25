/// The fuzzed parsers; each runs one input through the hub's code and checks what it produced.
enum FuzzTarget: String, CaseIterable {
    /// WebSocket frames from a client, permessage-deflate negotiated: decoder, assembler, inflater, UTF-8 and close
    /// validation, and the connection's answers.
    case frames
    /// The opening handshake and `Sec-WebSocket-Extensions`, from raw request bytes or from header lines.
    case handshake
    /// Redis replies through hiredis's reader, in any chunking.
    case resp
    /// `POST /v1/jobs/progress` bodies and messages published in the seed format.
    case ingest
    /// Watcher tokens: raw strings, correctly signed tokens around fuzzed header and claims, and minted tokens.
    case token

    func run(_ data: [UInt8]) {
        switch self {
        case .frames: FramesTarget.run(data)
        case .handshake: HandshakeTarget.run(data)
        case .resp: RESPTarget.run(data)
        case .ingest: IngestTarget.run(data)
        case .token: TokenTarget.run(data)
        }
    }
}
