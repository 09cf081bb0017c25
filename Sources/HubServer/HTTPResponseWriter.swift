import NIOCore
import NIOHTTP1

/// Writes the hub's HTTP/1.1 responses, each as one buffer: the head, then a body of up to `maxJoinedBody` bytes
/// copied after it, reach the channel as one write when the response ends (or at a flush), so a response costs one
/// `write(2)` and one pending write, not three.
///
/// The hub frames every response itself, with a `Content-Length` (never chunked, never trailers), and sends no body
/// with a response to HEAD. So heads are written as given: the bytes are those of NIO's `HTTPResponseEncoder` for
/// the same parts (`HTTPResponseWriterTests`), without its framing fix-ups, which have nothing to do here.
final class HTTPResponseWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    /// A larger body is written after the head, not copied into its buffer.
    static let maxJoinedBody = 16 * 1024

    /// The response written so far and not yet passed on.
    private var pending: ByteBuffer?
    /// The promise of the parts in `pending` (several are chained: the first completes the others).
    private var pendingPromise: EventLoopPromise<Void>?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            passOn(context: context)
            var buffer = context.channel.allocator.buffer(capacity: 256)
            buffer.writeResponseLine(head)
            for (name, value) in head.headers {
                buffer.writeString(name)
                buffer.writeStaticString(": ")
                buffer.writeString(value)
                buffer.writeStaticString("\r\n")
            }
            buffer.writeStaticString("\r\n")
            pending = buffer
            chain(promise, context: context)
        case .body(.byteBuffer(let body)) where pending != nil && body.readableBytes <= Self.maxJoinedBody:
            pending!.writeImmutableBuffer(body)
            chain(promise, context: context)
        case .body(let body):
            passOn(context: context)
            context.write(wrapOutboundOut(body), promise: promise)
        case .end:
            // Trailers need chunked framing, which the hub never uses: like NIO's encoder without it, none are sent.
            chain(promise, context: context)
            passOn(context: context)
        }
    }

    func flush(context: ChannelHandlerContext) {
        passOn(context: context)
        context.flush()
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        passOn(context: context)
        context.leavePipeline(removalToken: removalToken)
    }

    private func chain(_ promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let promise else { return }
        if let first = pendingPromise {
            first.futureResult.cascade(to: promise)
        } else if pending != nil {
            pendingPromise = promise
        } else {
            // Nothing waits to be written (an end after a body passed on): complete it in order behind what has.
            context.write(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
        }
    }

    private func passOn(context: ChannelHandlerContext) {
        guard let buffer = pending else { return }
        pending = nil
        let promise = pendingPromise
        pendingPromise = nil
        context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
    }
}

extension ByteBuffer {
    fileprivate mutating func writeResponseLine(_ head: HTTPResponseHead) {
        switch (head.version.major, head.version.minor, head.status) {
        case (1, 1, .accepted): writeStaticString("HTTP/1.1 202 Accepted\r\n")
        case (1, 1, .ok): writeStaticString("HTTP/1.1 200 OK\r\n")
        default:
            writeString("HTTP/\(head.version.major).\(head.version.minor) \(head.status.code) \(head.status.reasonPhrase)\r\n")
        }
    }
}
