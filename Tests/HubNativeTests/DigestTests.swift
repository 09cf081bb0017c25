import Foundation
import HubNative
import XCTest

final class DigestTests: XCTestCase {
    func testSHA1OfEmptyAndABC() {
        XCTAssertEqual(hex(Digest.sha1([UInt8]())), "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        XCTAssertEqual(hex(Digest.sha1(Array("abc".utf8))), "a9993e364706816aba3e25717850c26c9cd0d89d")
    }

    func testHMACSHA256MatchesRFC4231() {
        // Case 1 (a 20-byte key), case 2 (4 bytes), case 4 (25 bytes), case 6 (131 bytes: hashed first) and case 7
        // (a message longer than the block), through the one-off form and through a kept key.
        let vectors: [(key: [UInt8], message: [UInt8], mac: String)] = [
            ([UInt8](repeating: 0x0b, count: 20), Array("Hi There".utf8),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
            (Array("Jefe".utf8), Array("what do ya want for nothing?".utf8),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
            (Array(1...25), [UInt8](repeating: 0xcd, count: 50),
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
            ([UInt8](repeating: 0xaa, count: 131), Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
            ([UInt8](repeating: 0xaa, count: 131),
                Array("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".utf8),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
        ]
        for (index, vector) in vectors.enumerated() {
            XCTAssertEqual(hex(Digest.hmacSHA256(key: vector.key, message: vector.message)), vector.mac, "vector \(index)")
            let key = HMACKey(vector.key)
            XCTAssertEqual(hex(key.authenticate(vector.message)), vector.mac, "vector \(index), kept key")
            XCTAssertEqual(hex(key.authenticate(vector.message)), vector.mac, "vector \(index), kept key, again")
        }
    }

    func testHMACSHA256WithEmptyKeyAndMessage() {
        XCTAssertEqual(hex(Digest.hmacSHA256(key: [UInt8](), message: [UInt8]())),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
    }

    func testKeyedHMACAroundTheBlockSize() {
        // Keys of 63 and 64 bytes are padded, one of 65 is hashed first (expected values from Python's hmac module).
        let message = Array("around the block".utf8)
        let expected = [63: "9588c12f36aa3958fc922bf437808e24d0a25a145f86e47d7be7afde4f3f31d5",
            64: "7df7cec06eb827b1aca2535e708f2597867e002f54a9781cdecf8185659b0dc2",
            65: "5a0c5dd30af818ea77767135c94f8064543ba4b12a4e8ef13c45a4802030720f"]
        for (length, mac) in expected {
            let key = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
            XCTAssertEqual(hex(HMACKey(key).authenticate(message)), mac, "\(length)")
        }
    }

    func testOneKeyServesSeveralThreadsAtOnce() {
        let key = HMACKey(Array("shared".utf8))
        // HMAC-SHA256("shared", "message N") from Python's hmac module.
        let expected = ["807ad6207a0d5805a1403bef3c63c8843e1e100a3ca86cb6245bb12e54a959a3",
            "e922fa2b610d07a9c39ce5ee9882fc9141a60ab4b5b796a75277b6ac332d07f1",
            "10c5bbd469779f36bb5cd13f3d2994a92e2b1ac7ab40bac3fa03dabfca377b2b",
            "991aafae0309c00f786b84a5c7a4404f0ce8068533f2107968f30b3ef6781bf1",
            "a8e9b8a09d44e669b54041c084ee3ef764929bc69604ef0a9cbf6dfed97b7aa9",
            "3aafa21396415a67b4b2c804f512d5da5a6caa8d2c2c4663fe020432b74d3de2",
            "b9a040af2b5458dae0d8abd79e24704a1ca45a724d95d987e6cccad8eeabe13a",
            "4e90214938b3ba92e87fcd7c014a8f74b3504ac5dfc82b97fb12acde939e0439"]
        let wrong = Tally()
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            var mine = 0
            for _ in 0..<2_000 where hex(key.authenticate(Array("message \(thread)".utf8))) != expected[thread] { mine += 1 }
            wrong.add(mine)
        }
        XCTAssertEqual(wrong.total, 0)
    }

    private final class Tally: @unchecked Sendable {
        private let lock = NSLock()
        private var count = 0
        func add(_ n: Int) { lock.withLock { count += n } }
        var total: Int { lock.withLock { count } }
    }

    func testKeyedHMACOfTwoPartsIsThatOfTheirJoinAndTheKeyIsReused() {
        let key = HMACKey(Array("engine-secret".utf8))
        let body = Array("{\"execution_id\":\"e1\"}".utf8)
        for cut in 0...body.count {
            XCTAssertEqual(hex(key.authenticate(body[..<cut], body[cut...])),
                "2ebf2bc2b69b7ee5ebec36df29139ab9b63a3d26e004d9309fd5392d1aa337f9", "cut at \(cut)")
        }
        XCTAssertEqual(hex(key.authenticate("1700000000.".utf8, body)),
            "85afb8f871ffd1239424e532c8b0a435dbd3b77e4ce616c5f6878761ea75822c")
    }

    func testConstantTimeEquals() {
        XCTAssertTrue(Digest.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2, 3] as [UInt8]))
        XCTAssertFalse(Digest.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2, 4] as [UInt8]))
        XCTAssertFalse(Digest.constantTimeEquals([1, 2, 3] as [UInt8], [1, 2] as [UInt8]))
        XCTAssertTrue(Digest.constantTimeEquals([UInt8](), [UInt8]()))
    }
}

final class Base64Tests: XCTestCase {
    func testRFC4648Vectors() {
        let vectors = ["": "", "f": "Zg==", "fo": "Zm8=", "foo": "Zm9v", "foob": "Zm9vYg==", "fooba": "Zm9vYmE=", "foobar": "Zm9vYmFy"]
        for (plain, encoded) in vectors {
            XCTAssertEqual(Base64.encode(Array(plain.utf8)), encoded)
            XCTAssertEqual(Base64.decode(encoded), Array(plain.utf8))
        }
    }

    func testURLAlphabetHasNoPadding() {
        XCTAssertEqual(Base64.encode([0xFB, 0xFF], alphabet: .url), "-_8")
        XCTAssertEqual(Base64.decode("-_8", alphabet: .url), [0xFB, 0xFF])
        XCTAssertNil(Base64.decode("+/8=", alphabet: .url))
    }

    func testStrictDecodingRefusesNonCanonicalInput() {
        XCTAssertNil(Base64.decode("Zg="))  // wrong length
        XCTAssertNil(Base64.decode("Zh=="))  // non-zero trailing bits
        XCTAssertNil(Base64.decode("Zm9v\n"))
        XCTAssertNil(Base64.decode("Z==="))
        XCTAssertNil(Base64.decode("Zm=v"))
        XCTAssertNil(Base64.decode("A", alphabet: .url))
    }
}

func hex<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
}

final class HexTests: XCTestCase {
    func testLowerCaseHexOfEveryNibble() {
        XCTAssertEqual(Hex.encode([0x00, 0x01, 0x7f, 0x80, 0xab, 0xff]), "00017f80abff")
        XCTAssertEqual(Hex.encode([UInt8]()), "")
    }
}
