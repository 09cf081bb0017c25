import CoreMetrics

/// The hub's metrics, made once per server through a swift-metrics factory (Prometheus in `hub serve`).
///
/// Labels are bounded sets (transport, reason): never an execution, a workspace or a user. Updates on the hot path are
/// per event per event loop, not per subscriber: a fan-out to 10,000 watchers on one loop is one counter add and one
/// histogram sample.
public final class HubMetrics: Sendable {
    public enum Transport: String, Sendable, CaseIterable {
        case webSocket = "websocket"
        case sse
    }

    /// Why a watcher's connection or stream was refused.
    public enum Refusal: String, Sendable, CaseIterable {
        case originNotAllowed = "origin_not_allowed"
        case unauthenticated
        case invalidToken = "invalid_token"
        case forbidden
        case tooManyStreams = "too_many_streams"
        case unavailable
        case badHandshake = "bad_handshake"
        case draining
        case tooManyConnections = "too_many_connections"
    }

    /// Open watcher connections: WebSocket sessions on `/v1/ws` and SSE streams.
    private let connections: [Meter]
    /// Live subscriptions (each SSE stream is one).
    public let subscriptions: Meter
    /// Events stored from ingestion requests to this hub (duplicates by idempotency key are not counted).
    public let eventsIngested: Counter
    /// Ingested events answered as duplicates of an earlier idempotency key.
    public let eventsDuplicate: Counter
    /// Events handed to a watcher's connection, live or replayed, once per watcher.
    public let eventsDelivered: Counter
    /// From the hub having an event (ingested here, or arrived from Redis) to its write to the first watcher on each
    /// event loop.
    public let ingestToWrite: Timer
    private let slowConsumers: [Counter]
    /// Subscriptions that asked for history (`since` / `Last-Event-ID`), and those whose history no longer reached back.
    public let replays: Counter
    public let truncatedReplays: Counter
    /// Reconnections of the Redis connections after a loss.
    public let redisReconnects: Counter
    private let refusals: [Counter]

    public static let ingestToWriteLabel = "hub_ingest_to_write_seconds"

    public init(factory: MetricsFactory) {
        connections = Transport.allCases.map {
            Meter(label: "hub_open_connections", dimensions: [("transport", $0.rawValue)], factory: factory)
        }
        subscriptions = Meter(label: "hub_subscriptions", factory: factory)
        eventsIngested = Counter(label: "hub_events_ingested_total", factory: factory)
        eventsDuplicate = Counter(label: "hub_events_duplicate_total", factory: factory)
        eventsDelivered = Counter(label: "hub_events_delivered_total", factory: factory)
        ingestToWrite = Timer(label: Self.ingestToWriteLabel, factory: factory)
        slowConsumers = Transport.allCases.map {
            Counter(label: "hub_slow_consumer_disconnects_total", dimensions: [("transport", $0.rawValue)], factory: factory)
        }
        replays = Counter(label: "hub_replays_total", factory: factory)
        truncatedReplays = Counter(label: "hub_replays_truncated_total", factory: factory)
        redisReconnects = Counter(label: "hub_redis_reconnects_total", factory: factory)
        refusals = Refusal.allCases.map {
            Counter(label: "hub_connections_refused_total", dimensions: [("reason", $0.rawValue)], factory: factory)
        }
        // Every series exists from the start, at zero, so a scrape sees it before the first event.
        for meter in connections { meter.set(0) }
        subscriptions.set(0)
    }

    /// Metrics that go nowhere (unit tests, tools).
    public static let none = HubMetrics(factory: NOOPMetricsHandler.instance)

    public func connections(_ transport: Transport) -> Meter {
        connections[Transport.allCases.firstIndex(of: transport)!]
    }

    public func slowConsumerDisconnects(_ transport: Transport) -> Counter {
        slowConsumers[Transport.allCases.firstIndex(of: transport)!]
    }

    public func refused(_ reason: Refusal) -> Counter {
        refusals[Refusal.allCases.firstIndex(of: reason)!]
    }
}
