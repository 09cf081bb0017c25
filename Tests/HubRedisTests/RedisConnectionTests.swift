import HubNative
import NIOCore
import NIOEmbedded
import XCTest

@testable import HubRedis

/// The connection handler on an `EmbeddedChannel`: what it writes is what Redis would read, and the bytes fed in are
/// what Redis would answer.
final class RedisConnectionTests: XCTestCase {
    private func connected() throws -> (EmbeddedChannel, RedisConnection) {
        let connection = RedisConnection(timeout: .seconds(3))
        let channel = EmbeddedChannel(handler: connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return (channel, connection)
    }

    private func written(_ channel: EmbeddedChannel) throws -> String {
        var out = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += String(buffer: buffer) }
        return out
    }

    func testCommandsArePipelinedAndRepliesCompleteThemInOrder() throws {
        let (channel, connection) = try connected()
        let a = connection.send(RESPCommand.buffer("GET", "a"))
        let b = connection.send(RESPCommand.buffer("INCR", "n"))
        let c = connection.send(RESPCommand.buffer("GET", "missing"))
        // All three go out in one flush, before any reply.
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n")
        // Replies arrive split anywhere; each completes its own command.
        for chunk in ["$5\r\nhel", "lo\r\n:4", "2\r\n$-1\r\n"] { try channel.writeInbound(ByteBuffer(string: chunk)) }
        XCTAssertEqual(try a.wait(), .bulk(Array("hello".utf8)))
        XCTAssertEqual(try b.wait(), .integer(42))
        XCTAssertEqual(try c.wait(), .null)
    }

    func testErrorReplyFailsOnlyItsCommand() throws {
        let (channel, connection) = try connected()
        let a = connection.send(RESPCommand.buffer("SELECT", "99"))
        let b = connection.send(RESPCommand.buffer("PING"))
        try channel.writeInbound(ByteBuffer(string: "-ERR DB index is out of range\r\n+PONG\r\n"))
        XCTAssertThrowsError(try a.wait()) { XCTAssertEqual($0 as? RedisError, .reply("ERR DB index is out of range")) }
        XCTAssertEqual(try b.wait(), .status("PONG"))
    }

    func testMalformedReplyFailsEverythingPendingAndCloses() throws {
        let (channel, connection) = try connected()
        var closedWith: RedisError?
        connection.onClose = { closedWith = $0 }
        let a = connection.send(RESPCommand.buffer("PING"))
        let b = connection.send(RESPCommand.buffer("PING"))
        try channel.writeInbound(ByteBuffer(string: "?what\r\n"))
        for f in [a, b] {
            XCTAssertThrowsError(try f.wait()) { error in
                guard case .protocolViolation = error as? RedisError else { return XCTFail("\(error)") }
            }
        }
        guard case .protocolViolation = closedWith else { return XCTFail("onClose: \(String(describing: closedWith))") }
        XCTAssertFalse(channel.isActive)
        // Later commands fail at once.
        XCTAssertThrowsError(try connection.send(RESPCommand.buffer("PING")).wait())
    }

    func testPubSubPushesAreNotReplies() throws {
        let (channel, connection) = try connected()
        var pushes: [String] = []
        connection.onPush = { push in
            switch push {
            case .message(let ch, let payload): pushes.append("message \(String(decoding: ch, as: UTF8.self)) \(String(decoding: payload, as: UTF8.self))")
            case .subscribed(let ch): pushes.append("subscribe \(String(decoding: ch, as: UTF8.self))")
            case .unsubscribed(let ch): pushes.append("unsubscribe \(String(decoding: ch, as: UTF8.self))")
            }
        }
        connection.sendWithoutReply(RESPCommand.buffer("SUBSCRIBE", "x"))
        let ping = connection.send(RESPCommand.buffer("PING"))
        try channel.writeInbound(ByteBuffer(string:
            "*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n$2\r\nhi\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"
                + "*3\r\n$11\r\nunsubscribe\r\n$1\r\nx\r\n:0\r\n"))
        XCTAssertEqual(pushes, ["subscribe x", "message x hi", "unsubscribe x"])
        XCTAssertEqual(try ping.wait(), .array([.bulk(Array("pong".utf8)), .bulk([])]))
    }

    func testUnansweredCommandTimesOutAndDropsTheConnection() throws {
        let connection = RedisConnection(timeout: .milliseconds(500))
        let channel = EmbeddedChannel(handler: connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        let a = connection.send(RESPCommand.buffer("BLPOP", "q", "0"))
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(400))
        XCTAssertTrue(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(600))
        XCTAssertThrowsError(try a.wait()) { XCTAssertEqual($0 as? RedisError, .unavailable("no reply within 500 ms")) }
        XCTAssertFalse(channel.isActive)
    }

    // MARK: Scripts

    private let script = RedisScript("return ARGV[1]")
    private let noScript = "-NOSCRIPT No matching script. Please use EVAL.\r\n"

    private func evalsha(_ argument: String) -> String { String(buffer: script.evalsha(keys: ["k"], arguments: [Array(argument.utf8)])) }
    private func eval(_ argument: String) -> String { String(buffer: script.eval(keys: ["k"], arguments: [Array(argument.utf8)])) }
    private func run(_ connection: RedisConnection, _ argument: String) -> EventLoopFuture<RESPValue> {
        connection.runScript(script, keys: ["k"], arguments: [Array(argument.utf8)])
    }

    /// After `SCRIPT FLUSH`, A and B (sent together) are answered NOSCRIPT. A's EVAL goes at once; C, made before
    /// B's answer, must not go before B's EVAL: it would find the script A's EVAL loaded and run before B.
    func testScriptCallsKeepTheirOrderWhenRedisForgotTheScript() throws {
        let (channel, connection) = try connected()
        let a = run(connection, "a")
        let b = run(connection, "b")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("a") + evalsha("b"))
        try channel.writeInbound(ByteBuffer(string: noScript))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), eval("a"))
        let c = run(connection, "c")
        let d = run(connection, "d")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), "")
        try channel.writeInbound(ByteBuffer(string: noScript))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), eval("b") + evalsha("c") + evalsha("d"))
        // The fence is down: the next call goes at once.
        let e = run(connection, "e")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("e"))
        try channel.writeInbound(ByteBuffer(string: "$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n"))
        for (future, want) in [(a, "a"), (b, "b"), (c, "c"), (d, "d"), (e, "e")] {
            XCTAssertEqual(try future.wait(), .bulk(Array(want.utf8)))
        }
    }

    /// Another error is the call's own answer: no EVAL, and nothing waits behind it.
    func testAScriptErrorOtherThanNoScriptIsTheAnswer() throws {
        let (channel, connection) = try connected()
        let a = run(connection, "a")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("a"))
        try channel.writeInbound(ByteBuffer(string: "-ERR user_script:1: oops\r\n"))
        XCTAssertThrowsError(try a.wait()) { XCTAssertEqual($0 as? RedisError, .reply("ERR user_script:1: oops")) }
        let b = run(connection, "b")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("b"))
        try channel.writeInbound(ByteBuffer(string: "$1\r\nb\r\n"))
        XCTAssertEqual(try b.wait(), .bulk(Array("b".utf8)))
    }

    /// Calls waiting behind the fence fail with the connection, in the order they were made, after the calls that
    /// were sent; nothing more is written. (Twenty thousand of them: failing each held call inside the failure of
    /// the one before, as a drain from the failed calls' callbacks would, runs out of stack.)
    func testCallsWaitingForTheFenceFailInOrderWhenTheConnectionDrops() throws {
        let (channel, connection) = try connected()
        var failed: [String] = []
        let a = run(connection, "a")
        let b = run(connection, "b")
        try channel.writeInbound(ByteBuffer(string: noScript))
        let names = (0..<20_000).map { "h\($0)" }
        let held = names.map { run(connection, $0) }
        for (future, name) in zip([a, b] + held, ["a", "b"] + names) {
            future.assumeIsolated().whenFailure { _ in failed.append(name) }
        }
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("a") + evalsha("b") + eval("a"))
        try channel.writeInbound(ByteBuffer(string: "?garbage\r\n"))
        channel.embeddedEventLoop.run()
        // b's EVALSHA was pending before a's EVAL.
        XCTAssertEqual(failed, ["b", "a"] + names)
        XCTAssertThrowsError(try held[0].wait()) { error in
            guard case .protocolViolation = error as? RedisError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(try written(channel), "")
        // And a call made now fails at once.
        XCTAssertThrowsError(try run(connection, "late").wait())
    }

    /// A's EVAL loads A's script only: the hub's other scripts are loaded again right after it, so that a call of
    /// another script made after the NOSCRIPT answer does not meet NOSCRIPT itself while a later call of A's script,
    /// which A's EVAL loaded, runs before its retry.
    func testAfterNoScriptTheOtherScriptsAreLoadedAgainBehindTheEval() throws {
        let (channel, connection) = try connected()
        let other = RedisScript("return KEYS[1]")
        let loaded = connection.load([script, other])
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), String(buffer: script.load()) + String(buffer: other.load()))
        try channel.writeInbound(ByteBuffer(string: "$40\r\n\(script.sha)\r\n$40\r\n\(other.sha)\r\n"))
        XCTAssertNoThrow(try loaded.wait())
        let a = run(connection, "a")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), evalsha("a"))
        try channel.writeInbound(ByteBuffer(string: noScript))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), eval("a") + String(buffer: other.load()))
        // a was the only call in flight: the fence is down, and both go at once, behind the load.
        let r = connection.runScript(other, keys: ["k"], arguments: [])
        let p = run(connection, "p")
        channel.embeddedEventLoop.run()
        XCTAssertEqual(try written(channel), String(buffer: other.evalsha(keys: ["k"], arguments: [])) + evalsha("p"))
        try channel.writeInbound(ByteBuffer(string: "$1\r\na\r\n$40\r\n\(other.sha)\r\n$1\r\nk\r\n$1\r\np\r\n"))
        XCTAssertEqual(try a.wait(), .bulk(Array("a".utf8)))
        XCTAssertEqual(try r.wait(), .bulk(Array("k".utf8)))
        XCTAssertEqual(try p.wait(), .bulk(Array("p".utf8)))
    }

    /// Each hub's scripts are its own: the tag changes the SHA1, so no other hub's EVAL loads them.
    func testTaggedScriptsHaveTheirOwnDigest() {
        let mine = HubScripts(tag: "hub a"), theirs = HubScripts(tag: "hub b")
        XCTAssertEqual(mine.publish.source, "-- hub a\n" + RedisScripts.publish.source)
        XCTAssertEqual(mine.publish.sha, Hex.encode(Digest.sha1(Array(mine.publish.source.utf8))))
        let shas = mine.all.map(\.sha) + theirs.all.map(\.sha) + [RedisScripts.publish.sha]
        XCTAssertEqual(Set(shas).count, 11)
    }
}
