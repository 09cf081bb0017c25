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

    /// Every part's promise completes once its bytes are written: the head's, the body's and the end's.
    func testThePromisesOfEveryPartComplete() throws {
        for large in [false, true] {
            let channel = EmbeddedChannel(handler: HTTPResponseWriter())
            let text = large ? String(repeating: "y", count: HTTPResponseWriter.maxJoinedBody + 1) : "z\n"
            let promises = (0..<3).map { _ in channel.eventLoop.makePromise(of: Void.self) }
            var done = [false, false, false]
            for (index, promise) in promises.enumerated() { promise.futureResult.assumeIsolated().whenSuccess { done[index] = true } }
            channel.write(head(.ok, [("Content-Length", "\(text.utf8.count)")]) as HTTPServerResponsePart, promise: promises[0])
            channel.write(body(text) as HTTPServerResponsePart, promise: promises[1])
            XCTAssertEqual(done, [false, false, false], "large \(large)")
            channel.write(HTTPServerResponsePart.end(nil), promise: promises[2])
            channel.flush()
            XCTAssertEqual(done, [true, true, true], "large \(large)")
            _ = try channel.finish()
        }
    }
}
