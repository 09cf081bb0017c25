import HubCore
import HubNative
import Logging
import NIOCore
import NIOPosix

/// A Redis connection that comes back. It connects, authenticates (`AUTH`), selects the database (`SELECT`), checks
/// that a Redis answers (`PING`) and runs the owner's setup (loading scripts, subscribing); when the connection
/// drops it reconnects with capped exponential backoff and jitter.
///
/// Confined to `loop`: every method must be called there (hence `@unchecked Sendable`).
final class RedisClient: @unchecked Sendable {
    let loop: EventLoop
    let configuration: RedisConfiguration
    /// "commands" or "pubsub", for logs.
    let name: String
    private let logger: Logger
    /// The connection once it is set up; nil while (re)connecting.
    private(set) var connection: RedisConnection?
    private var attempt = 0
    private var stopped = false
    /// Whether a connection was ever ready: the next ready one is a reconnection.
    private var wasReady = false
    private let metrics: HubMetrics

    /// Runs on every new connection before it counts as ready (script loading, for example).
    var setup: (RedisConnection) -> EventLoopFuture<Void>
    /// Called when a (re)connection is ready, and when a ready connection is lost.
    var onReady: (RedisConnection) -> Void = { _ in }
    var onDown: () -> Void = {}
    /// Makes the connection a pub/sub one: pushed messages go here.
    var onPush: ((RedisPush) -> Void)?
    /// Called when a read of the connection is complete (after its replies and pushes).
    var onReadComplete: (() -> Void)?

    init(loop: EventLoop, configuration: RedisConfiguration, name: String, logger: Logger, metrics: HubMetrics = .none) {
        self.metrics = metrics
        self.loop = loop
        self.configuration = configuration
        self.name = name
        self.logger = logger
        self.setup = { _ in loop.makeSucceededVoidFuture() }
    }

    var isReady: Bool { connection != nil }

    /// Connects for the first time. Fails for an error that retrying cannot cure (a wrong password, an unknown
    /// database, something that does not speak RESP); an unreachable server is not one of them: the client keeps
    /// trying in the background and the future succeeds.
    func start() -> EventLoopFuture<Void> {
        loop.preconditionInEventLoop()
        return connect().flatMapError { error in
            if case .some(.unavailable) = error as? RedisError {
                self.logger.warning("redis unreachable; retrying in the background",
                    metadata: ["redis": "\(self.configuration.endpoint)", "connection": "\(self.name)", "error": "\(error)"])
                self.scheduleReconnect()
                return self.loop.makeSucceededVoidFuture()
            }
            return self.loop.makeFailedFuture(error)
        }
    }

    func stop() {
        stopped = true
        connection?.close()
        connection = nil
    }

    /// Sends a command on the ready connection; fails at once with `.unavailable` while there is none.
    func send(_ command: ByteBuffer) -> EventLoopFuture<RESPValue> {
        guard let connection else { return loop.makeFailedFuture(RedisError.unavailable("not connected")) }
        return connection.send(command)
    }

    /// Runs a script on the ready connection (`RedisConnection.runScript`); fails at once while there is none.
    func runScript(_ script: RedisScript, keys: [String], arguments: [[UInt8]]) -> EventLoopFuture<RESPValue> {
        guard let connection else { return loop.makeFailedFuture(RedisError.unavailable("not connected")) }
        return connection.runScript(script, keys: keys, arguments: arguments)
    }

    private func connect() -> EventLoopFuture<Void> {
        let connection = RedisConnection(timeout: .nanoseconds(Int64(configuration.commandTimeoutSeconds * 1e9)))
        connection.onPush = onPush
        connection.onReadComplete = onReadComplete
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.nanoseconds(Int64(configuration.commandTimeoutSeconds * 1e9)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_keepalive), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(connection) }
            }
        return bootstrap.connect(host: configuration.host, port: configuration.port)
            .flatMapErrorThrowing { error in throw RedisError.unavailable("cannot connect to \(self.configuration.endpoint): \(error)") }
            .flatMap { _ in self.handshake(connection) }
            .flatMap { self.setup(connection) }
            .flatMapThrowing {
                connection.onClose = { [weak self] reason in self?.lost(connection, reason) }
                guard !self.stopped else { return connection.close() }
                guard connection.isActive else { throw RedisError.unavailable("connection closed during set-up") }
                if self.attempt > 0 {
                    self.logger.notice("redis connection restored", metadata: ["connection": "\(self.name)", "attempts": "\(self.attempt)"])
                }
                self.attempt = 0
                if self.wasReady { self.metrics.redisReconnects.increment() }
                self.wasReady = true
                self.connection = connection
                self.keepAlive(connection)
                self.onReady(connection)
            }
            .flatMapErrorThrowing { error in
                connection.close()
                throw error
            }
    }

    /// AUTH, SELECT and PING, in order; a refusal names the step.
    private func handshake(_ connection: RedisConnection) -> EventLoopFuture<Void> {
        var steps: [(String, ByteBuffer)] = []
        if let password = configuration.password {
            if let user = configuration.username {
                steps.append(("AUTH", RESPCommand.buffer("AUTH", user, password)))
            } else {
                steps.append(("AUTH", RESPCommand.buffer("AUTH", password)))
            }
        }
        if configuration.database != 0 {
            steps.append(("SELECT \(configuration.database)", RESPCommand.buffer("SELECT", String(configuration.database))))
        }
        steps.append(("PING", RESPCommand.buffer("PING")))
        var chain = loop.makeSucceededVoidFuture()
        for (name, command) in steps {
            chain = chain.flatMap {
                connection.send(command).flatMapErrorThrowing { error in
                    if case .reply(let message)? = error as? RedisError {
                        throw RedisError.reply("\(name) refused by \(self.configuration.endpoint): \(message)")
                    }
                    throw error
                }.map { _ in }
            }
        }
        return chain
    }

    /// A PING every half timeout: a connection that went silent (a dead peer without a reset, or a pub/sub
    /// connection that would otherwise only ever receive) misses the reply and is dropped by the command timeout.
    private func keepAlive(_ connection: RedisConnection) {
        let every = TimeAmount.nanoseconds(Int64(configuration.commandTimeoutSeconds * 1e9 / 2))
        loop.assumeIsolated().scheduleTask(in: every) { [weak self, weak connection] in
            guard let self, let connection, self.connection === connection else { return }
            _ = connection.send(RESPCommand.buffer("PING"))
            self.keepAlive(connection)
        }
    }

    private func lost(_ connection: RedisConnection, _ reason: RedisError) {
        guard self.connection === connection else { return }
        self.connection = nil
        logger.warning("redis connection lost; reconnecting", metadata: ["connection": "\(name)", "reason": "\(reason)"])
        onDown()
        scheduleReconnect()
    }

    /// The delay before reconnection attempt `attempt` (0-based): doubling from `initial` up to `max`, of which the
    /// upper half is random (`jitter` in 0...1), so that hubs that lost Redis together do not all return at once.
    static func backoffMilliseconds(attempt: Int, initial: Int, max: Int, jitter: Double) -> Int {
        let ceiling = Swift.min(max, initial << Swift.min(attempt, 20))
        return ceiling / 2 + Int(Double(ceiling - ceiling / 2) * jitter)
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        let delay = Self.backoffMilliseconds(attempt: attempt, initial: configuration.reconnectInitialMilliseconds,
            max: configuration.reconnectMaxMilliseconds, jitter: Double.random(in: 0...1))
        attempt += 1
        loop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(delay))) { [self] in
            guard !stopped else { return }
            connect().whenFailure { [self] error in
                logger.debug("redis reconnect failed", metadata: ["connection": "\(name)", "error": "\(error)"])
                scheduleReconnect()
            }
        }
    }
}
