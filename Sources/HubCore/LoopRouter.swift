import NIOCore

/// Where a subscription's events go: a WebSocket session or an SSE stream. Called on the sink's event loop.
///
/// A class to subclass, not a protocol: the router's fan-out reaches each sink through an unmanaged reference
/// (`Subscription.sinkReference`), which takes a class type; a protocol's existential was retained and released for
/// every delivery. Nothing in the router holds a sink: it must stay alive until `write` returns (even when it closes
/// its connection inside the call), and it must unsubscribe all its subscriptions before it goes away.
open class EventSink {
    /// The router's `tick` when it last wrote a live event to this sink (kept by the router).
    public internal(set) final var routedTick: UInt32 = 0

    public init() {}

    /// Writes the event.
    /// - Parameter replay: true for events read from history for this subscription, false for live ones.
    /// - Parameter flush: hand it to the kernel at once (the sink's first live event of the loop tick, alone of its
    ///   execution); otherwise the sink flushes once per loop tick, so that the frames of a burst share one write.
    open func write(_ event: EncodedEvent, for subscription: Subscription, replay: Bool, flush: Bool) {
        preconditionFailure("a sink overrides write")
    }
}

/// One watcher's interest in one execution.
public final class Subscription {
    public let topic: TopicKey
    /// Not retained, and not checked on each delivery (the fan-out reads it for every subscriber): every sink
    /// unsubscribes all its subscriptions when its connection closes or its handler leaves the pipeline
    /// (`HubSession.didClose`, `SSEHandler.finish`), so the router never reaches a sink that is gone.
    let sinkReference: Unmanaged<EventSink>
    public var sink: EventSink { sinkReference.takeUnretainedValue() }
    /// The newest seq this subscription has received; the router skips anything at or below it.
    public var lastSeq: UInt64
    /// False once unsubscribed: queued deliveries for it are dropped.
    public internal(set) var active = true
    /// Live events that arrived while the broker's answer was pending (nil once the subscription is live).
    var held: [EncodedEvent]?

    public init(topic: TopicKey, sink: EventSink, lastSeq: UInt64) {
        self.topic = topic
        self.sinkReference = Unmanaged.passUnretained(sink)
        self.lastSeq = lastSeq
    }
}

/// The subscription table of one event loop. The broker hands it each event once per loop (one thread hop per
/// event per loop, not per subscriber), and it writes the same encoded buffers to every local subscription.
///
/// Confined to its event loop: every method must be called on `eventLoop`.
public final class LoopRouter: @unchecked Sendable {
    public let eventLoop: EventLoop
    private var table: [TopicKey: [Subscription]] = [:]
    private let metrics: HubMetrics
    /// Numbers the loop ticks that deliver something (it wraps; a stale match only defers one flush to the pass).
    public private(set) var tick: UInt32 = 0
    /// True from the first delivery of a loop tick until the tick's tasks run.
    private var deliveredThisTick = false

    /// The loop's flush pass (set by the server): flushes every connection that has frames waiting.
    public var flushPass: () -> Void = {}

    public init(eventLoop: EventLoop, metrics: HubMetrics = .none) {
        self.eventLoop = eventLoop
        self.metrics = metrics
    }

    /// Number of local subscriptions (for metrics and tests).
    public var subscriptionCount: Int { table.values.reduce(0) { $0 + $1.count } }

    public func subscriptions(for topic: TopicKey) -> [Subscription] { table[topic] ?? [] }

    /// Subscribes `sink` to `topic`: registers with the broker, writes the replay, then live events follow.
    /// Live events that arrive before the broker's answer are held and written after the replay, minus any the
    /// replay already contained, so the join has no gap and no duplicate whatever the broker's timing.
    /// - Parameter onReady: called with the broker's answer just before the replay is written.
    /// - Parameter onFailure: called when the broker cannot start the subscription; it is already removed.
    public func subscribe(_ topic: TopicKey, since: UInt64?, sink: EventSink, broker: Broker,
        onFailure: @escaping (Error) -> Void = { _ in },
        onReady: @escaping (Subscription, SubscribeResult) -> Void) -> Subscription
    {
        eventLoop.preconditionInEventLoop()
        let subscription = Subscription(topic: topic, sink: sink, lastSeq: 0)
        subscription.held = []
        table[topic, default: []].append(subscription)
        metrics.subscriptions.increment()
        if since != nil { metrics.replays.increment() }
        let answer = broker.subscribe(topic, since: since, router: self).assumeIsolated()
        answer.whenFailure { error in
            guard subscription.active else { return }
            self.unsubscribe(subscription, broker: broker)
            onFailure(error)
        }
        answer.whenSuccess { result in
            guard subscription.active else { return }
            let held = subscription.held ?? []
            subscription.held = nil
            // Without `since` the subscription starts live, after the head; with it, after `since` (or from the
            // start when `since` is beyond the head: numbering that no longer exists).
            if let since {
                subscription.lastSeq = since <= result.headSeq ? since : 0
            } else {
                subscription.lastSeq = result.headSeq
            }
            if since != nil, result.truncatedFirstSeq != nil { self.metrics.truncatedReplays.increment() }
            onReady(subscription, result)
            var written = 0
            // A write may close the sink's connection at once (a failed flush): stop there.
            for event in result.replay where event.seq > subscription.lastSeq {
                guard subscription.active else { break }
                subscription.lastSeq = event.seq
                subscription.sink.write(event, for: subscription, replay: true, flush: false)
                written += 1
            }
            for event in held where event.seq > subscription.lastSeq {
                guard subscription.active else { break }
                subscription.lastSeq = event.seq
                subscription.sink.write(event, for: subscription, replay: false, flush: false)
                written += 1
            }
            if written > 0 { self.metrics.eventsDelivered.increment(by: written) }
        }
        return subscription
    }

    public func unsubscribe(_ subscription: Subscription, broker: Broker) {
        eventLoop.preconditionInEventLoop()
        guard subscription.active else { return }
        subscription.active = false
        metrics.subscriptions.decrement()
        if var list = table[subscription.topic] {
            list.removeAll { $0 === subscription }
            table[subscription.topic] = list.isEmpty ? nil : list
        }
        broker.unsubscribe(subscription.topic, router: self)
    }

    /// Delivers `events` and flushes at once every connection they were staged for (outside the loop's task phase:
    /// at the end of a read that brought them).
    public func deliverNow(_ events: [EncodedEvent]) {
        deliver(events)
        flushPass()
    }

    /// Called by the broker on this loop, in seq order per topic. The brokers hand over everything published in one
    /// loop tick as one batch.
    ///
    /// A live event that is the only one of its execution in the delivery is flushed to each subscriber as it is
    /// written, so the first subscribers' bytes are on their way while the fan-out goes on (flushing after the whole
    /// fan-out made the median subscriber wait for every subscriber's user-space work) -- unless the router already
    /// wrote a live event to that sink in this loop tick (lone events reached this router twice in one tick, or the
    /// sink watches another execution of this delivery): then the event joins the write the loop's flush pass
    /// makes. Several events of one execution (published in the same tick: an engine's pipelined requests, a batch
    /// request, a backlog read from Redis) are written whole and flushed once per connection by the pass, so that
    /// each sink's frames of the tick share one write. (Taking a delivery's events as alone only when there was one
    /// event in it left the events of one Redis read, mostly of different executions, to the pass: a staged write
    /// more per delivery, and their subscribers waited for the whole fan-out.)
    public func deliver(_ events: [EncodedEvent]) {
        if !deliveredThisTick {
            deliveredThisTick = true
            tick &+= 1
            eventLoop.assumeIsolated().execute { self.deliveredThisTick = false }
        }
        // The executions with more than one event in this delivery.
        var repeated: Set<TopicKey> = []
        if events.count > 1 {
            var seen = Set<TopicKey>(minimumCapacity: events.count)
            for event in events where !seen.insert(event.topic).inserted { repeated.insert(event.topic) }
        }
        for event in events {
            guard let list = table[event.topic] else { continue }
            let alone = repeated.isEmpty || !repeated.contains(event.topic)
            var written = 0
            // `list` (a local copy) keeps every subscription alive, and each subscription's sink outlives it: the
            // fan-out reads them without retaining either.
            list.withUnsafeBufferPointer { subscriptions in
                for index in subscriptions.indices {
                    Unmanaged.passUnretained(subscriptions[index])._withUnsafeGuaranteedRef { subscription in
                        guard subscription.active else { return }
                        if subscription.held != nil {
                            subscription.held!.append(event)
                            return
                        }
                        guard event.seq > subscription.lastSeq else { return }
                        subscription.lastSeq = event.seq
                        subscription.sinkReference._withUnsafeGuaranteedRef { sink in
                            let flush = alone && sink.routedTick != tick
                            sink.routedTick = tick
                            sink.write(event, for: subscription, replay: false, flush: flush)
                        }
                        written += 1
                    }
                }
            }
            guard written > 0 else { continue }
            // One sample per event per loop, when its fan-out is done: every watcher's frame written (a lone event)
            // or staged for the loop's flush pass (a batch).
            metrics.ingestToWrite.recordNanoseconds(Int64(NIODeadline.now().uptimeNanoseconds &- event.encodedAt))
            metrics.eventsDelivered.increment(by: written)
        }
    }
}
