import NIOCore

/// What a publish did for one event.
public struct PublishResult: Equatable, Sendable {
    public var topic: TopicKey
    public var seq: UInt64
    /// True when the event's idempotency key was already stored: the original seq is returned and nothing is
    /// delivered again.
    public var duplicate: Bool

    public init(topic: TopicKey, seq: UInt64, duplicate: Bool) {
        self.topic = topic
        self.seq = seq
        self.duplicate = duplicate
    }
}

/// What a new subscription gets: where the execution stands, and the history it asked for.
public struct SubscribeResult: Sendable {
    /// The newest seq of the execution when the subscription started (0 when it has no event yet).
    public var headSeq: UInt64
    /// Stored events after `since`, oldest first (empty without `since`).
    public var replay: [EncodedEvent]
    /// Set when history no longer reaches back to `since + 1`: the first seq still held.
    public var truncatedFirstSeq: UInt64?

    public init(headSeq: UInt64, replay: [EncodedEvent], truncatedFirstSeq: UInt64?) {
        self.headSeq = headSeq
        self.replay = replay
        self.truncatedFirstSeq = truncatedFirstSeq
    }
}

public enum BrokerError: Error, Equatable, Sendable {
    /// The broker cannot store events now (Redis down); the engine should retry after the given seconds.
    case unavailable(retryAfterSeconds: Int)
    /// Event `index` of a batch names an execution that already belongs to workspace `owner` (the Redis broker keys
    /// executions by id, so one id serves one workspace). Nothing of the batch was stored.
    case executionOwnedElsewhere(index: Int, owner: String)
    /// The broker answered with an error that retrying will not cure.
    case failed(String)
}

/// Stores and fans out events. `MemoryBroker` is the embedded default; a Redis broker makes many hubs one.
///
/// Ordering contract: for each execution, `deliver` calls reach each router in seq order, and a subscription
/// sees replay then live events with no gap; a router drops events a subscription already has.
public protocol Broker: AnyObject, Sendable {
    /// Assigns seqs, stores, and fans out `events`; the future completes once they are stored.
    /// - Parameter encoder: owned by the caller's event loop; encodes each event once for every wire form.
    func publish(_ events: [ProgressEvent], on eventLoop: EventLoop, encoder: EventEncoder) -> EventLoopFuture<[PublishResult]>

    /// Registers `router` for live events of `topic` and returns the history after `since`, atomically with the
    /// registration. Called on the router's event loop; the future completes there.
    func subscribe(_ topic: TopicKey, since: UInt64?, router: LoopRouter) -> EventLoopFuture<SubscribeResult>

    /// Undoes one `subscribe` of `router` for `topic`.
    func unsubscribe(_ topic: TopicKey, router: LoopRouter)

    /// Whether the broker can store and deliver events now (false while Redis is unreachable). Any thread.
    var isAvailable: Bool { get }

    /// Called on the router's loop when a read that published events is complete. The embedded broker hands
    /// `router` at once the events published for it whose delivery is still queued, and flushes the connections
    /// they went to (`LoopRouter.deliverNow`), so that they are written before the loop reads other connections; the
    /// Redis broker sends the read's script calls. Returns whether events were handed over.
    @discardableResult
    func deliverPending(to router: LoopRouter) -> Bool
}

extension Broker {
    /// A broker that delivers only what comes back from elsewhere (Redis) has nothing to hand over early.
    @discardableResult
    public func deliverPending(to router: LoopRouter) -> Bool { false }
}
