#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser
import Histogram
import HubNative
import NIOCore
import NIOPosix

/// The load generator of the benchmarks (Tests/bench/bench.py drives it): subscribers that hold many connections
/// and check every message, an open-loop publisher, and the floor server (a fan-out server that does nothing but the
/// system calls, measured beside the hub and Nchan).
@main
struct LoadGen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load generator for the hub and Nchan: subscribers, an open-loop publisher, and the floor server.",
        subcommands: [Subscribe.self, Publish.self, Floor.self]
    )
}

func channelNames(prefix: String, count: Int) -> [String] { (0..<count).map { "\(prefix)\($0)" } }

struct Subscribe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: """
        Opens --connections subscribers spread over --channels channels and the --source addresses, prints \
        `ready <ok> <failed>`, then answers commands on standard input: `reset <epoch>` (count only that epoch from \
        now on), `pause [count]` (stop reading on the first count subscribers, default all), `resume` (read again on \
        all), `report` (one JSON line), `quit`.
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
    @Option(help: "SO_RCVBUF of each connection in bytes (0: the kernel's default).") var rcvbuf = 0
    @Option(help: "TCP_MAXSEG of each connection (0: the default; loopback's is about 64 KiB).") var mss = 0
    @Flag(help: "When the server closes a connection, open another that resumes after the last seq received.")
    var reconnect = false
    @Flag(help: """
        Once every subscriber is ready, read the connections on a thread of their own with one epoll set instead of \
        NIO's read path (a few µs less per read: the load generator's own queueing then adds less to the latency). \
        Not with --reconnect, pause or resume.
        """)
    var direct = false
    @Flag(help: """
        With --direct: poll the connections without ever sleeping, yielding the core when none is ready, so that the \
        server's loopback writes never have to wake this reader (a cost that remote clients do not put on a server).
        """)
    var spin = false

    func run() throws {
        guard let server = ServerKind(rawValue: server), let transport = Transport(rawValue: transport) else {
            throw ValidationError("--server is hub or nchan; --transport is ws, ws-deflate or sse")
        }
        if direct && reconnect { throw ValidationError("--direct does not reconnect: not with --reconnect") }
        if spin && !direct { throw ValidationError("--spin is a way of reading with --direct: only with --direct") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let settings = SubscriberSet.Settings(server: server, transport: transport, host: host, port: port,
            names: channelNames(prefix: channelPrefix, count: channels), workspace: workspace, token: token,
            sources: source.split(separator: ",").map(String.init), total: connections, receiveBuffer: rcvbuf,
            maximumSegment: mss, reconnect: reconnect)
        let set = SubscriberSet(loop: loop, settings: settings)
        try loop.submit { set.start(concurrency: concurrency) }.wait()
        let stats = set.stats
        let (ok, failed) = try set.ready.futureResult.wait()
        let reader = direct ? try loop.submit { try set.readDirectly(spin: spin) }.wait() : nil
        defer { reader?.stop() }
        // What the subscribers count, under the direct reader's lock when there is one.
        func locked<T: Sendable>(_ body: @escaping @Sendable () -> T) throws -> T {
            try loop.submit { reader.map { $0.lock.withLock(body) } ?? body() }.wait()
        }
        writeLine("ready \(ok) \(failed)")
        while let line = readLine() {
            let words = line.split(separator: " ")
            switch words.first {
            case "reset":
                let epoch = UInt32(words.count > 1 ? words[1] : "0") ?? 0
                try locked { stats.reset(epoch: epoch) }
                writeLine("ok")
            case "pause" where direct, "resume" where direct:
                writeLine("# \(line): not with --direct")
            case "pause":
                let count = words.count > 1 ? Int(words[1]) ?? connections : connections
                try loop.submit { set.pause(count: count) }.wait()
                writeLine("ok")
            case "resume":
                try loop.submit { set.resume() }.wait()
                writeLine("ok")
            case "report":
                writeLine(try locked { report(set) })
            case "quit":
                return
            default:
                writeLine("# unknown command \(line)")
            }
        }
    }

    private func report(_ set: SubscriberSet) -> String {
        let stats = set.stats
        let h = stats.histogram
        // A histogram as [[value, count], ...].
        let pairs = { (h: Histogram<UInt64>) in
            h.recordedValues().map { "[\($0.value),\($0.count)]" }.joined(separator: ",")
        }
        let pct = { (p: Double) in h.totalCount == 0 ? 0 : h.valueAtPercentile(p) }
        let codes = stats.closeCodes.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",")
        return """
            {"opened":\(set.openedCount),"open":\(set.openCount),"closed_by_server":\(stats.closedByServer),\
            "close_codes":{\(codes)},"reconnects":\(stats.reconnects),"reconnect_failures":\(stats.reconnectFailures),\
            "truncated":\(stats.truncated),"pings":\(stats.pings),"pongs":\(stats.pongs),\
            "heartbeat_messages":\(stats.heartbeatMessages),"heartbeat_comments":\(stats.heartbeatComments),\
            "fewest_heartbeats":\(set.fewestHeartbeats),"received":\(stats.received),\
            "duplicates":\(stats.duplicates),"out_of_order":\(stats.outOfOrder),"other_epoch":\(stats.otherEpoch),\
            "distinct":\(stats.distinct),"connections_per_channel":\(stats.connectionsPerChannel),\
            "latency_us":{"count":\(h.totalCount),"p50":\(pct(50)),"p99":\(pct(99)),"p999":\(pct(99.9)),"max":\(h.totalCount == 0 ? 0 : h.max)},\
            "histogram_us":[\(pairs(h))],"arrival_histogram_us":[\(pairs(stats.arrivalHistogram))]}
            """
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
    @Option(help: """
        Keep-alive connections; channel c is published on connection c mod N, so each channel's messages arrive in \
        order.
        """)
    var connections = 32
    @Option(help: """
        Requests a connection may have in flight, pipelined (HTTP/1.1 answers them in order); more are sent only \
        when messages fall behind their schedule.
        """)
    var pipeline = 1
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
                let connection = PublishConnection(depth: pipeline,
                    onResponse: { c, channel, due, status in
                        publisher.responded(c, channel: channel, due: due, status: status)
                    },
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
            let answers = publisher.answerHistogram
            return """
                {"sent":\(publisher.sent),"answered":\(publisher.answered),"statuses":{\(statuses)},\
                "per_channel":\(publisher.perChannel),"max_queue":\(publisher.maxQueue),"elapsed":\(elapsed),\
                "answer_us":{"p50":\(answers.valueAtPercentile(50)),"p99":\(answers.valueAtPercentile(99)),\
                "max":\(answers.max)}}
                """
        }.wait()
        writeLine(line)
        for connection in try loop.submit({ publisher.connections }).wait() { _ = connection }
    }
}
