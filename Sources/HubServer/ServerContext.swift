#if canImport(Glibc)
import Glibc
#endif
import HubCore
import HubNative
import HubProtocol
import Logging
import NIOCore

enum Route: Equatable {
    case echo
    case health
    case ready
    case metrics
    case webSocket
    case ingest
    case stream(TopicKey)
    case staticFile(String)
    case demoSession
    case demoExecutions

    var isWebSocket: Bool { self == .echo || self == .webSocket }
    /// A WebSocket or an SSE stream: what a draining hub no longer opens.
    var opensConnection: Bool {
        if case .stream = self { return true }
        return isWebSocket
    }
}

/// What every connection of a server shares; immutable after start (the broker and limiter lock inside).
///
/// A class, not a struct: every connection's handlers hold it, and a copy of the whole configuration in each of them
/// was measured as hundreds of bytes per idle connection.
final class ServerContext: Sendable {
    let configuration: ServerConfiguration
    let loops: LoopResourceTable
    let logger: Logger
    let broker: Broker
    let limiter: StreamLimiter
    let tokens: TokenVerifier
    let engine: EngineSignature
    let staticFiles: StaticFiles
    let demo: DemoRunner?
    let metrics: HubMetrics
    /// The Prometheus text of every metric, for `/metrics`.
    let exposition: @Sendable () -> [UInt8]
    let state: ServerState
    var ingestDecoder: IngestDecoder {
        var d = IngestDecoder()
        d.outputPreviewBytes = configuration.outputPreviewBytes
        return d
    }
    /// Unix milliseconds.
    let wallClock: @Sendable () -> Int64

    init(configuration: ServerConfiguration, loops: LoopResourceTable, logger: Logger, broker: Broker,
        limiter: StreamLimiter, tokens: TokenVerifier, engine: EngineSignature, staticFiles: StaticFiles,
        demo: DemoRunner?, metrics: HubMetrics, exposition: @escaping @Sendable () -> [UInt8], state: ServerState,
        wallClock: @escaping @Sendable () -> Int64)
    {
        self.configuration = configuration
        self.loops = loops
        self.logger = logger
        self.broker = broker
        self.limiter = limiter
        self.tokens = tokens
        self.engine = engine
        self.staticFiles = staticFiles
        self.demo = demo
        self.metrics = metrics
        self.exposition = exposition
        self.state = state
        self.wallClock = wallClock
    }

    func route(for uri: String) -> Route? {
        // The path without the query, as a view of `uri`: routing a request copies nothing.
        let path = uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { uri[..<$0] } ?? uri[...]
        switch path {
        case "/v1/jobs/progress": return .ingest
        case "/ws/echo": return configuration.echo ? .echo : nil
        case "/healthz": return .health
        case "/readyz": return .ready
        case "/metrics": return .metrics
        case "/v1/ws": return configuration.webSocketEnabled ? .webSocket : nil
        case "/demo/session": return demo != nil ? .demoSession : nil
        case "/demo/executions": return demo != nil ? .demoExecutions : nil
        case "/client/hub.js": return .staticFile(String(path))
        case _ where path.hasPrefix("/demo") && StaticFiles.routes[String(path)] != nil:
            return demo != nil ? .staticFile(String(path)) : nil
        default:
            // /api/v1/workspaces/{workspace}/executions/{execution}/stream
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 8, parts[0].isEmpty, parts[1] == "api", parts[2] == "v1", parts[3] == "workspaces",
                parts[5] == "executions", parts[7] == "stream"
            {
                let topic = TopicKey(workspace: String(parts[4]), execution: String(parts[6]))
                return topic.isValid ? .stream(topic) : nil
            }
            return nil
        }
    }

    /// Whether a browser page from `origin` may open a stream. No Origin header: not a browser, allowed.
    func originAllowed(_ origin: String?) -> Bool {
        guard let origin else { return true }
        return configuration.allowedOrigins.contains("*") || configuration.allowedOrigins.contains(origin)
    }

    /// Whether `origin` is allowed by name (not only through "*"): such pages may use credentials (the cookie).
    func originListed(_ origin: String) -> Bool {
        configuration.allowedOrigins.contains(origin)
    }

    var nowSeconds: Int64 { wallClock() / 1000 }

    static func systemWallClock() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

/// The query parameters of a request target, percent-decoded.
func queryParameters(_ uri: String) -> [String: String] {
    guard let q = uri.firstIndex(of: "?") else { return [:] }
    var result: [String: String] = [:]
    for pair in uri[uri.index(after: q)...].split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        guard let key = percentDecode(kv[0]) else { continue }
        result[key] = kv.count > 1 ? percentDecode(kv[1]) ?? "" : ""
    }
    return result
}

func percentDecode(_ s: Substring) -> String? {
    var out: [UInt8] = []
    var bytes = s.utf8.makeIterator()
    while let b = bytes.next() {
        if b == UInt8(ascii: "%") {
            guard let h = bytes.next(), let l = bytes.next(), let v = UInt8(String(decoding: [h, l], as: UTF8.self), radix: 16)
            else { return nil }
            out.append(v)
        } else if b == UInt8(ascii: "+") {
            out.append(0x20)
        } else {
            out.append(b)
        }
    }
    return String(validating: out, as: UTF8.self)
}
