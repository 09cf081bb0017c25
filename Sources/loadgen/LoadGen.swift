#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import HubNative
import NIOCore
import NIOPosix

/// The load generator of the benchmarks (Tests/bench/bench.py drives it): subscribers that hold many connections
/// and check every message, and an open-loop publisher.
@main
struct LoadGen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load generator for the hub and Nchan: subscribers and an open-loop publisher.",
        subcommands: [Subscribe.self, Publish.self]
    )
}

func channelNames(prefix: String, count: Int) -> [String] { (0..<count).map { "\(prefix)\($0)" } }

struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: """
        Opens --connections subscribers spread over --channels channels and the --source addresses, prints \
        `ready <ok> <failed>`, then answers commands on standard input: `reset <epoch>` (count only that epoch from \
        now on), `report` (one JSON line), `quit`.
        """)

    @Option var server: String = "hub"
    @Option var transport: String = "ws"
    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var connections: Int
    @Option var channels: Int
    @Option var channelPrefix = "bench"
    @Option var workspace = "w1"
    @Option var token = ""
    @Option(help: "Comma-separated local addresses to connect from (127.0.0.x).") var source = "127.0.0.1"
    @Option(help: "Connection attempts in flight at once.") var concurrency = 256

    func run() throws {
        guard let server = ServerKind(rawValue: server), let transport = Transport(rawValue: transport) else {
            throw ValidationError("--server is hub or nchan; --transport is ws, ws-deflate or sse")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let set = SubscriberSet(loop: loop, server: server, transport: transport, host: host, port: port,
            names: channelNames(prefix: channelPrefix, count: channels), workspace: workspace, token: token,
            sources: source.split(separator: ",").map(String.init), total: connections)
        try loop.submit { set.start(concurrency: concurrency) }.wait()
        let stats = set.stats
        let ready = set.ready
        let (ok, failed) = try ready.futureResult.wait()
        writeLine("ready \(ok) \(failed)")
        while let line = readLine() {
            let words = line.split(separator: " ")
            switch words.first {
            case "reset":
                let epoch = UInt32(words.count > 1 ? words[1] : "0") ?? 0
                try loop.submit { stats.reset(epoch: epoch) }.wait()
                writeLine("ok")
            case "report":
                writeLine(try loop.submit { report(stats, open: set.channels.filter { $0.isActive }.count) }.wait())
            case "quit":
                return
            default:
                writeLine("# unknown command \(line)")
            }
        }
    }

    private func report(_ stats: SubscriberStats, open: Int) -> String {
        let h = stats.histogram
        var values: [String] = []
        for v in h.recordedValues() { values.append("[\(v.value),\(v.count)]") }
        let pct = { (p: Double) in h.totalCount == 0 ? 0 : h.valueAtPercentile(p) }
        return """
            {"open":\(open),"closed_by_server":\(stats.closedByServer),"received":\(stats.received),\
            "duplicates":\(stats.duplicates),"out_of_order":\(stats.outOfOrder),"other_epoch":\(stats.otherEpoch),\
            "distinct":\(stats.distinct),"connections_per_channel":\(stats.connectionsPerChannel),\
            "latency_us":{"count":\(h.totalCount),"p50":\(pct(50)),"p99":\(pct(99)),"p999":\(pct(99.9)),"max":\(h.totalCount == 0 ? 0 : h.max)},\
            "histogram_us":[\(values.joined(separator: ","))]}
            """
    }
}

/// Every subscriber connection of the process, opened `concurrency` at a time. Confined to its event loop.
final class SubscriberSet: @unchecked Sendable {
    let loop: EventLoop
    let server: ServerKind
    let transport: Transport
    let host: String
    let port: Int
    let names: [String]
    let workspace: String
    let token: String
    let sources: [String]
    let total: Int
    let stats: SubscriberStats
    let inflater = Inflater(windowBits: 15)
    let ready: EventLoopPromise<(Int, Int)>
    private(set) var channels: [Channel] = []
    private var started = 0
    private var ok = 0
    private var failed = 0

    init(loop: EventLoop, server: ServerKind, transport: Transport, host: String, port: Int, names: [String],
        workspace: String, token: String, sources: [String], total: Int)
    {
        self.loop = loop
        self.server = server
        self.transport = transport
        self.host = host
        self.port = port
        self.names = names
        self.workspace = workspace
        self.token = token
        self.sources = sources
        self.total = total
        stats = SubscriberStats(channels: names.count)
        ready = loop.makePromise()
    }

    func start(concurrency: Int) {
        for _ in 0..<min(concurrency, total) { startNext() }
    }

    private func finished(_ success: Bool) {
        if success { ok += 1 } else { failed += 1 }
        if ok + failed == total { ready.succeed((ok, failed)) } else { startNext() }
    }

    private func startNext() {
        guard started < total else { return }
        let i = started
        started += 1
        let channel = i % names.count
        stats.connectionsPerChannel[channel] += 1
        let (request, subscribe) = SubscriberRequest.make(server: server, transport: transport, host: host,
            port: port, channel: names[channel], workspace: workspace, token: token)
        var once = false
        let report: (Bool) -> Void = { [self] success in
            guard !once else { return }
            once = true
            finished(success)
        }
        let handler = SubscriberHandler(channelIndex: channel, channelName: names[channel], server: server,
            transport: transport, request: request, subscribeFrame: subscribe, stats: stats, inflater: inflater,
            onReady: report)
        let source = sources[i % sources.count]
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536))
            .bind(to: try! SocketAddress(ipAddress: source, port: 0))
            .connectTimeout(.seconds(30))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(handler) }
            }
            .connect(host: host, port: port)
            .assumeIsolated()
            .whenComplete { [self] result in
                switch result {
                case .success(let channel): channels.append(channel)
                case .failure(let error):
                    writeLine("# connect failed: \(error)")
                    report(false)
                }
            }
    }
}

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: """
        Publishes --rate messages per second for --duration seconds, round-robin over the channels, each due at its \
        time on an open-loop schedule; prints one JSON line when every answer is in.
        """)

    @Option var server: String = "hub"
    @Option var host = "127.0.0.1"
    @Option var port: Int
    @Option var channels: Int
    @Option var channelPrefix = "bench"
    @Option var rate: Double
    @Option var duration: Double
    @Option(help: "Approximate bytes per message body.") var size = 40
    @Option var epoch: UInt32 = 1
    @Option var workspace = "w1"
    @Option var engineSecret = ""
    @Option(help: "Keep-alive connections (one request in flight on each).") var connections = 32
    @Option var source = "127.0.0.1"

    func run() throws {
        guard let server = ServerKind(rawValue: server) else { throw ValidationError("--server is hub or nchan") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let settings = Publisher.Settings(server: server, host: host, port: port,
            channels: channelNames(prefix: channelPrefix, count: channels), rate: rate, duration: duration, size: size,
            epoch: epoch, workspace: workspace, engineSecret: Array(engineSecret.utf8))
        let publisher = try loop.submit { Publisher(settings: settings, loop: loop) }.wait()
        var opened: [EventLoopFuture<Channel>] = []
        for _ in 0..<connections {
            let future = try loop.submit { () -> EventLoopFuture<Channel> in
                let connection = PublishConnection(
                    onResponse: { c, status in publisher.responded(c, status: status) },
                    onClose: { c in publisher.closed(c) })
                return ClientBootstrap(group: loop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .bind(to: try! SocketAddress(ipAddress: source, port: 0))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(connection)
                            publisher.add(connection)
                        }
                    }
                    .connect(host: host, port: port)
            }.wait()
            opened.append(future)
        }
        for future in opened { _ = try future.wait() }
        let began = wallNanoseconds()
        try loop.submit { publisher.start() }.wait()
        let deadline = loop.scheduleTask(in: .nanoseconds(Int64((duration + 60) * 1e9))) {
            publisher.done.succeed()
        }
        try publisher.done.futureResult.wait()
        deadline.cancel()
        let elapsed = Double(wallNanoseconds() - began) / 1e9
        let line = try loop.submit { () -> String in
            let statuses = publisher.statuses.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
            return """
                {"sent":\(publisher.sent),"answered":\(publisher.answered),"statuses":{\(statuses)},\
                "per_channel":\(publisher.perChannel),"max_queue":\(publisher.maxQueue),"elapsed":\(elapsed)}
                """
        }.wait()
        writeLine(line)
        for connection in try loop.submit({ publisher.connections }).wait() { _ = connection }
    }
}
