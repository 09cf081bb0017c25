#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HubNative
import NIOCore
import NIOPosix

/// Every subscriber of the process, opened `concurrency` at a time. Confined to its event loop.
final class SubscriberSet: @unchecked Sendable {
    struct Settings {
        var server: ServerKind
        var transport: Transport
        var host: String
        var port: Int
        var names: [String]
        var workspace: String
        var token: String
        var sources: [String]
        var total: Int
        /// SO_RCVBUF of every connection, set before connecting (0: the kernel's default).
        var receiveBuffer = 0
        /// TCP_MAXSEG of every connection, set before connecting, so the SYN advertises it (0: the default). On
        /// loopback the MSS is about 64 KiB and the server's kernel sizes its send buffer from it (MBs per
        /// connection); an Ethernet-sized MSS gives the send buffer a real network would.
        var maximumSegment = 0
        /// Opens a connection again, resuming after the last seq received, when the server closes one.
        var reconnect = false
    }

    let loop: EventLoop
    let settings: Settings
    let stats: SubscriberStats
    let inflater = Inflater(windowBits: 15)
    let ready: EventLoopPromise<(Int, Int)>
    private(set) var subscribers: [SubscriberState] = []
    private var started = 0
    private var ok = 0
    private var failed = 0

    init(loop: EventLoop, settings: Settings) {
        self.loop = loop
        self.settings = settings
        stats = SubscriberStats(channels: settings.names.count)
        ready = loop.makePromise()
    }

    func start(concurrency: Int) {
        for _ in 0..<min(concurrency, settings.total) { startNext() }
    }

    /// Subscribers whose connection is open.
    var openCount: Int { subscribers.reduce(0) { $0 + ($1.isOpen ? 1 : 0) } }
    var openedCount: Int { subscribers.reduce(0) { $0 + ($1.opened ? 1 : 0) } }
    /// The fewest heartbeats any subscriber has received.
    var fewestHeartbeats: Int { subscribers.map(\.heartbeats).min() ?? 0 }

    /// Stops reading (autoRead off) on the first `count` subscribers: the server's writes then pile up in the
    /// kernel's buffers and its own, as with a client that cannot keep up.
    func pause(count: Int) {
        for subscriber in subscribers.prefix(count) {
            try? subscriber.channel?.syncOptions?.setOption(.autoRead, value: false)
        }
    }

    /// Reads again on every subscriber.
    func resume() {
        for subscriber in subscribers {
            try? subscriber.channel?.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    /// Hands every open connection to a `DirectReader` (which starts reading them) and returns it. On the loop, once
    /// every subscriber is ready; connections the server closes are not opened again, and the subscribers' channels
    /// are closed (their sockets stay open, read by the reader).
    func readDirectly(spin: Bool) throws -> DirectReader {
        let reader = DirectReader(spin: spin)
        let sockets = DirectReader.socketsByLocalAddress()
        for subscriber in subscribers {
            guard let channel = subscriber.channel, channel.isActive, let handler = subscriber.handler,
                let local = channel.localAddress, let ip = local.ipAddress, let port = local.port
            else { continue }
            guard let fd = sockets["\(ip):\(port)"] else {
                throw LoadGenError(message: "no descriptor found for the connection from \(ip):\(port)")
            }
            reader.adopt(subscriber, handler: handler, channel: channel, fd: fd)
        }
        reader.start()
        return reader
    }

    private func finished(_ success: Bool) {
        if success { ok += 1 } else { failed += 1 }
        if ok + failed == settings.total { ready.succeed((ok, failed)) } else { startNext() }
    }

    private func startNext() {
        guard started < settings.total else { return }
        let i = started
        started += 1
        let channel = i % settings.names.count
        stats.connectionsPerChannel[channel] += 1
        let subscriber = SubscriberState(index: i, channelIndex: channel)
        subscribers.append(subscriber)
        var once = false
        connect(subscriber, since: nil) { [self] success in
            guard !once else { return }
            once = true
            subscriber.opened = success
            finished(success)
        }
    }

    /// A connection of `subscriber` that the server closed: resume on a new one after the last seq received.
    private func closed(_ subscriber: SubscriberState) {
        subscriber.channel = nil
        guard settings.reconnect else { return }
        connect(subscriber, since: subscriber.resumeSeq) { [self] success in
            if success {
                stats.reconnects += 1
            } else {
                stats.reconnectFailures += 1
                loop.assumeIsolated().scheduleTask(in: .seconds(1)) { [self] in closed(subscriber) }
            }
        }
    }

    private func connect(_ subscriber: SubscriberState, since: UInt64?, onReady: @escaping (Bool) -> Void) {
        let s = settings
        let (request, subscribe) = SubscriberRequest.make(server: s.server, transport: s.transport, host: s.host,
            port: s.port, channel: s.names[subscriber.channelIndex], workspace: s.workspace, token: s.token, since: since)
        var once = false
        let report: (Bool) -> Void = { success in
            guard !once else { return }
            once = true
            onReady(success)
        }
        let handler = SubscriberHandler(subscriber: subscriber, server: s.server, transport: s.transport,
            request: request, subscribeFrame: subscribe, stats: stats, inflater: inflater, onReady: report,
            onClosed: { [self] in closed(subscriber) })
        let source = s.sources[subscriber.index % s.sources.count]
        var bootstrap = ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
        if s.receiveBuffer > 0 {
            bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(s.receiveBuffer))
        }
        if s.maximumSegment > 0 {
            bootstrap = bootstrap.channelOption(
                ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_MAXSEG)),
                value: SocketOptionValue(s.maximumSegment))
        }
        bootstrap
            .bind(to: try! SocketAddress(ipAddress: source, port: 0))
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: s.host, port: s.port)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    subscriber.channel = channel
                    subscriber.handler = handler
                case .failure(let error):
                    writeLine("# connect failed: \(error)")
                    report(false)
                }
            }
    }
}
