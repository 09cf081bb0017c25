import NIOCore
import XCTest

@testable import HubServer

final class ConnectionStarterTests: XCTestCase {
    private func mayWait(_ text: String) -> Bool {
        ConnectionStarter.mayWait(ByteBuffer(string: text))
    }

    func testAnIncompleteRequestHeadIsHeld() {
        XCTAssertTrue(mayWait("G"))
        XCTAssertTrue(mayWait("GET /heal"))
        XCTAssertTrue(mayWait("GET /healthz HTTP/1.1\r\n"))
        XCTAssertTrue(mayWait("GET /healthz HTTP/1.1\r\nHost: x\r\n"))
        XCTAssertTrue(mayWait("GET /healthz HTTP/1.1\r\nHost: x\r\n\r"))
        XCTAssertTrue(mayWait("POST /v1/jobs/progress HTTP/1.1\r\nContent-Length: 5\r\n"))
    }

    func testAHeadThatEndsInABlankLineGoesOn() {
        XCTAssertFalse(mayWait("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        XCTAssertFalse(mayWait("POST /v1/jobs/progress HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"a\""))
        // Line feeds alone end lines too; the parser decides what it accepts.
        XCTAssertFalse(mayWait("GET /healthz HTTP/1.1\nHost: x\n\n"))
        XCTAssertFalse(mayWait("GET /healthz HTTP/1.1\r\n\n"))
        XCTAssertFalse(mayWait("GET / HTTP/1.0\r\n\r\n"))
    }

    func testBytesThatCannotStartARequestGoOnAtOnce() {
        // A TLS ClientHello, a lower-case method, a leading blank line, a leading space.
        XCTAssertFalse(ConnectionStarter.mayWait(ByteBuffer(bytes: [0x16, 0x03, 0x01, 0x00, 0x05])))
        XCTAssertFalse(mayWait("get / HTTP/1.1\r\n"))
        XCTAssertFalse(mayWait("\r\nGET / HTTP/1.1\r\n"))
        XCTAssertFalse(mayWait(" GET / HTTP/1.1\r\n"))
    }

    func testAtMostMaxHeldBytesAreHeld() {
        let line = "GET /" + String(repeating: "a", count: ConnectionStarter.maxHeld - 5)
        XCTAssertEqual(line.utf8.count, 4096)
        XCTAssertTrue(mayWait(line))
        XCTAssertFalse(mayWait(line + "a"))
    }
}
