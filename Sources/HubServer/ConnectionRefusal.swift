import NIOCore

/// Answers a connection the hub will not serve (its client address already holds `maxConnectionsPerAddress`) with
/// 429 and closes it, before any request is parsed. The write side is closed first and what the client still sends
/// is read and dropped until it closes too (at most `linger`), so the answer is not lost to a reset.
final class ConnectionRefusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let response: ByteBuffer
    private let linger: TimeAmount

    init(limit: Int, linger: TimeAmount = .seconds(2)) {
        let body = #"{"error":"too_many_connections","message":"this address already holds \#(limit) connections (max-connections-per-address)"}"#
            + "\n"
        self.response = ByteBuffer(string: "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body)
        self.linger = linger
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: nil)
        }
        context.eventLoop.assumeIsolated().scheduleTask(in: linger) { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
