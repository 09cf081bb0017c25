import HubCore
import HubProtocol
import Logging
import NIOCore
import NIOEmbedded
import XCTest

@testable import HubServer

/// Logs the writes and flushes that pass it on their way to the channel.
private final class Recorder: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var log: [String] = []
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        log.append("write \(buffer.readableBytes)")
        context.write(data, promise: promise)
    }
    func flush(context: ChannelHandlerContext) {
        log.append("flush")
        context.flush()
    }
}

/// Whole conversations through the connection's single handler on an EmbeddedChannel, with virtual time.
final class WebSocketHandlerTests: XCTestCase {
    var loop: EmbeddedEventLoop!
    var channel: EmbeddedChannel!

    override func setUp() {
        loop = EmbeddedEventLoop()
        channel = EmbeddedChannel(loop: loop)
        let second: Int64 = 1_000_000_000
        let connection = WebSocketConnection(
            configuration: .init(maxFrameSize: 1024, maxMessageSize: 1024, pingInterval: 15 * second,
                pongTimeout: 10 * second, closeTimeout: 5 * second),
            deflate: nil, now: Int64(loop.now.uptimeNanoseconds))
        let loop = self.loop!
        let handler = WebSocketHandler(connection: connection, resources: LoopResources(eventLoop: loop, metrics: .none, tokens: TokenVerifier(secret: [1])),
            application: EchoApplication(), logger: Logger(label: "test"), clock: { Int64(loop.now.uptimeNanoseconds) })
        XCTAssertNoThrow(try channel.pipeline.syncOperations.addHandler(handler))
        XCTAssertNoThrow(try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait())
        handler.start()
    }

    override func tearDown() {
        _ = try? channel.finish()
    }

    private func send(_ bytes: [UInt8]) throws {
        try channel.writeInbound(ByteBuffer(bytes: bytes))
    }

    /// Everything written to the peer so far, as one byte array.
    private func written() throws -> [UInt8] {
        loop.run()  // the flush at the end of the loop tick
        var out: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += Array(buffer.readableBytesView) }
        return out
    }

    private let maskedHello: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]

    func testEchoesTextAsOneUnmaskedFrame() throws {
        try send(maskedHello)
        XCTAssertEqual(try written(), [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        XCTAssertTrue(channel.isActive)
    }

    /// `flush: true` hands the frame (and anything queued before it) to the channel at once; without it, frames wait for
    /// the loop's flush pass.
    func testAFlushedWriteGoesOutAtOnceOthersWaitForTheFlushPass() throws {
        let handler = try channel.pipeline.syncOperations.handler(type: WebSocketHandler.self)
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x61]))
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x62]), flush: true)
        var out: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out += Array(buffer.readableBytesView) }
        XCTAssertEqual(out, [0x81, 0x01, 0x61, 0x81, 0x01, 0x62])
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x63]))
        XCTAssertNil(try channel.readOutbound(as: ByteBuffer.self))
        XCTAssertEqual(try written(), [0x81, 0x01, 0x63])
    }

    /// After the upgrade the handler is the pipeline's only one and hands frames and flushes to the channel's core
    /// itself, skipping the pipeline's walk: a handler put in front of it sees none of them, and the bytes still reach
    /// the channel in order, a flushed write at once and deferred ones with the loop's pass.
    func testAloneItWritesToTheChannelCoreInOrder() throws {
        let connection = WebSocketConnection(
            configuration: .init(maxFrameSize: 1024, maxMessageSize: 1024, pingInterval: 15_000_000_000,
                pongTimeout: 10_000_000_000, closeTimeout: 5_000_000_000),
            deflate: nil, now: Int64(loop.now.uptimeNanoseconds))
        let direct = EmbeddedChannel(loop: loop)
        defer { _ = try? direct.finish() }
        let loop = self.loop!
        let handler = WebSocketHandler(connection: connection,
            resources: LoopResources(eventLoop: loop, metrics: .none, tokens: TokenVerifier(secret: [1])),
            application: EchoApplication(), logger: Logger(label: "test"), clock: { Int64(loop.now.uptimeNanoseconds) })
        try direct.pipeline.syncOperations.addHandler(handler)
        try direct.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        handler.start(alone: true)
        let recorder = Recorder()
        try direct.pipeline.syncOperations.addHandler(recorder, position: .first)
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x61]))
        XCTAssertNil(try direct.readOutbound(as: ByteBuffer.self))
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x62]), flush: true)
        XCTAssertEqual(try direct.readOutbound(as: ByteBuffer.self), ByteBuffer(bytes: [0x81, 0x01, 0x61]))
        XCTAssertEqual(try direct.readOutbound(as: ByteBuffer.self), ByteBuffer(bytes: [0x81, 0x01, 0x62]))
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x63]), flush: true)
        XCTAssertEqual(try direct.readOutbound(as: ByteBuffer.self), ByteBuffer(bytes: [0x81, 0x01, 0x63]))
        handler.write(frame: ByteBuffer(bytes: [0x81, 0x01, 0x64]))
        XCTAssertNil(try direct.readOutbound(as: ByteBuffer.self))
        loop.run()  // the loop's flush pass
        XCTAssertEqual(try direct.readOutbound(as: ByteBuffer.self), ByteBuffer(bytes: [0x81, 0x01, 0x64]))
        XCTAssertEqual(recorder.log, [])
    }

    /// Deferred frames wait in the handler and reach the channel only with the flush that sends them (the pass, or a
    /// flushed write behind them), in order; a burst beyond the staging limit goes to the channel at once, where its
    /// water marks see it.
    func testDeferredFramesReachTheChannelOnlyWithTheirFlushInOrder() throws {
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandler(recorder, position: .first)
        let handler = try channel.pipeline.syncOperations.handler(type: WebSocketHandler.self)
        handler.write(frame: ByteBuffer(repeating: 1, count: 10))
        handler.write(frame: ByteBuffer(repeating: 2, count: 20))
        XCTAssertEqual(recorder.log, [])
        handler.write(frame: ByteBuffer(repeating: 3, count: 30), flush: true)
        XCTAssertEqual(recorder.log, ["write 10", "write 20", "write 30", "flush"])
        recorder.log = []
        handler.write(frame: ByteBuffer(repeating: 4, count: 40))
        XCTAssertEqual(recorder.log, [])
        loop.run()  // the loop's flush pass
        XCTAssertEqual(recorder.log, ["write 40", "flush"])
        recorder.log = []
        // Up to the limit the frames wait; the one that would pass it sends them and itself to the channel at once.
        let size = WebSocketHandler.stagedLimit / 4
        for _ in 0..<4 { handler.write(frame: ByteBuffer(repeating: 5, count: size)) }
        XCTAssertEqual(recorder.log, [])
        handler.write(frame: ByteBuffer(repeating: 6, count: 1))
        XCTAssertEqual(recorder.log, Array(repeating: "write \(size)", count: 4) + ["write 1"])
        loop.run()
        XCTAssertEqual(recorder.log.last, "flush")
        var total = 0
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { total += buffer.readableBytes }
        XCTAssertEqual(total, 10 + 20 + 30 + 40 + 4 * size + 1)
    }

    func testTwoMessagesInOneReadAreBothEchoedInOrder() throws {
        try send(maskedHello + maskedHello)
        XCTAssertEqual(try written(), [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
    }

    func testPeerCloseIsEchoedAndTheServerClosesTCP() throws {
        // Close 1000, masked with key 00 00 00 00.
        try send([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8])
        XCTAssertEqual(try written(), [0x88, 0x02, 0x03, 0xE8])
        XCTAssertFalse(channel.isActive)
    }

    func testUnmaskedFrameFailsWith1002AndCloses() throws {
        try send([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        XCTAssertEqual(try written(), [0x88, 0x1E, 0x03, 0xEA] + Array("client frames must be masked".utf8))
        XCTAssertFalse(channel.isActive)
    }

    func testQuietPeerIsPingedAndDroppedWithoutAPong() throws {
        loop.advanceTime(by: .seconds(14))
        XCTAssertEqual(try written(), [])
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(try written(), [0x89, 0x00])
        loop.advanceTime(by: .seconds(9))
        XCTAssertTrue(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(try written(), [0x88, 0x19, 0x03, 0xE9] + Array("no pong within 10000 ms".utf8))
        XCTAssertFalse(channel.isActive)
    }

    /// A connection whose first ping is early by its spread is pinged that much before a whole quiet interval.
    func testTheFirstPingComesEarlyByTheSpread() throws {
        let second: Int64 = 1_000_000_000
        let early = WebSocketConnection(
            configuration: .init(maxFrameSize: 1024, maxMessageSize: 1024, pingInterval: 15 * second,
                pongTimeout: 10 * second, closeTimeout: 5 * second),
            deflate: nil, now: Int64(loop.now.uptimeNanoseconds), firstPingEarly: 4 * second)
        let other = EmbeddedChannel(loop: loop)
        let loop = self.loop!
        let handler = WebSocketHandler(connection: early, resources: LoopResources(eventLoop: loop, metrics: .none, tokens: TokenVerifier(secret: [1])),
            application: EchoApplication(), logger: Logger(label: "test"), clock: { Int64(loop.now.uptimeNanoseconds) })
        XCTAssertEqual(handler.firstPingEarly, 4 * second)
        try other.pipeline.syncOperations.addHandler(handler)
        try other.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        handler.start()
        func written() throws -> [UInt8] {
            loop.run()
            var out: [UInt8] = []
            while let buffer = try other.readOutbound(as: ByteBuffer.self) { out += Array(buffer.readableBytesView) }
            return out
        }
        loop.advanceTime(by: .seconds(10))
        XCTAssertEqual(try written(), [])
        loop.advanceTime(by: .seconds(1))
        XCTAssertEqual(try written(), [0x89, 0x00])
        _ = try? other.finish()
    }

    func testAnsweredPingKeepsTheConnection() throws {
        loop.advanceTime(by: .seconds(15))
        XCTAssertEqual(try written(), [0x89, 0x00])
        try send([0x8A, 0x80, 0, 0, 0, 0])  // empty masked pong
        loop.advanceTime(by: .seconds(10))
        XCTAssertTrue(channel.isActive)
        XCTAssertEqual(try written(), [])
        // The next ping comes a full interval after the pong.
        loop.advanceTime(by: .seconds(5))
        XCTAssertEqual(try written(), [0x89, 0x00])
    }

    func testPeerPingIsAnsweredWithTheSamePayload() throws {
        try send([0x89, 0x82, 0, 0, 0, 0, 0x68, 0x69])
        XCTAssertEqual(try written(), [0x8A, 0x02, 0x68, 0x69])
    }

    func testServerInitiatedCloseWaitsForThePeerThenTimesOut() throws {
        let handler = try channel.pipeline.syncOperations.handler(type: WebSocketHandler.self)
        handler.close(code: .goingAway, reason: "bye")
        XCTAssertEqual(try written(), [0x88, 0x05, 0x03, 0xE9, 0x62, 0x79, 0x65])
        // Data after our close is ignored (§7.1.4); the peer's close never comes; TCP closes at the deadline.
        try send(maskedHello)
        XCTAssertEqual(try written(), [])
        loop.advanceTime(by: .seconds(4))
        XCTAssertTrue(channel.isActive)
        loop.advanceTime(by: .seconds(1))
        XCTAssertFalse(channel.isActive)
    }

    func testServerInitiatedCloseEndsWhenThePeerAnswers() throws {
        let handler = try channel.pipeline.syncOperations.handler(type: WebSocketHandler.self)
        handler.close(code: .goingAway, reason: "")
        XCTAssertEqual(try written(), [0x88, 0x02, 0x03, 0xE9])
        try send([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE9])
        XCTAssertEqual(try written(), [])
        XCTAssertFalse(channel.isActive)
    }
}
