import HubNative
import NIOCore
import XCTest

final class DeflateTests: XCTestCase {
    private func compress(_ bytes: [UInt8], windowBits: Int = 15, level: Int = 1) -> [UInt8] {
        var out = ByteBuffer()
        Deflater(windowBits: windowBits, level: level).compressMessage(ByteBuffer(bytes: bytes), into: &out)
        return Array(out.readableBytesView)
    }

    private func inflate(_ chunks: [[UInt8]], limit: Int, inflater: Inflater = Inflater()) throws -> [UInt8] {
        var out = ByteBuffer()
        for chunk in chunks {
            try chunk.withUnsafeBytes { raw in _ = try inflater.inflate(raw, into: &out, limit: limit - out.readableBytes) }
        }
        try inflater.finishMessage(into: &out, limit: limit - out.readableBytes, resetContext: true)
        return Array(out.readableBytesView)
    }

    /// RFC 7692 §7.2.3.1: "Hello" compresses to f2 48 cd c9 c9 07 00.
    func testHelloMatchesRFC7692Example() {
        XCTAssertEqual(compress(Array("Hello".utf8)), [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])
    }

    func testRFC7692ExamplesInflate() throws {
        let hello = Array("Hello".utf8)
        // §7.2.3.1 in one piece and split over two frames.
        XCTAssertEqual(try inflate([[0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]], limit: 100), hello)
        XCTAssertEqual(try inflate([[0xF2, 0x48, 0xCD], [0xC9, 0xC9, 0x07, 0x00]], limit: 100), hello)
        // §7.2.3.3: a stored (uncompressed) block.
        XCTAssertEqual(try inflate([[0x00, 0x05, 0x00, 0xFA, 0xFF, 0x48, 0x65, 0x6C, 0x6C, 0x6F, 0x00]], limit: 100), hello)
        // §7.2.3.4: a final block (BFINAL set).
        XCTAssertEqual(try inflate([[0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]], limit: 100), hello)
        // §7.2.3.5: two deflate blocks in one message.
        XCTAssertEqual(
            try inflate([[0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00]], limit: 100), hello)
    }

    /// RFC 7692 §7.2.3.2: the second message refers back into the first one's window (context takeover).
    func testSharedWindowExampleNeedsContext() throws {
        let inflater = Inflater()
        var out = ByteBuffer()
        let first: [UInt8] = [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]
        try first.withUnsafeBytes { _ = try inflater.inflate($0, into: &out, limit: 100) }
        try inflater.finishMessage(into: &out, limit: 100, resetContext: false)
        out.clear()
        let second: [UInt8] = [0xF2, 0x00, 0x11, 0x00, 0x00]
        try second.withUnsafeBytes { _ = try inflater.inflate($0, into: &out, limit: 100) }
        try inflater.finishMessage(into: &out, limit: 100, resetContext: true)
        XCTAssertEqual(Array(out.readableBytesView), Array("Hello".utf8))
    }

    func testRoundTripsRandomPayloadsFromEmptyToOneMebibyte() throws {
        var rng = SplitMix64(seed: 7)
        let deflater = Deflater()
        let inflater = Inflater()
        for size in [0, 1, 2, 5, 100, 1000, 4096, 65_535, 65_536, 300_000, 1 << 20] {
            for kind in 0..<3 {
                // Random bytes, repetitive text, and a mix: incompressible and highly compressible data.
                let payload: [UInt8] = (0..<size).map { i in
                    switch kind {
                    case 0: return UInt8(truncatingIfNeeded: rng.next())
                    case 1: return UInt8(ascii: "a") + UInt8(i % 7)
                    default: return i % 64 < 32 ? UInt8(truncatingIfNeeded: rng.next()) : 0x20
                    }
                }
                var compressed = ByteBuffer()
                deflater.compressMessage(ByteBuffer(bytes: payload), into: &compressed)
                XCTAssertNotEqual(compressed.getBytes(at: compressed.writerIndex - 4, length: 4) ?? [], [0, 0, 0xFF, 0xFF])
                let bytes = Array(compressed.readableBytesView)
                // Inflate in uneven chunks, as frames would arrive.
                var chunks: [[UInt8]] = []
                var i = 0
                while i < bytes.count {
                    let n = min(bytes.count - i, 1 + Int(rng.next() % 5000))
                    chunks.append(Array(bytes[i..<i + n]))
                    i += n
                }
                XCTAssertEqual(try inflate(chunks, limit: size, inflater: inflater), payload, "size \(size) kind \(kind)")
            }
        }
    }

    func testInflateBombStopsAtTheLimit() throws {
        // 16 MiB of zeros compress to about 16 KiB.
        let zeros = [UInt8](repeating: 0, count: 16 << 20)
        let bomb = compress(zeros, level: 9)
        XCTAssertLessThan(bomb.count, 20_000)
        let inflater = Inflater()
        var out = ByteBuffer()
        XCTAssertThrowsError(try bomb.withUnsafeBytes { _ = try inflater.inflate($0, into: &out, limit: 1 << 20) }) {
            XCTAssertEqual($0 as? Inflater.Error, .limitExceeded)
        }
        // Nothing past the limit was kept.
        XCTAssertLessThanOrEqual(out.readableBytes, 1 << 20)
        // The limit is exact: one byte less than the message fails, the message's size passes.
        inflater.reset()
        let small = compress([UInt8](repeating: 7, count: 1000))
        XCTAssertThrowsError(try inflate([small], limit: 999, inflater: inflater))
        inflater.reset()
        XCTAssertEqual(try inflate([small], limit: 1000, inflater: inflater).count, 1000)
    }

    func testCorruptDataIsRefused() {
        let inflater = Inflater()
        var out = ByteBuffer()
        XCTAssertThrowsError(try [UInt8]([0xFF, 0xFF, 0xFF, 0xFF]).withUnsafeBytes {
            _ = try inflater.inflate($0, into: &out, limit: 100)
        }) { error in
            guard case .corrupt = error as? Inflater.Error else { return XCTFail("\(error)") }
        }
    }

    func testSmallerWindowStillRoundTrips() throws {
        let text = Array(String(repeating: "execution node.completed ", count: 400).utf8)
        XCTAssertEqual(try inflate([compress(text, windowBits: 9)], limit: text.count), text)
    }
}

/// A small deterministic generator, so failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
