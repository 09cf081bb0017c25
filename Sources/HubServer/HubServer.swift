import HubCore
import HubNative
import HubRedis
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus

/// The hub's listener: SwiftNIO carries the bytes, NIOHTTP1 parses requests, and the hub speaks WebSocket itself.
public final class HubServer: Sendable {
    public let configuration: ServerConfiguration
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let logger: Logger
    private let redis: RedisBroker?
    private let state: ServerState
    private let connections: ConnectionTable

    /// The bound port (useful when configured as 0).
    public var port: Int { channel.localAddress?.port ?? configuration.port }

    /// Binds and starts serving.
    public static func start(configuration: ServerConfiguration, logger: Logger) async throws -> HubServer {
        var configuration = configuration
        try configuration.validate()
        if configuration.tokenSecret.isEmpty {
            configuration.tokenSecret = randomSecret()
            logger.warning("no token secret configured (HUB_TOKEN_SECRET): using a random one; only this process can mint tokens")
        }
        if configuration.engineSecret.isEmpty {
            configuration.engineSecret = randomSecret()
            logger.warning("no engine secret configured (HUB_ENGINE_SECRET): using a random one; ingestion will refuse every request")
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[HubMetrics.ingestToWriteLabel] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5),
        ]
        let metrics = HubMetrics(factory: factory)
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let staticFiles = try StaticFiles(webRoot: configuration.webRoot)
        let demo = configuration.demo ? DemoRunner() : nil
        let broker: Broker
        let limiter: StreamLimiter
        var redisBroker: RedisBroker?
        if let redisConfiguration = configuration.redisBrokerConfiguration {
            let redis = RedisBroker(configuration: redisConfiguration, loop: group.next(), logger: logger,
                outputPreviewBytes: configuration.outputPreviewBytes, metrics: metrics, clock: ServerContext.systemWallClock)
            do {
                try await redis.start().get()
            } catch {
                redis.shutdown()
                try? await group.shutdownGracefully()
                throw StartError(message: "\(error)")
            }
            let leases = RedisStreamLimiter(limit: configuration.maxSSEPerWorkspace, broker: redis, logger: logger)
            leases.start()
            broker = redis
            limiter = leases
            redisBroker = redis
            logger.info("broker: redis", metadata: ["redis": "\(redisConfiguration.redis.endpoint)",
                "prefix": "\(redisConfiguration.redis.keyPrefix)"])
        } else {
            let memory = MemoryBroker(configuration: configuration.memoryBrokerConfiguration, clock: ServerContext.systemWallClock)
            // Expire history in the background, on one loop.
            group.next().scheduleRepeatedTask(initialDelay: .seconds(5), delay: .seconds(5)) { _ in memory.sweep() }
            broker = memory
            limiter = LocalStreamLimiter(limit: configuration.maxSSEPerWorkspace)
        }
        let state = ServerState()
        let connections = ConnectionTable(perAddressLimit: configuration.maxConnectionsPerAddress)
        let tokens = TokenVerifier(secret: Array(configuration.tokenSecret.utf8))
        let context = ServerContext(configuration: configuration,
            loops: LoopResourceTable(group: group, metrics: metrics, tokens: tokens), logger: logger,
            broker: broker, limiter: limiter, tokens: tokens,
            engine: EngineSignature(secret: Array(configuration.engineSecret.utf8),
                maxSkewSeconds: Int64(configuration.engineClockSkewSeconds)),
            staticFiles: staticFiles, demo: demo, metrics: metrics, exposition: { registry.emitToBuffer() }, state: state,
            wallClock: ServerContext.systemWallClock)
        demo?.start(server: context, eventLoop: group.next())
        let budget = configuration.outboundBudget
        let perAddressLimit = configuration.maxConnectionsPerAddress
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // One read per readiness event: NIO keeps up to this many receive buffers per connection for reuse, and
            // an idle watcher should hold one, not four.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: configuration.receiveAllocator)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: budget / 2, high: budget))
            .childChannelInitializer { channel in
                guard connections.add(channel) else {
                    metrics.refused(.tooManyConnections).increment()
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ConnectionRefusal(limit: perAddressLimit))
                    }
                }
                return channel.eventLoop.makeCompletedFuture {
                    let timers = context.loops.resources(for: channel.eventLoop).timers
                    try channel.pipeline.syncOperations.addHandler(ConnectionStarter(server: context, timers: timers))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
            logger.info("hub listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
                "echo": "\(configuration.echo)", "threads": "\(threads)"])
            return HubServer(configuration: configuration, group: group, channel: channel, logger: logger, redis: redisBroker,
                state: state, connections: connections)
        } catch {
            redisBroker?.shutdown()
            try? await group.shutdownGracefully()
            var why = "\(error)"
            if let io = error as? IOError {
                why = io.errnoCode == EADDRINUSE ? "address already in use" : io.errnoCode == EACCES
                    ? "permission denied" : io.errnoCode == EADDRNOTAVAIL ? "address not available here" : "\(io)"
            }
            throw StartError(message: "cannot listen on \(configuration.host):\(configuration.port): \(why)")
        }
    }

    private init(configuration: ServerConfiguration, group: MultiThreadedEventLoopGroup, channel: Channel, logger: Logger,
        redis: RedisBroker?, state: ServerState, connections: ConnectionTable)
    {
        self.redis = redis
        self.state = state
        self.connections = connections
        self.configuration = configuration
        self.group = group
        self.channel = channel
        self.logger = logger
    }

    /// Graceful drain: stops accepting, asks every watcher to reconnect elsewhere (WebSocket close 1012, a final SSE
    /// `reconnect` event), lets requests in flight finish, and waits up to `timeout` seconds for every connection to
    /// close; what is still open then is closed. Then the broker and the event loops stop.
    public func drain(timeout: Double) async -> DrainResult {
        guard state.startDraining() else { return DrainResult(connections: 0, forced: 0) }
        let open = connections.all
        logger.notice("draining", metadata: ["connections": "\(open.count)", "deadline_s": "\(timeout)"])
        try? await channel.close()
        for connection in open {
            connection.pipeline.fireUserInboundEventTriggered(DrainEvent())
        }
        let loop = group.next()
        let finished = loop.makePromise(of: Bool.self)
        let settled = NIOLockedValueBox(false)
        let settle: @Sendable (Bool) -> Void = { inTime in
            if settled.withLockedValue({ was in defer { was = true }; return !was }) { finished.succeed(inTime) }
        }
        loop.scheduleTask(in: .nanoseconds(nanoseconds(timeout))) { settle(false) }
        connections.whenEmpty(on: loop).whenSuccess { settle(true) }
        let inTime = (try? await finished.futureResult.get()) ?? false
        var forced = 0
        if !inTime {
            let left = connections.all
            forced = left.count
            logger.warning("drain deadline passed; closing the connections left", metadata: ["connections": "\(forced)"])
            for connection in left { connection.close(promise: nil) }
            try? await connections.whenEmpty(on: loop).get()
        }
        // Stream leases released by the closed SSE streams reach Redis before its connections close.
        if let redis { try? await redis.settle().get() }
        redis?.shutdown()
        try? await group.shutdownGracefully()
        logger.notice("drained", metadata: ["connections": "\(open.count)", "forced": "\(forced)"])
        return DrainResult(connections: open.count, forced: forced)
    }
}

/// 32 random bytes, hex-encoded.
func randomSecret() -> String {
    var rng = SystemRandomNumberGenerator()
    return Hex.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
}

/// The hub could not start; the message says why (a Redis that refuses the password, for example).
public struct StartError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

extension ServerConfiguration {
    /// How a connection's receive buffer is sized: from `receiveBufferInitial`, growing only when reads fill it. Set
    /// at the accept, and again at a connection's hand-over from HTTP to a WebSocket or an SSE stream.
    var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: receiveBufferInitial, maximum: 65536)
    }
}
