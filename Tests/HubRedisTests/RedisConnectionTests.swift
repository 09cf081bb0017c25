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
}
