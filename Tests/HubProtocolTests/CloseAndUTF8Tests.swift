import HubNative
import HubProtocol
import NIOCore
import XCTest

final class CloseCodeTests: XCTestCase {
    private func serverReply(toCloseCode code: UInt16?, reason: [UInt8] = [], closePayload: [UInt8]? = nil) -> [UInt8] {
        var conn = WebSocketConnection(
            configuration: .init(maxFrameSize: 1 << 16, maxMessageSize: 1 << 16, pingInterval: 0, pongTimeout: 0, closeTimeout: 0),
            deflate: nil, now: 0)
        var payload: [UInt8] = []
        if let closePayload { payload = closePayload } else if let code { payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + reason }
        var input = ByteBuffer(bytes: masked(0x8, payload))
        var actions: [WebSocketConnection.Action] = []
        conn.receive(&input, now: 0, actions: &actions)
        XCTAssertEqual(actions.last, .closeTCP)
        guard case .writeClose(let frame) = actions.first else {
            XCTFail("no close frame in \(actions)")
            return []
        }
        return Array(frame.readableBytesView)
    }

    private func protocolErrorReply(_ reason: String) -> [UInt8] {
        [0x88, UInt8(2 + reason.utf8.count), 0x03, 0xEA] + Array(reason.utf8)
    }

    func testDefinedCodesAreEchoed() {
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011] {
            XCTAssertEqual(serverReply(toCloseCode: code), [0x88, 0x02, UInt8(code >> 8), UInt8(code & 0xFF)], "\(code)")
        }
    }

    func testRegisteredCodes1012To1014AreAccepted() {
        for code: UInt16 in [1012, 1013, 1014] {
            XCTAssertEqual(serverReply(toCloseCode: code), [0x88, 0x02, 0x03, UInt8(code & 0xFF)])
        }
    }

    func testApplicationCodesAreEchoed() {
        XCTAssertEqual(serverReply(toCloseCode: 3000), [0x88, 0x02, 0x0B, 0xB8])
        XCTAssertEqual(serverReply(toCloseCode: 4999), [0x88, 0x02, 0x13, 0x87])
    }

    func testForbiddenCodesFailWith1002() {
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            XCTAssertEqual(serverReply(toCloseCode: code), protocolErrorReply("close code \(code) is not allowed"), "\(code)")
        }
    }

    func testOneBytePayloadFailsWith1002() {
        XCTAssertEqual(serverReply(toCloseCode: nil, closePayload: [0x03]), protocolErrorReply("close payload of one byte"))
    }

    func testEmptyCloseIsAnsweredWithEmptyClose() {
        XCTAssertEqual(serverReply(toCloseCode: nil, closePayload: []), [0x88, 0x00])
    }

    func testReasonThatIsNotUTF8FailsWith1007() {
        let reply = serverReply(toCloseCode: 1000, reason: [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80])
        XCTAssertEqual(reply, [0x88, 0x17, 0x03, 0xEF] + Array("invalid UTF-8 in text".utf8))
        XCTAssertEqual(serverReply(toCloseCode: 1000, reason: Array("κόσμε".utf8)), [0x88, 0x02, 0x03, 0xE8])
    }

    func testFramingErrorsBecomeExactCloseFrames() {
        var conn = WebSocketConnection(
            configuration: .init(maxFrameSize: 100, maxMessageSize: 100, pingInterval: 0, pongTimeout: 0, closeTimeout: 0),
            deflate: nil, now: 0)
        var input = ByteBuffer(bytes: [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        var actions: [WebSocketConnection.Action] = []
        conn.receive(&input, now: 0, actions: &actions)
        XCTAssertEqual(actions, [.writeClose(ByteBuffer(bytes: protocolErrorReply("client frames must be masked"))), .closeTCP])

        var big = WebSocketConnection(configuration: conn.configuration, deflate: nil, now: 0)
        var bigInput = ByteBuffer(bytes: [0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
        actions = []
        big.receive(&bigInput, now: 0, actions: &actions)
        XCTAssertEqual(actions, [.writeClose(ByteBuffer(bytes: [0x88, 0x1D, 0x03, 0xF1] + Array("frame larger than 100 bytes".utf8))), .closeTCP])
    }
}

final class UTF8Tests: XCTestCase {
    func testValidatorAcceptsAndRefuses() {
        XCTAssertTrue(UTF8Validator.isValid(Array("Hello-µ@ßöäüàá-UTF-8!!".utf8)))
        XCTAssertTrue(UTF8Validator.isValid([0xF4, 0x8F, 0xBF, 0xBF]))  // U+10FFFF
        XCTAssertFalse(UTF8Validator.isValid([0xF4, 0x90, 0x80, 0x80]))  // above U+10FFFF
        XCTAssertFalse(UTF8Validator.isValid([0xED, 0xA0, 0x80]))  // surrogate
        XCTAssertFalse(UTF8Validator.isValid([0xC0, 0x80]))  // overlong
        XCTAssertFalse(UTF8Validator.isValid([0xE0, 0x80, 0xAF]))  // overlong
        XCTAssertFalse(UTF8Validator.isValid([0xCE]))  // truncated
        XCTAssertFalse(UTF8Validator.isValid([0xFE]))
    }

    func testEveryBytePrefixOfValidTextIsAcceptedIncrementally() {
        let bytes = Array("κόσμε 𝄞 end, with ascii padding to pass the fast path".utf8)
        var v = UTF8Validator()
        for b in bytes { XCTAssertTrue(v.validate([b])) }
        XCTAssertTrue(v.isComplete)
    }

    /// Autobahn 6.4.1's shape: the invalid sequence arrives in the second of three fragments; the connection fails
    /// as soon as the second fragment is read, before the third is sent.
    func testFragmentedTextWithInvalidUTF8FailsAtTheFragmentThatBreaksIt() {
        var reader = WebSocketReader(maxFrameSize: 1 << 16, maxMessageSize: 1 << 16)
        var buffer = ByteBuffer(bytes: masked(0x1, Array("κόσμε".utf8), fin: false))
        XCTAssertNoThrow(XCTAssertNil(try reader.next(&buffer)))
        buffer.writeBytes(masked(0x0, [0xF4, 0x90, 0x80, 0x80], fin: false))
        XCTAssertThrowsError(try reader.next(&buffer)) { XCTAssertEqual($0 as? ProtocolError, .invalidUTF8) }
    }

    /// Autobahn 6.4.3's shape: one frame whose bytes arrive in three chops; it fails at the chop with the bad byte.
    func testInvalidUTF8FailsWithinAFrameBeforeTheFrameEnds() {
        let frame = masked(0x1, Array("κόσμε".utf8) + [0xF4, 0x90, 0x80, 0x80] + Array("edited".utf8))
        var reader = WebSocketReader(maxFrameSize: 1 << 16, maxMessageSize: 1 << 16)
        var buffer = ByteBuffer(bytes: Array(frame[0..<(6 + 11)]))
        XCTAssertNoThrow(XCTAssertNil(try reader.next(&buffer)))
        buffer.writeBytes(frame[17..<(17 + 2)])  // F4 90: already impossible
        XCTAssertThrowsError(try reader.next(&buffer)) { XCTAssertEqual($0 as? ProtocolError, .invalidUTF8) }
    }

    func testTextEndingMidCodePointFails() {
        XCTAssertEqual(readAll(masked(0x1, [0x41, 0xCE]), chunking: .whole).error, .invalidUTF8)
        XCTAssertEqual(
            readAll(masked(0x1, [0xCE], fin: false) + masked(0x0, [0xBA]), chunking: .byteByByte).messages, [text("κ")])
    }

    func testBinaryIsNotValidated() {
        XCTAssertEqual(readAll(masked(0x2, [0xFF, 0xFE]), chunking: .whole).messages, [binary([0xFF, 0xFE])])
    }
}

final class CompressedFrameTests: XCTestCase {
    func testRFC7692FramesDecode() {
        let cases: [[UInt8]] = [
            [0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00],
            [0x41, 0x03, 0xF2, 0x48, 0xCD, 0x80, 0x04, 0xC9, 0xC9, 0x07, 0x00],
            [0xC1, 0x0B, 0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00],
            [0xC1, 0x08, 0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00],
            [0xC1, 0x0D, 0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00],
        ]
        for bytes in cases {
            for chunking in Chunking.allCases {
                let r = readAll(bytes, chunking: chunking, expectMasked: false, deflate: true)
                XCTAssertNil(r.error, "\(bytes) \(chunking)")
                XCTAssertEqual(r.messages, [text("Hello")], "\(bytes) \(chunking)")
            }
        }
    }

    func testServerCompressedFrameMatchesRFC() {
        var payload = ByteBuffer()
        Deflater().compressMessage(ByteBuffer(string: "Hello"), into: &payload)
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .text, rsv1: true, payload: payload).readableBytesView),
            [0xC1, 0x07, 0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    }

    func testCompressedBombFailsWith1009() {
        var payload = ByteBuffer()
        Deflater(level: 9).compressMessage(ByteBuffer(repeating: 0x61, count: 1 << 20), into: &payload)
        let frame = masked(0x1, Array(payload.readableBytesView), rsv1: true)
        let r = readAll(frame, chunking: .whole, maxMessageSize: 64 * 1024, deflate: true)
        XCTAssertEqual(r.error, .messageTooLarge(limit: 64 * 1024))
        XCTAssertEqual(r.error?.closeCode, .messageTooBig)
    }

    func testInvalidUTF8InsideCompressedTextFails() {
        var payload = ByteBuffer()
        Deflater().compressMessage(ByteBuffer(bytes: [0x41, 0xFF, 0x41]), into: &payload)
        XCTAssertEqual(readAll(masked(0x1, Array(payload.readableBytesView), rsv1: true), chunking: .byteByByte, deflate: true).error,
            .invalidUTF8)
    }
}

final class InflaterIsolationTests: XCTestCase {
    /// Two connections interleave compressed messages: each message has inflate state of its own, so neither sees
    /// the other's data, and a connection that dies mid-message leaves nothing behind.
    func testInterleavedCompressedMessagesOfTwoConnections() throws {
        func compressed(_ text: String) -> [UInt8] {
            var out = ByteBuffer()
            Deflater().compressMessage(ByteBuffer(string: text), into: &out)
            return Array(out.readableBytesView)
        }
        let a = compressed(String(repeating: "alpha ", count: 50))
        let b = compressed(String(repeating: "bravo ", count: 50))
        var readerA = WebSocketReader(maxFrameSize: 4096, maxMessageSize: 4096, deflate: true)
        var readerB = WebSocketReader(maxFrameSize: 4096, maxMessageSize: 4096, deflate: true)
        var bufA = ByteBuffer(bytes: masked(0x1, Array(a[..<10]), fin: false, rsv1: true))
        XCTAssertNil(try readerA.next(&bufA))
        var bufB = ByteBuffer(bytes: masked(0x1, b, rsv1: true))
        XCTAssertEqual(try readerB.next(&bufB), text(String(repeating: "bravo ", count: 50)))
        bufA.writeBytes(masked(0x0, Array(a[10...])))
        XCTAssertEqual(try readerA.next(&bufA), text(String(repeating: "alpha ", count: 50)))
        // A connection that sent half a compressed message and vanished does not affect a new one.
        var dead = WebSocketReader(maxFrameSize: 4096, maxMessageSize: 4096, deflate: true)
        var bufDead = ByteBuffer(bytes: masked(0x1, [0x00, 0xFF, 0xFF, 0x00, 0x00], fin: false, rsv1: true))
        XCTAssertNil(try dead.next(&bufDead))
        var fresh = WebSocketReader(maxFrameSize: 4096, maxMessageSize: 4096, deflate: true)
        var bufFresh = ByteBuffer(bytes: masked(0x1, b, rsv1: true))
        XCTAssertEqual(try fresh.next(&bufFresh), text(String(repeating: "bravo ", count: 50)))
    }
}
