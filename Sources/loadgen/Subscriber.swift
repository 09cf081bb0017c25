import Histogram
import HubNative
import NIOCore
import NIOPosix

/// Counts for one channel's subscribers in one epoch: what arrived, and how it arrived.
final class SubscriberStats: @unchecked Sendable {
    var epoch: UInt32 = 0
    var received = 0
    var duplicates = 0
    var outOfOrder = 0
    var otherEpoch = 0
    /// Distinct messages received, per channel (summed over that channel's connections).
    var distinct: [Int]
    var connectionsPerChannel: [Int]
    var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    var closedByServer = 0

    init(channels: Int) {
        distinct = Array(repeating: 0, count: channels)
        connectionsPerChannel = Array(repeating: 0, count: channels)
    }

    func reset(epoch: UInt32) {
        self.epoch = epoch
        received = 0
        duplicates = 0
        outOfOrder = 0
        otherEpoch = 0
        for i in distinct.indices { distinct[i] = 0 }
        histogram.reset()
    }
}

/// One subscriber connection: the upgrade (or SSE request), then messages; each message's marker is checked for
/// order, duplicates and latency. Confined to its event loop.
final class SubscriberHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State { case head, streaming, closed }

    let channelIndex: Int
    let channelName: String
    let server: ServerKind
    let transport: Transport
    let request: ByteBuffer
    let subscribeFrame: ByteBuffer?
    let stats: SubscriberStats
    let inflater: Inflater
    let onReady: (Bool) -> Void
    private var state = State.head
    private var buffer = ByteBuffer()
    private var ready = false
    private var deflate = false
    // Order and duplicate tracking for the current epoch.
    private var epoch: UInt32 = 0
    private var maxSeq: UInt32 = 0
    private var seen: [UInt64] = []
    private var scratch = ByteBuffer()

    init(channelIndex: Int, channelName: String, server: ServerKind, transport: Transport, request: ByteBuffer,
        subscribeFrame: ByteBuffer?, stats: SubscriberStats, inflater: Inflater, onReady: @escaping (Bool) -> Void)
    {
        self.channelIndex = channelIndex
        self.channelName = channelName
        self.server = server
        self.transport = transport
        self.request = request
        self.subscribeFrame = subscribeFrame
        self.stats = stats
        self.inflater = inflater
        self.onReady = onReady
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !ready { onReady(false) } else if state != .closed { stats.closedByServer += 1 }
        state = .closed
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
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
        // Events end with a blank line; a marker never spans two events.
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
            // One marker per event: split on "\n\n".
            var i = 0
            while i + 1 < chunk.count {
                if chunk[i] == 10 && chunk[i + 1] == 10 {
                    if let m = Marker.find(in: UnsafeRawBufferPointer(rebasing: chunk[start..<i])) { record(m) }
                    start = i + 2
                    i += 2
                } else {
                    i += 1
                }
            }
        }
        buffer.moveReaderIndex(forwardBy: length)
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
                // Answer the close and let the server end TCP.
                context.writeAndFlush(wrapOutboundOut(Self.maskedFrame(opcode: 0x8, payload: [0x03, 0xE8])), promise: nil)
            case 0x9:
                let payload = buffer.getBytes(at: start, length: length) ?? []
                context.writeAndFlush(wrapOutboundOut(Self.maskedFrame(opcode: 0xA, payload: payload)), promise: nil)
            default:
                break
            }
            buffer.moveReaderIndex(forwardBy: offset + length)
        }
    }

    private func message(_ bytes: UnsafeRawBufferPointer) {
        if let m = Marker.find(in: bytes) {
            record(m)
        } else if !ready, server == .hub, bytes.firstRange(of: Array(#""type":"subscribed""#.utf8)) != nil {
            becomeReady()
        }
    }

    private func record(_ m: Marker) {
        let now = wallNanoseconds()
        guard m.epoch == stats.epoch else {
            stats.otherEpoch += 1
            return
        }
        if epoch != m.epoch {
            epoch = m.epoch
            maxSeq = 0
            seen.removeAll(keepingCapacity: true)
        }
        stats.received += 1
        let seq = Int(m.seq)
        let word = seq >> 6
        if word >= seen.count { seen.append(contentsOf: repeatElement(0, count: word - seen.count + 1)) }
        let bit = UInt64(1) << UInt64(seq & 63)
        if seen[word] & bit != 0 {
            stats.duplicates += 1
            return
        }
        seen[word] |= bit
        stats.distinct[channelIndex] += 1
        if m.seq < maxSeq { stats.outOfOrder += 1 } else { maxSeq = m.seq }
        let micros = now > m.nanoseconds ? (now - m.nanoseconds) / 1000 : 0
        _ = stats.histogram.record(min(micros, 120_000_000))
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

/// How a subscriber asks for a channel, per server and transport.
enum SubscriberRequest {
    static let key = "dGhlIHNhbXBsZSBub25jZQ=="

    static func make(server: ServerKind, transport: Transport, host: String, port: Int, channel: String,
        workspace: String, token: String) -> (request: ByteBuffer, subscribeFrame: ByteBuffer?)
    {
        var head: String
        switch (server, transport) {
        case (.hub, .sse):
            head = "GET /api/v1/workspaces/\(workspace)/executions/\(channel)/stream HTTP/1.1\r\nHost: \(host):\(port)\r\n"
                + "Authorization: Bearer \(token)\r\nAccept: text/event-stream\r\n\r\n"
            return (ByteBuffer(string: head), nil)
        case (.hub, _):
            head = "GET /v1/ws?access_token=\(token) HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\n"
                + "Connection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
            if transport == .wsDeflate {
                head += "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
            }
            let op = #"{"op":"subscribe","id":1,"workspace":"\#(workspace)","execution":"\#(channel)"}"#
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
