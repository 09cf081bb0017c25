import NIOCore
import NIOHTTP1

/// Writes the hub's HTTP/1.1 responses, each as one buffer: the head, then a body of up to `maxJoinedBody` bytes
/// copied after it, reach the channel as one write when the response ends (or at a flush), so a response costs one
/// `write(2)` and one pending write, not three.
///
/// The hub frames every response itself, with a `Content-Length` (never chunked, never trailers), so heads are
/// written as given: the bytes are those of NIO's `HTTPResponseEncoder` for the same parts (`HTTPResponseWriterTests`),
/// without its framing fix-ups, which have nothing to do here. A response to HEAD keeps the head a GET would get and
/// loses its body here, in one place: `HTTPHandler` tells the writer the method of each request it answers
/// (`expectResponse(toHEAD:)`), in order, and each response head takes the first one not yet answered.
final class HTTPResponseWriter: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = IOData

    /// A larger body is written after the head, not copied into its buffer.
    static let maxJoinedBody = 16 * 1024

    /// The response written so far and not yet passed on.
    private var pending: ByteBuffer?
    /// The promise of the parts in `pending` (several are chained: the first completes the others).
    private var pendingPromise: EventLoopPromise<Void>?
    /// For each request not yet answered, in order: whether it is a HEAD request.
    private var requests = CircularBuffer<Bool>(initialCapacity: 1)
    /// Set from a response head to HEAD until its end: body parts are dropped.
    private var bodyless = false

    /// The next request to answer, in request order: a response to HEAD is written without its body.
    func expectResponse(toHEAD: Bool) {
        requests.append(toHEAD)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            passOn(context: context)
            bodyless = requests.popFirst() ?? false
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
        case .body where bodyless:
            // Completed in order with the response, like the bytes it stands for.
            chain(promise, context: context)
        case .body(.byteBuffer(let body)) where pending != nil && body.readableBytes <= Self.maxJoinedBody:
            pending!.writeImmutableBuffer(body)
            chain(promise, context: context)
        case .body(let body):
            passOn(context: context)
            context.write(wrapOutboundOut(body), promise: promise)
        case .end:
            // Trailers need chunked framing, which the hub never uses: like NIO's encoder without it, none are sent.
            bodyless = false
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

    /// Removed with the channel's pipeline (the channel closed) while a response was half written: it can no longer
    /// be written (nor could it with NIO's encoder: a close fails the writes not yet flushed), and whoever waits for
    /// it learns so.
    func handlerRemoved(context: ChannelHandlerContext) {
        pending = nil
        let promise = pendingPromise
        pendingPromise = nil
        promise?.fail(ChannelError.ioOnClosedChannel)
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
