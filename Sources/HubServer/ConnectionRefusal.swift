import NIOCore

/// Answers a connection the hub will not serve (its client address already holds `maxConnectionsPerAddress`) with
/// 429 and closes it, before any request is parsed, with a lingering close (`Channel.closeLingering`).
final class ConnectionRefusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let response: ByteBuffer

    init(limit: Int) {
        let body = #"{"error":"too_many_connections","message":"this address already holds \#(limit) connections (max-connections-per-address)"}"#
            + "\n"
        self.response = ByteBuffer(string: "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(body.utf8.count)\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body)
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(NIOAny(response)).assumeIsolated().whenComplete { result in
            guard case .success = result else { return channel.close(promise: nil) }
            channel.closeLingering()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

extension Channel {
    /// How long a closing connection reads and discards its client's input at most.
    static var lingerSeconds: Double { 2 }

    /// Ends a connection after its last response the way a client can rely on (as nginx's lingering close does).
    /// A socket closed with unread input sends a reset, and a reset can discard the response still on its way (the
    /// client refused with a 408, 413 or 429 is often still sending). So the output is shut down (the client reads
    /// the response, then end of stream), input is read and dropped by the channel's handler, and the channel closes
    /// when the client closes (remote half-closure is not allowed) or after `lingerSeconds`. Call on the event loop.
    func closeLingering() {
        close(mode: .output).assumeIsolated().whenComplete { result in
            guard case .success = result else { return self.close(promise: nil) }
            try? self.syncOptions?.setOption(.autoRead, value: true)
            self.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds(Self.lingerSeconds))) {
                self.close(promise: nil)
            }
        }
    }
}
