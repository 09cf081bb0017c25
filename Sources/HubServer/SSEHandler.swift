import HubCore
import HubProtocol
import Logging
import NIOCore

/// One Server-Sent Events stream of one execution: the only handler in its pipeline once the response starts.
///
/// The response head is written by hand with `Connection: close` and no transfer coding, so every event is the
/// shared `EncodedEvent.sse` buffer written as is (no chunk framing per subscriber).
final class SSEHandler: EventSink, ChannelInboundHandler, RemovableChannelHandler, Flushable, TimerTarget, DirectWriter {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let server: ServerContext
    private let resources: LoopResources
    private let topic: TopicKey
    private let since: UInt64?
    private let principal: Principal
    /// The request's Origin, already checked against the allow-list.
    private let origin: String?
    /// The stream's place among its workspace's streams, released when the stream ends.
    private let lease: StreamLease
    private(set) var context: ChannelHandlerContext?
    /// The channel's core, from `start(alone: true)` until removal: events and flushes skip the pipeline's walk, as a
    /// WebSocket's frames do (see `WebSocketHandler.core`).
    private(set) var core: ChannelCore?
    /// The socket, written directly while NIO holds none of this stream's bytes (`SocketOutput`).
    var output = SocketOutput()
    /// Events written to the socket by the loop's flush pass, as a WebSocket's frames are (`WebSocketHandler.staged`);
    /// only while writes go to the socket directly.
    private var staged: [ByteBuffer] = []
    private var stagedBytes = 0
    private var subscription: Subscription?
    private var timer: StreamTimer
    /// This stream's place in its loop's timer heap (`LoopTimers`).
    var timerSlot = -1
    private var flushPending = false
    private var finished = false
    private var started = false
    /// The response head and `retry:` line, held until the broker has the subscription: a client that sees them may
    /// rely on every later event reaching it.
    private var pendingHead: ByteBuffer?
    /// The channel's writability as NIO last reported it (synchronously, inside the write that crosses the mark).
    private var writable = true
    /// The last seq written; until the broker answers, the client's own resume point.
    private var lastSeq: UInt64
    private var backlog = OutboundBacklog()

    init(server: ServerContext, resources: LoopResources, topic: TopicKey, since: UInt64?, principal: Principal,
        origin: String?, lease: StreamLease)
    {
        self.origin = origin
        self.lease = lease
        self.server = server
        self.resources = resources
        self.topic = topic
        self.since = since
        self.lastSeq = since ?? 0
        self.principal = principal
        let heartbeat = nanoseconds(server.configuration.heartbeatSeconds)
        self.timer = StreamTimer(now: WebSocketHandler.now(), heartbeatInterval: heartbeat,
            maxAge: nanoseconds(min(server.configuration.maxConnectionAgeSeconds,
                Double(max(principal.expiresAt - server.nowSeconds, 0)))),
            firstHeartbeatEarly: StreamTimer.heartbeatSpread(interval: heartbeat))
    }

    /// The response head. A browser page from an allowed other origin gets the CORS headers EventSource needs; only
    /// an origin listed by name (not through "*") may send credentials (the cookie).
    func responseHead() -> ByteBuffer {
        var head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
        if let origin {
            head += "Access-Control-Allow-Origin: \(origin)\r\n"
            if server.originListed(origin) { head += "Access-Control-Allow-Credentials: true\r\n" }
            head += "Vary: Origin\r\n"
        }
        return ByteBuffer(string: head + "Connection: close\r\n\r\n")
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Called once the HTTP handlers have left the pipeline: from here on this handler writes raw bytes.
    /// - Parameter alone: this is the pipeline's only handler, so events may skip the pipeline.
    func start(alone: Bool = false) {
        guard let context else { return }
        if alone {
            core = context.channel._channelCore
            attachSocket(context: context)
        }
        started = true
        server.metrics.connections(.sse).increment()
        var start = responseHead()
        SSEEncoder.writeRetry(into: &start, milliseconds: server.configuration.sseRetryMilliseconds)
        pendingHead = start
        // Strong captures until the broker answers (once): a weak one would give the handler a side table (see HubSession).
        subscription = resources.router.subscribe(topic, since: since, sink: self, broker: server.broker, onFailure: {
            [self] _ in
            // The broker could not start the stream (Redis went away): 503 if nothing was sent yet, else the end of
            // the stream; either way EventSource reconnects (with Last-Event-ID).
            guard let context = self.context else { return }
            self.subscription = nil
            self.finish()
            guard self.pendingHead != nil else { return context.close(promise: nil) }
            // Nothing was sent yet, and nothing follows this reply.
            self.output.detach()
            self.pendingHead = nil
            let body = #"{"error":"unavailable","message":"the broker could not start the stream; retry"}"# + "\n"
            let response = ByteBuffer(string: "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nRetry-After: 2\r\nConnection: close\r\n\r\n" + body)
            context.writeAndFlush(self.wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }) { [self] _, result in
            guard let context = self.context else { return }
            self.writeHead(context: context)
            self.lastSeq = min(since ?? result.headSeq, result.headSeq)
            if let first = result.truncatedFirstSeq, let since = self.since {
                var buffer = context.channel.allocator.buffer(capacity: 128)
                let data = JSON.object([("workspace", .string(self.topic.workspace)), ("execution", .string(self.topic.execution)),
                    ("since", .number(Double(since))), ("first_seq", .number(Double(first)))]).serialized
                try! SSEEncoder.writeEvent(into: &buffer, event: "replay.truncated", data: data)
                self.emit(buffer, context: context)
                self.scheduleFlush(context: context)
            }
        }
        // The broker may answer at once, and writing that replay may have closed the connection already (a flush
        // that failed): then the subscription was made after `finish` and must be undone here.
        if finished, let subscription {
            resources.router.unsubscribe(subscription, broker: server.broker)
            self.subscription = nil
        }
        tick()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish()
        self.context = nil
        core = nil
        output.detach()
        staged = []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Nothing more is expected from an EventSource; anything it sends is ignored.
    }

    func channelInactive(context: ChannelHandlerContext) {
        output.detach()
        finish()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        if writable {
            while writable, let (event, _) = backlog.popFirst() {
                lastSeq = event.seq
                toChannel(event.sse, context: context)
            }
            scheduleFlush(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    // MARK: EventSink

    override func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {
        // The event's SSE form, made by the first stream that needs it (`EncodedEvent.sse`).
        let bytes = event.sse
        if flush && output.direct && staged.isEmpty && backlog.isEmpty && writable && !finished {
            // A live event's common case, touching nothing else: the whole event to the socket. (Direct writes are
            // detached when the handler is removed, so the context is there.)
            lastSeq = event.seq
            let sent = output.send(bytes)
            if sent == bytes.readableBytes { return }
            guard let context else { return }
            return handOver(bytes, sent: sent, context: context)
        }
        guard let context, !finished else { return }
        if backlog.isEmpty && writable {
            lastSeq = event.seq
            if output.direct {
                staged.append(bytes)
                stagedBytes += bytes.readableBytes
                // A burst this large goes to the kernel now rather than wait for the end of the tick.
                if flush || stagedBytes > WebSocketHandler.stagedLimit { return sendStaged(context: context) }
                return scheduleFlush(context: context)
            }
            toChannel(bytes, context: context)
            if flush {
                flushPending = false
                flushChannel(context: context)
                return
            }
            // A burst that fills the budget within one tick goes to the kernel at once: only bytes the kernel will
            // not take count against the reader as slow.
            if !writable { flushChannel(context: context) }
            scheduleFlush(context: context)
            return
        }
        // Paced by the reader; a reader that falls a budget behind live traffic is cut off and resumes with
        // Last-Event-ID (an EventSource reconnects by itself).
        backlog.append(event, subscription: subscription, live: !replay, bytes: bytes.readableBytes)
        if backlog.liveBytes > server.configuration.outboundBudget / 2 || backlog.count > OutboundBacklog.maxEntries {
            server.logger.info("closing slow SSE consumer", metadata: ["workspace": "\(topic.workspace)"])
            server.metrics.slowConsumerDisconnects(.sse).increment()
            backlog.removeAll()
            finish()
            context.close(promise: nil)
        }
    }

    /// Writes the held response head and `retry:` line, once.
    private func writeHead(context: ChannelHandlerContext) {
        guard let head = pendingHead else { return }
        pendingHead = nil
        emit(head, context: context)
        scheduleFlush(context: context)
    }

    /// Queues `bytes` for the next flush: staged for the socket while writes go there directly, else in the channel.
    private func emit(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        if output.direct {
            staged.append(bytes)
            stagedBytes += bytes.readableBytes
        } else {
            toChannel(bytes, context: context)
        }
    }

    /// Writes `bytes` to the channel (not flushed), behind anything staged for the socket.
    private func toChannel(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        unstage(context: context)
        handToChannel(bytes, context: context)
    }

    /// Writes what is staged for the socket to the channel instead (not flushed), in order.
    private func unstage(context: ChannelHandlerContext) {
        guard !staged.isEmpty else { return }
        let frames = staged
        staged = []
        stagedBytes = 0
        for frame in frames { handToChannel(frame, context: context) }
    }

    /// Sends the staged events to the socket now (what it does not take goes to the channel).
    private func sendStaged(context: ChannelHandlerContext) {
        var frames = staged
        staged = []
        stagedBytes = 0
        sendNow(&frames, context: context)
    }

    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        resources.flusher.schedule(self)
    }

    func flushNow() {
        guard flushPending, let context else { return }
        flushPending = false
        if output.direct { return sendStaged(context: context) }
        unstage(context: context)
        flushChannel(context: context)
    }

    private func tick() {
        guard let context, !finished else { return }
        let now = WebSocketHandler.now()
        let (actions, next) = timer.tick(now: now)
        for action in actions {
            switch action {
            case .heartbeat:
                writeHead(context: context)
                emit(Self.heartbeatComment, context: context)
                scheduleFlush(context: context)
            case .expire:
                // The stream's age limit (or the token's expiry).
                let reason = timer.maxAge < nanoseconds(server.configuration.maxConnectionAgeSeconds)
                    ? "token_expired" : "max_connection_age"
                return endWithReconnect(reason: reason)
            }
        }
        if let next { resources.timers.schedule(self, at: next) }
    }

    func timerFired() {
        tick()
    }

    /// Tells the client where to resume (`reconnect` with `last_event_id`), then ends the stream once that is written.
    private func endWithReconnect(reason: String) {
        guard let context, !finished else { return }
        writeHead(context: context)
        // `lastSeq` is the last event written: events still waiting in the backlog are replayed after the reconnection.
        var buffer = context.channel.allocator.buffer(capacity: 96)
        let data = JSON.object([("reason", .string(reason)), ("last_event_id", .number(Double(lastSeq)))]).serialized
        try! SSEEncoder.writeEvent(into: &buffer, event: "reconnect", data: data)
        finish()
        unstage(context: context)
        // The last write: nothing follows it, so it goes through the channel, whose promise says when it is out.
        output.detach()
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(buffer, core: core, promise: written)
        context.flush(core: core)
        written.futureResult.assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is DrainEvent else { return context.fireUserInboundEventTriggered(event) }
        endWithReconnect(reason: "draining")
    }

    private static let heartbeatComment: ByteBuffer = {
        var b = ByteBuffer()
        SSEEncoder.writeComment(into: &b, "heartbeat")
        b.writeString("\n")
        return b
    }()

    private func finish() {
        guard !finished else { return }
        finished = true
        if started { server.metrics.connections(.sse).decrement() }
        backlog.removeAll()
        resources.timers.cancel(self)
        if let subscription { resources.router.unsubscribe(subscription, broker: server.broker) }
        subscription = nil
        server.limiter.release(lease)
    }
}
