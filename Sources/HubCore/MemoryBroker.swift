import NIOConcurrencyHelpers
import NIOCore

/// The embedded broker: history in memory, fan-out to the event loops that have watchers. One process only.
///
/// History per execution is kept `historyTTL` after its last event and bounded in events per execution and in
/// total (the least recently active executions lose their history first). The seq counter outlives the history
/// (`counterTTL`), so an execution that goes quiet and resumes continues its numbering.
public final class MemoryBroker: Broker {
    public struct Configuration: Sendable {
        public var historyTTLMilliseconds: Int64 = 5 * 60 * 1000
        public var maxEventsPerExecution = 1000
        public var maxEventsTotal = 100_000
        public var counterTTLMilliseconds: Int64 = 24 * 3600 * 1000
        public init() {}
    }

    private struct RouterRef {
        let router: LoopRouter
        var count: Int
    }

    /// A class, so that a publish appends to the history in place: with a struct, taking the log out of the table
    /// and appending copied the whole history (retaining every event in it) on every publish, which made a publish
    /// cost grow with the execution's history (about 0.1 ms per publish at a few hundred events).
    /// Touched only under the broker's lock (hence `@unchecked Sendable`).
    private final class ExecutionLog: @unchecked Sendable {
        var events: [EncodedEvent] = []
        var lastSeq: UInt64 = 0
        var lastEventAt: Int64 = 0
        var idempotency: [String: UInt64] = [:]
        var idempotencyOrder = CircularBuffer<String>()
        var routers: [ObjectIdentifier: RouterRef] = [:]
    }

    private struct State {
        var logs: [TopicKey: ExecutionLog] = [:]
        var totalEvents = 0
        /// Per event loop, the events published since its delivery task was scheduled and not yet handed to its
        /// router: the publishes of one loop tick reach each router as one batch, in one hop.
        var pending: [ObjectIdentifier: (router: LoopRouter, events: [EncodedEvent])] = [:]

        /// The execution's log, created (and entered in the table) when it has none.
        mutating func log(for topic: TopicKey) -> ExecutionLog {
            if let log = logs[topic] { return log }
            let log = ExecutionLog()
            logs[topic] = log
            return log
        }
    }

    public let configuration: Configuration
    private let state = NIOLockedValueBox(State())
    private let clock: @Sendable () -> Int64

    /// - Parameter clock: Unix milliseconds; injectable so that expiry is testable without waiting.
    public init(configuration: Configuration = .init(), clock: @escaping @Sendable () -> Int64) {
        self.configuration = configuration
        self.clock = clock
    }

    /// The embedded broker is always there.
    public var isAvailable: Bool { true }

    /// Events held in history across all executions.
    public var storedEventCount: Int { state.withLockedValue { $0.totalEvents } }

    public func publish(_ events: [ProgressEvent], on eventLoop: EventLoop, encoder: EventEncoder) -> EventLoopFuture<[PublishResult]> {
        let now = clock()
        let config = configuration
        let results = state.withLockedValue { state -> [PublishResult] in
            var results: [PublishResult] = []
            results.reserveCapacity(events.count)
            // Deliveries per router, in order, so each loop gets one hop for the whole batch. (A router per event
            // loop at most: a list, searched, costs less than a dictionary.)
            var outgoing: [(id: ObjectIdentifier, router: LoopRouter, events: [EncodedEvent])] = []
            for event in events {
                let log = state.log(for: event.topic)
                if log.lastEventAt + config.historyTTLMilliseconds < now, !log.events.isEmpty {
                    state.totalEvents -= log.events.count
                    log.events.removeAll()
                }
                if let key = event.idempotencyKey, let seq = log.idempotency[key] {
                    results.append(PublishResult(topic: event.topic, seq: seq, duplicate: true))
                    continue
                }
                log.lastSeq += 1
                log.lastEventAt = now
                let encoded = encoder.encode(SequencedEvent(seq: log.lastSeq, event: event))
                log.events.append(encoded)
                state.totalEvents += 1
                if log.events.count > config.maxEventsPerExecution {
                    let drop = log.events.count - config.maxEventsPerExecution
                    log.events.removeFirst(drop)
                    state.totalEvents -= drop
                }
                if let key = event.idempotencyKey {
                    log.idempotency[key] = log.lastSeq
                    log.idempotencyOrder.append(key)
                    if log.idempotencyOrder.count > 2 * config.maxEventsPerExecution {
                        let old = log.idempotencyOrder.removeFirst()
                        log.idempotency[old] = nil
                    }
                }
                for (id, ref) in log.routers {
                    if let i = outgoing.firstIndex(where: { $0.id == id }) {
                        outgoing[i].events.append(encoded)
                    } else {
                        outgoing.append((id, ref.router, [encoded]))
                    }
                }
                results.append(PublishResult(topic: event.topic, seq: log.lastSeq, duplicate: false))
            }
            if state.totalEvents > config.maxEventsTotal { Self.evict(&state, below: config.maxEventsTotal) }
            // Queued under the lock: each loop receives every execution's events in seq order. A loop whose delivery
            // has not happened yet gets these in the same batch (several publishes read at once, such as the
            // pipelined requests of one engine, reach each watcher in one write). The publishing loop's own router
            // is usually handed its batch at the end of the read (`deliverPending`); the task is for the others.
            for (id, router, batch) in outgoing {
                if state.pending[id] != nil {
                    state.pending[id]!.events.append(contentsOf: batch)
                    continue
                }
                state.pending[id] = (router, batch)
                router.eventLoop.execute { [self] in
                    if let events = takePending(for: router) { router.deliver(events) }
                }
            }
            return results
        }
        return eventLoop.makeSucceededFuture(results)
    }

    @discardableResult
    public func deliverPending(to router: LoopRouter) -> Bool {
        guard let events = takePending(for: router) else { return false }
        router.deliverNow(events)
        return true
    }

    /// The events queued for `router`, taken out of the queue (nil: none).
    private func takePending(for router: LoopRouter) -> [EncodedEvent]? {
        state.withLockedValue { $0.pending.removeValue(forKey: ObjectIdentifier(router))?.events }
    }

    /// Drops the history of the least recently active executions until at most `limit` events remain.
    private static func evict(_ state: inout State, below limit: Int) {
        let order = state.logs.filter { !$0.value.events.isEmpty }.sorted { $0.value.lastEventAt < $1.value.lastEventAt }
        for (topic, _) in order where state.totalEvents > limit {
            let n = state.logs[topic]!.events.count
            state.logs[topic]!.events.removeAll()
            state.totalEvents -= n
        }
    }

    public func subscribe(_ topic: TopicKey, since: UInt64?, router: LoopRouter) -> EventLoopFuture<SubscribeResult> {
        let now = clock()
        let ttl = configuration.historyTTLMilliseconds
        let result = state.withLockedValue { state -> SubscribeResult in
            let log = state.log(for: topic)
            log.routers[ObjectIdentifier(router), default: RouterRef(router: router, count: 0)].count += 1
            if log.lastEventAt + ttl < now, !log.events.isEmpty {
                state.totalEvents -= log.events.count
                log.events.removeAll()
            }
            guard let since, since != log.lastSeq else {
                return SubscribeResult(headSeq: log.lastSeq, replay: [], truncatedFirstSeq: nil)
            }
            if since > log.lastSeq {
                // The client saw numbers this execution no longer has (the hub restarted, or the execution was
                // forgotten and started again): say so, and replay everything held.
                let first = log.events.first?.seq ?? log.lastSeq + 1
                return SubscribeResult(headSeq: log.lastSeq, replay: log.events, truncatedFirstSeq: first)
            }
            let firstHeld = log.events.first?.seq ?? log.lastSeq + 1
            let truncated: UInt64? = firstHeld > since + 1 ? firstHeld : nil
            let replay = log.events.filter { $0.seq > since }
            return SubscribeResult(headSeq: log.lastSeq, replay: replay, truncatedFirstSeq: truncated)
        }
        return router.eventLoop.makeSucceededFuture(result)
    }

    public func unsubscribe(_ topic: TopicKey, router: LoopRouter) {
        state.withLockedValue { state in
            guard let log = state.logs[topic] else { return }
            let id = ObjectIdentifier(router)
            if let ref = log.routers[id] {
                log.routers[id] = ref.count > 1 ? RouterRef(router: ref.router, count: ref.count - 1) : nil
            }
            // An execution nobody watches and that never had an event leaves no trace.
            if log.routers.isEmpty && log.lastSeq == 0 {
                state.logs[topic] = nil
            }
        }
    }

    /// Expires history `historyTTL` after each execution's last event, and forgets unwatched executions
    /// `counterTTL` after it. The server calls this periodically.
    public func sweep() {
        let now = clock()
        let config = configuration
        state.withLockedValue { state in
            for (topic, log) in state.logs {
                if log.lastEventAt + config.historyTTLMilliseconds < now && !log.events.isEmpty {
                    state.totalEvents -= log.events.count
                    state.logs[topic]!.events.removeAll()
                }
                if log.lastEventAt + config.counterTTLMilliseconds < now && log.routers.isEmpty {
                    state.totalEvents -= state.logs[topic]!.events.count
                    state.logs[topic] = nil
                }
            }
        }
    }

    /// The number of routers (event loops) registered for `topic`, for tests.
    public func routerCount(for topic: TopicKey) -> Int {
        state.withLockedValue { $0.logs[topic]?.routers.count ?? 0 }
    }
}
