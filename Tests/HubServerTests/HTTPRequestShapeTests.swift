import NIOCore
import NIOEmbedded
import NIOHTTP1
import XCTest

@testable import HubServer

/// The request shapes the hub refuses beyond the HTTP parser's own checks, and the per-address connection count.
final class HTTPRequestShapeTests: XCTestCase {
    private func head(_ headers: [(String, String)], version: HTTPVersion = .http1_1) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: .POST, uri: "/v1/jobs/progress", headers: HTTPHeaders(headers))
    }

    private let noHost = HTTPRequestShape.Problem(status: .badRequest, code: "malformed_request",
        message: "an HTTP/1.1 request needs exactly one Host header")

    func testAnHTTP11RequestNeedsExactlyOneHost() {
        XCTAssertNil(HTTPRequestShape.problem(head([("Host", "hub")])))
        XCTAssertEqual(HTTPRequestShape.problem(head([])), noHost)
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "a"), ("host", "b")])), noHost)
        // One header may still hold no value or two (a comma-separated list); one value with an empty piece is one.
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "")])), noHost)
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "a, b")])), noHost)
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "a,b")])), noHost)
        XCTAssertNil(HTTPRequestShape.problem(head([("Host", "hub,")])))
        XCTAssertNil(HTTPRequestShape.problem(head([("HOST", "hub:8080")])))
        // HTTP/1.0 had no Host requirement.
        XCTAssertNil(HTTPRequestShape.problem(head([], version: .http1_0)))
    }

    func testOnlyChunkedAloneIsATransferEncoding() {
        XCTAssertNil(HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "chunked")])))
        XCTAssertNil(HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "Chunked")])))
        let notLast = HTTPRequestShape.Problem(status: .badRequest, code: "malformed_request",
            message: "Transfer-Encoding must end with chunked")
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "gzip")])), notLast)
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "chunked, gzip")])), notLast)
        let other = HTTPRequestShape.Problem(status: .notImplemented, code: "unsupported_transfer_encoding",
            message: "only Transfer-Encoding: chunked is supported")
        XCTAssertEqual(HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "gzip, chunked")])), other)
        XCTAssertEqual(
            HTTPRequestShape.problem(head([("Host", "hub"), ("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")])),
            other)
    }

    func testConnectionsAreCountedPerAddressAndReleasedWhenTheyClose() throws {
        let table = ConnectionTable(perAddressLimit: 2)
        func connected(from address: String) throws -> EmbeddedChannel {
            let channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: address, port: 40000)).wait()
            return channel
        }
        let a1 = try connected(from: "10.0.0.1"), a2 = try connected(from: "10.0.0.1"), a3 = try connected(from: "10.0.0.1")
        let b1 = try connected(from: "10.0.0.2")
        XCTAssertTrue(table.add(a1))
        XCTAssertTrue(table.add(a2))
        XCTAssertFalse(table.add(a3))
        XCTAssertTrue(table.add(b1))
        XCTAssertEqual(table.all.count, 3)
        _ = try a1.finish()
        XCTAssertTrue(table.add(a3))
        XCTAssertFalse(table.add(try connected(from: "10.0.0.1")))
        XCTAssertEqual(table.all.count, 3)
    }

    func testWithoutALimitEveryConnectionIsAdmitted() throws {
        let table = ConnectionTable()
        for _ in 0..<100 {
            let channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: "10.0.0.1", port: 40000)).wait()
            XCTAssertTrue(table.add(channel))
        }
        XCTAssertEqual(table.all.count, 100)
    }
}
