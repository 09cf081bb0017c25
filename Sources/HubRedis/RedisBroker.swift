import HubCore
import HubNative
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The broker that makes many hubs one: events are stored and published in Redis, and every hub that has watchers of
/// an execution subscribes to its channel (`execution:{id}:events`) once, whatever the number of its local watchers.
///
/// - Publish: one Lua call per batch assigns seqs, appends to the history stream, refreshes expiries and PUBLISHes
///   (`RedisScripts.publish`, run as this hub's copy: `scripts`); the engine's 202 waits for it. Every hub, the
///   publishing one included, delivers what arrives on the channel, so all hubs deliver the same events in the same
///   order.
/// - Subscribe: the channel is subscribed before history is read, so an event is either in the history read or
///   arrives on the channel (or both: routers skip seqs they have).
/// - Faults: per execution the broker knows the last seq it handed on (`known`); a later seq that does not follow it
///   (events missed while the pub/sub connection was down) holds live events and reads the gap from the history
///   stream first. After a reconnect every channel is subscribed again and backfilled that way.
///
/// Confined to `loop` except the `Broker` entry points, which hop there.
public final class RedisBroker: Broker, @unchecked Sendable {
    public struct Configuration: Sendable {
        public var redis = RedisConfiguration()
        public var historyTTLMilliseconds: Int64 = 5 * 60 * 1000
        public var maxEventsPerExecution = 1000
        public var counterTTLMilliseconds: Int64 = 24 * 3600 * 1000
        public init() {}
    }

    public let configuration: Configuration
    let loop: EventLoop
    let keys: RedisKeys
    private let logger: Logger
    let commands: RedisClient
    /// This hub's own copies of the scripts.
    let scripts: HubScripts
    private let subscriber: RedisClient
    private let encoder = EventEncoder()
    private let seedDecoder: IngestDecoder
    private let clock: @Sendable () -> Int64
    private var channels: [String: ChannelState] = [:]
    /// SUBSCRIBE commands sent on the current pub/sub connection and not yet confirmed, by execution. Kept apart from
    /// `channels`: after SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE the channel is subscribed only at the second confirmation.
    private var unconfirmed: [String: Int] = [:]
    private var outgoing: [ObjectIdentifier: (router: LoopRouter, events: [EncodedEvent])] = [:]
    private var flushScheduled = false
    private let available = NIOLockedValueBox(false)
    /// The publish script's first arguments, the same for every call.
    private let publishArguments: [[UInt8]]

    /// Per-hub state of one execution channel, confined to the broker's loop.
    private final class ChannelState: @unchecked Sendable {
        let execution: String
        /// Local routers by topic (the workspace a watcher asked for), with how many subscriptions each holds.
        var routers: [TopicKey: [ObjectIdentifier: (router: LoopRouter, count: Int)]] = [:]
        var count = 0
        /// Subscribed on the current pub/sub connection.
        var confirmed = false
        /// Goes up whenever the channel is confirmed or lost: an answer to a read sent under an older generation may
        /// miss events of the time the channel was not subscribed, and is not used.
        var generation = 0
        /// A backfill is waiting for its answer (at most one at a time).
        var backfilling = false
        var retryScheduled = false
        /// The last seq handed to routers with none missing before it; nil until the first history read.
        var known: UInt64?
        /// Highest seq handed on before `known` was set.
        var maxSeen: UInt64 = 0
        /// Live events held while the gap before them is read from history (nil when none is being read). Bounded:
        /// past `maxHeld` they are dropped, since the backfill reads them from history anyway.
        var held: [EncodedEvent]?
        static let maxHeld = 10_000
        var backfillPending = false
        /// Subscriptions waiting for the channel to be confirmed (or for Redis to come back) to read their history.
        var reads: [PendingRead] = []
        /// Recently encoded events, so a replay does not encode them again.
        var recent: [UInt64: EncodedEvent] = [:]
        var recentOrder: [UInt64] = []

        init(execution: String) { self.execution = execution }

        func remember(_ event: EncodedEvent) {
            guard recent[event.seq] == nil else { return }
            recent[event.seq] = event
            recentOrder.append(event.seq)
            if recentOrder.count > 256 {
                recent[recentOrder.removeFirst()] = nil
            }
        }
    }

    private struct PendingRead {
        let topic: TopicKey
        let since: UInt64?
        let promise: EventLoopPromise<SubscribeResult>
    }

    /// - Parameter loop: where the Redis connections and the broker's state live.
    public init(configuration: Configuration, loop: EventLoop, logger: Logger, outputPreviewBytes: Int,
        metrics: HubMetrics = .none, clock: @escaping @Sendable () -> Int64)
    {
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        self.keys = RedisKeys(prefix: configuration.redis.keyPrefix)
        publishArguments = [
            Array(keys.prefix.utf8), Array(String(configuration.historyTTLMilliseconds).utf8),
            Array(String(configuration.maxEventsPerExecution).utf8), Array(String(configuration.counterTTLMilliseconds).utf8),
            Array(String(2 * configuration.maxEventsPerExecution).utf8),
        ]
        self.clock = clock
        var decoder = IngestDecoder()
        decoder.outputPreviewBytes = outputPreviewBytes
        self.seedDecoder = decoder
        var rng = SystemRandomNumberGenerator()
        scripts = HubScripts(tag: "hub " + String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 36))
        commands = RedisClient(loop: loop, configuration: configuration.redis, name: "commands", logger: logger,
            metrics: metrics)
        subscriber = RedisClient(loop: loop, configuration: configuration.redis, name: "pubsub", logger: logger,
            metrics: metrics)
    }

    /// Connects both connections. Fails for a configuration error (wrong password, unknown database, not a Redis);
    /// an unreachable Redis is retried in the background while the hub reports not ready.
    public func start() -> EventLoopFuture<Void> {
        loop.flatSubmit { [self] in
            commands.setup = { connection in
                // Load every script so that EVALSHA finds them (Redis forgets scripts when it restarts).
                connection.load(self.scripts.all)
            }
            commands.onReady = { [self] _ in connectionsChanged() }
            commands.onDown = { [self] in connectionsChanged() }
            subscriber.onPush = { [self] push in received(push) }
            subscriber.onReadComplete = { [self] in deliverForwarded() }
            subscriber.onReady = { [self] connection in
                // Subscribe again to every channel with watchers; each confirmation backfills what was missed.
                for state in channels.values { subscribe(state, on: connection) }
                connectionsChanged()
            }
            subscriber.onDown = { [self] in
                for state in channels.values {
                    state.confirmed = false
                    state.generation += 1
                }
                unconfirmed.removeAll()
                connectionsChanged()
            }
            return commands.start().flatMap { self.subscriber.start() }
        }
    }

    /// Completes once Redis has answered every command sent before it (a PING behind them), or at once when Redis is
    /// unreachable: so that the last lease releases land before `shutdown`.
    public func settle() -> EventLoopFuture<Void> {
        loop.flatSubmit { [self] in
            commands.send(RESPCommand.buffer("PING")).map { _ in }.recover { _ in }
        }
    }

    public func shutdown() {
        loop.execute { [self] in
            commands.stop()
            subscriber.stop()
            for state in channels.values {
                for read in state.reads { read.promise.fail(RedisError.unavailable("the hub is shutting down")) }
                state.reads = []
            }
        }
    }

    public var isAvailable: Bool { available.withLockedValue { $0 } }

    private func connectionsChanged() {
        let up = commands.isReady && subscriber.isReady
        available.withLockedValue { $0 = up }
        guard commands.isReady else { return }
        for state in channels.values where state.confirmed {
            runReads(state)
            if state.backfillPending && !state.backfilling { backfill(state) }
        }
    }

    // MARK: Publish

    public func publish(_ events: [ProgressEvent], on eventLoop: EventLoop, encoder: EventEncoder) -> EventLoopFuture<[PublishResult]> {
        // On the broker's own loop the script call is written at once, so that the end of the read that brought the
        // request sends it (`deliverPending`).
        if loop.inEventLoop { return store(events).hop(to: eventLoop) }
        return loop.flatSubmit { self.store(events) }.hop(to: eventLoop)
    }

    /// Sends the script calls of the read that is ending now instead of at the end of the loop's tick: Redis stores
    /// and publishes them while the loop goes on, so they come back on the pub/sub connection by the loop's next
    /// pass, instead of a pass later. (Under load one pass is the time to write to every watcher once.)
    @discardableResult
    public func deliverPending(to router: LoopRouter) -> Bool {
        if loop.inEventLoop { commands.connection?.flushNow() }
        return false
    }

    /// Runs the publish script for `events` (on `loop`).
    private func store(_ events: [ProgressEvent]) -> EventLoopFuture<[PublishResult]> {
        var keyList: [String] = []
        keyList.reserveCapacity(events.count * 3)
        var arguments = publishArguments
        arguments.reserveCapacity(arguments.count + events.count * 4)
        for event in events {
            let execution = event.topic.execution
            keyList += [keys.meta(execution), keys.log(execution), keys.idempotency(execution)]
            arguments += [Array(event.topic.workspace.utf8), Array(execution.utf8), Array((event.idempotencyKey ?? "").utf8),
                Array(event.deliveredTail.utf8)]
        }
        return scripts.publish.run(on: commands, keys: keyList, arguments: arguments).flatMapThrowing { reply in
            guard case .array(let items) = reply, case .integer(let ok)? = items.first else {
                throw BrokerError.failed("unexpected reply to the publish script: \(reply)")
            }
            if ok == 0 {
                guard items.count == 3, case .integer(let index) = items[1] else { throw BrokerError.failed("bad conflict reply") }
                var owner = ""
                if case .bulk(let bytes) = items[2] { owner = String(decoding: bytes, as: UTF8.self) }
                throw BrokerError.executionOwnedElsewhere(index: Int(index) - 1, owner: owner)
            }
            guard items.count == 1 + 2 * events.count else { throw BrokerError.failed("publish script answered \(items.count) items") }
            return events.enumerated().map { i, event in
                guard case .integer(let seq) = items[1 + 2 * i], case .integer(let dup) = items[2 + 2 * i] else {
                    return PublishResult(topic: event.topic, seq: 0, duplicate: false)
                }
                return PublishResult(topic: event.topic, seq: UInt64(seq), duplicate: dup == 1)
            }
        }.flatMapErrorThrowing { error in
            switch error {
            case let e as BrokerError: throw e
            case RedisError.unavailable: throw BrokerError.unavailable(retryAfterSeconds: 1)
            default: throw BrokerError.failed("\(error)")
            }
        }
    }

    // MARK: Subscribe

    public func subscribe(_ topic: TopicKey, since: UInt64?, router: LoopRouter) -> EventLoopFuture<SubscribeResult> {
        let promise = router.eventLoop.makePromise(of: SubscribeResult.self)
        loop.execute { [self] in
            let state: ChannelState
            if let existing = channels[topic.execution] {
                state = existing
            } else {
                state = ChannelState(execution: topic.execution)
                channels[topic.execution] = state
                if let connection = subscriber.connection { subscribe(state, on: connection) }
            }
            state.routers[topic, default: [:]][ObjectIdentifier(router), default: (router, 0)].count += 1
            state.count += 1
            state.reads.append(PendingRead(topic: topic, since: since, promise: promise))
            if state.confirmed { runReads(state) }
        }
        return promise.futureResult
    }

    public func unsubscribe(_ topic: TopicKey, router: LoopRouter) {
        loop.execute { [self] in
            guard let state = channels[topic.execution] else { return }
            let id = ObjectIdentifier(router)
            guard let entry = state.routers[topic]?[id] else { return }
            state.routers[topic]![id] = entry.count > 1 ? (entry.router, entry.count - 1) : nil
            if state.routers[topic]!.isEmpty { state.routers[topic] = nil }
            state.count -= 1
            guard state.count == 0 else { return }
            // The last local watcher left: stop listening to the channel.
            channels[topic.execution] = nil
            for read in state.reads { read.promise.fail(RedisError.unavailable("unsubscribed")) }
            if let connection = subscriber.connection {
                connection.sendWithoutReply(RESPCommand.buffer("UNSUBSCRIBE", keys.channel(state.execution)))
            }
        }
    }

    private func subscribe(_ state: ChannelState, on connection: RedisConnection) {
        unconfirmed[state.execution, default: 0] += 1
        connection.sendWithoutReply(RESPCommand.buffer("SUBSCRIBE", keys.channel(state.execution)))
    }

    /// Reads the history of every waiting subscription of a confirmed channel.
    private func runReads(_ state: ChannelState) {
        guard commands.isReady, !state.reads.isEmpty else { return }
        let reads = state.reads
        state.reads = []
        for read in reads { self.read(read, state) }
    }

    private func read(_ read: PendingRead, _ state: ChannelState) {
        let generation = state.generation
        let arguments: [[UInt8]] = [Array(read.topic.workspace.utf8), Array((read.since.map(String.init) ?? "").utf8)]
        scripts.read.run(on: commands, keys: [keys.meta(state.execution), keys.log(state.execution)], arguments: arguments)
            .whenComplete { [self] result in
                guard channels[state.execution] === state else {
                    return read.promise.fail(RedisError.unavailable("unsubscribed"))
                }
                guard state.generation == generation else {
                    // The channel was lost and subscribed again meanwhile: read again, under the new subscription.
                    state.reads.append(read)
                    if state.confirmed { runReads(state) }
                    return
                }
                switch result {
                case .success(let reply):
                    do {
                        read.promise.succeed(try subscribeResult(reply, read, state))
                    } catch {
                        read.promise.fail(error)
                    }
                case .failure(RedisError.unavailable):
                    // Read again once Redis is back (`connectionsChanged`); the watcher stays connected meanwhile.
                    state.reads.append(read)
                case .failure(let error):
                    logger.error("history read failed", metadata: ["execution": "\(state.execution)", "error": "\(error)"])
                    read.promise.fail(error)
                }
            }
    }

    private func subscribeResult(_ reply: RESPValue, _ read: PendingRead, _ state: ChannelState) throws -> SubscribeResult {
        guard case .array(let items) = reply, case .integer(let ok)? = items.first else {
            throw BrokerError.failed("unexpected reply to the read script")
        }
        // Another workspace owns this execution id: nothing of it is this watcher's.
        guard ok == 1 else { return SubscribeResult(headSeq: 0, replay: [], truncatedFirstSeq: nil) }
        guard items.count == 4, case .integer(let headValue) = items[1], case .integer(let firstValue) = items[2],
            case .array(let entries) = items[3]
        else { throw BrokerError.failed("unexpected reply to the read script") }
        let head = UInt64(headValue)
        if state.known == nil {
            // Everything up to the head is in history; everything after it arrives on the confirmed channel.
            state.known = max(head, state.maxSeen)
        }
        let replay = entries.compactMap { event(fromEntry: $0, state) }
        guard let since = read.since, since != head else {
            return SubscribeResult(headSeq: head, replay: [], truncatedFirstSeq: nil)
        }
        let firstHeld = firstValue > 0 ? UInt64(firstValue) : head + 1
        if since > head {
            return SubscribeResult(headSeq: head, replay: replay, truncatedFirstSeq: firstHeld)
        }
        return SubscribeResult(headSeq: head, replay: replay, truncatedFirstSeq: firstHeld > since + 1 ? firstHeld : nil)
    }

    /// An XRANGE entry `[id, ["e", json]]` as an encoded event (from the recent cache when it is there).
    private func event(fromEntry entry: RESPValue, _ state: ChannelState) -> EncodedEvent? {
        guard case .array(let parts) = entry, parts.count == 2, case .array(let fields) = parts[1], fields.count >= 2,
            case .bulk(let json) = fields[1]
        else { return nil }
        return encoded(json, state)
    }

    private func encoded(_ json: [UInt8], _ state: ChannelState) -> EncodedEvent? {
        guard let header = DeliveredEventHeader.parse(json) else { return nil }
        return encoded(json, header: header, state)
    }

    private func encoded(_ json: [UInt8], header: DeliveredEventHeader, _ state: ChannelState) -> EncodedEvent? {
        guard header.topic.execution == state.execution else { return nil }
        if let cached = state.recent[header.seq] { return cached }
        let event = encoder.encode(header, json: String(decoding: json, as: UTF8.self))
        state.remember(event)
        return event
    }

    // MARK: Live events

    private func received(_ push: RedisPush) {
        switch push {
        case .subscribed(let channel):
            guard let execution = keys.execution(ofChannel: channel) else { return }
            let left = (unconfirmed[execution] ?? 1) - 1
            unconfirmed[execution] = left > 0 ? left : nil
            guard left <= 0, let state = channels[execution], !state.confirmed else { return }
            state.confirmed = true
            state.generation += 1
            // Whatever was published while the channel was not subscribed is in history: read it before going on.
            if state.known != nil { backfill(state) }
            runReads(state)
        case .unsubscribed:
            break
        case .message(let channel, let payload):
            guard let execution = keys.execution(ofChannel: channel), let state = channels[execution] else { return }
            guard let header = DeliveredEventHeader.parse(payload) else {
                return normalizeSeed(payload, execution: execution)
            }
            guard let event = encoded(payload, header: header, state) else { return }
            handOn(event, state)
        }
    }

    /// Hands a live event on in seq order: a seq already handed on is dropped, a gap is filled from history first.
    private func handOn(_ event: EncodedEvent, _ state: ChannelState) {
        if state.held != nil {
            if state.held!.count >= ChannelState.maxHeld { state.held!.removeAll() }
            state.held!.append(event)
            return
        }
        guard let known = state.known else {
            state.maxSeen = max(state.maxSeen, event.seq)
            return forward(event, state)
        }
        // A seq at or below the last one handed on arrives live only if the execution's numbering started again
        // (Redis lost its data, or the counter expired while the channel stayed watched): check with Redis.
        if event.seq > known + 1 || event.seq <= known {
            state.held = [event]
            return backfill(state)
        }
        state.known = event.seq
        forward(event, state)
    }

    /// Reads history after `known`, hands it on, then the events held meanwhile. The execution's head seq is read
    /// with it: a head below `known` means its numbering started again, and everything from seq 1 is handed on.
    private func backfill(_ state: ChannelState) {
        guard let known = state.known else { return }
        if state.held == nil { state.held = [] }
        guard commands.isReady, !state.backfilling else {
            state.backfillPending = true
            return
        }
        state.backfillPending = false
        state.backfilling = true
        let generation = state.generation
        // Pipelined on one connection: both answers describe the same moment.
        let head = commands.send(RESPCommand.buffer("HGET", keys.meta(state.execution), "seq"))
        let range = commands.send(RESPCommand.buffer("XRANGE", keys.log(state.execution), "\(known + 1)-0", "+"))
        head.and(range).whenComplete { [self] result in
            guard channels[state.execution] === state else { return }
            state.backfilling = false
            guard state.generation == generation else {
                // Sent before the channel was lost and subscribed again: the new confirmation reads again.
                if state.confirmed { backfill(state) }
                return
            }
            switch result {
            case .success((let headReply, .array(let entries))):
                var headSeq: UInt64 = 0
                if case .bulk(let digits) = headReply { headSeq = UInt64(String(decoding: digits, as: UTF8.self)) ?? 0 }
                if headSeq < known {
                    logger.warning("an execution's numbering started again (Redis lost its data?); handing on from seq 1",
                        metadata: ["execution": "\(state.execution)", "last_seq": "\(known)", "head": "\(headSeq)"])
                    state.known = 0
                    state.recent.removeAll()
                    state.recentOrder.removeAll()
                    return backfill(state)
                }
                var last = known
                for entry in entries {
                    guard let event = event(fromEntry: entry, state), event.seq > last else { continue }
                    last = event.seq
                    forward(event, state)
                }
                // What history no longer holds is gone for this hub too; watchers see the gap and resync.
                for event in (state.held ?? []).sorted(by: { $0.seq < $1.seq }) where event.seq > last {
                    last = event.seq
                    forward(event, state)
                }
                state.known = last
                state.held = nil
                if state.backfillPending { backfill(state) }
            case .success, .failure:
                // Redis went away (read again once it is back) or answered oddly (read again in a second); live
                // events stay held meanwhile.
                if case .success = result { logger.error("unexpected answer to a backfill read", metadata: ["execution": "\(state.execution)"]) }
                state.backfillPending = true
                scheduleBackfillRetry(state)
            }
        }
    }

    private func scheduleBackfillRetry(_ state: ChannelState) {
        guard !state.retryScheduled else { return }
        state.retryScheduled = true
        loop.assumeIsolated().scheduleTask(in: .seconds(1)) { [self] in
            state.retryScheduled = false
            guard channels[state.execution] === state, state.backfillPending, state.confirmed else { return }
            backfill(state)
        }
    }

    private func forward(_ event: EncodedEvent, _ state: ChannelState) {
        guard let routers = state.routers[event.topic] else { return }
        for (id, entry) in routers {
            outgoing[id, default: (entry.router, [])].events.append(event)
        }
        // Usually the end of the pub/sub read delivers it (`deliverForwarded`); events forwarded outside a read (a
        // backfill's reply) go with this task.
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.execute { [self] in
            flushScheduled = false
            deliverForwarded()
        }
    }

    /// Hands the events forwarded since the last call to the routers, in order: at once to a router on this loop,
    /// whose connections are then flushed, so that a watcher's events of one read from Redis share one write before
    /// the loop reads other connections; with one hop per other event loop.
    private func deliverForwarded() {
        guard !outgoing.isEmpty else { return }
        let batches = outgoing
        outgoing.removeAll(keepingCapacity: true)
        for (_, batch) in batches {
            let router = batch.router
            let events = batch.events
            if router.eventLoop.inEventLoop {
                router.deliverNow(events)
            } else {
                router.eventLoop.execute { router.deliver(events) }
            }
        }
    }

    // MARK: Seed-format messages

    /// Another producer PUBLISHed `{"event","execution_id","node_key","data","timestamp"}` to the channel. It is
    /// stored and published as a hub event through the same script as ingestion, with an idempotency key derived
    /// from the message, so that of all the hubs that received it exactly one turns it into an event.
    private func normalizeSeed(_ payload: [UInt8], execution: String) {
        var event: ProgressEvent
        do {
            event = try seedDecoder.decodeSeed(payload, now: clock())
        } catch {
            logger.warning("dropping a message on an execution channel that is not a valid event",
                metadata: ["execution": "\(execution)", "error": "\(error)"])
            return
        }
        guard event.topic.execution == execution else {
            logger.warning("dropping a message whose execution_id is not its channel's", metadata: ["execution": "\(execution)"])
            return
        }
        if event.idempotencyKey == nil {
            event.idempotencyKey = "seed:" + Hex.encode(Digest.sha1(payload).prefix(16))
        }
        store([event]).whenComplete { [self] result in
            switch result {
            case .success:
                break
            case .failure(BrokerError.executionOwnedElsewhere(_, let owner)):
                    logger.warning(owner.isEmpty ? "dropping a message for an execution no workspace owns yet"
                    : "dropping a message whose workspace does not own the execution", metadata: ["execution": "\(execution)"])
            case .failure(let error):
                logger.warning("could not store a message published on an execution channel",
                    metadata: ["execution": "\(execution)", "error": "\(error)"])
            }
        }
    }
}
