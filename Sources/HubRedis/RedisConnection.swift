import HubNative
import NIOCore

/// Why a Redis command did not get a reply it can use.
public enum RedisError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not connected, the connection dropped, or the reply did not come in time: retrying later may work.
    case unavailable(String)
    /// Redis answered with an error reply (`-ERR …`).
    case reply(String)
    /// The bytes from the server are not RESP: whatever listens there is not a Redis.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .unavailable(let why): return "redis unavailable: \(why)"
        case .reply(let message): return "redis error reply: \(message)"
        case .protocolViolation(let why): return "redis protocol error: \(why)"
        }
    }
}

/// A message pushed on a pub/sub connection.
enum RedisPush {
    case message(channel: [UInt8], payload: [UInt8])
    case subscribed(channel: [UInt8])
    case unsubscribed(channel: [UInt8])
}

/// One TCP connection to Redis: commands are pipelined (written without waiting, flushed once per event-loop tick)
/// and replies complete them in order; replies are parsed by hiredis's reader (`RESPReader`). On a pub/sub connection
/// pushed messages go to `onPush` instead.
///
/// The handler is the only one in its pipeline and is confined to its channel's event loop.
final class RedisConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let reader = RESPReader()
    private var pending = CircularBuffer<(promise: EventLoopPromise<RESPValue>, deadline: NIODeadline)>()
    private var context: ChannelHandlerContext?
    private var flushScheduled = false
    private var watchdog: RepeatedTask?
    private let timeout: TimeAmount
    /// Set for a pub/sub connection.
    var onPush: ((RedisPush) -> Void)?
    /// Called when a read is complete, after its replies and pushes were dispatched.
    var onReadComplete: (() -> Void)?
    /// Called once when the connection is gone, after every pending command failed.
    var onClose: ((RedisError) -> Void)?
    private var closeReason: RedisError?
    /// Script calls sent (`runScript`) and how many of them were answered; calls made while fewer than
    /// `scriptFence` are answered wait in `heldScripts`.
    private var scriptsSent = 0
    private var scriptsAnswered = 0
    private var scriptFence = 0
    private var heldScripts = CircularBuffer<HeldScript>()
    /// The scripts this connection runs (`load`), loaded again after a NOSCRIPT answer.
    private(set) var scripts: [RedisScript] = []

    private struct HeldScript {
        let script: RedisScript
        let keys: [String]
        let arguments: [[UInt8]]
        let promise: EventLoopPromise<RESPValue>
    }

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    var isActive: Bool { context?.channel.isActive ?? false }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // A reply that does not come in time means a dead or hung server: drop the connection, which fails every
        // pending command, and let the owner reconnect.
        let check = min(timeout, .milliseconds(250))
        let loop = context.eventLoop
        watchdog = loop.scheduleRepeatedTask(initialDelay: check, delay: check) { [weak self] _ in
            guard let self, let first = self.pending.first, first.deadline < loop.now else { return }
            self.fail(.unavailable("no reply within \(self.timeout.nanoseconds / 1_000_000) ms"))
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        watchdog?.cancel()
    }

    /// Sends one command (already in RESP form). Must be called on the connection's event loop.
    func send(_ command: ByteBuffer) -> EventLoopFuture<RESPValue> {
        guard let context else { preconditionFailure("RedisConnection.send before the handler was added") }
        let promise = context.eventLoop.makePromise(of: RESPValue.self)
        if let closeReason {
            promise.fail(closeReason)
            return promise.futureResult
        }
        pending.append((promise, context.eventLoop.now + timeout))
        write(command)
        return promise.futureResult
    }

    /// Loads `scripts` (`SCRIPT LOAD`), so that EVALSHA finds them, and keeps them to load again after a NOSCRIPT
    /// answer. Succeeds when Redis has them all.
    func load(_ scripts: [RedisScript]) -> EventLoopFuture<Void> {
        guard let context else { preconditionFailure("RedisConnection.load before the handler was added") }
        self.scripts = scripts
        return EventLoopFuture.andAllSucceed(scripts.map { send($0.load()) }, on: context.eventLoop)
    }

    /// Runs a script with EVALSHA, and with EVAL when the answer is NOSCRIPT (`SCRIPT FLUSH`, or a Redis restarted
    /// behind a proxy). Must be called on the connection's event loop.
    ///
    /// Script calls run in Redis in the order they are made here, even across a NOSCRIPT answer: the publish script
    /// assigns seqs, so an execution's events would otherwise take them out of order. When the answer to call A is
    /// NOSCRIPT, every call sent after A and before that answer arrived has reached Redis without its script too
    /// (only this hub loads its scripts: `RedisScript.tagged`), and will be answered NOSCRIPT and sent again in turn.
    /// A's EVAL loads A's script, and `scripts` are loaded again right after it; a call made now would find them and
    /// overtake those retries. So calls made from now on wait until every call sent before the answer has its own
    /// answer, and then go in the order they were made.
    func runScript(_ script: RedisScript, keys: [String], arguments: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        guard let context else { preconditionFailure("RedisConnection.runScript before the handler was added") }
        if scriptsAnswered < scriptFence || !heldScripts.isEmpty {
            let promise = context.eventLoop.makePromise(of: RESPValue.self)
            if let closeReason {
                promise.fail(closeReason)
            } else {
                heldScripts.append(HeldScript(script: script, keys: keys, arguments: arguments, promise: promise))
            }
            return promise.futureResult
        }
        return sendScript(script, keys: keys, arguments: arguments, on: context.eventLoop)
    }

    private func sendScript(_ script: RedisScript, keys: [String], arguments: [[UInt8]], on loop: EventLoop)
        -> EventLoopFuture<RESPValue>
    {
        scriptsSent += 1
        let promise = loop.makePromise(of: RESPValue.self)
        send(script.evalsha(keys: keys, arguments: arguments)).whenComplete { [self] result in
            scriptsAnswered += 1
            if case .failure(RedisError.reply(let message)) = result, message.hasPrefix("NOSCRIPT") {
                scriptFence = max(scriptFence, scriptsSent)
                send(script.eval(keys: keys, arguments: arguments)).cascade(to: promise)
                // The other scripts too: a released call of one of them must not wait for its own NOSCRIPT while a
                // later call of A's script, which A's EVAL loaded, runs before it.
                for other in scripts where other.sha != script.sha {
                    send(other.load()).whenFailure { _ in }
                }
            } else {
                promise.completeWith(result)
            }
            // Once closed, `fail` fails the held calls, in order.
            guard closeReason == nil else { return }
            while scriptsAnswered >= scriptFence, let held = heldScripts.popFirst() {
                sendScript(held.script, keys: held.keys, arguments: held.arguments, on: loop).cascade(to: held.promise)
            }
        }
        return promise.futureResult
    }

    /// Sends a command whose replies arrive as pushes (SUBSCRIBE, UNSUBSCRIBE).
    func sendWithoutReply(_ command: ByteBuffer) {
        guard closeReason == nil else { return }
        write(command)
    }

    private func write(_ command: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(command), promise: nil)
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushNow()
        }
    }

    /// Flushes what was written since the last flush now, instead of in the task that `write` scheduled.
    func flushNow() {
        guard flushScheduled, let context else { return }
        flushScheduled = false
        context.flush()
    }

    func close() {
        fail(.unavailable("connection closed by the hub"))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        do {
            try buffer.withUnsafeReadableBytes { try reader.feed($0) }
            while let reply = try reader.next() {
                dispatch(reply)
            }
        } catch {
            fail(.protocolViolation((error as? RESPReader.ProtocolError)?.message ?? "\(error)"))
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        onReadComplete?()
        context.fireChannelReadComplete()
    }

    private func dispatch(_ reply: RESPValue) {
        if let onPush, case .array(let items) = reply, items.count == 3, case .bulk(let kind) = items[0] {
            switch (String(decoding: kind, as: UTF8.self), items[1], items[2]) {
            case ("message", .bulk(let channel), .bulk(let payload)):
                return onPush(.message(channel: channel, payload: payload))
            case ("subscribe", .bulk(let channel), _):
                return onPush(.subscribed(channel: channel))
            case ("unsubscribe", .bulk(let channel), _):
                return onPush(.unsubscribed(channel: channel))
            default:
                break
            }
        }
        guard let (promise, _) = pending.popFirst() else {
            return fail(.protocolViolation("a reply nobody asked for: \(reply)"))
        }
        if case .error(let message) = reply {
            promise.fail(RedisError.reply(message))
        } else {
            promise.succeed(reply)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(.unavailable("connection closed by the server"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        fail(.unavailable("\(error)"))
    }

    /// Ends the connection for good: fails every pending command and closes the socket.
    private func fail(_ reason: RedisError) {
        guard closeReason == nil else { return }
        closeReason = reason
        watchdog?.cancel()
        // The owner learns first, so that callbacks of the failed commands below already see no connection.
        let owner = onClose
        onClose = nil
        onPush = nil
        onReadComplete = nil
        owner?(reason)
        let held = heldScripts
        heldScripts.removeAll()
        while let (promise, _) = pending.popFirst() { promise.fail(reason) }
        for call in held { call.promise.fail(reason) }
        context?.close(promise: nil)
    }
}

extension RESPCommand {
    /// A command as a `ByteBuffer`, ready to write.
    static func buffer(_ arguments: [[UInt8]]) -> ByteBuffer {
        withFormatted(arguments) { ByteBuffer(bytes: $0) }
    }

    static func buffer(_ arguments: String...) -> ByteBuffer {
        buffer(arguments.map { Array($0.utf8) })
    }
}
