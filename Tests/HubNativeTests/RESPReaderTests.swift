import HubNative
import XCTest

final class RESPReaderTests: XCTestCase {
    func testRepliesOfEveryTypeWholeAndByteByByte() throws {
        let wire = Array("+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:7\r\n*0\r\n$0\r\n\r\n".utf8)
        let expected: [RESPValue] = [
            .status("OK"), .error("ERR wrong"), .integer(42), .bulk(Array("hello".utf8)), .null,
            .array([.bulk([UInt8(ascii: "a")]), .integer(7)]), .array([]), .bulk([]),
        ]
        let whole = RESPReader()
        try whole.feed(wire)
        var got: [RESPValue] = []
        while let v = try whole.next() { got.append(v) }
        XCTAssertEqual(got, expected)

        let bytewise = RESPReader()
        got = []
        for b in wire {
            try bytewise.feed([b])
            while let v = try bytewise.next() { got.append(v) }
        }
        XCTAssertEqual(got, expected)
    }

    func testMalformedReplyIsAnError() throws {
        let reader = RESPReader()
        try reader.feed(Array("?what\r\n".utf8))
        XCTAssertThrowsError(try reader.next()) { error in
            XCTAssertTrue((error as? RESPReader.ProtocolError)?.message.contains("Protocol error") == true, "\(error)")
        }
    }

    /// Fourteen bytes must not make hiredis allocate room for 2^31 - 1 elements (16 GiB) before any element arrives.
    func testHugeArrayHeaderIsRefusedBeforeAllocating() throws {
        let reader = RESPReader()
        try reader.feed(Array("*2147483647\r\n".utf8))
        XCTAssertThrowsError(try reader.next()) { error in
            XCTAssertEqual((error as? RESPReader.ProtocolError)?.message,
                "Protocol error: array of 2147483647 elements, more than the 1048576 pending elements a reply may have")
        }
    }

    /// The limit counts element slots allocated and not yet filled, so arrays that each fit cannot add up: nested
    /// headers alone would otherwise allocate eight bytes per announced element for every few bytes of input.
    func testPendingElementsAddUpAcrossNestedArrays() throws {
        // 2 slots, one filled by an array of 9: 10 pending, the limit.
        let fits = RESPReader(maxPendingElements: 10)
        try fits.feed(Array("*2\r\n*9\r\n".utf8) + Array(repeating: Array(":1\r\n".utf8), count: 9).joined() + Array(":2\r\n".utf8))
        XCTAssertEqual(try fits.next(), .array([.array(Array(repeating: .integer(1), count: 9)), .integer(2)]))
        // Once filled, slots no longer count: a second reply of the same shape fits too.
        try fits.feed(Array("*2\r\n*9\r\n".utf8) + Array(repeating: Array(":1\r\n".utf8), count: 9).joined() + Array(":2\r\n".utf8))
        XCTAssertEqual(try fits.next(), .array([.array(Array(repeating: .integer(1), count: 9)), .integer(2)]))

        // One element more is refused as soon as its header arrives.
        let over = RESPReader(maxPendingElements: 10)
        try over.feed(Array("*2\r\n*10\r\n".utf8))
        XCTAssertThrowsError(try over.next()) { error in
            XCTAssertEqual((error as? RESPReader.ProtocolError)?.message,
                "Protocol error: array of 10 elements, more than the 10 pending elements a reply may have")
        }
    }

    func testFormatCommandIsBinarySafe() {
        XCTAssertEqual(String(decoding: RESPCommand.format("SET", "k", "v"), as: UTF8.self),
            "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
        XCTAssertEqual(RESPCommand.format([Array("ECHO".utf8), [0, 13, 10]]),
            Array("*2\r\n$4\r\nECHO\r\n$3\r\n".utf8) + [0, 13, 10] + Array("\r\n".utf8))
        XCTAssertEqual(String(decoding: RESPCommand.format([Array("PING".utf8), []]), as: UTF8.self),
            "*2\r\n$4\r\nPING\r\n$0\r\n\r\n")
        // Arguments laid end to end keep their own bounds: empty ones between others, and a long one.
        let long = [UInt8](repeating: 0x61, count: 300)
        XCTAssertEqual(RESPCommand.format([Array("EVALSHA".utf8), [], [0xFF], [], long, Array("k".utf8)]),
            Array("*6\r\n$7\r\nEVALSHA\r\n$0\r\n\r\n$1\r\n".utf8) + [0xFF] + Array("\r\n$0\r\n\r\n$300\r\n".utf8) + long
                + Array("\r\n$1\r\nk\r\n".utf8))
        XCTAssertEqual(RESPCommand.format([[], []]), Array("*2\r\n$0\r\n\r\n$0\r\n\r\n".utf8))
    }
}
