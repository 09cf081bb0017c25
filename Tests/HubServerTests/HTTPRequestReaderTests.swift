import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import HubServer

final class HTTPRequestReaderTests: XCTestCase {
    /// Collects the request parts it is given; on the end of a request for `/upgrade` it replaces the reader and
    /// itself with `next`, as the hub's upgrade does.
    private final class Parts: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        var seen: [String] = []
        var errors: [Error] = []
        var upgradeTo: ChannelHandler?
        /// On the head of a request for `/eof`, the end of the stream comes while the decoder is still fed.
        var endStreamOnHead = false
        private var uri = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                uri = head.uri
                seen.append("head \(head.method) \(head.uri) host=\(head.headers["Host"].joined(separator: ","))")
                if head.uri == "/eof" && endStreamOnHead { context.pipeline.fireChannelInactive() }
            case .body(let bytes):
                seen.append("body \(String(buffer: bytes))")
            case .end:
                seen.append("end")
                if uri == "/upgrade", let next = upgradeTo {
                    let pipeline = context.pipeline.syncOperations
                    try! pipeline.addHandler(next)
                    let reader = try! pipeline.handler(type: HTTPRequestReader.self)
                    pipeline.removeHandler(context: context, promise: nil)
                    pipeline.removeHandler(reader, promise: nil)
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            errors.append(error)
        }
    }

    private final class Bytes: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var received: [String] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received.append(String(buffer: unwrapInboundIn(data)))
        }
    }

    private func channel() throws -> (EmbeddedChannel, Parts) {
        let parts = Parts()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([HTTPRequestReader(), parts])
        return (channel, parts)
    }

    private func read(_ channel: EmbeddedChannel, _ text: String) {
        // Straight into the pipeline: no task of the event loop runs in between.
        channel.pipeline.fireChannelRead(ByteBuffer(string: text))
    }

    func testARequestInPiecesComesOutWhole() throws {
        let (channel, parts) = try channel()
        read(channel, "GET /a HTTP/1.1\r\nHo")
        XCTAssertEqual(parts.seen, [])
        read(channel, "st: x\r\n\r\n")
        XCTAssertEqual(parts.seen, ["head GET /a host=x", "end"])
    }

    func testPipelinedRequestsComeOutInOrder() throws {
        let (channel, parts) = try channel()
        read(channel, "POST /b HTTP/1.1\r\nHost: y\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: z\r\n\r\n")
        XCTAssertEqual(parts.seen, ["head POST /b host=y", "body abc", "end", "head GET /c host=z", "end"])
    }

    func testAtAnUpgradeTheReaderLeavesWithinTheReadAndTheRestGoesOnInOrder() throws {
        let (channel, parts) = try channel()
        let next = Bytes()
        parts.upgradeTo = next
        read(channel, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst")
        XCTAssertEqual(parts.seen, ["head GET /upgrade host=x", "end"])
        XCTAssertEqual(next.received, ["first"])
        // Gone before any task of the event loop has run (NIO's ByteToMessageHandler leaves in one).
        XCTAssertThrowsError(try channel.pipeline.syncOperations.handler(type: HTTPRequestReader.self))
        XCTAssertThrowsError(try channel.pipeline.syncOperations.handler(type: Parts.self))
        read(channel, "second")
        XCTAssertEqual(next.received, ["first", "second"])
    }

    func testAnUpgradeWithNothingAfterItForwardsNothing() throws {
        let (channel, parts) = try channel()
        let next = Bytes()
        parts.upgradeTo = next
        read(channel, "GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        XCTAssertEqual(next.received, [])
        XCTAssertThrowsError(try channel.pipeline.syncOperations.handler(type: HTTPRequestReader.self))
    }

    func testAMalformedRequestIsOneErrorAndLaterBytesAreRefused() throws {
        let (channel, parts) = try channel()
        read(channel, "GET / HTTP/1.1\r\nHost x\r\n\r\n")
        XCTAssertEqual(parts.errors.count, 1)
        XCTAssertEqual(parts.errors.first as? HTTPParserError, .invalidHeaderToken)
        read(channel, "GET / HTTP/1.1\r\n\r\n")
        XCTAssertEqual(parts.errors.count, 2)
        guard case .dataReceivedInErrorState(let first, let bytes)? = parts.errors.last as? ByteToMessageDecoderError
        else { return XCTFail("\(parts.errors)") }
        XCTAssertEqual(first as? HTTPParserError, .invalidHeaderToken)
        XCTAssertEqual(String(buffer: bytes), "GET / HTTP/1.1\r\n\r\n")
        XCTAssertEqual(parts.seen, [])
    }

    func testTheEndOfTheStreamMidRequestIsAnError() throws {
        let (channel, parts) = try channel()
        read(channel, "POST /b HTTP/1.1\r\nHost: y\r\nContent-Length: 10\r\n\r\nabc")
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(parts.seen, ["head POST /b host=y", "body abc"])
        XCTAssertEqual(parts.errors.count, 1)
        XCTAssertEqual(parts.errors.first as? HTTPParserError, .invalidEOFState)
    }

    func testARemovalOutsideAReadHandsTheRestOnInALaterTask() throws {
        let (channel, parts) = try channel()
        read(channel, "GET /later HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nfirst")
        XCTAssertEqual(parts.seen, ["head GET /later host=x", "end"])
        // The upgrade is handled after the read (as when answers before it were still being written).
        let next = Bytes()
        let pipeline = channel.pipeline.syncOperations
        try pipeline.addHandler(next)
        let reader = try pipeline.handler(type: HTTPRequestReader.self)
        pipeline.removeHandler(parts, promise: nil)
        pipeline.removeHandler(reader, promise: nil)
        read(channel, "second")
        // Nothing yet: whoever replaced the reader starts first.
        XCTAssertEqual(next.received, [])
        XCTAssertNoThrow(try pipeline.handler(type: HTTPRequestReader.self))
        channel.embeddedEventLoop.run()
        XCTAssertEqual(next.received, ["firstsecond"])
        XCTAssertThrowsError(try pipeline.handler(type: HTTPRequestReader.self))
        read(channel, "third")
        XCTAssertEqual(next.received, ["firstsecond", "third"])
    }

    func testARemovalOutsideAReadWithNothingAfterTheRequestIsAtOnce() throws {
        let (channel, parts) = try channel()
        read(channel, "GET /later HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        let pipeline = channel.pipeline.syncOperations
        pipeline.removeHandler(parts, promise: nil)
        pipeline.removeHandler(try pipeline.handler(type: HTTPRequestReader.self), promise: nil)
        XCTAssertThrowsError(try pipeline.handler(type: HTTPRequestReader.self))
    }

    func testTheEndOfTheStreamAfterAWholeRequestIsNoError() throws {
        let (channel, parts) = try channel()
        read(channel, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        channel.pipeline.fireChannelInactive()
        XCTAssertEqual(parts.seen, ["head GET /a host=x", "end"])
        XCTAssertEqual(parts.errors.count, 0)
    }

    func testTheEndOfTheStreamWhileTheDecoderIsFedIsTakenAfterIt() throws {
        let (channel, parts) = try channel()
        parts.endStreamOnHead = true
        read(channel, "POST /eof HTTP/1.1\r\nHost: y\r\nContent-Length: 10\r\n\r\nabc")
        XCTAssertEqual(parts.seen, ["head POST /eof host=y", "body abc"])
        XCTAssertEqual(parts.errors.count, 1)
        XCTAssertEqual(parts.errors.first as? HTTPParserError, .invalidEOFState)
    }
}
