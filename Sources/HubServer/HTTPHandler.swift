import HubProtocol
import Logging
import NIOCore
import NIOHTTP1

/// Routes HTTP/1.1 requests before any upgrade. A WebSocket upgrade is done with the hub's own handshake
/// (`Handshake.accept`); then this handler and NIO's HTTP codec leave the pipeline and `WebSocketHandler` is the only
/// handler left.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: ServerContext
    private let encoder: HTTPResponseEncoder
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var head: HTTPRequestHead?
    /// Set once a response that ends the connection has been sent; later input is ignored.
    private var done = false
    private var requestTimer: Scheduled<Void>?

    init(server: ServerContext, encoder: HTTPResponseEncoder, decoder: ByteToMessageHandler<HTTPRequestDecoder>) {
        self.server = server
        self.encoder = encoder
        self.decoder = decoder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armRequestTimer(context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        requestTimer?.cancel()
    }

    /// A request head must arrive in full within the timeout (slow senders hold no connection forever).
    private func armRequestTimer(context: ChannelHandlerContext) {
        requestTimer?.cancel()
        let timeout = server.configuration.requestTimeoutSeconds
        requestTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(nanoseconds(timeout))) { [self] in
            guard !done else { return }
            respond(context: context, status: .requestTimeout, code: "request_timeout",
                message: "no complete request within \(timeout) s", close: true)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestTimer?.cancel()
            self.head = head
            if head.headerBytes > server.configuration.maxHeaderBytes {
                respond(context: context, status: .requestHeaderFieldsTooLarge, code: "headers_too_large",
                    message: "request head larger than \(server.configuration.maxHeaderBytes) bytes", close: true)
                return
            }
            // Refuse a wrong method at once, without waiting for a body.
            if let route = server.route(for: head.uri), route.isWebSocket, head.method != .GET {
                refuse(context: context, .methodNotAllowed(head.method.rawValue))
            }
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            handle(context: context, head: head)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !done else {
            context.close(promise: nil)
            return
        }
        if let parseError = error as? HTTPParserError {
            if case .headerOverflow = parseError {
                respond(context: context, status: .requestHeaderFieldsTooLarge, code: "headers_too_large",
                    message: "request head too large", close: true)
            } else {
                respond(context: context, status: .badRequest, code: "malformed_request",
                    message: "malformed HTTP request: \(parseError)", close: true)
            }
        } else {
            context.close(promise: nil)
        }
    }

    private func handle(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let isUpgrade = head.headers[canonicalForm: "connection"].contains { $0.lowercased() == "upgrade" }
        switch server.route(for: head.uri) {
        case .some(.echo):
            upgrade(context: context, head: head, application: EchoApplication(), maxMessageSize: server.configuration.echoMaxMessageSize,
                budget: max(server.configuration.outboundBudget, 2 * server.configuration.echoMaxMessageSize + 1024))
        case .some(.health):
            guard head.method == .GET || head.method == .HEAD else {
                respond(context: context, status: .methodNotAllowed, code: "method_not_allowed",
                    message: "use GET", close: isUpgrade, extraHeaders: [("Allow", "GET, HEAD")])
                return
            }
            respond(context: context, status: .ok, code: nil, message: "ok", close: isUpgrade || !head.isKeepAlive)
        case .none:
            respond(context: context, status: .notFound, code: "not_found", message: "no route for \(head.uri.redactedPath)",
                close: isUpgrade || !head.isKeepAlive)
        }
    }

    private func refuse(context: ChannelHandlerContext, _ error: ProtocolError) {
        let status = HTTPResponseStatus(statusCode: error.httpStatus.code, reasonPhrase: error.httpStatus.reason)
        let code: String
        switch error {
        case .methodNotAllowed: code = "method_not_allowed"
        case .unsupportedVersion: code = "unsupported_websocket_version"
        case .missingKey, .invalidKey: code = "bad_websocket_key"
        case .missingUpgradeHeader, .missingConnectionUpgrade: code = "upgrade_required"
        default: code = "bad_request"
        }
        respond(context: context, status: status, code: code, message: error.message, close: true,
            extraHeaders: Handshake.refusalHeaders(for: error))
    }

    private func upgrade(context: ChannelHandlerContext, head: HTTPRequestHead, application: WebSocketApplication,
        maxMessageSize: Int, budget: Int)
    {
        let request = HandshakeRequest(method: head.method.rawValue, uri: head.uri, versionMajor: head.version.major,
            versionMinor: head.version.minor, headers: head.headers.map { (name: $0.name, value: $0.value) })
        let acceptance: HandshakeAcceptance
        switch Handshake.accept(request, deflate: server.configuration.deflatePolicy) {
        case .failure(let error):
            refuse(context: context, error)
            return
        case .success(let a):
            acceptance = a
        }
        done = true
        requestTimer?.cancel()
        let config = server.configuration
        let now = WebSocketHandler.now()
        let connection = WebSocketConnection(
            configuration: .init(maxFrameSize: maxMessageSize, maxMessageSize: maxMessageSize,
                pingInterval: nanoseconds(config.heartbeatSeconds), pongTimeout: nanoseconds(config.pongTimeoutSeconds),
                closeTimeout: nanoseconds(config.closeTimeoutSeconds)),
            deflate: acceptance.deflate, now: now)
        let handler = WebSocketHandler(connection: connection, resources: server.loops.resources(for: context.eventLoop),
            application: application, logger: server.logger)

        var headers = HTTPHeaders()
        for (name, value) in acceptance.headers { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        context.flush()

        let channel = context.channel
        do {
            try channel.syncOptions?.setOption(.writeBufferWaterMark, value: .init(low: budget / 2, high: budget))
            let ops = channel.pipeline.syncOperations
            try ops.addHandler(handler)
            // Leave the pipeline in this order: bytes the decoder still holds go to the WebSocket handler.
            ops.removeHandler(context: context, promise: nil)
            ops.removeHandler(encoder, promise: nil)
            ops.removeHandler(decoder, promise: nil)
        } catch {
            server.logger.error("upgrade failed", metadata: ["error": "\(error)"])
            channel.close(promise: nil)
        }
        server.logger.debug("websocket open", metadata: ["path": "\(head.uri.redactedPath)",
            "deflate": "\(acceptance.deflate?.responseHeader ?? "none")"])
    }

    /// Sends a JSON answer (`{"error":…,"message":…}` for refusals) and closes the connection if asked.
    private func respond(context: ChannelHandlerContext, status: HTTPResponseStatus, code: String?, message: String,
        close: Bool, extraHeaders: [(name: String, value: String)] = [])
    {
        if close { done = true }
        requestTimer?.cancel()
        var body = context.channel.allocator.buffer(capacity: 64 + message.utf8.count)
        if let code {
            body.writeString(#"{"error":"\#(code)","message":\#(jsonString(message))}"#)
        } else {
            body.writeString(#"{"status":\#(jsonString(message))}"#)
        }
        body.writeString("\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        for (name, value) in extraHeaders { headers.add(name: name, value: value) }
        if close { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        if close {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
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

/// A JSON string literal for `s`.
func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20:
            let hex = Array("0123456789abcdef")
            out += "\\u00" + String(hex[Int(scalar.value >> 4)]) + String(hex[Int(scalar.value & 15)])
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}
