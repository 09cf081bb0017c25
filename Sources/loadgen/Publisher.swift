import Histogram
import HubNative
import NIOCore
import NIOPosix

/// One keep-alive HTTP/1.1 connection of the publisher: up to `depth` requests in flight (pipelined, answered in
/// order), and the messages of its channels waiting in order.
final class PublishConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var context: ChannelHandlerContext?
    private var buffer = ByteBuffer()
    /// The channels of the requests in flight and when each was due, oldest first (HTTP/1.1 answers pipelined
    /// requests in order).
    var inflight = CircularBuffer<(channel: Int, due: UInt64)>()
    /// How many requests may be in flight at once.
    let depth: Int
    var busy: Bool { inflight.count >= depth }
    /// Messages of this connection's channels that wait for the request in flight to be answered, in order.
    var queue = CircularBuffer<(channel: Int, marker: Marker)>()
    let onResponse: (PublishConnection, Int, UInt64, Int) -> Void
    let onClose: (PublishConnection) -> Void

    init(depth: Int, onResponse: @escaping (PublishConnection, Int, UInt64, Int) -> Void,
        onClose: @escaping (PublishConnection) -> Void)
    {
        self.depth = depth
        self.onResponse = onResponse
        self.onClose = onClose
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    /// Writes a request (the caller flushes).
    func send(_ request: ByteBuffer, channel: Int, due: UInt64) {
        guard let context else { return }
        inflight.append((channel, due))
        context.write(wrapOutboundOut(request), promise: nil)
    }

    func flush() { context?.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        onClose(self)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        buffer.writeBuffer(&input)
        while let end = buffer.readableBytesView.firstRange(of: [13, 10, 13, 10]) {
            let headLength = end.upperBound - buffer.readerIndex
            let head = buffer.getString(at: buffer.readerIndex, length: headLength) ?? ""
            var contentLength = 0
            for line in head.split(separator: "\r\n") where line.lowercased().hasPrefix("content-length:") {
                contentLength = Int(line.split(separator: ":")[1].trimmingPrefix(" ")) ?? 0
            }
            guard buffer.readableBytes >= headLength + contentLength else { return }
            let status = Int(head.split(separator: " ").dropFirst().first ?? "") ?? 0
            buffer.moveReaderIndex(forwardBy: headLength + contentLength)
            // A response to no request (a server closing an idle keep-alive connection, with 408) is not an answer.
            guard let (channel, due) = inflight.popFirst() else { continue }
            onResponse(self, channel, due, status)
        }
        buffer.discardReadBytes()
    }
}

/// Publishes at a fixed open-loop rate: message `i` is due at `start + i / rate`, on channel `i % channels`, with
/// seq `i / channels + 1`. Each channel is published on one connection, as one engine worker reports one execution:
/// its messages reach the server in order, one at a time, so that the order the subscribers check is the order the
/// server received (requests on different connections have no order between them). A connection sends up to its
/// depth of requests pipelined, as an engine that has fallen behind would: HTTP/1.1 answers them in order, so the
/// order holds. Messages that find their connection full wait in order (their due time stays in the marker).
/// Confined to its event loop.
final class Publisher: @unchecked Sendable {
    struct Settings {
        var server: ServerKind
        var host: String
        var port: Int
        var channels: [String]
        var rate: Double
        var duration: Double
        var size: Int
        var epoch: UInt32
        var workspace: String
        var engineSecret: [UInt8]
    }

    let settings: Settings
    let loop: EventLoop
    var connections: [PublishConnection] = []
    /// The connection each channel is published on.
    private var owner: [PublishConnection] = []
    private var next = 0
    private var total = 0
    private var startNanos: UInt64 = 0
    private(set) var sent = 0
    private(set) var answered = 0
    private(set) var statuses: [Int: Int] = [:]
    private(set) var perChannel: [Int]
    private(set) var maxQueue = 0
    /// From each message's due time to its answer, in microseconds: how long the server took to read and accept it,
    /// the publisher's own lag included (what the subscribers' latency adds to this is the fan-out and their reads).
    private(set) var answerHistogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
    private var ticker: RepeatedTask?
    let done: EventLoopPromise<Void>

    init(settings: Settings, loop: EventLoop) {
        self.settings = settings
        self.loop = loop
        perChannel = Array(repeating: 0, count: settings.channels.count)
        done = loop.makePromise()
    }

    func add(_ connection: PublishConnection) {
        connections.append(connection)
    }

    func start() {
        owner = (0..<settings.channels.count).map { connections[$0 % connections.count] }
        total = Int(settings.rate * settings.duration)
        startNanos = wallNanoseconds()
        ticker = loop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(1)) { [self] _ in tick() }
    }

    private func tick() {
        let elapsed = Double(wallNanoseconds() - startNanos) / 1e9
        let due = min(Int(elapsed * settings.rate) + 1, total)
        while next < due {
            let channel = next % settings.channels.count
            let marker = Marker(epoch: settings.epoch, seq: UInt32(next / settings.channels.count + 1),
                nanoseconds: startNanos + UInt64(Double(next) / settings.rate * 1e9))
            owner[channel].queue.append((channel, marker))
            waiting += 1
            next += 1
        }
        maxQueue = max(maxQueue, waiting)
        for connection in connections { pump(connection) }
        if next >= total { ticker?.cancel() }
    }

    /// Messages queued on all connections.
    private var waiting = 0

    /// Sends what fits in the connection's pipeline, in one write.
    private func pump(_ connection: PublishConnection) {
        var wrote = false
        while !connection.busy, let (channel, marker) = connection.queue.popFirst() {
            waiting -= 1
            connection.send(request(channel: channel, marker: marker), channel: channel, due: marker.nanoseconds)
            sent += 1
            wrote = true
        }
        if wrote { connection.flush() }
    }

    func responded(_ connection: PublishConnection, channel: Int, due: UInt64, status: Int) {
        answered += 1
        let now = wallNanoseconds()
        answerHistogram.record(now > due ? (now - due) / 1000 : 0)
        statuses[status, default: 0] += 1
        // Only what the server accepted counts as published (and so as expected at every subscriber).
        if (200..<300).contains(status) { perChannel[channel] += 1 }
        pump(connection)
        if answered == total { done.succeed() }
    }

    /// A connection the server closed hands its channels and waiting messages, in order, to another one.
    func closed(_ connection: PublishConnection) {
        connections.removeAll { $0 === connection }
        guard let heir = connections.first else { return done.succeed() }
        for channel in owner.indices where owner[channel] === connection { owner[channel] = heir }
        heir.queue.append(contentsOf: connection.queue)
        connection.queue.removeAll()
        pump(heir)
    }

    private func request(channel: Int, marker: Marker) -> ByteBuffer {
        let name = settings.channels[channel]
        let text = marker.text()
        switch settings.server {
        case .nchan:
            let body = text + padding(toward: settings.size, after: text.utf8.count)
            return ByteBuffer(string: "POST /pub/\(name) HTTP/1.1\r\nHost: \(settings.host)\r\nContent-Type: text/plain\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n" + body)
        case .hub:
            let prefix = #"{"event":"node.log","execution_id":"\#(name)","workspace_id":"\#(settings.workspace)","node_key":"n","data":{"level":"info","message":""#
            let suffix = #""}}"#
            let used = prefix.utf8.count + suffix.utf8.count + text.utf8.count
            // The padding is JSON-like text inside a JSON string: its quotes are escaped.
            let pad = padding(toward: settings.size, after: used).replacingQuotes()
            let body = prefix + text + pad + suffix
            let timestamp = String(wallNanoseconds() / 1_000_000_000)
            let signature = Hex.encode(Digest.hmacSHA256(key: settings.engineSecret, message: Array((timestamp + "." + body).utf8)))
            return ByteBuffer(string: "POST /v1/jobs/progress HTTP/1.1\r\nHost: \(settings.host)\r\n"
                + "Content-Type: application/json\r\nX-Hub-Timestamp: \(timestamp)\r\nX-Hub-Signature: sha256=\(signature)\r\n"
                + "Content-Length: \(body.utf8.count)\r\n\r\n" + body)
        }
    }
}

extension String {
    /// `"` → `'`: keeps the padding's shape (and size) legal inside a JSON string.
    func replacingQuotes() -> String {
        String(decoding: utf8.map { $0 == UInt8(ascii: "\"") ? UInt8(ascii: "'") : $0 }, as: UTF8.self)
    }
}
