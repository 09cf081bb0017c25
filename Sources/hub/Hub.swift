#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import HubRedis
import HubServer
import Logging

@main
struct Hub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hub",
        abstract: "Streams live workflow-execution events to browsers over WebSocket and Server-Sent Events.",
        subcommands: [Serve.self, Token.self, Simulate.self],
        defaultSubcommand: Serve.self
    )
}

/// Reads a setting: the flag if given, else the `HUB_*` environment variable, else nil (the default applies).
func setting<T>(_ flag: T?, env name: String, parse: (String) -> T?) throws -> T? {
    if let flag { return flag }
    guard let raw = Environment.value(name) else { return nil }
    guard let value = parse(raw) else {
        throw ValidationError("environment variable \(name)='\(raw)' is not a valid value")
    }
    return value
}

extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s.removeFirst() }
        while s.last == c { s.removeLast() }
        return String(s)
    }
}

func parseBool(_ s: String) -> Bool? {
    switch s.lowercased() {
    case "1", "true", "yes", "on": return true
    case "0", "false", "no", "off": return false
    default: return nil
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the hub.",
        discussion: """
            Every option can also be set with the environment variable named in its help, or in a config file \
            (--config) as `name = value` with the option's name. A flag wins over the environment, which wins over \
            the file, which wins over the default. Every setting is checked at start-up; a bad one stops the hub with \
            a message that names it. SIGTERM (or SIGINT) drains the hub: it stops accepting, asks watchers to \
            reconnect elsewhere, and exits 0 once they have gone or --drain-timeout has passed.
            """
    )

    @Option(help: ArgumentHelp("Config file of `name = value` lines; flags and HUB_* variables win over it (HUB_CONFIG).",
        valueName: "file")) var config: String?
    @Option(help: "Address to listen on (HUB_HOST; default 127.0.0.1).") var host: String?
    @Option(help: "Port to listen on; 0 picks a free one (HUB_PORT; default 8080).") var port: Int?
    @Option(help: "Event loop threads; 0 means one per core (HUB_THREADS; default 0).") var threads: Int?
    @Option(help: "Largest frame a watcher may send, bytes (HUB_MAX_FRAME_SIZE; default 65536).") var maxFrameSize: Int?
    @Option(help: "Largest message a watcher may send, after inflation, bytes (HUB_MAX_MESSAGE_SIZE; default 65536).")
    var maxMessageSize: Int?
    @Option(help: "Largest HTTP request head, bytes; larger gets 431 (HUB_MAX_HEADER_BYTES; default 8192).")
    var maxHeaderBytes: Int?
    @Option(help: "Seconds to send a complete request head; slower gets 408 (HUB_REQUEST_TIMEOUT; default 10).")
    var requestTimeout: Double?
    @Option(help: "Connections one client address may hold open; more get 429; 0 for no limit (HUB_MAX_CONNECTIONS_PER_ADDRESS; default 0).")
    var maxConnectionsPerAddress: Int?
    @Option(help: "Seconds between pings to a quiet WebSocket peer; 0 disables (HUB_HEARTBEAT; default 15).")
    var heartbeat: Double?
    @Option(help: "Seconds a peer has to answer a ping (HUB_PONG_TIMEOUT; default 10).") var pongTimeout: Double?
    @Option(help: "Seconds to wait for the peer's close frame after the hub sent one (HUB_CLOSE_TIMEOUT; default 5).")
    var closeTimeout: Double?
    @Option(help: "Bytes queued for one connection before it is closed as a slow consumer (HUB_OUTBOUND_BUDGET; default 1048576).")
    var outboundBudget: Int?
    @Option(help: "Initial receive buffer per connection, bytes (HUB_RECEIVE_BUFFER; default 256).") var receiveBuffer: Int?
    @Option(help: "Offer permessage-deflate: true or false (HUB_DEFLATE; default true).") var deflate: Bool?
    @Option(help: "Largest deflate window the hub compresses with, 9-15 (HUB_DEFLATE_WINDOW_BITS; default 15).")
    var deflateWindowBits: Int?
    @Option(help: "Secret that verifies watchers' HS256 tokens, at least 16 bytes (HUB_TOKEN_SECRET; default: random).")
    var tokenSecret: String?
    @Option(help: "Secret the engine signs progress reports with, at least 16 bytes (HUB_ENGINE_SECRET; default: random).")
    var engineSecret: String?
    @Option(help: "Seconds an engine timestamp may be off (HUB_ENGINE_CLOCK_SKEW; default 300).") var engineClockSkew: Int?
    @Option(help: "Largest ingestion body, bytes (HUB_MAX_INGEST_BYTES; default 1048576).") var maxIngestBytes: Int?
    @Option(help: "Browser origin allowed to open streams; repeat for several; * for any (HUB_ALLOWED_ORIGINS, comma-separated; default *).")
    var allowedOrigin: [String] = []
    @Option(help: "Bytes of a node's output shown to watchers as output_preview; 0 for none (HUB_OUTPUT_PREVIEW_BYTES; default 200).")
    var outputPreviewBytes: Int?
    @Option(help: "Subscriptions per WebSocket (HUB_MAX_SUBSCRIPTIONS; default 100).") var maxSubscriptions: Int?
    @Option(help: "Concurrent SSE streams per workspace (HUB_MAX_SSE_PER_WORKSPACE; default 5).") var maxSsePerWorkspace: Int?
    @Option(help: "Seconds a stream lives before it is told to reconnect (HUB_MAX_CONNECTION_AGE; default 1800).")
    var maxConnectionAge: Double?
    @Option(help: "Reconnection delay suggested to EventSource clients, ms (HUB_SSE_RETRY; default 3000).") var sseRetry: Int?
    @Option(help: "Seconds of history kept after an execution's last event (HUB_HISTORY_TTL; default 300).") var historyTtl: Double?
    @Option(help: "Events of history per execution (HUB_MAX_EVENTS_PER_EXECUTION; default 1000).") var maxEventsPerExecution: Int?
    @Option(help: "Events of history in all (HUB_MAX_EVENTS_TOTAL; default 100000).") var maxEventsTotal: Int?
    @Option(help: ArgumentHelp("Redis that makes many hubs one: redis://[[user]:password@]host[:port][/db][?prefix=…] (HUB_REDIS_URL; default: none, the embedded broker).",
        valueName: "url")) var redis: String?
    @Option(help: "Redis password; overrides the URL's (HUB_REDIS_PASSWORD).") var redisPassword: String?
    @Option(help: "Redis database number; overrides the URL's (HUB_REDIS_DB; default 0).") var redisDb: Int?
    @Option(help: "Prefix of every Redis key and channel; overrides the URL's (HUB_REDIS_PREFIX; default none).") var redisPrefix: String?
    @Option(help: "Seconds a Redis command may wait for its reply before the connection is dropped and reconnected (HUB_REDIS_TIMEOUT; default 3).")
    var redisTimeout: Double?
    @Option(help: "Seconds an SSE stream's cluster-wide place outlives its hub's last renewal (HUB_LEASE_TTL; default 15).")
    var leaseTtl: Double?
    @Option(help: "Serve the WebSocket route /v1/ws: true or false (HUB_WEBSOCKET; default true).") var websocket: Bool?
    @Flag(help: "Serve the demo page at /demo/ and play simulated executions in workspace demo (HUB_DEMO=true).")
    var demo = false
    @Option(help: "Seconds between rounds of demo executions (HUB_DEMO_INTERVAL; default 12).") var demoInterval: Double?
    @Option(help: "Speed factor of demo executions (HUB_DEMO_SPEED; default 1).") var demoSpeed: Double?
    @Option(help: "Folder with hub.js and the demo files, instead of the bundled ones (HUB_WEB_ROOT).") var webRoot: String?
    @Flag(help: "Serve the conformance-test echo route /ws/echo (HUB_ECHO=true).") var echo = false
    @Option(help: "Message limit on /ws/echo, bytes (HUB_ECHO_MAX_MESSAGE_SIZE; default 20971520).") var echoMaxMessageSize: Int?
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical (HUB_LOG_LEVEL; default info).")
    var logLevel: String?
    @Option(help: "Log format on standard error: text, or json for one JSON object per line (HUB_LOG_FORMAT; default text).")
    var logFormat: String?
    @Option(help: "Seconds a drain (SIGTERM) waits for watchers to leave before closing the rest (HUB_DRAIN_TIMEOUT; default 25).")
    var drainTimeout: Double?

    /// Names a config file may set: every option above but --config itself.
    static let fileNames: Set<String> = Set([
        "HUB_HOST", "HUB_PORT", "HUB_THREADS", "HUB_MAX_FRAME_SIZE", "HUB_MAX_MESSAGE_SIZE", "HUB_MAX_HEADER_BYTES",
        "HUB_REQUEST_TIMEOUT", "HUB_HEARTBEAT", "HUB_PONG_TIMEOUT", "HUB_CLOSE_TIMEOUT", "HUB_OUTBOUND_BUDGET",
        "HUB_RECEIVE_BUFFER", "HUB_DEFLATE", "HUB_DEFLATE_WINDOW_BITS", "HUB_TOKEN_SECRET", "HUB_ENGINE_SECRET",
        "HUB_ENGINE_CLOCK_SKEW", "HUB_MAX_INGEST_BYTES", "HUB_ALLOWED_ORIGINS", "HUB_OUTPUT_PREVIEW_BYTES",
        "HUB_MAX_SUBSCRIPTIONS", "HUB_MAX_SSE_PER_WORKSPACE", "HUB_MAX_CONNECTION_AGE", "HUB_SSE_RETRY", "HUB_HISTORY_TTL",
        "HUB_MAX_EVENTS_PER_EXECUTION", "HUB_MAX_EVENTS_TOTAL", "HUB_REDIS_URL", "HUB_REDIS_PASSWORD", "HUB_REDIS_DB",
        "HUB_REDIS_PREFIX", "HUB_REDIS_TIMEOUT", "HUB_LEASE_TTL", "HUB_WEBSOCKET", "HUB_DEMO", "HUB_DEMO_INTERVAL",
        "HUB_DEMO_SPEED", "HUB_WEB_ROOT", "HUB_ECHO", "HUB_ECHO_MAX_MESSAGE_SIZE", "HUB_LOG_LEVEL", "HUB_LOG_FORMAT",
        "HUB_DRAIN_TIMEOUT",
    ].map(SettingSources.fileName(env:)))

    enum LogFormat: String {
        case text, json
    }

    /// Everything `run` needs, resolved from flags, environment and file, and validated.
    struct Resolved {
        var server: ServerConfiguration
        var logLevel: Logger.Level
        var logFormat: LogFormat
    }

    func resolve() throws -> Resolved {
        var sources = SettingSources(file: nil)
        if let path = config ?? Environment.value("HUB_CONFIG") {
            sources = SettingSources(file: try ConfigFile.load(path: path, knownNames: Self.fileNames))
        }
        func setting<T>(_ flag: T?, env: String, parse: (String) -> T?) throws -> T? {
            try sources.value(flag, env: env, parse: parse)
        }
        var c = ServerConfiguration()
        if let v = try setting(host, env: "HUB_HOST", parse: { $0 }) { c.host = v }
        if let v = try setting(port, env: "HUB_PORT", parse: { Int($0) }) { c.port = v }
        if let v = try setting(threads, env: "HUB_THREADS", parse: { Int($0) }) { c.threads = v }
        if let v = try setting(maxFrameSize, env: "HUB_MAX_FRAME_SIZE", parse: { Int($0) }) { c.maxFrameSize = v }
        if let v = try setting(maxMessageSize, env: "HUB_MAX_MESSAGE_SIZE", parse: { Int($0) }) { c.maxMessageSize = v }
        if let v = try setting(maxHeaderBytes, env: "HUB_MAX_HEADER_BYTES", parse: { Int($0) }) { c.maxHeaderBytes = v }
        if let v = try setting(requestTimeout, env: "HUB_REQUEST_TIMEOUT", parse: { Double($0) }) { c.requestTimeoutSeconds = v }
        if let v = try setting(maxConnectionsPerAddress, env: "HUB_MAX_CONNECTIONS_PER_ADDRESS", parse: { Int($0) }) {
            c.maxConnectionsPerAddress = v
        }
        if let v = try setting(heartbeat, env: "HUB_HEARTBEAT", parse: { Double($0) }) { c.heartbeatSeconds = v }
        if let v = try setting(pongTimeout, env: "HUB_PONG_TIMEOUT", parse: { Double($0) }) { c.pongTimeoutSeconds = v }
        if let v = try setting(closeTimeout, env: "HUB_CLOSE_TIMEOUT", parse: { Double($0) }) { c.closeTimeoutSeconds = v }
        if let v = try setting(outboundBudget, env: "HUB_OUTBOUND_BUDGET", parse: { Int($0) }) { c.outboundBudget = v }
        if let v = try setting(receiveBuffer, env: "HUB_RECEIVE_BUFFER", parse: { Int($0) }) { c.receiveBufferInitial = v }
        if let v = try setting(deflate, env: "HUB_DEFLATE", parse: parseBool) { c.deflate = v }
        if let v = try setting(deflateWindowBits, env: "HUB_DEFLATE_WINDOW_BITS", parse: { Int($0) }) { c.deflateWindowBits = v }
        if let v = try setting(tokenSecret, env: "HUB_TOKEN_SECRET", parse: { $0 }) { c.tokenSecret = v }
        if let v = try setting(engineSecret, env: "HUB_ENGINE_SECRET", parse: { $0 }) { c.engineSecret = v }
        if let v = try setting(engineClockSkew, env: "HUB_ENGINE_CLOCK_SKEW", parse: { Int($0) }) { c.engineClockSkewSeconds = v }
        if let v = try setting(maxIngestBytes, env: "HUB_MAX_INGEST_BYTES", parse: { Int($0) }) { c.maxIngestBytes = v }
        if let v = try setting(allowedOrigin.isEmpty ? nil : allowedOrigin, env: "HUB_ALLOWED_ORIGINS",
            parse: { $0.split(separator: ",").map { String($0).trimmingCharacters(in: " ") } }) { c.allowedOrigins = v }
        if let v = try setting(outputPreviewBytes, env: "HUB_OUTPUT_PREVIEW_BYTES", parse: { Int($0) }) { c.outputPreviewBytes = v }
        if let v = try setting(maxSubscriptions, env: "HUB_MAX_SUBSCRIPTIONS", parse: { Int($0) }) { c.maxSubscriptionsPerSocket = v }
        if let v = try setting(maxSsePerWorkspace, env: "HUB_MAX_SSE_PER_WORKSPACE", parse: { Int($0) }) { c.maxSSEPerWorkspace = v }
        if let v = try setting(maxConnectionAge, env: "HUB_MAX_CONNECTION_AGE", parse: { Double($0) }) { c.maxConnectionAgeSeconds = v }
        if let v = try setting(sseRetry, env: "HUB_SSE_RETRY", parse: { Int($0) }) { c.sseRetryMilliseconds = v }
        if let v = try setting(historyTtl, env: "HUB_HISTORY_TTL", parse: { Double($0) }) { c.historyTTLSeconds = v }
        if let v = try setting(maxEventsPerExecution, env: "HUB_MAX_EVENTS_PER_EXECUTION", parse: { Int($0) }) { c.maxEventsPerExecution = v }
        if let v = try setting(maxEventsTotal, env: "HUB_MAX_EVENTS_TOTAL", parse: { Int($0) }) { c.maxEventsTotal = v }
        if let url = try setting(redis, env: "HUB_REDIS_URL", parse: { $0 }) {
            var r: RedisConfiguration
            do {
                r = try RedisConfiguration(url: url)
            } catch {
                throw ValidationError(error.message)
            }
            // The password, database and prefix may be in the URL too: a separate setting replaces the URL's part
            // when it comes from a source that ranks as high as the URL's (or the URL has no such part).
            let urlRank = sources.rank(redis, env: "HUB_REDIS_URL")
            if let v = try setting(redisPassword, env: "HUB_REDIS_PASSWORD", parse: { $0 }),
                r.password == nil || sources.rank(redisPassword, env: "HUB_REDIS_PASSWORD") >= urlRank { r.password = v }
            if let v = try setting(redisDb, env: "HUB_REDIS_DB", parse: { Int($0) }),
                r.database == 0 || sources.rank(redisDb, env: "HUB_REDIS_DB") >= urlRank { r.database = v }
            if let v = try setting(redisPrefix, env: "HUB_REDIS_PREFIX", parse: { $0 }),
                r.keyPrefix.isEmpty || sources.rank(redisPrefix, env: "HUB_REDIS_PREFIX") >= urlRank { r.keyPrefix = v }
            if let v = try setting(redisTimeout, env: "HUB_REDIS_TIMEOUT", parse: { Double($0) }) { r.commandTimeoutSeconds = v }
            if let v = try setting(leaseTtl, env: "HUB_LEASE_TTL", parse: { Double($0) }) { r.leaseTTLSeconds = v }
            c.redis = r
        }
        if let v = try setting(websocket, env: "HUB_WEBSOCKET", parse: parseBool) { c.webSocketEnabled = v }
        if let v = try setting(demo ? true : nil, env: "HUB_DEMO", parse: parseBool) { c.demo = v }
        if let v = try setting(demoInterval, env: "HUB_DEMO_INTERVAL", parse: { Double($0) }) { c.demoIntervalSeconds = v }
        if let v = try setting(demoSpeed, env: "HUB_DEMO_SPEED", parse: { Double($0) }) { c.demoSpeed = v }
        if let v = try setting(webRoot, env: "HUB_WEB_ROOT", parse: { $0 }) { c.webRoot = v }
        if let v = try setting(echo ? true : nil, env: "HUB_ECHO", parse: parseBool) { c.echo = v }
        if let v = try setting(echoMaxMessageSize, env: "HUB_ECHO_MAX_MESSAGE_SIZE", parse: { Int($0) }) { c.echoMaxMessageSize = v }
        if let v = try setting(drainTimeout, env: "HUB_DRAIN_TIMEOUT", parse: { Double($0) }) { c.drainTimeoutSeconds = v }
        do {
            try c.validate()
        } catch {
            throw ValidationError(error.description)
        }
        let levelName = try setting(logLevel, env: "HUB_LOG_LEVEL", parse: { $0 }) ?? "info"
        guard let level = Logger.Level(rawValue: levelName.lowercased()) else {
            throw ValidationError("invalid setting log-level: '\(levelName)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        let formatName = try setting(logFormat, env: "HUB_LOG_FORMAT", parse: { $0 }) ?? "text"
        guard let format = LogFormat(rawValue: formatName.lowercased()) else {
            throw ValidationError("invalid setting log-format: '\(formatName)' is not text or json")
        }
        return Resolved(server: c, logLevel: level, logFormat: format)
    }

    func run() async throws {
        let resolved = try resolve()
        let config = resolved.server
        let level = resolved.logLevel
        let format = resolved.logFormat
        LoggingSystem.bootstrap { label in
            var handler: LogHandler = format == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        // Signals are caught before the listener opens, so a SIGTERM right after start-up drains too.
        let signals = SignalWaiter([SIGTERM, SIGINT])
        let logger = Logger(label: "hub")
        let server: HubServer
        do {
            server = try await HubServer.start(configuration: config, logger: logger)
        } catch let error as StartError {
            // A clear line, not a stack: the operator fixes the setting and starts again.
            logger.critical("cannot start: \(error.message)")
            throw ExitCode(2)
        }
        // Tests and scripts read this line to learn the port.
        print("hub listening on \(config.host):\(server.port)")
        flushStandardOutput()
        let signal = await signals.next()
        logger.notice("signal received: draining", metadata: ["signal": "\(signal == SIGINT ? "SIGINT" : "SIGTERM")",
            "deadline_s": "\(config.drainTimeoutSeconds)"])
        // A second signal ends the drain at once.
        Task {
            _ = await signals.next()
            logger.warning("second signal: exiting without waiting for the drain")
            #if canImport(Glibc)
            Glibc.exit(1)
            #else
            Darwin.exit(1)
            #endif
        }
        let result = await server.drain(timeout: config.drainTimeoutSeconds)
        logger.notice("exiting", metadata: ["connections": "\(result.connections)", "forced": "\(result.forced)"])
    }
}
