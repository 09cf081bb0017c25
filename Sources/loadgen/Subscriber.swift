#if canImport(Glibc)
import CNIOLinux
import Glibc
#endif
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
        // The direct reader counts the end of a connection it reads.
        guard !direct else { return }
        defer { state = .closed }
        guard ready else { return onReady(false) }
        guard state != .closed else { return }
        stats.closed(endReason)
        onClosed()
    }

    /// How the connection ended, as far as the server said (`SubscriberStats.closeCodes`).
    private var endReason: String {
        if let closeCode { return String(closeCode) }
        if let reconnectReason { return "sse-reconnect:\(reconnectReason)" }
        return failed ? "error" : "eof"
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
        // A connection the direct reader took over is read there only (its channel is closed at the hand-over).
        guard !direct else { return }
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
        consumeBuffer(now: wallNanoseconds()) { context.writeAndFlush(self.wrapOutboundOut($0), promise: nil) }
    }

    /// Handles every whole message in `buffer` and keeps the rest.
    private func consumeBuffer(now: UInt64, reply: (ByteBuffer) -> Void) {
        let used = buffer.withUnsafeReadableBytes { consume($0, now: now, reply: reply) }
        buffer.moveReaderIndex(forwardBy: used)
        if buffer.readableBytes == 0 { buffer.clear() } else { buffer.discardReadBytes() }
    }

    // MARK: Reading without NIO (`DirectReader`)

    /// Set when the direct reader took the connection over (on the event loop, which then closes its channel).
    private(set) var direct = false

    func handOver() { direct = true }

    /// The kernel's receive timestamp (`CLOCK_REALTIME`, ns) of the direct read being handled, 0 if none came.
    private var arrival: UInt64 = 0
    /// Room for the one control message a read carries: `SCM_TIMESTAMPNS`'s `timespec`.
    private static let controlSpace = Int(CNIOLinux_CMSG_SPACE(MemoryLayout<timespec>.size))

    /// One `recvmsg(2)` of the connection into `storage`, and the messages it completes. Returns false when the
    /// connection ended (end of stream, or an error); the close is then counted.
    func readDirect(fd: Int32, storage: UnsafeMutableRawBufferPointer) -> Bool {
        // recvmsg(2) rather than read(2), for the receive timestamp of the last segment read (`SO_TIMESTAMPNS`, set
        // by `DirectReader.adopt`). On loopback the kernel takes it in the server's write(2), as the segment enters
        // the receive path; a message completed by this read reached the socket no later than that. (Turning
        // timestamps on makes the kernel read the clock for every segment received on the machine, in the sender's
        // write: some tens of nanoseconds of each server's kernel time per delivery here.)
        var iov = iovec(iov_base: storage.baseAddress, iov_len: storage.count)
        var control = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        assert(MemoryLayout.size(ofValue: control) >= Self.controlSpace)
        let n = withUnsafeMutablePointer(to: &iov) { iovPointer in
            withUnsafeMutableBytes(of: &control) { controlBytes -> Int in
                var header = msghdr()
                header.msg_iov = iovPointer
                header.msg_iovlen = 1
                header.msg_control = controlBytes.baseAddress
                header.msg_controllen = controlBytes.count
                let n = recvmsg(fd, &header, 0)
                arrival = n > 0 ? Self.timestamp(in: &header) : 0
                return n
            }
        }
        guard n > 0 else {
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return true }
            if n < 0 { failed = true }
            directClosed()
            return false
        }
        let now = wallNanoseconds()
        let bytes = UnsafeRawBufferPointer(rebasing: storage[0..<n])
        if buffer.readableBytes == 0 {
            // The usual case: whole messages, parsed where they were read; only a cut-off tail is kept.
            let used = consume(bytes, now: now) { Self.writeWhole($0, to: fd) }
            if used < n {
                buffer.clear()
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[used...]))
            }
        } else {
            buffer.writeBytes(bytes)
            consumeBuffer(now: now) { Self.writeWhole($0, to: fd) }
        }
        return true
    }

    /// The `SCM_TIMESTAMPNS` control message's time in nanoseconds, 0 if there is none.
    private static func timestamp(in header: inout msghdr) -> UInt64 {
        var cmsg = CNIOLinux_CMSG_FIRSTHDR(&header)
        while let c = cmsg {
            if c.pointee.cmsg_level == SOL_SOCKET, c.pointee.cmsg_type == SO_TIMESTAMPNS_OLD {
                let ts = CNIOLinux_CMSG_DATA(c)!.loadUnaligned(as: timespec.self)
                return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
            }
            cmsg = CNIOLinux_CMSG_NXTHDR(&header, c)
        }
        return 0
    }

    /// Writes a reply frame: a few bytes to a socket the server reads, which the kernel takes whole (a short write
    /// is given up on, like any other failure of a reply).
    private static func writeWhole(_ frame: ByteBuffer, to fd: Int32) {
        frame.withUnsafeReadableBytes { bytes in
            var sent = 0
            while sent < bytes.count {
                let n = write(fd, bytes.baseAddress! + sent, bytes.count - sent)
                if n > 0 {
                    sent += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
        }
    }

    /// Counts the end of a connection the direct reader read (as `channelInactive` does for the others).
    private func directClosed() {
        guard state != .closed else { return }
        state = .closed
        stats.closed(endReason)
    }

    // MARK: Parsing

    /// Handles every whole message (SSE block, WebSocket frame) at the start of `bytes`; returns how many bytes
    /// they took. `reply` sends a frame back (a pong, a close).
    private func consume(_ bytes: UnsafeRawBufferPointer, now: UInt64, reply: (ByteBuffer) -> Void) -> Int {
        transport == .sse ? consumeSSE(bytes, now: now) : consumeFrames(bytes, now: now, reply: reply)
    }

    private func consumeSSE(_ raw: UnsafeRawBufferPointer, now: UInt64) -> Int {
        // Blocks end with a blank line; a marker never spans two blocks. A block cut short by the end of the stream
        // is not an event (as in EventSource) and is never recorded.
        var length = 0
        var i = raw.count - 1
        while i > 0 {
            if raw[i] == 10 && raw[i - 1] == 10 {
                length = i + 1
                break
            }
            i -= 1
        }
        guard length > 0 else { return 0 }
        let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<length])
        var start = 0
        i = 0
        while i + 1 < chunk.count {
            if chunk[i] == 10 && chunk[i + 1] == 10 {
                sseBlock(UnsafeRawBufferPointer(rebasing: chunk[start..<i]), now: now)
                start = i + 2
                i += 2
            } else {
                i += 1
            }
        }
        return length
    }

    private func sseBlock(_ block: UnsafeRawBufferPointer, now: UInt64) {
        if let m = Marker.find(in: block) {
            if server == .hub, block.starts(with: Self.idPrefix) {
                subscriber.resumeSeq = Self.number(in: block, at: Self.idPrefix.count)
            }
            subscriber.record(m, stats: stats, now: now, arrival: arrival)
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

    private func consumeFrames(_ raw: UnsafeRawBufferPointer, now: UInt64, reply: (ByteBuffer) -> Void) -> Int {
        var at = 0
        while raw.count - at >= 2 {
            let b0 = raw[at]
            let b1 = raw[at + 1]
            var length = Int(b1 & 0x7F)
            var offset = 2
            if length == 126 {
                guard raw.count - at >= 4 else { break }
                length = Int(raw[at + 2]) << 8 | Int(raw[at + 3])
                offset = 4
            } else if length == 127 {
                guard raw.count - at >= 10 else { break }
                length = 0
                for k in 0..<8 { length = length << 8 | Int(raw[at + 2 + k]) }
                offset = 10
            }
            guard raw.count - at >= offset + length else { break }
            let payload = UnsafeRawBufferPointer(rebasing: raw[(at + offset)..<(at + offset + length)])
            switch b0 & 0x0F {
            case 0x1, 0x2:
                if b0 & 0x40 != 0 {
                    scratch.clear()
                    _ = try? inflater.inflate(payload, into: &scratch, limit: 1 << 20)
                    _ = try? inflater.finishMessage(into: &scratch, limit: 1 << 20, resetContext: true)
                    scratch.withUnsafeReadableBytes { message(UnsafeRawBufferPointer($0), now: now) }
                } else {
                    message(payload, now: now)
                }
            case 0x8:
                // RFC 6455 §5.5.1: the close frame's body starts with the status code. Answer it and let the server
                // end TCP.
                if length >= 2, closeCode == nil { closeCode = UInt16(payload[0]) << 8 | UInt16(payload[1]) }
                reply(Self.maskedFrame(opcode: 0x8, payload: [0x03, 0xE8]))
            case 0x9:
                stats.pings += 1
                subscriber.heartbeats += 1
                reply(Self.maskedFrame(opcode: 0xA, payload: Array(payload)))
                stats.pongs += 1
            default:
                break
            }
            at += offset + length
        }
        return at
    }

    private func message(_ bytes: UnsafeRawBufferPointer, now: UInt64) {
        if let m = Marker.find(in: bytes) {
            if server == .hub, let at = bytes.end(of: Self.seqField) {
                subscriber.resumeSeq = Self.number(in: bytes, at: at)
            }
            subscriber.record(m, stats: stats, now: now, arrival: arrival)
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
