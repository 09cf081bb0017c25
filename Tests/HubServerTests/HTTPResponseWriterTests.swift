import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import HubServer

final class HTTPResponseWriterTests: XCTestCase {
    /// Writes `parts` (each followed by a flush when asked) through `handler` and returns the buffers that reached the
    /// socket, in order.
    private func written(_ handler: ChannelHandler, _ parts: [(HTTPServerResponsePart, flush: Bool)]) throws -> [ByteBuffer] {
        let channel = EmbeddedChannel(handler: handler)
        defer { _ = try? channel.finish() }
        for (part, flush) in parts {
            channel.write(part, promise: nil)
            if flush { channel.flush() }
        }
        channel.flush()
        var out: [ByteBuffer] = []
        while let buffer = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let b) = buffer else { XCTFail("not a byte buffer"); continue }
            out.append(b)
        }
        return out
    }

    private func head(_ status: HTTPResponseStatus, _ headers: [(String, String)]) -> HTTPServerResponsePart {
        .head(HTTPResponseHead(version: .http1_1, status: status, headers: HTTPHeaders(headers)))
    }

    private func body(_ text: String) -> HTTPServerResponsePart { .body(.byteBuffer(ByteBuffer(string: text))) }

    private func joined(_ buffers: [ByteBuffer]) -> String {
        buffers.map { String(buffer: $0) }.joined()
    }

    /// The responses the hub sends, each as NIO's encoder writes it, but in one buffer.
    func testEveryResponseOfTheHubIsNIOsBytesInOneWrite() throws {
        let json = "{\"accepted\":[]}\n"
        let cases: [(String, [(HTTPServerResponsePart, flush: Bool)])] = [
            ("202", [(head(.accepted, [("Content-Type", "application/json"), ("Content-Length", "\(json.utf8.count)")]), false),
                (body(json), false), (.end(nil), true)]),
            ("200", [(head(.ok, [("Content-Type", "text/plain"), ("Content-Length", "2")]), false), (body("ok"), false),
                (.end(nil), true)]),
            ("refusal with a custom reason and extra headers",
                [(head(HTTPResponseStatus(statusCode: 426, reasonPhrase: "Upgrade Required"), [("Sec-WebSocket-Version", "13"),
                    ("Content-Type", "application/json"), ("Content-Length", "3"), ("Connection", "close")]), false),
                (body("{}\n"), false), (.end(nil), true)]),
            ("HEAD: no body", [(head(.ok, [("Content-Type", "text/html"), ("Content-Length", "1234")]), false), (.end(nil), true)]),
            ("101: a head and a flush, no end", [(head(.switchingProtocols, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]), true)]),
            ("429", [(head(.tooManyRequests, [("Retry-After", "5"), ("Content-Length", "3")]), false), (body("{}\n"), false),
                (.end(nil), true)]),
        ]
        for (name, parts) in cases {
            let mine = try written(HTTPResponseWriter(), parts)
            let nio = try written(HTTPResponseEncoder(), parts)
            XCTAssertEqual(joined(mine), joined(nio), name)
            XCTAssertEqual(mine.count, 1, name)
        }
        let accepted = try written(HTTPResponseWriter(), cases[0].1)
        XCTAssertEqual(joined(accepted),
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"accepted\":[]}\n")
    }

    /// Two responses written before one flush (pipelined answers) stay two responses, in order.
    func testResponsesWrittenBeforeOneFlushStayInOrder() throws {
        let parts: [(HTTPServerResponsePart, flush: Bool)] = [
            (head(.accepted, [("Content-Length", "2")]), false), (body("a\n"), false), (.end(nil), false),
            (head(.notFound, [("Content-Length", "2")]), false), (body("b\n"), false), (.end(nil), false),
        ]
        let mine = try written(HTTPResponseWriter(), parts)
        XCTAssertEqual(mine.map { String(buffer: $0) },
            ["HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\na\n", "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nb\n"])
    }

    /// A body larger than `maxJoinedBody` follows its head as its own buffer, not copied.
    func testALargeBodyIsWrittenAfterItsHead() throws {
        let large = String(repeating: "x", count: HTTPResponseWriter.maxJoinedBody + 1)
        let parts: [(HTTPServerResponsePart, flush: Bool)] = [
            (head(.ok, [("Content-Length", "\(large.utf8.count)")]), false), (body(large), false), (.end(nil), true),
        ]
        let mine = try written(HTTPResponseWriter(), parts)
        XCTAssertEqual(mine.count, 2)
        XCTAssertEqual(joined(mine), joined(try written(HTTPResponseEncoder(), parts)))
        XCTAssertEqual(mine[1].readableBytes, HTTPResponseWriter.maxJoinedBody + 1)
    }

    /// Every part's promise completes once its bytes are written, not before, and in the order of the parts: the
    /// head's, the body's, then the end's (whose completion tells the handler the response is out).
    func testThePromisesOfEveryPartCompleteInOrderOnceWritten() throws {
        for large in [false, true] {
            let channel = EmbeddedChannel(handler: HTTPResponseWriter())
            let text = large ? String(repeating: "y", count: HTTPResponseWriter.maxJoinedBody + 1) : "z\n"
            let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
            var completed: [Int] = []
            for (index, promise) in promises.enumerated() {
                promise.futureResult.assumeIsolated().whenSuccess { completed.append(index) }
            }
            channel.write(head(.ok, [("Content-Length", "\(text.utf8.count)")]) as HTTPServerResponsePart, promise: promises[0])
            channel.write(body(text) as HTTPServerResponsePart, promise: promises[1])
            channel.write(HTTPServerResponsePart.end(nil), promise: promises[2])
            XCTAssertEqual(completed, [], "large \(large): nothing is written before the flush")
            channel.flush()
            XCTAssertEqual(completed, [0, 1, 2], "large \(large)")
            _ = try channel.finish()
        }
    }

    /// A response to HEAD keeps its head (with the Content-Length a GET would get) and loses its body; the request
    /// after it, a GET, gets its body. Each response takes the method of the next request not yet answered.
    func testAResponseToHEADHasNoBodyAndTheNextOneHas() throws {
        let writer = HTTPResponseWriter()
        writer.expectResponse(toHEAD: true)
        writer.expectResponse(toHEAD: false)
        let channel = EmbeddedChannel(handler: writer)
        let bodyPromise = channel.eventLoop.makePromise(of: Void.self)
        var bodyDone = false
        bodyPromise.futureResult.assumeIsolated().whenSuccess { bodyDone = true }
        channel.write(head(.ok, [("Content-Length", "16")]) as HTTPServerResponsePart, promise: nil)
        channel.write(body("{\"status\":\"ok\"}\n") as HTTPServerResponsePart, promise: bodyPromise)
        channel.write(HTTPServerResponsePart.end(nil), promise: nil)
        channel.write(head(.ok, [("Content-Length", "16")]) as HTTPServerResponsePart, promise: nil)
        channel.write(body("{\"status\":\"ok\"}\n") as HTTPServerResponsePart, promise: nil)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: nil)
        var out = ""
        while let buffer = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let b) = buffer else { continue }
            out += String(buffer: b)
        }
        XCTAssertEqual(out, "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n"
            + "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\n")
        XCTAssertTrue(bodyDone)
        _ = try channel.finish()
    }

    /// A channel that closes with a response half written fails the promises waiting on it with the channel's error
    /// rather than dropping them (NIO asserts on a promise that is never completed).
    func testACloseWithAHalfWrittenResponseFailsItsPromises() throws {
        let channel = EmbeddedChannel(handler: HTTPResponseWriter())
        let headPromise = channel.eventLoop.makePromise(of: Void.self)
        var result: Result<Void, Error>?
        headPromise.futureResult.assumeIsolated().whenComplete { result = $0 }
        channel.write(head(.ok, [("Content-Length", "2")]) as HTTPServerResponsePart, promise: headPromise)
        XCTAssertNil(result)
        _ = try? channel.close().wait()
        channel.embeddedEventLoop.run()  // the pipeline's handlers are removed after the close
        guard case .failure(let error)? = result else { return XCTFail("not failed: \(String(describing: result))") }
        XCTAssertEqual(error as? ChannelError, .ioOnClosedChannel)
    }
}
