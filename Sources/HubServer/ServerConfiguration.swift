import HubCore
import HubProtocol
import HubRedis

/// Everything `hub serve` can be told. Every limit is a named setting with a safe default.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Event loop threads (0: one per core).
    public var threads = 0

    /// Largest frame and message a watcher may send on the hub's own routes (client ops are small JSON).
    public var maxFrameSize = 64 * 1024
    public var maxMessageSize = 64 * 1024
    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    public var maxHeaderBytes = 8 * 1024
    /// Seconds a client has to send a complete request head (slow senders are answered 408 and closed).
    public var requestTimeoutSeconds = 10.0
    /// Connections one client address may hold open at once (0: no limit). Further ones are answered 429 and closed.
    /// Behind a proxy every connection comes from the proxy's address: limit there, or raise this.
    public var maxConnectionsPerAddress = 0

    /// Seconds between WebSocket pings to a quiet peer (0 disables).
    public var heartbeatSeconds = 15.0
    /// Seconds a peer has to answer a ping before it is dropped.
    public var pongTimeoutSeconds = 10.0
    /// Seconds to wait for the peer's close frame after the hub sent one.
    public var closeTimeoutSeconds = 5.0

    /// Bytes that may wait to be written to one connection before it counts as a slow consumer and is closed.
    public var outboundBudget = 1024 * 1024
    /// Initial receive buffer per connection; it grows only when reads fill it.
    public var receiveBufferInitial = 256

    /// Whether permessage-deflate is offered, and the largest window the hub compresses with.
    public var deflate = true
    public var deflateWindowBits = 15

    // MARK: Execution streams

    /// Secret that signs watchers' HS256 tokens (`hub token` uses it too). Empty: a random one is made at start,
    /// so only tokens minted by this process verify.
    public var tokenSecret = ""
    /// Secret the engine signs its progress reports with (HMAC-SHA256 over timestamp and body). Empty: random.
    public var engineSecret = ""
    /// Seconds an engine timestamp may differ from the hub's clock before the request counts as stale.
    public var engineClockSkewSeconds = 300
    /// Largest ingestion body in bytes (413 beyond).
    public var maxIngestBytes = 1024 * 1024
    /// Bytes of a node's output shown to watchers as `output_preview` (0: none; keys and size are always shown).
    public var outputPreviewBytes = 200
    /// Browser origins allowed to open streams; "*" allows any. Requests without an Origin header are allowed.
    public var allowedOrigins: [String] = ["*"]
    /// Subscriptions one WebSocket may hold.
    public var maxSubscriptionsPerSocket = 100
    /// Concurrent SSE streams per workspace.
    public var maxSSEPerWorkspace = 5
    /// Seconds before a stream is closed with a hint to reconnect (bounds how long any connection lives).
    public var maxConnectionAgeSeconds = 1800.0
    /// Reconnection delay suggested to EventSource clients, milliseconds.
    public var sseRetryMilliseconds = 3000
    /// Seconds of history kept after an execution's last event.
    public var historyTTLSeconds = 300.0
    /// History bounds.
    public var maxEventsPerExecution = 1000
    public var maxEventsTotal = 100_000

    /// Seconds a drain (SIGTERM) waits for watchers to leave before it closes what is left.
    public var drainTimeoutSeconds = 25.0

    /// Redis that makes many hubs one (`--redis`); nil runs the embedded in-process broker.
    public var redis: RedisConfiguration?

    /// Serve the multiplexed WebSocket route `/v1/ws` (off: browsers fall back to SSE).
    public var webSocketEnabled = true
    /// The demo page at `/demo/` and simulated executions in workspace `demo`.
    public var demo = false
    /// Seconds between rounds of simulated executions, and their speed factor.
    public var demoIntervalSeconds = 12.0
    public var demoSpeed = 1.0
    /// A folder with hub.js and the demo files instead of the bundled ones.
    public var webRoot: String?

    /// The conformance-test echo route `/ws/echo`: off unless asked for.
    public var echo = false
    /// Message and frame limit on the echo route (Autobahn sends 16 MiB messages in cases 9.*).
    public var echoMaxMessageSize = 20 * 1024 * 1024

    public init() {}

    var memoryBrokerConfiguration: MemoryBroker.Configuration {
        var c = MemoryBroker.Configuration()
        c.historyTTLMilliseconds = Int64(historyTTLSeconds * 1000)
        c.maxEventsPerExecution = maxEventsPerExecution
        c.maxEventsTotal = maxEventsTotal
        return c
    }

    var redisBrokerConfiguration: RedisBroker.Configuration? {
        guard let redis else { return nil }
        var c = RedisBroker.Configuration()
        c.redis = redis
        c.historyTTLMilliseconds = Int64(historyTTLSeconds * 1000)
        c.maxEventsPerExecution = maxEventsPerExecution
        return c
    }

    var deflatePolicy: PerMessageDeflate.Policy {
        .init(enabled: deflate, maxWindowBits: deflateWindowBits)
    }

    /// Checks every setting; the error says which one and why.
    public func validate() throws(ConfigurationError) {
        func require(_ ok: Bool, _ name: String, _ why: String) throws(ConfigurationError) {
            if !ok { throw ConfigurationError(setting: name, message: why) }
        }
        // Durations become nanosecond counts: each must be a finite number of at most a year.
        for (name, seconds) in [("request-timeout", requestTimeoutSeconds), ("heartbeat", heartbeatSeconds),
            ("pong-timeout", pongTimeoutSeconds), ("close-timeout", closeTimeoutSeconds),
            ("max-connection-age", maxConnectionAgeSeconds), ("history-ttl", historyTTLSeconds),
            ("drain-timeout", drainTimeoutSeconds), ("demo-interval", demoIntervalSeconds)]
        {
            try require(seconds.isFinite && seconds <= 366 * 86400, name, "must be a finite number of seconds, at most a year")
        }
        try require((0...65535).contains(port), "port", "must be 0...65535")
        try require(threads >= 0, "threads", "must be 0 or more")
        try require(maxFrameSize >= 125, "max-frame-size", "must be at least 125 bytes")
        try require(maxMessageSize >= maxFrameSize || maxMessageSize >= 125, "max-message-size", "must be at least 125 bytes")
        try require(maxHeaderBytes >= 256, "max-header-bytes", "must be at least 256 bytes")
        try require(requestTimeoutSeconds > 0, "request-timeout", "must be more than 0 seconds")
        try require(maxConnectionsPerAddress >= 0, "max-connections-per-address", "must be 0 (no limit) or more")
        try require(heartbeatSeconds >= 0, "heartbeat", "must be 0 (off) or more seconds")
        try require(pongTimeoutSeconds > 0, "pong-timeout", "must be more than 0 seconds")
        try require(closeTimeoutSeconds > 0, "close-timeout", "must be more than 0 seconds")
        try require(outboundBudget >= 1024, "outbound-budget", "must be at least 1024 bytes")
        try require((64...65536).contains(receiveBufferInitial), "receive-buffer", "must be 64...65536 bytes")
        try require((9...15).contains(deflateWindowBits), "deflate-window-bits", "must be 9...15")
        try require(tokenSecret.isEmpty || tokenSecret.utf8.count >= 16, "token-secret", "must be at least 16 bytes")
        try require(engineSecret.isEmpty || engineSecret.utf8.count >= 16, "engine-secret", "must be at least 16 bytes")
        try require(engineClockSkewSeconds > 0, "engine-clock-skew", "must be more than 0 seconds")
        try require(maxIngestBytes >= 1024, "max-ingest-bytes", "must be at least 1024 bytes")
        try require((0...4096).contains(outputPreviewBytes), "output-preview-bytes", "must be 0...4096")
        try require(!allowedOrigins.isEmpty, "allowed-origin", "needs at least one origin, or *")
        try require(maxSubscriptionsPerSocket >= 1, "max-subscriptions", "must be at least 1")
        try require(maxSSEPerWorkspace >= 1, "max-sse-per-workspace", "must be at least 1")
        try require(maxConnectionAgeSeconds > 0, "max-connection-age", "must be more than 0 seconds")
        try require(sseRetryMilliseconds >= 0, "sse-retry", "must be 0 or more milliseconds")
        try require(historyTTLSeconds > 0, "history-ttl", "must be more than 0 seconds")
        try require(maxEventsPerExecution >= 1, "max-events-per-execution", "must be at least 1")
        try require(maxEventsTotal >= maxEventsPerExecution, "max-events-total", "must be at least max-events-per-execution")
        try require(demoIntervalSeconds >= 1, "demo-interval", "must be at least 1 second")
        try require(demoSpeed > 0, "demo-speed", "must be more than 0")
        try require(drainTimeoutSeconds > 0, "drain-timeout", "must be more than 0 seconds")
        try require(echoMaxMessageSize >= 125, "echo-max-message-size", "must be at least 125 bytes")
        if let redis {
            // A subscription's replay reads an execution's whole history in one reply, and the RESP reader refuses
            // replies of more than 2^20 elements (RESPReader.defaultMaxPendingElements).
            try require(maxEventsPerExecution <= 1_000_000, "max-events-per-execution",
                "must be at most 1000000 with Redis (a replay is one reply)")
            do {
                try redis.validate()
            } catch {
                throw ConfigurationError(setting: "redis", message: error.message)
            }
        }
    }
}

public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let setting: String
    public let message: String
    public var description: String { "invalid setting \(setting): \(message)" }
}

@inline(__always)
func nanoseconds(_ seconds: Double) -> Int64 { Int64(seconds * 1_000_000_000) }
