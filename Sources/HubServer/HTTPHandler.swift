import HubCore
import HubProtocol
import Logging
import NIOCore
import NIOHTTP1

/// Routes HTTP/1.1 requests before any upgrade. A WebSocket upgrade is done with the hub's own handshake
/// (`Handshake.accept`); then this handler, NIO's HTTP decoder (`HTTPRequestReader`) and the response writer leave the
/// pipeline within the read that upgraded it, and `WebSocketHandler` is the only handler left.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: ServerContext
    private let writer: HTTPResponseWriter
    private let decoder: HTTPRequestReader
    private var head: HTTPRequestHead?
    /// The body of an ingestion request, bounded by `maxIngestBytes`.
    private var body: ByteBuffer?
    /// Set once a response that ends the connection has been sent; later input is ignored.
    private var done = false
    /// Set once the last response is out and the connection closes lingering (`Channel.closeLingering`).
    private var lingering = false
    /// When the request in progress (or the next one, on a kept-alive connection) must be complete; nil: no limit.
    private var requestDeadline: NIODeadline?
    /// The one timer that checks `requestDeadline` (nil: none armed). It is not cancelled per request (cancelling is a
    /// linear search of the event loop's timers, which every WebSocket and SSE connection fills); when it fires early
    /// it checks again later.
    private var requestTimer: Scheduled<Void>?
    /// Set while the handler is in the pipeline (for the request timer, which must not retain it).
    private var context: ChannelHandlerContext?
    /// Ingestion requests whose events the broker is storing (with Redis, a round trip each): not idle. Pipelined
    /// ingestion requests are published without waiting for each other (up to `maxPublishing`): the broker completes
    /// publishes in the order they were made, so their answers go out in request order and their events are
    /// numbered in that order.
    private var publishing = 0
    private static let maxPublishing = 32
    /// Any other response, while ingestions are being stored, waits for their answers; nothing more is handled until
    /// it is out.
    private var deferredResponse: (() -> Void)?
    /// Set while an ingestion's answer is written (it is in order, so it never waits).
    private var answeringIngestion = false
    /// Parts of pipelined requests that must wait (behind `deferredResponse`, or a request other than an ingestion
    /// behind ingestions being stored): handled in order once the answers before them are out, so that responses
    /// keep the order of requests (HTTP/1.1). Reading stops meanwhile (`readingPaused`), so this holds at most what
    /// one read brought.
    private var waiting = CircularBuffer<HTTPServerRequestPart>()
    private var readingPaused = false
    /// Set when this read published events: at its end they are delivered and flushed (`channelReadComplete`).
    private var publishedInRead = false
    /// The last response written on a kept-alive connection; a drain closes the connection only once it is out.
    private var lastResponse: EventLoopFuture<Void>?

    /// `requestDeadline`: when the first request must be complete (set when the connection was accepted).
    init(server: ServerContext, writer: HTTPResponseWriter, decoder: HTTPRequestReader,
        requestDeadline: NIODeadline)
    {
        self.server = server
        self.writer = writer
        self.decoder = decoder
        self.requestDeadline = requestDeadline
    }

    func handlerAdded(context: ChannelHandlerContext) {
        // Added at the connection's first read (`ConnectionStarter`). A request that came while the hub began to
        // drain is still answered, with `Connection: close`.
        self.context = context
        if let requestDeadline { checkRequestDeadline(context: context, at: requestDeadline) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is DrainEvent else { return context.fireUserInboundEventTriggered(event) }
        // An idle keep-alive connection closes now (once its last response is written); one with a request in
        // flight closes after its response (`sendRaw` adds `Connection: close` while the hub drains).
        if head == nil && body == nil && !done && publishing == 0 && deferredResponse == nil && waiting.isEmpty {
            done = true
            requestDeadline = nil
            if let lastResponse {
                lastResponse.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        requestDeadline = nil
        self.context = nil
    }

    /// A request head must arrive in full within the timeout (slow senders hold no connection forever).
    private func armRequestTimer(context: ChannelHandlerContext) {
        let deadline = NIODeadline.now() + .nanoseconds(nanoseconds(server.configuration.requestTimeoutSeconds))
        requestDeadline = deadline
        guard requestTimer == nil else { return }
        checkRequestDeadline(context: context, at: deadline)
    }

    private func checkRequestDeadline(context: ChannelHandlerContext, at deadline: NIODeadline) {
        // Neither the handler nor its context is kept alive by the timer: after an upgrade the whole HTTP stack
        // (decoder, response writer, this handler) is freed at once, not when the timer fires.
        requestTimer = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            guard let self, let context = self.context else { return }
            self.requestTimer = nil
            guard !self.done, let current = self.requestDeadline else { return }
            if current > .now() { return self.checkRequestDeadline(context: context, at: current) }
            let timeout = self.server.configuration.requestTimeoutSeconds
            self.respond(context: context, status: .requestTimeout, code: "request_timeout",
                message: "no complete request within \(timeout) s", close: true)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        let part = unwrapInboundIn(data)
        if !waiting.isEmpty || mustWait(part) {
            pauseReading(context: context)
            waiting.append(part)
            return
        }
        handle(context: context, part: part)
    }

    /// Whether `part` must wait for the answers of the requests before it: everything waits behind a deferred
    /// response; while ingestions are being stored, only further ingestion requests go ahead (up to
    /// `maxPublishing`).
    private func mustWait(_ part: HTTPServerRequestPart) -> Bool {
        if deferredResponse != nil { return true }
        guard publishing > 0, case .head(let head) = part else { return false }
        guard case .some(.ingest) = server.route(for: head.uri) else { return true }
        return publishing >= Self.maxPublishing
    }

    private func pauseReading(context: ChannelHandlerContext) {
        guard !readingPaused else { return }
        readingPaused = true
        try? context.channel.syncOptions?.setOption(.autoRead, value: false)
    }

    /// The events of every request this read brought (an engine's pipelined reports) go out now, each watcher's in
    /// one write, before the loop reads other connections: an event waits for the rest of its read, not for the
    /// loop's whole tick.
    func channelReadComplete(context: ChannelHandlerContext) {
        if publishedInRead {
            publishedInRead = false
            server.broker.deliverPending(to: server.loops.resources(for: context.eventLoop).router)
        }
        context.fireChannelReadComplete()
    }

    /// Once no ingestion is being stored, writes the response that waited for them; then handles the requests that
    /// waited, until one of them waits in turn.
    private func handleWaiting(context: ChannelHandlerContext) {
        if publishing == 0, let response = deferredResponse {
            deferredResponse = nil
            response()
        }
        while !done, let part = waiting.first, !mustWait(part) {
            _ = waiting.popFirst()
            handle(context: context, part: part)
        }
        // Reading resumes once nothing waits, also for the handler an upgrade handed the connection to.
        if readingPaused && waiting.isEmpty && deferredResponse == nil {
            readingPaused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    private func handle(context: ChannelHandlerContext, part: HTTPServerRequestPart) {
        switch part {
        case .head(let head):
            // The request timer keeps running until the request ends: a body that trickles is cut off too.
            self.head = head
            writer.expectResponse(toHEAD: head.method == .HEAD)
            if head.headerBytes > server.configuration.maxHeaderBytes {
                respond(context: context, status: .requestHeaderFieldsTooLarge, code: "headers_too_large",
                    message: "request head larger than \(server.configuration.maxHeaderBytes) bytes", close: true)
                return
            }
            if let problem = HTTPRequestShape.problem(head) {
                respond(context: context, status: problem.status, code: problem.code, message: problem.message, close: true)
                return
            }
            switch server.route(for: head.uri) {
            case .some(let route) where route.isWebSocket && head.method != .GET:
                // Refuse a wrong method at once, without waiting for a body.
                refuse(context: context, .methodNotAllowed(head.method.rawValue))
            case .some(.stream) where head.method != .GET:
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed", message: "use GET",
                    close: true, extraHeaders: [("Allow", "GET")])
            case .some(.ingest):
                startIngest(context: context, head: head)
            default:
                break
            }
        case .body(var chunk):
            guard body != nil else { return }
            if body!.readableBytes + chunk.readableBytes > server.configuration.maxIngestBytes {
                body = nil
                respond(context: context, status: .payloadTooLarge, code: "payload_too_large",
                    message: "body larger than \(server.configuration.maxIngestBytes) bytes", close: true)
                return
            }
            body!.writeBuffer(&chunk)
        case .end:
            guard let head else { return }
            self.head = nil
            handle(context: context, head: head)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // While lingering, the decoder may fault on what the client still sends; the linger timer ends it.
        guard !lingering else { return }
        guard !done else {
            context.close(promise: nil)
            return
        }
        if let parseError = error as? HTTPParserError {
            if case .headerOverflow = parseError {
                respond(context: context, status: .requestHeaderFieldsTooLarge, code: "headers_too_large",
                    message: "request head too large", close: true)
            } else {
                // The parser names most faults; the ones it calls `unknown` are framing faults such as
                // Content-Length together with Transfer-Encoding, or a Transfer-Encoding listed twice.
                let what = parseError == .unknown ? "conflicting or invalid message framing headers" : "\(parseError)"
                respond(context: context, status: .badRequest, code: "malformed_request",
                    message: "malformed HTTP request: \(what)", close: true)
            }
        } else {
            context.close(promise: nil)
        }
    }

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead) {
        // Read only by the routes that answer here (not by ingestion, the most frequent request). After an upgrade
        // request, or a CONNECT (whose bytes after the head belong to a tunnel), NIO's parser reads no further
        // requests on the connection: whatever the answer, the connection closes after it.
        let isUpgrade = {
            head.method == .CONNECT || head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        }
        switch server.route(for: head.uri) {
        case .some(let route) where route.opensConnection && server.state.isDraining:
            refuseWhileDraining(context: context)
        case .some(.echo):
            upgrade(context: context, head: head, application: EchoApplication(),
                maxFrameSize: server.configuration.echoMaxMessageSize, maxMessageSize: server.configuration.echoMaxMessageSize,
                budget: max(server.configuration.outboundBudget, 2 * server.configuration.echoMaxMessageSize + 1024))
        case .some(.webSocket):
            openHubSocket(context: context, head: head)
        case .some(.stream(let topic)):
            openStream(context: context, head: head, topic: topic)
        case .some(.ingest):
            finishIngest(context: context, head: head)
        case .some(.staticFile(let path)):
            guard head.method == .GET || head.method == .HEAD, let file = server.staticFiles.file(for: path) else {
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed", message: "use GET",
                    close: true, extraHeaders: [("Allow", "GET, HEAD")])
                return
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: file.contentType)
            headers.add(name: "Content-Length", value: String(file.body.readableBytes))
            headers.add(name: "Cache-Control", value: "no-cache")
            let close = isUpgrade() || !head.isKeepAlive
            if close { headers.add(name: "Connection", value: "close") }
            sendRaw(context: context, status: .ok, headers: headers, body: file.body, close: close)
        case .some(.demoSession):
            let token = server.tokens.mint(subject: "demo-viewer", workspaces: [DemoRunner.workspace],
                expiresAt: server.nowSeconds + 3600)
            respondJSON(context: context, status: .ok,
                json: .object([("token", .string(token)), ("workspace", .string(DemoRunner.workspace))]), close: !head.isKeepAlive)
        case .some(.demoExecutions):
            let list = (server.demo?.executions ?? []).map { started -> JSON in
                .object([("workspace", .string(DemoRunner.workspace)), ("execution", .string(started.execution)),
                    ("started_at", .string(started.startedAt))])
            }
            respondJSON(context: context, status: .ok, json: .object([("executions", .array(list))]), close: !head.isKeepAlive)
        case .some(.health):
            guard head.method == .GET || head.method == .HEAD else {
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed",
                    message: "use GET", close: isUpgrade(), extraHeaders: [("Allow", "GET, HEAD")])
                return
            }
            respond(context: context, status: .ok, code: nil, message: "ok", close: isUpgrade() || !head.isKeepAlive)
        case .some(.metrics):
            guard head.method == .GET || head.method == .HEAD else {
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed",
                    message: "use GET", close: isUpgrade(), extraHeaders: [("Allow", "GET, HEAD")])
                return
            }
            let text = server.exposition()
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
            headers.add(name: "Content-Length", value: String(text.count))
            headers.add(name: "Cache-Control", value: "no-cache")
            let close = isUpgrade() || !head.isKeepAlive
            if close { headers.add(name: "Connection", value: "close") }
            sendRaw(context: context, status: .ok, headers: headers, body: context.channel.allocator.buffer(bytes: text),
                close: close)
        case .some(.ready):
            guard head.method == .GET || head.method == .HEAD else {
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed",
                    message: "use GET", close: isUpgrade(), extraHeaders: [("Allow", "GET, HEAD")])
                return
            }
            // Ready: accepting (not draining), and the broker (Redis, when configured) reachable.
            let draining = server.state.isDraining
            let available = server.broker.isAvailable && !draining
            var fields: [(String, JSON)] = [("status", .string(draining ? "draining" : available ? "ready" : "unavailable"))]
            fields.append(("broker", .string(server.configuration.redis == nil ? "embedded" : "redis")))
            if server.configuration.redis != nil {
                fields.append(("redis", .string(server.broker.isAvailable ? "up" : "down")))
            }
            respondJSON(context: context, status: available ? .ok : .serviceUnavailable, json: .object(fields),
                close: isUpgrade() || !head.isKeepAlive, extraHeaders: available ? [] : [("Retry-After", "1")])
        case .none:
            respond(context: context, status: .notFound, code: "not_found", message: "no route for \(head.uri.redactedPath)",
                close: isUpgrade() || !head.isKeepAlive)
        }
    }

    // MARK: Watchers

    /// The watcher's token: `Authorization: Bearer`, then `access_token` in the query, then the `hub_token` cookie.
    private func token(_ head: HTTPRequestHead, headerAndCookie: Bool) -> (token: String, fromCookie: Bool)? {
        if headerAndCookie, let auth = head.headers.first(name: "Authorization") {
            let parts = auth.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                return (String(parts[1]).trimmingCharacters(in: " "), false)
            }
        }
        if let t = queryParameters(head.uri)["access_token"] { return (t, false) }
        if headerAndCookie {
            for cookieHeader in head.headers["Cookie"] {
                for pair in cookieHeader.split(separator: ";") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2, kv[0].trimmingCharacters(in: " ") == "hub_token" {
                        return (String(kv[1]).trimmingCharacters(in: " "), true)
                    }
                }
            }
        }
        return nil
    }

    private func refuseToken(context: ChannelHandlerContext, _ failure: TokenVerifier.Failure) {
        server.metrics.refused(.invalidToken).increment()
        respond(context: context, status: .unauthorized, code: failure.code, message: failure.message, close: true,
            extraHeaders: [("WWW-Authenticate", #"Bearer error="invalid_token""#)])
    }

    private func originRefused(context: ChannelHandlerContext, head: HTTPRequestHead) -> Bool {
        let origin = head.headers.first(name: "Origin")
        guard !server.originAllowed(origin) else { return false }
        server.metrics.refused(.originNotAllowed).increment()
        respond(context: context, status: .forbidden, code: "origin_not_allowed",
            message: "origin \(origin ?? "") is not allowed to open streams", close: true)
        return true
    }

    /// Verifies a watcher's token through this loop's cache of verified tokens.
    private func verify(_ token: String, context: ChannelHandlerContext) throws(TokenVerifier.Failure) -> Principal {
        try server.loops.resources(for: context.eventLoop).verifiedTokens.verify(token, now: server.nowSeconds)
    }

    private func openHubSocket(context: ChannelHandlerContext, head: HTTPRequestHead) {
        guard !originRefused(context: context, head: head) else { return }
        var principal: Principal?
        if let (token, _) = token(head, headerAndCookie: false) {
            do {
                principal = try verify(token, context: context)
            } catch {
                return refuseToken(context: context, error)
            }
        }
        let session = HubSession(server: server, resources: server.loops.resources(for: context.eventLoop), principal: principal)
        // Half the budget may wait in the channel, half in the session's live backlog (OutboundBacklog).
        upgrade(context: context, head: head, application: session, maxFrameSize: server.configuration.maxFrameSize,
            maxMessageSize: server.configuration.maxMessageSize,
            budget: server.configuration.outboundBudget / 2)
    }

    private func openStream(context: ChannelHandlerContext, head: HTTPRequestHead, topic: TopicKey) {
        guard !originRefused(context: context, head: head) else { return }
        guard let (token, fromCookie) = token(head, headerAndCookie: true) else {
            server.metrics.refused(.unauthenticated).increment()
            respond(context: context, status: .unauthorized, code: "unauthenticated",
                message: "a token is required: Authorization: Bearer, ?access_token= or the hub_token cookie", close: true,
                extraHeaders: [("WWW-Authenticate", "Bearer")])
            return
        }
        // A browser sends the cookie along with a request that any site's page starts: a cross-origin request may
        // use it only from an origin listed by name, never through "*".
        if fromCookie, let origin = head.headers.first(name: "Origin"), !server.originListed(origin) {
            server.metrics.refused(.originNotAllowed).increment()
            respond(context: context, status: .forbidden, code: "origin_not_allowed",
                message: "origin \(origin) may not authenticate with the hub_token cookie: only origins listed in allowed-origin may",
                close: true)
            return
        }
        let principal: Principal
        do {
            principal = try verify(token, context: context)
        } catch {
            return refuseToken(context: context, error)
        }
        guard principal.grants(topic.workspace) else {
            server.metrics.refused(.forbidden).increment()
            respond(context: context, status: .forbidden, code: "forbidden",
                message: "the token does not grant workspace \(topic.workspace)", close: true)
            return
        }
        // Both resume points are checked when both are sent: a browser's EventSource adds Last-Event-ID when it
        // reconnects to a URL that may carry last_event_id, and the header, the later position, wins.
        var since: UInt64?
        let resumePoints = [("last_event_id", queryParameters(head.uri)["last_event_id"]),
            ("Last-Event-ID", head.headers.first(name: "Last-Event-ID")?.trimmingCharacters(in: " "))]
        for case let (name, raw?) in resumePoints {
            guard !raw.isEmpty, raw.utf8.allSatisfy({ (48...57).contains($0) }), let n = UInt64(raw) else {
                respond(context: context, status: .badRequest, code: "invalid_last_event_id",
                    message: "\(name) must be a decimal integer from 0 to \(UInt64.max)", close: true)
                return
            }
            since = n
        }
        // Nothing more is read from this connection while the limiter answers (with Redis, a round trip).
        done = true
        requestDeadline = nil
        let origin = head.headers.first(name: "Origin")
        server.limiter.acquire(topic.workspace, on: context.eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(.some(let lease)):
                guard context.channel.isActive else { return self.server.limiter.release(lease) }
                guard !self.server.state.isDraining else {
                    self.server.limiter.release(lease)
                    return self.refuseWhileDraining(context: context)
                }
                let stream = SSEHandler(server: self.server, resources: self.server.loops.resources(for: context.eventLoop),
                    topic: topic, since: since, principal: principal, origin: origin, lease: lease)
                if self.handOver(context: context, to: stream, budget: self.server.configuration.outboundBudget / 2) {
                    stream.start(alone: true)
                } else {
                    self.server.limiter.release(lease)
                }
            case .success(.none):
                self.server.metrics.refused(.tooManyStreams).increment()
                self.respond(context: context, status: .tooManyRequests, code: "too_many_streams",
                    message: "workspace \(topic.workspace) already has \(self.server.configuration.maxSSEPerWorkspace) open streams",
                    close: true, extraHeaders: [("Retry-After", "5")])
            case .failure:
                self.server.metrics.refused(.unavailable).increment()
                self.respond(context: context, status: .serviceUnavailable, code: "unavailable",
                    message: "stream limits cannot be checked now (Redis unreachable); retry", close: true,
                    extraHeaders: [("Retry-After", "2")])
            }
        }
    }

    /// Replaces the HTTP handlers with `handler`, the connection's only handler from now on, and sets its outbound
    /// budget. Bytes the decoder still holds go to `handler`. Returns false (and closes) if the pipeline refused.
    private func handOver(context: ChannelHandlerContext, to handler: ChannelHandler & RemovableChannelHandler, budget: Int) -> Bool {
        let channel = context.channel
        do {
            try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: budget / 2, high: budget))
            // The receive buffer's size starts again from the initial one. A request that filled the first read
            // made NIO's sizing ask for more next time, and the channel's one pooled buffer would then grow (to 512
            // bytes, a power of two) at the connection's next read, for good: a WebSocket's frames and pongs are
            // small. It still grows when reads fill it.
            try channel.syncOptions?.setOption(.recvAllocator, value: server.configuration.receiveAllocator)
            let ops = channel.pipeline.syncOperations
            try ops.addHandler(handler)
            // Once per connection (not per request): the timer would otherwise hold its memory for up to
            // request-timeout seconds.
            requestTimer?.cancel()
            requestTimer = nil
            ops.removeHandler(context: context, promise: nil)
            ops.removeHandler(writer, promise: nil)
            ops.removeHandler(decoder, promise: nil)
            return true
        } catch {
            server.logger.error("cannot hand the connection over", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
            return false
        }
    }

    // MARK: Ingestion

    private func startIngest(context: ChannelHandlerContext, head: HTTPRequestHead) {
        guard head.method == .POST else {
            respond(context: context, status: .methodNotAllowed, code: "method_not_allowed", message: "use POST",
                close: true, extraHeaders: [("Allow", "POST")])
            return
        }
        let contentType = head.headers.first(name: "Content-Type")
        // As engines send it, or else parsed: parameters dropped, spaces trimmed, any case.
        guard contentType == "application/json"
            || contentType?.split(separator: ";").first?.trimmingCharacters(in: " ").lowercased() == "application/json"
        else {
            respond(context: context, status: .unsupportedMediaType, code: "unsupported_media_type",
                message: "Content-Type must be application/json", close: true)
            return
        }
        if let length = head.headers.first(name: "Content-Length").flatMap({ Int($0) }), length > server.configuration.maxIngestBytes {
            respond(context: context, status: .payloadTooLarge, code: "payload_too_large",
                message: "body larger than \(server.configuration.maxIngestBytes) bytes", close: true)
            return
        }
        body = context.channel.allocator.buffer(capacity: 0)
    }

    private func finishIngest(context: ChannelHandlerContext, head: HTTPRequestHead) {
        guard let body else { return }
        self.body = nil
        let keepAlive = head.isKeepAlive
        let bytes = body.readableBytesView
        do {
            try server.engine.verify(timestamp: head.headers.first(name: "X-Hub-Timestamp"),
                signature: head.headers.first(name: "X-Hub-Signature"), body: bytes, now: server.nowSeconds)
        } catch {
            respond(context: context, status: HTTPResponseStatus(statusCode: error.status), code: error.code,
                message: error.message, close: !keepAlive)
            return
        }
        let events: [ProgressEvent]
        let batch: Bool
        do {
            (events, batch) = try server.ingestDecoder.decodeRequest(bytes, now: server.wallClock())
        } catch {
            switch error {
            case .invalidJSON(let why):
                respond(context: context, status: .badRequest, code: "invalid_json", message: why, close: !keepAlive)
            case .invalidEvent(let field, let message):
                respond(context: context, status: .badRequest, code: "invalid_event",
                    message: field.isEmpty ? message : "\(field) \(message)", close: !keepAlive, field: field)
            }
            return
        }
        let resources = server.loops.resources(for: context.eventLoop)
        publishing += 1
        publishedInRead = true
        server.broker.publish(events, on: context.eventLoop, encoder: resources.encoder).assumeIsolated().whenComplete { result in
            self.publishing -= 1
            self.answeringIngestion = true
            defer {
                self.answeringIngestion = false
                self.handleWaiting(context: context)
            }
            switch result {
            case .success(let results):
                let duplicates = results.lazy.filter(\.duplicate).count
                if results.count > duplicates { self.server.metrics.eventsIngested.increment(by: results.count - duplicates) }
                if duplicates > 0 { self.server.metrics.eventsDuplicate.increment(by: duplicates) }
                self.respondJSON(context: context, status: .accepted, text: Self.acceptedJSON(results), close: !keepAlive)
            case .failure(BrokerError.executionOwnedElsewhere(let index, _)):
                // The owner's name is not disclosed: it is another workspace's business.
                let field = !batch ? "execution_id" : "events[\(index)].execution_id"
                self.respond(context: context, status: .conflict, code: "execution_conflict",
                    message: "\(field) \(events[index].topic.execution) belongs to another workspace", close: !keepAlive,
                    field: field)
            case .failure(let error):
                var retry = 1
                if case BrokerError.unavailable(let seconds)? = error as? BrokerError { retry = seconds }
                if case BrokerError.failed(let why)? = error as? BrokerError {
                    self.server.logger.error("ingestion failed", metadata: ["error": "\(why)"])
                }
                self.respond(context: context, status: .serviceUnavailable, code: "unavailable",
                    message: "events could not be stored; retry", close: !keepAlive, extraHeaders: [("Retry-After", String(retry))])
            }
        }
    }

    /// A WebSocket or SSE request that arrives while the hub drains: 503, connect again (to another hub).
    private func refuseWhileDraining(context: ChannelHandlerContext) {
        server.metrics.refused(.draining).increment()
        respond(context: context, status: .serviceUnavailable, code: "draining",
            message: "this hub is shutting down; connect again (another hub will answer)", close: true,
            extraHeaders: [("Retry-After", "1")])
    }

    private func refuse(context: ChannelHandlerContext, _ error: ProtocolError) {
        let status = HTTPResponseStatus(statusCode: error.httpStatus.code, reasonPhrase: error.httpStatus.reason)
        let code: String
        switch error {
        case .methodNotAllowed: code = "method_not_allowed"
        case .unsupportedVersion: code = "unsupported_websocket_version"
        case .missingKey, .invalidKey: code = "bad_websocket_key"
        case .missingUpgradeHeader, .missingConnectionUpgrade: code = "upgrade_required"
        case .httpVersionNotSupported: code = "http_version_not_supported"
        default: code = "malformed_request"
        }
        respond(context: context, status: status, code: code, message: error.message, close: true,
            extraHeaders: Handshake.refusalHeaders(for: error))
    }

    private func upgrade(context: ChannelHandlerContext, head: HTTPRequestHead, application: WebSocketApplication,
        maxFrameSize: Int, maxMessageSize: Int, budget: Int)
    {
        let request = HandshakeRequest(method: head.method.rawValue, uri: head.uri, versionMajor: head.version.major,
            versionMinor: head.version.minor, headers: head.headers.map { (name: $0.name, value: $0.value) })
        let acceptance: HandshakeAcceptance
        switch Handshake.accept(request, deflate: server.configuration.deflatePolicy) {
        case .failure(let error):
            server.metrics.refused(.badHandshake).increment()
            refuse(context: context, error)
            return
        case .success(let a):
            acceptance = a
        }
        done = true
        requestDeadline = nil
        let config = server.configuration
        let now = WebSocketHandler.now()
        let connection = WebSocketConnection(
            configuration: .init(maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize,
                pingInterval: nanoseconds(config.heartbeatSeconds), pongTimeout: nanoseconds(config.pongTimeoutSeconds),
                closeTimeout: nanoseconds(config.closeTimeoutSeconds)),
            deflate: acceptance.deflate, now: now,
            firstPingEarly: StreamTimer.heartbeatSpread(interval: nanoseconds(config.heartbeatSeconds)))
        let handler = WebSocketHandler(connection: connection, resources: server.loops.resources(for: context.eventLoop),
            application: application, logger: server.logger)

        var headers = HTTPHeaders()
        for (name, value) in acceptance.headers { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        context.flush()

        guard handOver(context: context, to: handler, budget: budget) else { return }
        handler.start(alone: true)
        server.logger.info("websocket open", metadata: ["path": "\(head.uri.redactedPath)",
            "deflate": "\(acceptance.deflate?.responseHeader ?? "none")"])
    }

    /// Sends a JSON refusal `{"error":…,"message":…[,"field":…]}` (or `{"status":…}` when `code` is nil).
    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, code: String?, message: String,
        close: Bool, extraHeaders: [(name: String, value: String)] = [], field: String? = nil)
    {
        var fields: [(String, JSON)]
        if let code {
            fields = [("error", .string(code)), ("message", .string(message))]
            if let field { fields.append(("field", .string(field))) }
        } else {
            fields = [("status", .string(message))]
        }
        respondJSON(context: context, status: status, json: .object(fields), close: close, extraHeaders: extraHeaders)
    }

    private func respondJSON(context: ChannelHandlerContext, status: HTTPResponseStatus, json: JSON, close: Bool,
        extraHeaders: [(name: String, value: String)] = [])
    {
        respondJSON(context: context, status: status, text: json.serialized, close: close, extraHeaders: extraHeaders)
    }

    /// The 202 answer's body, `{"accepted":[{"execution_id":…,"workspace_id":…,"seq":N,"duplicate":false},…]}`,
    /// written straight into one string: every ingestion request is answered with it.
    static func acceptedJSON(_ results: [PublishResult]) -> String {
        var out = #"{"accepted":["#
        out.reserveCapacity(16 + results.count * 96)
        for (index, result) in results.enumerated() {
            out += index == 0 ? #"{"execution_id":"# : #",{"execution_id":"#
            JSON.writeString(result.topic.execution, to: &out)
            out += #","workspace_id":"#
            JSON.writeString(result.topic.workspace, to: &out)
            out += #","seq":"#
            out += String(result.seq)
            out += result.duplicate ? #","duplicate":true}"# : #","duplicate":false}"#
        }
        out += "]}"
        return out
    }

    private func respondJSON(context: ChannelHandlerContext, status: HTTPResponseStatus, text: String, close: Bool,
        extraHeaders: [(name: String, value: String)] = [])
    {
        var body = ByteBuffer()
        body.reserveCapacity(text.utf8.count + 1)
        body.writeString(text)
        body.writeString("\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        if close { headers.add(name: "Connection", value: "close") }
        sendRaw(context: context, status: status, headers: headers, body: body, close: close)
    }

    private func sendRaw(context: ChannelHandlerContext, status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer?,
        close: Bool)
    {
        if publishing > 0 && !answeringIngestion {
            // Ingestions before this request are still being stored: their answers go first.
            if let context = self.context { pauseReading(context: context) }
            deferredResponse = { self.sendRaw(context: context, status: status, headers: headers, body: body, close: close) }
            return
        }
        var headers = headers
        var close = close
        // A response finished while the hub drains is the connection's last.
        if !close && server.state.isDraining {
            close = true
            headers.add(name: "Connection", value: "close")
        }
        if close { done = true }
        requestDeadline = nil
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { result in
                guard case .success = result else { return context.close(promise: nil) }
                // What the client still sends is dropped by `channelRead` (`done` is set) and, should the decoder
                // fault on it, by `errorCaught`.
                self.lingering = true
                context.channel.closeLingering()
            }
        } else {
            lastResponse = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            armRequestTimer(context: context)
        }
    }
}

extension HTTPRequestHead {
    /// Approximate size of the request head as sent: request line and header lines.
    var headerBytes: Int {
        var n = method.rawValue.utf8.count + uri.utf8.count + 12
        for (name, value) in headers { n += name.utf8.count + value.utf8.count + 4 }
        return n
    }
}

extension String {
    /// The path without its query string, which may carry a token and must never reach a log.
    var redactedPath: String {
        guard let q = firstIndex(of: "?") else { return self }
        return String(self[..<q]) + "?…"
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set { s.removeFirst() }
        while s.last == set { s.removeLast() }
        return String(s)
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> String { String(self).trimmingCharacters(in: set) }
}
