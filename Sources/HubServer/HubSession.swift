import HubCore
import HubProtocol
import NIOCore

/// The hub's multiplexed WebSocket protocol on one socket (Protocol/README.md, "WebSocket"): auth, subscribe and
/// unsubscribe ops; events from many executions; heartbeats; token expiry.
final class HubSession: EventSink, WebSocketApplication {
    private let server: ServerContext
    private let resources: LoopResources
    private var principal: Principal?
    private var subscriptions = SubscriptionList()
    /// Strong while the socket is open (a plain load on every delivery, not a weak one); `didClose` breaks the cycle.
    private var socket: WebSocketHandler?
    // Deadlines (monotonic nanoseconds) that the socket's one timer serves through `tick`.
    private var heartbeatDue: Int64?
    private var ageDeadline: Int64?
    /// The current token's `token.expiring` and close; a new token (`auth`) replaces both, so they always belong to
    /// `principal` (deadlines only: a copy of the principal in each cost every connection 64 bytes).
    private var tokenWarning: Int64?
    private var tokenExpiry: Int64?
    private var backlog = OutboundBacklog()

    init(server: ServerContext, resources: LoopResources, principal: Principal?) {
        self.server = server
        self.resources = resources
        self.principal = principal
    }

    func didOpen(_ socket: WebSocketHandler) {
        self.socket = socket
        server.metrics.connections(.webSocket).increment()
        let now = WebSocketHandler.now()
        // `{"type":"heartbeat"}` every interval, so a browser can tell a silent hub from a dead one.
        let interval = nanoseconds(server.configuration.heartbeatSeconds)
        // The first comes with the first ping (both early by the same random part of the interval, so that
        // connections opened together spread out and each connection's two share a write).
        if interval > 0 { heartbeatDue = now + interval - socket.firstPingEarly }
        // Connections do not live forever: after the maximum age the client reconnects and resumes with `since`.
        ageDeadline = now + nanoseconds(server.configuration.maxConnectionAgeSeconds)
        if let principal { scheduleTokenTimers(principal, now: now) }
    }

    func tick(_ socket: WebSocketHandler, now: Int64) -> Int64? {
        if let due = heartbeatDue, due <= now {
            socket.write(frame: socket.compresses ? HubMessages.heartbeatDeflated : HubMessages.heartbeat)
            heartbeatDue = now + nanoseconds(server.configuration.heartbeatSeconds)
        }
        if let warning = tokenWarning, warning <= now {
            tokenWarning = nil
            if let principal {
                send(.object([("type", .string("token.expiring")), ("expires_at", .number(Double(principal.expiresAt)))]))
            }
        }
        if let expiry = tokenExpiry, expiry <= now {
            tokenExpiry = nil
            sendError(id: nil, "token_expired", "token expired; reconnect with a fresh token and resubscribe with since")
            socket.close(code: CloseCode(4401), reason: "token expired")
            return nil
        }
        if let deadline = ageDeadline, deadline <= now {
            ageDeadline = nil
            socket.close(code: .goingAway, reason: "max connection age")
            return nil
        }
        return [heartbeatDue, ageDeadline, tokenWarning, tokenExpiry].compactMap { $0 }.min()
    }

    func didClose(_ socket: WebSocketHandler) {
        if self.socket != nil { server.metrics.connections(.webSocket).decrement() }
        self.socket = nil
        backlog.removeAll()
        for subscription in subscriptions.items { resources.router.unsubscribe(subscription, broker: server.broker) }
        subscriptions.removeAll()
    }

    // MARK: EventSink

    override func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {
        guard let handler = socket.map(Unmanaged.passUnretained) else { return }
        // The handler is not retained for the call: the channel's pipeline holds it at least until `didClose` has
        // run, and until its removal from the pipeline, which happens on a later turn of the loop.
        handler._withUnsafeGuaranteedRef { socket in
            if !socket.compresses && backlog.isEmpty && socket.isWritable {
                // The common case: the event's own frame, borrowed (not copied) for the write.
                socket.write(frame: event.webSocketFrame, flush: flush)
                return
            }
            write(event, for: subscription, replay: replay, flush: flush, to: socket)
        }
    }

    private func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool,
        to socket: WebSocketHandler)
    {
        let frame = socket.compresses ? deflatedFrame(event) : event.webSocketFrame
        if backlog.isEmpty && socket.isWritable {
            socket.write(frame: frame, flush: flush)
            return
        }
        // Paced: wait for the channel to drain. Live bytes beyond the budget make this a slow consumer.
        backlog.append(event, subscription: subscription, live: !replay, bytes: frame.readableBytes)
        if backlog.liveBytes > server.configuration.outboundBudget / 2 || backlog.count > OutboundBacklog.maxEntries {
            backlog.removeAll()
            if socket.closeSlowConsumer() { server.metrics.slowConsumerDisconnects(.webSocket).increment() }
        }
    }

    private func deflatedFrame(_ event: EncodedEvent) -> ByteBuffer {
        event.webSocketDeflatedFrame(resources.deflater(windowBits: EncodedEvent.sharedDeflateWindowBits))
    }

    /// Rolling restart: 1012 (Service Restart) tells the client to reconnect, to any hub, and resume with `since`.
    func drain(_ socket: WebSocketHandler) {
        socket.close(code: .serviceRestart, reason: "hub restarting: reconnect and resume with since")
    }

    /// Ops are read only as fast as their replies are read.
    var holdsReadsWhenUnwritable: Bool { true }

    func writabilityChanged(_ socket: WebSocketHandler, writable: Bool) {
        guard writable else { return }
        while socket.isWritable, let (event, _) = backlog.popFirst() {
            socket.write(frame: socket.compresses ? deflatedFrame(event) : event.webSocketFrame)
        }
    }

    // MARK: Client ops

    func didReceive(_ message: WebSocketMessage, from socket: WebSocketHandler) {
        guard case .text(let payload) = message else {
            return sendError(id: nil, "invalid_message", "binary messages are not part of this protocol; send JSON text")
        }
        guard let value = try? JSON.parse(payload.readableBytesView, maxDepth: 4), case .object = value else {
            return sendError(id: nil, "invalid_message", "each message must be a JSON object")
        }
        let id = value["id"]
        if let id, id.integerValue == nil {
            return sendError(id: nil, "invalid_message", "id must be an integer")
        }
        guard let op = value["op"]?.stringValue else {
            return sendError(id: id, "invalid_message", "op is required")
        }
        switch op {
        case "auth": auth(value, id: id)
        case "subscribe": subscribe(value, id: id)
        case "unsubscribe": unsubscribe(value, id: id)
        default: sendError(id: id, "unknown_op", "unknown op '\(op)'; one of auth, subscribe, unsubscribe")
        }
    }

    private func auth(_ value: JSON, id: JSON?) {
        guard let token = value["token"]?.stringValue else { return sendError(id: id, "invalid_message", "token is required") }
        let verified: Principal
        do {
            verified = try resources.verifiedTokens.verify(token, now: server.nowSeconds)
        } catch {
            return sendError(id: id, error.code, error.message)
        }
        principal = verified
        scheduleTokenTimers(verified, now: WebSocketHandler.now())
        socket?.rescheduleTick()
        var reply: [(String, JSON)] = [("type", .string("authenticated"))]
        if let id { reply.append(("id", id)) }
        reply += [("sub", .string(verified.subject)), ("workspaces", .array(verified.workspaces.sorted().map { .string($0) })),
            ("expires_at", .number(Double(verified.expiresAt)))]
        send(.object(reply))
        // A narrower token ends the subscriptions it no longer grants.
        for subscription in subscriptions.items where !verified.grants(subscription.topic.workspace) {
            let topic = subscription.topic
            resources.router.unsubscribe(subscription, broker: server.broker)
            subscriptions[topic] = nil
            send(.object([("type", .string("unsubscribed")), ("workspace", .string(topic.workspace)),
                ("execution", .string(topic.execution)), ("reason", .string("forbidden"))]))
        }
    }

    private func topic(_ value: JSON, id: JSON?) -> TopicKey? {
        guard let workspace = value["workspace"]?.stringValue, let execution = value["execution"]?.stringValue else {
            sendError(id: id, "invalid_message", "workspace and execution are required strings")
            return nil
        }
        let topic = TopicKey(workspace: workspace, execution: execution)
        guard topic.isValid else {
            sendError(id: id, "invalid_message", "workspace and execution must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
            return nil
        }
        return topic
    }

    private func subscribe(_ value: JSON, id: JSON?) {
        guard let topic = topic(value, id: id) else { return }
        var since: UInt64?
        if let s = value["since"] {
            guard let n = s.integerValue, n >= 0 else { return sendError(id: id, "invalid_message", "since must be an integer >= 0") }
            since = UInt64(n)
        }
        guard let principal else {
            return sendError(id: id, "unauthenticated", "send an auth op (or connect with ?access_token=) first")
        }
        guard principal.expiresAt > server.nowSeconds else { return sendError(id: id, "token_expired", "token expired") }
        guard principal.grants(topic.workspace) else {
            return sendError(id: id, "forbidden", "the token does not grant workspace \(topic.workspace)")
        }
        guard subscriptions[topic] == nil else {
            return sendError(id: id, "already_subscribed", "already subscribed to \(topic.workspace)/\(topic.execution)")
        }
        guard subscriptions.count < server.configuration.maxSubscriptionsPerSocket else {
            return sendError(id: id, "too_many_subscriptions",
                "at most \(server.configuration.maxSubscriptionsPerSocket) subscriptions per socket")
        }
        // The callbacks hold the session strongly until the broker answers (once): a weak reference would give every
        // session a side table, and every retain of it on the delivery path would take the slow path.
        subscriptions[topic] = resources.router.subscribe(topic, since: since, sink: self, broker: server.broker, onFailure: {
            [self] error in
            self.subscriptions[topic] = nil
            self.sendError(id: id, "unavailable", "the subscription could not be started (\(error)); retry with since")
        }) { [self] _, result in
            var reply: [(String, JSON)] = [("type", .string("subscribed"))]
            if let id { reply.append(("id", id)) }
            reply += [("workspace", .string(topic.workspace)), ("execution", .string(topic.execution)),
                ("seq", .number(Double(result.headSeq)))]
            self.send(.object(reply))
            if let first = result.truncatedFirstSeq, let since {
                self.send(.object([("type", .string("replay.truncated")), ("workspace", .string(topic.workspace)),
                    ("execution", .string(topic.execution)), ("since", .number(Double(since))),
                    ("first_seq", .number(Double(first)))]))
            }
        }
        // The broker may answer at once, and writing that replay may have closed the socket already (a flush that
        // failed): then `didClose` ran before the subscription was stored, and it is undone here.
        if socket == nil, let subscription = subscriptions.removeValue(forKey: topic) {
            resources.router.unsubscribe(subscription, broker: server.broker)
        }
    }

    private func unsubscribe(_ value: JSON, id: JSON?) {
        guard let topic = topic(value, id: id) else { return }
        guard let subscription = subscriptions.removeValue(forKey: topic) else {
            return sendError(id: id, "not_subscribed", "not subscribed to \(topic.workspace)/\(topic.execution)")
        }
        resources.router.unsubscribe(subscription, broker: server.broker)
        backlog.remove(subscription)
        var reply: [(String, JSON)] = [("type", .string("unsubscribed"))]
        if let id { reply.append(("id", id)) }
        reply += [("workspace", .string(topic.workspace)), ("execution", .string(topic.execution))]
        send(.object(reply))
    }

    // MARK: Token lifetime

    /// `token.expiring` a minute before the token's `exp`, and the close (4401) at it; a new token replaces both.
    private func scheduleTokenTimers(_ principal: Principal, now: Int64) {
        let remaining = principal.expiresAt - server.nowSeconds
        tokenWarning = remaining > 60 ? now + (remaining - 60) * 1_000_000_000 : nil
        tokenExpiry = now + max(remaining, 0) * 1_000_000_000
    }

    // MARK: Output

    private func send(_ message: JSON) {
        socket?.send(.text, ByteBuffer(string: message.serialized))
    }

    private func sendError(id: JSON?, _ code: String, _ message: String) {
        var fields: [(String, JSON)] = [("type", .string("error"))]
        if let id { fields.append(("id", id)) }
        fields += [("code", .string(code)), ("message", .string(message))]
        send(.object(fields))
    }
}

/// Messages that are the same for everyone, encoded once.
enum HubMessages {
    static let heartbeat = FrameEncoder.frame(opcode: .text, payload: ByteBuffer(string: #"{"type":"heartbeat"}"#))
    static let heartbeatDeflated: ByteBuffer = {
        var compressed = ByteBuffer()
        HubNativeDeflate.shared(ByteBuffer(string: #"{"type":"heartbeat"}"#), into: &compressed)
        return FrameEncoder.frame(opcode: .text, rsv1: true, payload: compressed)
    }()
}

/// A socket's subscriptions: usually a handful (at most `max-subscriptions`), so a small array rather than a hash
/// table per connection.
struct SubscriptionList {
    private(set) var items: [Subscription] = []

    var count: Int { items.count }

    subscript(topic: TopicKey) -> Subscription? {
        get { items.first { $0.topic == topic } }
        set {
            items.removeAll { $0.topic == topic }
            if let newValue { items.append(newValue) }
        }
    }

    mutating func removeValue(forKey topic: TopicKey) -> Subscription? {
        guard let index = items.firstIndex(where: { $0.topic == topic }) else { return nil }
        return items.remove(at: index)
    }

    mutating func removeAll() {
        items.removeAll()
    }
}
