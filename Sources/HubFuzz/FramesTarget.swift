import HubNative
import HubProtocol
import NIOCore

/// Client bytes through the server's WebSocket stack with permessage-deflate negotiated.
///
/// Input: a configuration byte (message limit, frame limit, raw or structured frames, deflate), a chunking seed,
/// then the wire bytes. In structured mode the rest is a list of records that become correctly masked frames, so
/// mutations reach the assembler and the inflater instead of failing the header checks.
///
/// The same bytes run twice: read whole by a `WebSocketReader`, and in the chosen chunking by a
/// `WebSocketConnection` as the channel handler drives it. Both must see the same messages and the same failure,
/// and what the connection does must follow RFC 6455/7692.
enum FramesTarget {
    static let messageLimits = [125, 1000, 4096, 65_536]

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let config = input.byte()
        let chunkSeed = input.byte()
        let maxMessageSize = messageLimits[Int(config & 3)]
        // The hub sets both limits alike; a smaller frame limit also covers messages of several frames near it.
        let maxFrameSize = config & 4 == 0 ? maxMessageSize : max(125, maxMessageSize / 4)
        let structured = config & 8 != 0
        // Three inputs in four negotiate permessage-deflate; the rest check that RSV1 is refused without it.
        let deflate = config & 0x30 != 0x30
        let wire = structured ? frames(from: input.rest) : Array(input.rest)

        let expected = readWhole(wire, maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize, deflate: deflate)
        for message in expected.messages { check(message, maxMessageSize: maxMessageSize) }

        // The same chunking through a bare reader: the failure the connection must report.
        let chunks = Chunking.ranges(count: wire.count, seed: chunkSeed)
        let chunked = readChunked(wire, chunks: chunks, maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize,
            deflate: deflate)
        require(chunked.messages == expected.messages, "chunking changed the messages")
        if let a = expected.error, let b = chunked.error {
            // Chunking may change which failure is found first only inside one data frame's payload: invalid UTF-8
            // (1007), corrupt deflate data (1007) and too much inflated output (1009) can all be in one chunk.
            let codes: Set<UInt16> = [a.closeCode.rawValue, b.closeCode.rawValue]
            require(a == b || codes.isSubset(of: [1007, 1009]), "\(a) read whole, \(b) in chunks")
        } else {
            require(expected.error == nil && chunked.error == nil, "a failure in one chunking only")
        }

        for error in [expected.error, chunked.error].compactMap({ $0 }) {
            require(error.closeCode == documentedCloseCode(error),
                "\(error) maps to \(error.closeCode), RFC 6455 §7.4.1 says \(documentedCloseCode(error))")
        }

        var connection = WebSocketConnection(
            configuration: .init(maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize, pingInterval: 0,
                pongTimeout: 0, closeTimeout: 0),
            deflate: deflate ? PerMessageDeflate(serverMaxWindowBits: 15, announcesServerWindow: false) : nil, now: 0)
        var actions: [WebSocketConnection.Action] = []
        var pending = ByteBuffer()
        for range in chunks {
            pending.writeBytes(wire[range])
            let wasClosed = connection.state == .closed
            let before = actions.count
            connection.receive(&pending, now: 0, actions: &actions)
            if wasClosed { require(actions.count == before, "actions after the connection closed") }
            require(connection.bufferedMessageBytes <= maxMessageSize,
                "\(connection.bufferedMessageBytes) bytes buffered, limit \(maxMessageSize)")
            pending.discardReadBytes()
        }
        checkActions(actions, connection: connection, expected: chunked)
    }

    struct Outcome {
        var messages: [WebSocketMessage] = []
        var error: ProtocolError?
    }

    /// The reference reading: all bytes in one buffer, up to the first failure or close.
    static func readWhole(_ wire: [UInt8], maxFrameSize: Int, maxMessageSize: Int, deflate: Bool) -> Outcome {
        var reader = WebSocketReader(maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize, expectMasked: true,
            deflate: deflate)
        var buffer = ByteBuffer(bytes: wire)
        var outcome = Outcome()
        do {
            while let message = try reader.next(&buffer) {
                outcome.messages.append(message)
                if case .close = message { break }
            }
        } catch {
            outcome.error = error
        }
        return outcome
    }

    /// The reading a channel handler does: each chunk appended to what is left, then every complete message.
    static func readChunked(_ wire: [UInt8], chunks: [Range<Int>], maxFrameSize: Int, maxMessageSize: Int,
        deflate: Bool) -> Outcome
    {
        var reader = WebSocketReader(maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize, expectMasked: true,
            deflate: deflate)
        var pending = ByteBuffer()
        var outcome = Outcome()
        for range in chunks {
            pending.writeBytes(wire[range])
            do {
                while let message = try reader.next(&pending) {
                    outcome.messages.append(message)
                    if case .close = message { return outcome }
                }
            } catch {
                outcome.error = error
                return outcome
            }
        }
        return outcome
    }

    static func check(_ message: WebSocketMessage, maxMessageSize: Int) {
        switch message {
        case .text(let b):
            require(b.readableBytes <= maxMessageSize, "text of \(b.readableBytes) bytes, limit \(maxMessageSize)")
            require(isValidUTF8(b.readableBytesView), "delivered text is not UTF-8")
        case .binary(let b):
            require(b.readableBytes <= maxMessageSize, "binary of \(b.readableBytes) bytes, limit \(maxMessageSize)")
        case .ping(let b), .pong(let b):
            require(b.readableBytes <= 125, "control payload of \(b.readableBytes) bytes")
        case .close(let code, let reason):
            if let code {
                let raw = code.rawValue
                require((1000...1003).contains(raw) || (1007...1014).contains(raw) || (3000...4999).contains(raw),
                    "close code \(raw) accepted from the wire")
            } else {
                require(reason.isEmpty, "a reason without a code")
            }
            require(reason.utf8.count <= 123, "close reason of \(reason.utf8.count) bytes")
        }
    }

    /// RFC 6455 §7.4.1 and RFC 7692 §8, stated here independently of `ProtocolError.closeCode`.
    static func documentedCloseCode(_ error: ProtocolError) -> CloseCode {
        switch error {
        case .frameTooLarge, .messageTooLarge: return CloseCode(1009)
        case .invalidUTF8, .invalidCompressedData: return CloseCode(1007)
        default: return CloseCode(1002)
        }
    }

    static func checkActions(_ actions: [WebSocketConnection.Action], connection: WebSocketConnection,
        expected: Outcome)
    {
        var delivered: [WebSocketMessage] = []
        var writes: [ByteBuffer] = []
        var closeFrame: ByteBuffer?
        var closedTCP = false
        for action in actions {
            require(!closedTCP, "an action after closeTCP: \(action)")
            switch action {
            case .deliver(let m):
                require(closeFrame == nil, "a message delivered after the close frame")
                delivered.append(m)
            case .write(let b):
                require(closeFrame == nil, "a frame written after the close frame (§5.5.1)")
                writes.append(b)
            case .writeClose(let b):
                require(closeFrame == nil, "two close frames")
                closeFrame = b
            case .closeTCP:
                closedTCP = true
            }
        }

        let dataMessages = expected.messages.filter {
            switch $0 {
            case .text, .binary: return true
            default: return false
            }
        }
        require(delivered == dataMessages,
            "chunked delivery \(delivered.count) messages differs from whole reading \(dataMessages.count)")
        let pongs: [ByteBuffer] = expected.messages.compactMap {
            if case .ping(let payload) = $0 { return FrameEncoder.frame(opcode: .pong, payload: payload) }
            return nil
        }
        require(writes == pongs, "\(writes.count) frames written for \(pongs.count) pings")

        if case .close(let code, _)? = expected.messages.last {
            // §5.5.1: echo the code; §7.1.1: the server closes TCP.
            guard let frame = closeFrame else { return require(false, "no close frame in reply to a close") }
            require(closedTCP && connection.state == .closed, "TCP not closed after the close handshake")
            let bytes = Array(frame.readableBytesView)
            let expectedBytes: [UInt8] = code.map { [0x88, 0x02, UInt8($0.rawValue >> 8), UInt8($0.rawValue & 0xFF)] }
                ?? [0x88, 0x00]
            require(bytes == expectedBytes, "close reply \(bytes) to code \(String(describing: code))")
            require(connection.sentCloseCode == code, "sentCloseCode \(String(describing: connection.sentCloseCode))")
        } else if let error = expected.error {
            guard let frame = closeFrame else { return require(false, "no close frame after \(error)") }
            require(closedTCP && connection.state == .closed, "TCP not closed after \(error)")
            let bytes = Array(frame.readableBytesView)
            require(bytes.count >= 4 && bytes[0] == 0x88 && Int(bytes[1]) == bytes.count - 2 && bytes[1] <= 125,
                "malformed close frame \(bytes)")
            let code = UInt16(bytes[2]) << 8 | UInt16(bytes[3])
            require(connection.sentCloseCode?.rawValue == code, "sentCloseCode differs from the frame's \(code)")
            let reason = bytes[4...]
            require(code == error.closeCode.rawValue, "closed with \(code) for \(error)")
            require(Array(error.message.utf8) == Array(reason), "close reason is not the error's message")
        } else {
            require(closeFrame == nil && !closedTCP && connection.state == .open,
                "the connection closed on input the whole reading accepts")
        }
    }

    /// Structured mode: records `b0, n, payload[n]` become frames with byte 0 `b0`, a correct length and a mask
    /// (key 0 when the high bit of `n` is clear, so the payload is visible to the fuzzer as it is). `n & 0x7F`
    /// of 127 takes a 16-bit length from the next two bytes.
    static func frames(from records: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        var i = records.startIndex
        while i + 1 < records.endIndex {
            let b0 = records[i]
            let n = records[i + 1]
            i += 2
            var length = Int(n & 0x7F)
            if length == 127, i + 1 < records.endIndex {
                length = Int(records[i]) << 8 | Int(records[i + 1])
                i += 2
            }
            length = min(length, records.endIndex - i)
            let key: [UInt8] = n & 0x80 == 0 ? [0, 0, 0, 0] : [0x37, 0xFA, 0x21, 0x3D]
            out.append(b0)
            if length < 126 {
                out.append(0x80 | UInt8(length))
            } else {
                out += [0x80 | 126, UInt8(length >> 8), UInt8(length & 0xFF)]
            }
            out += key
            for (j, b) in records[i..<(i + length)].enumerated() { out.append(b ^ key[j & 3]) }
            i += length
        }
        return out
    }
}
