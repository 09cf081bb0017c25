import HubNative
import HubProtocol
import Logging
import NIOCore

/// What runs on top of a WebSocket connection: the echo route, or the hub's multiplexed protocol.
protocol WebSocketApplication: AnyObject {
    func didOpen(_ socket: WebSocketHandler)
    /// A complete text or binary message from the peer.
    func didReceive(_ message: WebSocketMessage, from socket: WebSocketHandler)
    func didClose(_ socket: WebSocketHandler)
    /// The channel went over (false) or back under (true) its write-buffer water marks.
    func writabilityChanged(_ socket: WebSocketHandler, writable: Bool)
    /// Whether to stop reading from a peer while its channel is over the water mark, so a peer that sends
    /// requests but does not read the replies cannot make the hub queue without bound.
    var holdsReadsWhenUnwritable: Bool { get }
    /// The hub is draining: end the connection in a way the client reconnects from (elsewhere).
    func drain(_ socket: WebSocketHandler)
    /// Does what is due at `now` (monotonic nanoseconds) and returns when it next needs a tick. The socket's one timer
    /// serves the protocol (pings, timeouts) and the application alike, so a connection holds a single timer.
    func tick(_ socket: WebSocketHandler, now: Int64) -> Int64?
}

extension WebSocketApplication {
    func tick(_ socket: WebSocketHandler, now: Int64) -> Int64? { nil }
}

/// The one handler in a WebSocket connection's pipeline after the upgrade: bytes in through the protocol state
/// machine, actions out.
///
/// The hot path is shaped by what was measured (see README): frames are written with no promise and flushed at once
/// (a connection's first live event of a loop tick, alone of its execution) or staged here and handed to the channel by the loop's one flush
/// pass (`LoopFlusher`), a frame meant for many connections is built once by the caller and written as the same
/// buffer, the connection's deadlines live in the loop's timer heap (`LoopTimers`), and it keeps only a few bytes of
/// partial header between reads.
final class WebSocketHandler: ChannelDuplexHandler, RemovableChannelHandler, Flushable, TimerTarget, DirectWriter {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var connection: WebSocketConnection
    private let resources: LoopResources
    private let application: WebSocketApplication
    private let logger: Logger
    private(set) var context: ChannelHandlerContext?
    /// The channel's core, from `start(alone: true)` (the HTTP handlers gone, this the pipeline's only handler)
    /// until removal. Frames and flushes go to it directly: the pipeline's walk would end there too (its head hands a
    /// write to `write0` and a flush to `flush0`), and skipping it spares each delivery the walk's calls and reference
    /// counting, about 0.3 µs of 2.5 in user space at 50k deliveries/s (README "Benchmarks").
    private(set) var core: ChannelCore?
    /// The socket, written directly while NIO holds none of this connection's bytes (`SocketOutput`).
    var output = SocketOutput()
    /// Bytes of an incomplete frame header or control frame, kept between reads.
    private var pending: ByteBuffer?
    private var actions: [WebSocketConnection.Action] = []
    private var flushPending = false
    /// Frames that wait for the flush pass (`LoopFlusher`) and go to the channel there, right before its flush: a
    /// deferred frame then touches the channel's objects once, with the flush, instead of once when it is written and
    /// again when it is flushed (with thousands of connections each touch is a handful of cache misses). At most
    /// `stagedLimit` bytes wait here; beyond that frames go to the channel at once, where its water marks see them.
    private var staged: [ByteBuffer] = []
    private var stagedBytes = 0
    static let stagedLimit = 16 * 1024
    private var performing = false
    /// A read the channel asked for while it was over its water mark.
    private var readHeld = false
    /// This connection's place in its loop's timer heap (`LoopTimers`): one deadline serves protocol and application.
    var timerSlot = -1
    private var closed = false
    /// Set once a close frame is written: §5.5.1, no data frame may follow it.
    private var outputClosed = false

    /// Whether permessage-deflate is in use on this connection.
    let compresses: Bool
    /// The channel's writability as NIO last reported it (it reports a change synchronously, inside the write that
    /// crosses the high water mark): read on every delivery without asking the channel.
    private var writable = true
    /// The close code the hub sent, once it sent one.
    var sentCloseCode: CloseCode? { connection.sentCloseCode }

    /// Monotonic nanoseconds; injectable so that heartbeats and close timeouts are testable without waiting.
    private let clock: () -> Int64

    init(connection: WebSocketConnection, resources: LoopResources, application: WebSocketApplication, logger: Logger,
        clock: @escaping () -> Int64 = WebSocketHandler.now)
    {
        self.clock = clock
        self.connection = connection
        self.compresses = connection.deflate != nil
        self.resources = resources
        self.application = application
        self.logger = logger
    }

    static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// How much earlier than a whole interval the first ping comes (`WebSocketConnection.firstPingEarly`).
    var firstPingEarly: Int64 { connection.firstPingEarly }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    /// Called once the HTTP handlers have left the pipeline: from here on this handler writes raw frames.
    /// - Parameter alone: this is the pipeline's only handler (after the upgrade), so frames may skip the pipeline.
    func start(alone: Bool = false) {
        if alone, let context {
            core = context.channel._channelCore
            attachSocket(context: context)
        }
        application.didOpen(self)
        scheduleTick(now: clock())
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The application's subscriptions end here at the latest (the router holds its sessions unowned).
        finish()
        self.context = nil
        core = nil
        output.detach()
        staged = []
        stagedBytes = 0
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        let now = clock()
        if var buffered = pending {
            buffered.writeBuffer(&input)
            connection.receive(&buffered, now: now, actions: &actions)
            pending = buffered.readableBytes > 0 ? buffered : nil
        } else {
            connection.receive(&input, now: now, actions: &actions)
            // Keep the few unread bytes in a small buffer of their own, not the whole receive buffer.
            if input.readableBytes > 0 {
                var keep = context.channel.allocator.buffer(capacity: input.readableBytes)
                keep.writeBuffer(&input)
                pending = keep
            }
        }
        perform(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if flushPending {
            flushPending = false
            flushStaged(context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        output.detach()
        finish()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        self.writable = writable
        if !closed { application.writabilityChanged(self, writable: writable) }
        if writable && readHeld {
            readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is DrainEvent else { return context.fireUserInboundEventTriggered(event) }
        if !closed && !outputClosed { application.drain(self) }
    }

    func read(context: ChannelHandlerContext) {
        if application.holdsReadsWhenUnwritable && !context.channel.isWritable {
            readHeld = true
        } else {
            context.read()
        }
    }

    /// Whether the channel can take more without going over its water mark.
    var isWritable: Bool { writable && context != nil }

    /// Closes a consumer that does not read fast enough. Nothing more is queued for it: the close frame goes behind
    /// what is already queued, so a peer that reads again within the close timeout receives everything up to it and
    /// the reason; otherwise TCP is closed at the deadline. It resumes from history when it reconnects.
    /// Returns false when the connection was already closing (nothing new happened).
    @discardableResult
    func closeSlowConsumer() -> Bool {
        guard !closed, !outputClosed else { return false }
        logger.info("closing slow consumer", metadata: ["budget": "\(context?.channel.outboundBudget ?? 0)"])
        close(code: .tryAgainLater, reason: "slow consumer: outbound budget exceeded")
        return true
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: Sending

    /// Writes complete frame bytes; they go out with the connection's next flush, once per event-loop tick, or at
    /// once with `flush` (and with them anything queued earlier in the tick).
    func write(frame: ByteBuffer, flush: Bool = false) {
        if flush && staged.isEmpty && output.direct && !outputClosed {
            // A live event's common case, touching nothing else: the whole frame to the socket. (Direct writes are
            // detached when the handler is removed, so the context is there.)
            flushPending = false
            let sent = output.send(frame)
            if sent == frame.readableBytes { return }
            guard let context else { return }
            return handOver(frame, sent: sent, context: context)
        }
        guard let context, !outputClosed else { return }
        if flush {
            flushPending = false
            staged.append(frame)
            stagedBytes += frame.readableBytes
            flushStaged(context: context)
            return
        }
        staged.append(frame)
        stagedBytes += frame.readableBytes
        if stagedBytes > Self.stagedLimit {
            if output.direct {
                // A burst this large goes to the kernel now rather than wait for the end of the tick.
                flushStaged(context: context)
                return
            }
            writeStaged(context: context)
            flushEarlyIfOverBudget(context: context)
        }
        scheduleFlush(context: context)
    }

    /// Hands the staged frames to the kernel: to the socket directly when NIO holds nothing of this connection,
    /// otherwise through the channel, flushed.
    private func flushStaged(context: ChannelHandlerContext) {
        if output.direct {
            // Taken out first: a write handed to the channel may start a close, which stages its frame.
            var frames = staged
            staged = []
            stagedBytes = 0
            return sendNow(&frames, context: context)
        }
        writeStaged(context: context)
        flushChannel(context: context)
    }

    /// Hands the staged frames to the channel, in order, before anything written after them.
    private func writeStaged(context: ChannelHandlerContext) {
        guard !staged.isEmpty else { return }
        let frames = staged
        staged.removeAll()
        stagedBytes = 0
        let wasClosed = outputClosed
        for frame in frames {
            // A write that passes the budget closes a slow consumer at once, and its close frame is written then:
            // nothing may follow it.
            if outputClosed != wasClosed { break }
            handToChannel(frame, context: context)
        }
    }

    /// A burst that fills the channel's budget within one tick goes to the kernel at once instead of waiting for the
    /// end of the tick: only bytes the kernel will not take count against a reader as slow.
    private func flushEarlyIfOverBudget(context: ChannelHandlerContext) {
        if !writable { context.flush(core: core) }
    }

    /// Encodes and writes one message, compressed when permessage-deflate is in use.
    func send(_ opcode: Opcode, _ payload: ByteBuffer) {
        guard let context else { return }
        if let deflate = connection.deflate {
            var compressed = context.channel.allocator.buffer(capacity: payload.readableBytes / 2 + 16)
            resources.deflater(windowBits: deflate.serverMaxWindowBits).compressMessage(payload, into: &compressed)
            write(frame: FrameEncoder.frame(opcode: opcode, rsv1: true, payload: compressed))
        } else {
            write(frame: FrameEncoder.frame(opcode: opcode, payload: payload))
        }
    }

    /// Starts the close handshake from the hub's side.
    func close(code: CloseCode, reason: String) {
        guard let context else { return }
        connection.close(code: code, reason: reason, now: clock(), actions: &actions)
        perform(context: context)
        scheduleTick(now: clock())
    }

    /// One flush per connection per loop tick: at the end of a read burst (channelReadComplete) or, for writes
    /// that do not come from a read (fan-out, timers, bytes forwarded at the upgrade), in a task after this one.
    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushPending else { return }
        flushPending = true
        resources.flusher.schedule(self)
    }

    func flushNow() {
        guard flushPending, let context else { return }
        flushPending = false
        flushStaged(context: context)
    }

    private func perform(context: ChannelHandlerContext) {
        // Re-entrant calls (an application closing the socket while a message is delivered) only append; the
        // outermost call carries out every action once, in order.
        guard !performing else { return }
        performing = true
        defer { performing = false }
        while !actions.isEmpty {
            let action = actions.removeFirst()
            switch action {
            case .deliver(let message):
                application.didReceive(message, from: self)
            case .write(let bytes):
                guard !outputClosed else { break }
                staged.append(bytes)
                stagedBytes += bytes.readableBytes
                scheduleFlush(context: context)
            case .writeClose(let bytes):
                guard !outputClosed else { break }
                outputClosed = true
                staged.append(bytes)
                stagedBytes += bytes.readableBytes
                scheduleFlush(context: context)
            case .closeTCP:
                finish()
                flushPending = false
                flushStaged(context: context)
                output.detach()
                context.close(promise: nil)
            }
        }
        // An idle connection keeps no action storage (it is rare: a read that carried a message).
        actions = []
    }

    private func finish() {
        guard !closed else { return }
        closed = true
        resources.timers.cancel(self)
        application.didClose(self)
    }

    // MARK: Timer

    /// The application's timing changed (a new token, for example): its next tick may be sooner.
    func rescheduleTick() {
        scheduleTick(now: clock())
    }

    private func scheduleTick(now: Int64) {
        guard let context, !closed else { return }
        let applicationNext = application.tick(self, now: now)
        guard !closed else { return }
        let protocolNext = connection.tick(now: now, actions: &actions)
        perform(context: context)
        let next = min(applicationNext ?? .max, protocolNext ?? .max)
        guard !closed, next < .max else { return }
        if let current = resources.timers.deadline(of: self), current <= next { return }
        resources.timers.schedule(self, at: next)
    }

    func timerFired() {
        scheduleTick(now: clock())
    }
}

extension Channel {
    /// The high write-buffer water mark, which the hub uses as the outbound byte budget.
    var outboundBudget: Int {
        (try? syncOptions?.getOption(.writeBufferWaterMark).high) ?? 0
    }
}
