import NIOCore
import NIOHTTP1

/// NIO's HTTP/1 request decoder (`HTTPRequestDecoder`, llhttp) in the pipeline without NIO's `ByteToMessageHandler`:
/// it is fed the bytes of each read as they come (`decode`), and at its removal and at the end of the stream
/// (`decodeLast`), as `ByteToMessageHandler` feeds it.
///
/// Why: `ByteToMessageHandler` always leaves the pipeline in a task after the current one. At every upgrade the
/// decoder, its parser and its buffers (about 1.5 KiB) so outlived the read that upgraded the connection, and were
/// freed after the connection's long-lived state had been allocated, up to one connection's worth per connection read
/// in that round of the event loop. The heap kept the holes of the last rounds of a burst of connects (README,
/// "Memory"). This handler leaves the pipeline as soon as the read in which it was removed is done: the bytes after
/// an upgraded request go to the handler that replaced it then, in order.
final class HTTPRequestReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = HTTPServerRequestPart

    private let decoder = HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)
    /// Bytes received that the parser has not consumed: those that came while it was busy, the start of a token it
    /// has not seen the end of, and after an upgraded request those that follow it.
    private var unread: ByteBuffer?
    /// Set while the decoder is fed: a removal (or the end of the stream) asked for meanwhile waits until it returns.
    private var decoding = false
    /// The removal that waits for the decoder to return.
    private var pendingRemoval: ChannelHandlerContext.RemovalToken?
    /// The end of the stream seen while the decoder was fed.
    private var pendingEOF = false
    /// The parser failed: later bytes are refused as `ByteToMessageHandler` refuses them.
    private var failure: Error?
    /// Fed `decodeLast` already (at the removal or the end of the stream): nothing more goes to the decoder.
    private var finished = false

    func handlerAdded(context: ChannelHandlerContext) {
        decoder.decoderAdded(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finished = true
        unread = nil
        decoder.decoderRemoved(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if let failure {
            context.fireErrorCaught(ByteToMessageDecoderError.dataReceivedInErrorState(failure, bytes))
            return
        }
        guard !finished else { return }
        // Appended in place (one owner), so that bytes the parser leaves cost no copy of all before them.
        if unread == nil {
            unread = bytes
        } else {
            unread!.writeBuffer(&bytes)
        }
        guard !decoding else { return }
        feed(context: context)
        afterDecoding(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        seeEOF(context: context)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .some(.inputClosed) { seeEOF(context: context) }
        context.fireUserInboundEventTriggered(event)
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        if decoding {
            // Within a read (the usual upgrade): done once the decoder returns, still within the read, by when the
            // handler that replaces this one has started.
            pendingRemoval = removalToken
        } else if let unread, unread.readableBytes > 0 {
            // Outside a read (an upgrade handled once the answers before it were out), with bytes after the request:
            // they go on in a task after this one, as `ByteToMessageHandler` hands them, so that the handler that
            // replaces this one has started by then.
            context.eventLoop.assumeIsolated().execute { self.leave(context: context, removalToken: removalToken) }
        } else {
            leave(context: context, removalToken: removalToken)
        }
    }

    private func seeEOF(context: ChannelHandlerContext) {
        if decoding {
            pendingEOF = true
        } else {
            end(context: context, seenEOF: true)
            afterDecoding(context: context)
        }
    }

    /// What was asked for while the decoder was fed: the end of the stream, then the removal.
    private func afterDecoding(context: ChannelHandlerContext) {
        if pendingEOF {
            pendingEOF = false
            end(context: context, seenEOF: true)
        }
        if let token = pendingRemoval {
            pendingRemoval = nil
            leave(context: context, removalToken: token)
        }
    }

    /// Feeds the decoder what is unread until it consumes nothing more.
    private func feed(context: ChannelHandlerContext) {
        decoding = true
        defer { decoding = false }
        while !finished, failure == nil, var bytes = unread, bytes.readableBytes > 0 {
            unread = nil
            let before = bytes.readableBytes
            do {
                _ = try decoder.decode(context: context, buffer: &bytes)
            } catch {
                fail(context: context, error)
                return
            }
            let consumed = before - bytes.readableBytes
            // Keep what the parser left ahead of what came meanwhile.
            if var later = unread {
                bytes.writeBuffer(&later)
            }
            unread = bytes.readableBytes > 0 ? bytes : nil
            if consumed == 0 { return }
        }
    }

    /// The last of the decoding: after an upgrade the rest goes on to the next handler (the strategy
    /// `.forwardBytes`); at the end of the stream the parser learns it (a request cut short is an error).
    private func end(context: ChannelHandlerContext, seenEOF: Bool) {
        guard !finished, failure == nil else { return }
        finished = true
        var rest = unread ?? context.channel.allocator.buffer(capacity: 0)
        unread = nil
        guard seenEOF || rest.readableBytes > 0 else { return }
        decoding = true
        defer { decoding = false }
        do {
            _ = try decoder.decodeLast(context: context, buffer: &rest, seenEOF: seenEOF)
        } catch {
            fail(context: context, error)
        }
    }

    private func leave(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        end(context: context, seenEOF: false)
        context.leavePipeline(removalToken: removalToken)
    }

    private func fail(context: ChannelHandlerContext, _ error: Error) {
        failure = error
        unread = nil
        context.fireErrorCaught(error)
    }
}
