import HubProtocol
import NIOCore
import XCTest

final class SSEEncoderTests: XCTestCase {
    private func event(id: String? = nil, event: String? = nil, data: String, retry: Int? = nil) throws -> String {
        String(buffer: try SSEEncoder.event(id: id, event: event, data: data, retry: retry))
    }

    func testFieldsInOrder() throws {
        XCTAssertEqual(try event(id: "42", event: "node.completed", data: "{\"a\":1}", retry: 3000),
            "id: 42\nevent: node.completed\ndata: {\"a\":1}\nretry: 3000\n\n")
    }

    func testMultiLineDataSplitsOnEveryLineEnding() throws {
        XCTAssertEqual(try event(data: "a\nb\r\nc\rd"), "data: a\ndata: b\ndata: c\ndata: d\n\n")
        XCTAssertEqual(try event(data: "trailing\n"), "data: trailing\ndata: \n\n")
        XCTAssertEqual(try event(data: ""), "data: \n\n")
        XCTAssertEqual(try event(data: " leading space"), "data:  leading space\n\n")
    }

    func testLineBreaksInIdOrEventAreRefused() {
        XCTAssertThrowsError(try event(id: "1\n2", data: "x")) { XCTAssertEqual($0 as? SSEEncoder.Error, .lineBreakInField("id")) }
        XCTAssertThrowsError(try event(id: "1\r", data: "x"))
        XCTAssertThrowsError(try event(event: "a\rb", data: "x")) {
            XCTAssertEqual($0 as? SSEEncoder.Error, .lineBreakInField("event"))
        }
    }

    func testCommentsAndRetry() {
        var b = ByteBuffer()
        SSEEncoder.writeComment(into: &b, "heartbeat")
        SSEEncoder.writeComment(into: &b, "two\nlines")
        SSEEncoder.writeComment(into: &b, "")
        SSEEncoder.writeRetry(into: &b, milliseconds: 1500)
        XCTAssertEqual(String(buffer: b), ": heartbeat\n: two\n: lines\n:\nretry: 1500\n\n")
    }
}
