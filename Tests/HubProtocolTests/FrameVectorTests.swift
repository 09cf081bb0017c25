import HubNative
import HubProtocol
import NIOCore
import XCTest

/// RFC 6455 §5.7 examples, fed whole, one byte at a time and three bytes at a time.
final class FrameVectorTests: XCTestCase {
    let hello = Array("Hello".utf8)

    func testUnmaskedHelloAsAClientReadsIt() {
        for chunking in Chunking.allCases {
            let r = readAll([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F], chunking: chunking, expectMasked: false)
            XCTAssertNil(r.error)
            XCTAssertEqual(r.messages, [text("Hello")], "\(chunking)")
        }
    }

    func testMaskedHello() {
        for chunking in Chunking.allCases {
            let r = readAll([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58], chunking: chunking)
            XCTAssertNil(r.error)
            XCTAssertEqual(r.messages, [text("Hello")], "\(chunking)")
        }
    }

    func testFragmentedUnmaskedHello() {
        for chunking in Chunking.allCases {
            let r = readAll([0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F], chunking: chunking, expectMasked: false)
            XCTAssertNil(r.error)
            XCTAssertEqual(r.messages, [text("Hello")], "\(chunking)")
        }
    }

    func testPingAndMaskedPong() {
        for chunking in Chunking.allCases {
            let ping = readAll([0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F], chunking: chunking, expectMasked: false)
            XCTAssertEqual(ping.messages, [.ping(ByteBuffer(bytes: hello))])
            let pong = readAll([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58], chunking: chunking)
            XCTAssertEqual(pong.messages, [.pong(ByteBuffer(bytes: hello))])
        }
    }

    func test256ByteAnd64KiBBinaryLengths() {
        let p256 = (0..<256).map { UInt8(truncatingIfNeeded: $0) }
        let p64k = (0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let f256: [UInt8] = [0x82, 0x7E, 0x01, 0x00] + p256
        let f64k: [UInt8] = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0] + p64k
        for chunking in Chunking.allCases where !(chunking == .byteByByte && false) {
            XCTAssertEqual(readAll(f256, chunking: chunking, expectMasked: false).messages, [binary(p256)])
            XCTAssertEqual(readAll(f64k, chunking: chunking, expectMasked: false).messages, [binary(p64k)])
        }
        // The encoder produces exactly these bytes.
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .binary, payload: ByteBuffer(bytes: p256)).readableBytesView), f256)
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .binary, payload: ByteBuffer(bytes: p64k)).readableBytesView), f64k)
        // And masked versions of them decode the same way.
        XCTAssertEqual(readAll(masked(0x2, p64k), chunking: .threeBytes).messages, [binary(p64k)])
    }

    func testEncoderMatchesRFCExamples() {
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .text, payload: ByteBuffer(bytes: hello)).readableBytesView),
            [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .text, fin: false, payload: ByteBuffer(string: "Hel")).readableBytesView),
            [0x01, 0x03, 0x48, 0x65, 0x6C])
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .continuation, payload: ByteBuffer(string: "lo")).readableBytesView),
            [0x80, 0x02, 0x6C, 0x6F])
        XCTAssertEqual(Array(FrameEncoder.frame(opcode: .ping, payload: ByteBuffer(bytes: hello)).readableBytesView),
            [0x89, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])
        var m = ByteBuffer()
        FrameEncoder.writeMaskedFrame(into: &m, opcode: .text, payload: ByteBuffer(bytes: hello), maskKey: 0x37FA_213D)
        XCTAssertEqual(Array(m.readableBytesView), [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    }

    func testControlFramesBetweenFragments() {
        let bytes = masked(0x1, Array("Hel".utf8), fin: false) + masked(0x9, [1, 2]) + masked(0x0, Array("lo".utf8))
        for chunking in Chunking.allCases {
            XCTAssertEqual(readAll(bytes, chunking: chunking).messages, [.ping(ByteBuffer(bytes: [1, 2])), text("Hello")])
        }
    }

    func testEmptyMessagesAndUnevenMaskOffsets() {
        let payload = Array("0123456789abcdefghij".utf8)  // 20 bytes: several 8-byte words plus a tail
        let bytes = masked(0x1, []) + masked(0x2, payload, key: 0x0102_0304) + masked(0x1, Array("é✓".utf8))
        for chunking in Chunking.allCases {
            XCTAssertEqual(readAll(bytes, chunking: chunking).messages, [text(""), binary(payload), text("é✓")])
        }
    }
}

/// Frame-level errors and the close frame that fails the connection.
final class FrameErrorTests: XCTestCase {
    func expectError(_ bytes: [UInt8], _ expected: ProtocolError, maxFrameSize: Int = 1 << 20, maxMessageSize: Int = 1 << 20,
        deflate: Bool = false, file: StaticString = #filePath, line: UInt = #line)
    {
        for chunking in Chunking.allCases {
            let r = readAll(bytes, chunking: chunking, maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize, deflate: deflate)
            XCTAssertEqual(r.error, expected, "\(chunking)", file: file, line: line)
        }
    }

    func testUnmaskedClientFrameIs1002() {
        expectError([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F], .unmaskedFrame)
        XCTAssertEqual(ProtocolError.unmaskedFrame.closeCode, .protocolError)
    }

    func testReservedBitsWithoutExtension() {
        expectError(masked(0x1, [0x41], rsv1: true), .reservedBitsSet)
        expectError([0xA1, 0x80, 0, 0, 0, 0], .reservedBitsSet)  // RSV2
        expectError([0x91, 0x80, 0, 0, 0, 0], .reservedBitsSet)  // RSV3
        // With permessage-deflate, RSV1 is allowed on a first frame but not on a continuation or a control frame.
        expectError(masked(0x1, [0x00], fin: false, rsv1: true) + masked(0x0, [0x00], rsv1: true), .reservedBitsSet, deflate: true)
        expectError(masked(0x9, [], rsv1: true), .reservedBitsSet, deflate: true)
    }

    func testReservedOpcodes() {
        for op: UInt8 in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            expectError(masked(op, []), .reservedOpcode(op))
        }
    }

    func testControlFrameRules() {
        expectError(masked(0x9, [UInt8](repeating: 0, count: 126)), .controlFrameTooLong)
        expectError(masked(0x9, [1], fin: false), .fragmentedControlFrame)
        // 125 bytes is fine.
        XCTAssertEqual(readAll(masked(0x9, [UInt8](repeating: 1, count: 125)), chunking: .whole).messages.count, 1)
    }

    func testContinuationRules() {
        expectError(masked(0x0, [1]), .continuationWithoutStart)
        expectError(masked(0x1, [0x41], fin: false) + masked(0x1, [0x41]), .dataFrameInsideFragmentedMessage)
        expectError(masked(0x2, [0x41], fin: false) + masked(0x2, [0x41]), .dataFrameInsideFragmentedMessage)
    }

    func testSixtyFourBitLengthWithTopBitFailsBeforeTheRestArrives() {
        // Only three bytes: the top bit of the 64-bit length is already visible.
        let r = readAll([0x82, 0xFF, 0x80], chunking: .byteByByte)
        XCTAssertEqual(r.error, .invalidLength)
        expectError([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], .invalidLength)
    }

    func testNonMinimalLengthsAreRefused() {
        expectError([0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4], .invalidLength)
        expectError([0x82, 0xFF, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 1, 2, 3, 4], .invalidLength)
    }

    func testFrameSizeLimitIsCheckedBeforeThePayload() {
        // The header announces 70,000 bytes; only the header is sent.
        expectError([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70, 1, 2, 3, 4], .frameTooLarge(limit: 65_536), maxFrameSize: 65_536)
        XCTAssertEqual(ProtocolError.frameTooLarge(limit: 1).closeCode, .messageTooBig)
    }

    func testMessageSizeLimitAcrossFragments() {
        let frames = masked(0x2, [UInt8](repeating: 1, count: 600), fin: false) + masked(0x0, [UInt8](repeating: 1, count: 600))
        expectError(frames, .messageTooLarge(limit: 1000), maxMessageSize: 1000)
        XCTAssertEqual(readAll(frames, chunking: .whole, maxMessageSize: 1200).messages.count, 1)
    }
}
