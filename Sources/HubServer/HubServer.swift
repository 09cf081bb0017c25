import HubCore
import HubNative
import HubRedis
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// The hub's listener: SwiftNIO carries the bytes, NIOHTTP1 parses requests, and the hub speaks WebSocket itself.
public final class HubServer: Sendable {
    public let configuration: ServerConfiguration
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let logger: Logger
    private let redis: RedisBroker?

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
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let staticFiles = try StaticFiles(webRoot: configuration.webRoot)
        let demo = configuration.demo ? DemoRunner() : nil
        let broker: Broker
        let limiter: StreamLimiter
        var redisBroker: RedisBroker?
        if let redisConfiguration = configuration.redisBrokerConfiguration {
            let redis = RedisBroker(configuration: redisConfiguration, loop: group.next(), logger: logger,
                outputPreviewBytes: configuration.outputPreviewBytes, clock: ServerContext.systemWallClock)
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
        let context = ServerContext(configuration: configuration, loops: LoopResourceTable(group: group), logger: logger,
            broker: broker, limiter: limiter,
            tokens: TokenVerifier(secret: Array(configuration.tokenSecret.utf8)),
            engine: EngineSignature(secret: Array(configuration.engineSecret.utf8),
                maxSkewSeconds: Int64(configuration.engineClockSkewSeconds)),
            staticFiles: staticFiles, demo: demo, wallClock: ServerContext.systemWallClock)
        demo?.start(server: context, eventLoop: group.next())
        let budget = configuration.outboundBudget
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: configuration.receiveBufferInitial, maximum: 65536))
            .childChannelOption(.writeBufferWaterMark, value: .init(low: budget / 2, high: budget))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let encoder = HTTPResponseEncoder()
                    let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                    let http = HTTPHandler(server: context, encoder: encoder, decoder: decoder)
                    try channel.pipeline.syncOperations.addHandlers([encoder, decoder, http])
                }
            }
        do {
            let channel = try await bootstrap.bind(host: configuration.host, port: configuration.port).get()
            logger.info("hub listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
                "echo": "\(configuration.echo)", "threads": "\(threads)"])
            return HubServer(configuration: configuration, group: group, channel: channel, logger: logger, redis: redisBroker)
        } catch {
            redisBroker?.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(configuration: ServerConfiguration, group: MultiThreadedEventLoopGroup, channel: Channel, logger: Logger,
        redis: RedisBroker?)
    {
        self.redis = redis
        self.configuration = configuration
        self.group = group
        self.channel = channel
        self.logger = logger
    }

    /// Completes when the listener closes.
    public func waitUntilClosed() async throws {
        try await channel.closeFuture.get()
    }

    public func shutdown() async throws {
        try? await channel.close()
        redis?.shutdown()
        try await group.shutdownGracefully()
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
