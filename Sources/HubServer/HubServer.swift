import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

enum Route {
    case echo
    case health

    var isWebSocket: Bool {
        switch self {
        case .echo: return true
        case .health: return false
        }
    }
}

/// What every connection of a server shares; immutable after start.
struct ServerContext: Sendable {
    let configuration: ServerConfiguration
    let loops: LoopResourceTable
    let logger: Logger

    func route(for uri: String) -> Route? {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? uri
        switch path {
        case "/ws/echo": return configuration.echo ? .echo : nil
        case "/healthz": return .health
        default: return nil
        }
    }
}

/// The hub's listener: SwiftNIO carries the bytes, NIOHTTP1 parses requests, and the hub speaks WebSocket itself.
public final class HubServer: Sendable {
    public let configuration: ServerConfiguration
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let logger: Logger

    /// The bound port (useful when configured as 0).
    public var port: Int { channel.localAddress?.port ?? configuration.port }

    /// Binds and starts serving.
    public static func start(configuration: ServerConfiguration, logger: Logger) async throws -> HubServer {
        try configuration.validate()
        let threads = configuration.threads > 0 ? configuration.threads : System.coreCount
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let context = ServerContext(configuration: configuration,
            loops: LoopResourceTable(group: group, deflateWindowBits: configuration.deflateWindowBits), logger: logger)
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
            return HubServer(configuration: configuration, group: group, channel: channel, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(configuration: ServerConfiguration, group: MultiThreadedEventLoopGroup, channel: Channel, logger: Logger) {
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
        try await group.shutdownGracefully()
    }
}
