import NIOCore
import NIOHTTP1

/// The only handler of an accepted connection until its first request head has come whole. It keeps the
/// connection's request deadline in its loop's timer heap (a slot, no task of its own) and the bytes that came so far;
/// once the head is complete it puts the HTTP handlers in its place and hands them the bytes.
///
/// Why: connections accepted in a burst often wait a round of the event loop or more for their requests, and a
/// request head may take more than one read (the receive buffer starts small). Until the head is whole they hold no
/// HTTP state (decoder, response writer, request handler, a scheduled task), so a request that is upgraded (WebSocket,
/// SSE) is parsed and handed over by handlers made and freed within one read. Made at accept, the HTTP state of the
/// connections waiting in a burst was freed among the long-lived allocations of the others, and the heap kept the
/// holes: at 1,000 idle WebSockets the hub's RSS per connection varied by up to 0.3 KiB from run to run (README,
/// "Memory").
///
/// What is handed over at once, so that the HTTP handlers answer it as before: bytes that cannot start a request (the
/// first is not an upper-case letter, as every method's is), and more than `maxHeld` bytes without a blank line.
/// The deadline counts from the accept: a connection that sends nothing, or too little, within the request timeout
/// is answered 408 and closed by the HTTP handler, which is given the same deadline and what came.
final class ConnectionStarter: ChannelInboundHandler, RemovableChannelHandler, TimerTarget {
    typealias InboundIn = ByteBuffer

    private let server: ServerContext
    private let timers: LoopTimers
    private let deadline: NIODeadline
    private var context: ChannelHandlerContext?
    /// The bytes of a request head that has not come whole yet.
    private var held: ByteBuffer?
    var timerSlot = -1

    /// Bytes held at most before they go to the HTTP handlers without a blank line (whose limits then apply).
    static let maxHeld = 4096

    init(server: ServerContext, timers: LoopTimers) {
        self.server = server
        self.timers = timers
        deadline = .now() + .nanoseconds(nanoseconds(server.configuration.requestTimeoutSeconds))
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Accepted just as the drain began: the listener is closing, this connection is not served.
        if server.state.isDraining {
            context.close(promise: nil)
            return
        }
        self.context = context
        timers.schedule(self, at: Int64(clamping: deadline.uptimeNanoseconds))
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timers.cancel(self)
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Closed before its head was whole: nothing to answer (the pipeline is torn down in a later task).
        timers.cancel(self)
        self.context = nil
        held = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var earlier = held {
            held = nil
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        if Self.mayWait(bytes) {
            held = bytes
            return
        }
        handOver(context: context, bytes)
    }

    /// No whole request head within the request timeout: the HTTP handler, given the passed deadline and what came,
    /// answers 408.
    func timerFired() {
        guard let context else { return }
        let bytes = held
        held = nil
        handOver(context: context, bytes)
    }

    private func handOver(context: ChannelHandlerContext, _ bytes: ByteBuffer?) {
        let pipeline = context.channel.pipeline.syncOperations
        guard startHTTP(context: context) else { return }
        if let bytes { pipeline.fireChannelRead(NIOAny(bytes)) }
    }

    /// Whether `bytes` may be the start of a request head that is not complete yet: they begin with an upper-case
    /// letter, hold no blank line (a line feed followed by CR LF or by another line feed) and are few.
    static func mayWait(_ bytes: ByteBuffer) -> Bool {
        guard bytes.readableBytes <= maxHeld, let first = bytes.readableBytesView.first,
            first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z")
        else { return false }
        return bytes.withUnsafeReadableBytes { raw in
            var i = 0
            let count = raw.count
            while i < count {
                if raw[i] == UInt8(ascii: "\n") {
                    if i + 1 < count && raw[i + 1] == UInt8(ascii: "\n") { return false }
                    if i + 2 < count && raw[i + 1] == UInt8(ascii: "\r") && raw[i + 2] == UInt8(ascii: "\n") {
                        return false
                    }
                }
                i += 1
            }
            return true
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The hub drains: a connection without a request has nothing to finish.
        guard event is DrainEvent else { return context.fireUserInboundEventTriggered(event) }
        context.close(promise: nil)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    /// Replaces this handler with the HTTP handlers. False (and the connection closed) if the pipeline refused.
    private func startHTTP(context: ChannelHandlerContext) -> Bool {
        let channel = context.channel
        let pipeline = channel.pipeline.syncOperations
        pipeline.removeHandler(context: context, promise: nil)
        let writer = HTTPResponseWriter()
        let decoder = HTTPRequestReader()
        let http = HTTPHandler(server: server, writer: writer, decoder: decoder, requestDeadline: deadline)
        do {
            try pipeline.addHandlers([writer, decoder, http])
            return true
        } catch {
            server.logger.error("cannot start serving a connection", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
            return false
        }
    }
}
