import HubNative
import NIOCore
import NIOPosix

/// One subscriber connection: the upgrade (or SSE request), then messages; each message's marker is checked for
/// order, duplicates and latency (in the subscriber's `SubscriberState`, which outlives the connection). Confined to
/// its event loop.
final class SubscriberHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State { case head, streaming, closed }

    let subscriber: SubscriberState
    let server: ServerKind
    let transport: Transport
    let request: ByteBuffer
    let subscribeFrame: ByteBuffer?
    let stats: SubscriberStats
    let inflater: Inflater
    let onReady: (Bool) -> Void
    /// Called once when a connection that was ready ends.
    let onClosed: () -> Void
    private var state = State.head
    private var buffer = ByteBuffer()
    private var ready = false
    private var deflate = false
    private var scratch = ByteBuffer()
    // How the connection ended, as far as the server said.
    private var closeCode: UInt16?
    private var reconnectReason: String?
    private var failed = false

    init(subscriber: SubscriberState, server: ServerKind, transport: Transport, request: ByteBuffer,
        subscribeFrame: ByteBuffer?, stats: SubscriberStats, inflater: Inflater, onReady: @escaping (Bool) -> Void,
        onClosed: @escaping () -> Void)
    {
        self.subscriber = subscriber
        self.server = server
        self.transport = transport
        self.request = request
        self.subscribeFrame = subscribeFrame
        self.stats = stats
        self.inflater = inflater
        self.onReady = onReady
        self.onClosed = onClosed
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        defer { state = .closed }
        guard ready else { return onReady(false) }
        guard state != .closed else { return }
        let how: String
        if let closeCode {
            how = String(closeCode)
        } else if let reconnectReason {
            how = "sse-reconnect:\(reconnectReason)"
        } else {
            how = failed ? "error" : "eof"
        }
        stats.closed(how)
        onClosed()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        failed = true
        context.close(promise: nil)
    }

    private func becomeReady() {
        guard !ready else { return }
        ready = true
        onReady(true)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        if buffer.readableBytes == 0 {
            buffer = input
        } else {
            buffer.writeBuffer(&input)
        }
        if state == .head {
            guard let end = buffer.readableBytesView.firstRange(of: [13, 10, 13, 10]) else { return }
            let headLength = end.upperBound - buffer.readerIndex
            let head = buffer.readString(length: headLength) ?? ""
            let statusOK = transport == .sse ? head.hasPrefix("HTTP/1.1 200") : head.hasPrefix("HTTP/1.1 101")
            guard statusOK else {
                writeLine("# refused: \(head.prefix(200).split(separator: "\r\n").first ?? "")")
                context.close(promise: nil)
                return
            }
            deflate = head.lowercased().contains("permessage-deflate")
            state = .streaming
            if let subscribeFrame {
                context.writeAndFlush(wrapOutboundOut(subscribeFrame), promise: nil)
            } else {
                becomeReady()
            }
        }
        if transport == .sse { readSSE() } else { readFrames(context: context) }
        if buffer.readableBytes == 0 { buffer.clear() } else { buffer.discardReadBytes() }
    }

    private func readSSE() {
        // Blocks end with a blank line; a marker never spans two blocks. A block cut short by the end of the stream
        // is not an event (as in EventSource) and is never recorded.
        let length = buffer.withUnsafeReadableBytes { raw -> Int in
            var i = raw.count - 1
            while i > 0 {
                if raw[i] == 10 && raw[i - 1] == 10 { return i + 1 }
                i -= 1
            }
            return 0
        }
        guard length > 0 else { return }
        buffer.withUnsafeReadableBytes { raw in
            let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<length])
            var start = 0
            var i = 0
            while i + 1 < chunk.count {
                if chunk[i] == 10 && chunk[i + 1] == 10 {
                    sseBlock(UnsafeRawBufferPointer(rebasing: chunk[start..<i]))
                    start = i + 2
                    i += 2
                } else {
                    i += 1
                }
            }
        }
        buffer.moveReaderIndex(forwardBy: length)
    }

    private func sseBlock(_ block: UnsafeRawBufferPointer) {
        if let m = Marker.find(in: block) {
            if server == .hub, block.starts(with: Self.idPrefix) {
                subscriber.resumeSeq = Self.number(in: block, at: Self.idPrefix.count)
            }
            record(m)
        } else if block.starts(with: Self.heartbeatComment) {
            stats.heartbeatComments += 1
            subscriber.heartbeats += 1
        } else if block.starts(with: Self.reconnectEvent) {
            let text = String(decoding: block, as: UTF8.self)
            reconnectReason = text.split(separator: "\"").dropFirst(3).first.map(String.init) ?? "?"
        } else if block.starts(with: Self.truncatedEvent) {
            stats.truncated += 1
        }
    }

    private func readFrames(context: ChannelHandlerContext) {
        while buffer.readableBytes >= 2 {
            let b0 = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self)!
            let b1 = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)!
            var length = Int(b1 & 0x7F)
            var offset = 2
            if length == 126 {
                guard buffer.readableBytes >= 4 else { return }
                length = Int(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self)!)
                offset = 4
            } else if length == 127 {
                guard buffer.readableBytes >= 10 else { return }
                length = Int(buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self)!)
                offset = 10
            }
            guard buffer.readableBytes >= offset + length else { return }
            let opcode = b0 & 0x0F
            let compressed = b0 & 0x40 != 0
            let start = buffer.readerIndex + offset
            switch opcode {
            case 0x1, 0x2:
                if compressed {
                    scratch.clear()
                    buffer.withUnsafeReadableBytes { raw in
                        let payload = UnsafeRawBufferPointer(rebasing: raw[offset..<offset + length])
                        _ = try? inflater.inflate(payload, into: &scratch, limit: 1 << 20)
                    }
                    _ = try? inflater.finishMessage(into: &scratch, limit: 1 << 20, resetContext: true)
                    scratch.withUnsafeReadableBytes { message(UnsafeRawBufferPointer($0)) }
                } else {
                    buffer.withUnsafeReadableBytes { raw in message(UnsafeRawBufferPointer(rebasing: raw[offset..<offset + length])) }
                }
            case 0x8:
                // RFC 6455 §5.5.1: the close frame's body starts with the status code. Answer it and let the server
                // end TCP.
                if length >= 2, closeCode == nil { closeCode = buffer.getInteger(at: start, as: UInt16.self) }
                context.writeAndFlush(wrapOutboundOut(Self.maskedFrame(opcode: 0x8, payload: [0x03, 0xE8])), promise: nil)
            case 0x9:
                stats.pings += 1
                subscriber.heartbeats += 1
                let payload = buffer.getBytes(at: start, length: length) ?? []
                context.writeAndFlush(wrapOutboundOut(Self.maskedFrame(opcode: 0xA, payload: payload)), promise: nil)
                stats.pongs += 1
            default:
                break
            }
            buffer.moveReaderIndex(forwardBy: offset + length)
        }
    }

    private func message(_ bytes: UnsafeRawBufferPointer) {
        if let m = Marker.find(in: bytes) {
            if server == .hub, let at = bytes.end(of: Self.seqField) {
                subscriber.resumeSeq = Self.number(in: bytes, at: at)
            }
            record(m)
        } else if server == .hub {
            if bytes.starts(with: Self.heartbeatMessage) {
                stats.heartbeatMessages += 1
                subscriber.heartbeats += 1
            } else if bytes.starts(with: Self.subscribedMessage) {
                // The head seq when the subscription was made: where a live-only subscriber would resume.
                if subscriber.resumeSeq == nil, let at = bytes.end(of: Self.seqField) {
                    subscriber.resumeSeq = Self.number(in: bytes, at: at)
                }
                becomeReady()
            } else if bytes.starts(with: Self.truncatedMessage) {
                stats.truncated += 1
            } else if bytes.starts(with: Self.eventMessage), let at = bytes.end(of: Self.seqField) {
                subscriber.resumeSeq = Self.number(in: bytes, at: at)
            }
        }
    }

    private func record(_ m: Marker) {
        subscriber.record(m, stats: stats, now: wallNanoseconds())
    }

    private static let seqField = Array(#""seq":"#.utf8)
    private static let idPrefix = Array("id: ".utf8)
    private static let heartbeatComment = Array(": heartbeat".utf8)
    private static let reconnectEvent = Array("event: reconnect\n".utf8)
    private static let truncatedEvent = Array("event: replay.truncated\n".utf8)
    private static let heartbeatMessage = Array(#"{"type":"heartbeat""#.utf8)
    private static let subscribedMessage = Array(#"{"type":"subscribed""#.utf8)
    private static let truncatedMessage = Array(#"{"type":"replay.truncated""#.utf8)
    private static let eventMessage = Array(#"{"type":"event""#.utf8)

    /// The decimal number that starts at `offset`.
    private static func number(in bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt64 {
        var value: UInt64 = 0
        var i = offset
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            value = value &* 10 &+ UInt64(bytes[i] - 0x30)
            i += 1
        }
        return value
    }

    static func maskedFrame(opcode: UInt8, payload: [UInt8]) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(0x80 | opcode)
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        if payload.count < 126 {
            b.writeInteger(UInt8(0x80 | payload.count))
        } else {
            b.writeInteger(UInt8(0x80 | 126))
            b.writeInteger(UInt16(payload.count))
        }
        b.writeBytes(mask)
        b.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset & 3] })
        return b
    }
}

/// How a subscriber asks for a channel, per server and transport. `since` (hub only) resumes after that seq:
/// `since` in the WebSocket subscribe op, `Last-Event-ID` for SSE.
enum SubscriberRequest {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    static func make(server: ServerKind, transport: Transport, host: String, port: Int, channel: String,
        workspace: String, token: String, since: UInt64? = nil) -> (request: ByteBuffer, subscribeFrame: ByteBuffer?)
    {
        var head: String
        switch (server, transport) {
        case (.hub, .sse):
            head = "GET /api/v1/workspaces/\(workspace)/executions/\(channel)/stream HTTP/1.1\r\nHost: \(host):\(port)\r\n"
                + "Authorization: Bearer \(token)\r\nAccept: text/event-stream\r\n"
            if let since { head += "Last-Event-ID: \(since)\r\n" }
            return (ByteBuffer(string: head + "\r\n"), nil)
        case (.hub, _):
            head = "GET /v1/ws?access_token=\(token) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
            if transport == .wsDeflate {
                head += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
            }
            let resume = since.map { #","since":\#($0)"# } ?? ""
            let op = #"{"op":"subscribe","id":1,"workspace":"\#(workspace)","execution":"\#(channel)"\#(resume)}"#
            return (ByteBuffer(string: head + "\r\n"), SubscriberHandler.maskedFrame(opcode: 0x1, payload: Array(op.utf8)))
        case (.nchan, .sse):
            head = "GET /sub/\(channel) HTTP/1.1\r\nHost: \(host):\(port)\r\nAccept: text/event-stream\r\n\r\n"
            return (ByteBuffer(string: head), nil)
        case (.nchan, _):
            head = "GET /sub/\(channel) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
            return (ByteBuffer(string: head), nil)
        }
    }
}
