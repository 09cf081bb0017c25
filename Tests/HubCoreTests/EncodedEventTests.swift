import HubCore
import HubNative
import HubProtocol
import NIOCore
import XCTest

final class EncodedEventTests: XCTestCase {
    let topic = TopicKey(workspace: "w1", execution: "run-1")

    func encoded(_ seq: UInt64) -> EncodedEvent {
        let event = ProgressEvent(type: .nodeLog, topic: topic, nodeKey: "n", timestamp: "2026-11-25T12:00:00Z",
            idempotencyKey: nil, data: .object([("level", .string("info")), ("message", .string("line \(seq)"))]))
        return EventEncoder().encode(SequencedEvent(seq: seq, event: event))
    }

    /// The payload of an unmasked single frame (under 64 KiB), and its first byte (FIN, RSV1, opcode).
    func payload(_ frame: ByteBuffer) -> (first: UInt8, payload: [UInt8]) {
        let bytes = Array(frame.readableBytesView)
        var length = Int(bytes[1] & 0x7F)
        var header = 2
        if length == 126 {
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            header = 4
        }
        XCTAssertEqual(bytes.count, header + length)
        return (bytes[0], Array(bytes[header...]))
    }

    func testTheCompressedFrameInflatesToTheSameMessage() throws {
        let event = encoded(7)
        let plain = payload(event.webSocketFrame)
        XCTAssertEqual(plain.first, 0x81)
        XCTAssertEqual(String(decoding: plain.payload, as: UTF8.self),
            #"{"type":"event","# + event.json.dropFirst())
        let compressed = payload(event.webSocketDeflatedFrame(Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits)))
        XCTAssertEqual(compressed.first, 0xC1)  // FIN, RSV1 (compressed), text
        let inflater = Inflater(windowBits: EncodedEvent.sharedDeflateWindowBits)
        var out = ByteBuffer()
        _ = try compressed.payload.withUnsafeBytes { try inflater.inflate($0, into: &out, limit: 1 << 16) }
        try inflater.finishMessage(into: &out, limit: 1 << 16, resetContext: true)
        XCTAssertEqual(Array(out.readableBytesView), plain.payload)
    }

    /// The frame built in place is the frame of the message: with a 2-byte length (126 to 65,535) and an 8-byte one.
    func testTheFrameIsTheEncodedFrameOfTheMessageAtEveryLengthForm() {
        for size in [1, 200, 65_400, 70_000] {
            let event = ProgressEvent(type: .nodeLog, topic: topic, nodeKey: "n", timestamp: "2026-11-25T12:00:00Z",
                idempotencyKey: nil, data: .object([("message", .string(String(repeating: "x", count: size)))]))
            let encoded = EventEncoder().encode(SequencedEvent(seq: 3, event: event))
            // The JSON read back from the frame is the delivered object, byte for byte.
            XCTAssertEqual(encoded.json, event.deliveredJSON(seq: 3), "\(size)")
            let message = ByteBuffer(string: #"{"type":"event","# + encoded.json.dropFirst())
            XCTAssertEqual(encoded.webSocketFrame, FrameEncoder.frame(opcode: .text, payload: message), "\(size)")
            XCTAssertEqual(encoded.webSocketFrame.getInteger(at: 1, as: UInt8.self), size < 65_400 ? 126 : 127)
            // Its storage is the frame's size, not the next power of two (history keeps it).
            XCTAssertEqual(encoded.webSocketFrame.capacity, encoded.webSocketFrame.readableBytes, "\(size)")
        }
        // A short delivered object (as one may arrive from Redis) fits the 7-bit length.
        let short = EncodedEvent(topic: TopicKey(workspace: "w", execution: "e"), seq: 3, type: .nodeLog,
            json: #"{"execution":"e","workspace":"w","seq":3,"event":"node.log","data":{}}"#)
        XCTAssertEqual(short.json, #"{"execution":"e","workspace":"w","seq":3,"event":"node.log","data":{}}"#)
        let message = ByteBuffer(string: #"{"type":"event","# + short.json.dropFirst())
        XCTAssertLessThanOrEqual(message.readableBytes, 125)
        XCTAssertEqual(short.webSocketFrame, FrameEncoder.frame(opcode: .text, payload: message))
        XCTAssertEqual(short.webSocketFrame.getInteger(at: 1, as: UInt8.self), UInt8(message.readableBytes))
    }

    /// The compressed form is made by the first subscriber that needs it and shared after: a second caller, with
    /// another loop's deflater, gets the same bytes in the same storage.
    func testTheCompressedFrameIsMadeOnceAndShared() {
        let event = encoded(1)
        let first = event.webSocketDeflatedFrame(Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits))
        let second = event.webSocketDeflatedFrame(Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits))
        XCTAssertEqual(first, second)
        XCTAssertEqual(first.capacity, first.readableBytes)
        let firstBase = first.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let secondBase = second.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        XCTAssertEqual(firstBase, secondBase)
        // Another event gets its own.
        XCTAssertNotEqual(encoded(2).webSocketDeflatedFrame(Deflater(windowBits: 9)), first)
    }

    /// The SSE form is made when the first stream asks for it, not with the event (most events reach no SSE stream,
    /// and history keeps them), and the same bytes in the same storage after that.
    func testTheSSEFormIsMadeOnFirstUseAndShared() {
        let event = encoded(5)
        _ = event.webSocketFrame
        _ = event.webSocketDeflatedFrame(Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits))
        XCTAssertFalse(event.hasSSEForm)
        let json = #"{"execution":"run-1","workspace":"w1","seq":5,"event":"node.log","node_key":"n","#
            + #""timestamp":"2026-11-25T12:00:00Z","data":{"level":"info","message":"line 5"}}"#
        XCTAssertEqual(event.json, json)
        let first = event.sse
        XCTAssertTrue(event.hasSSEForm)
        XCTAssertEqual(String(buffer: first), "id: 5\nevent: node.log\ndata: " + json + "\n\n")
        XCTAssertEqual(first.capacity, first.readableBytes)
        let second = event.sse
        XCTAssertEqual(first.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) },
            second.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) })
    }
}
