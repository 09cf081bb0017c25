import Foundation
import HubNative
import XCTest

final class DigestTests: XCTestCase {
    func testSHA1OfEmptyAndABC() {
        XCTAssertEqual(hex(Digest.sha1([UInt8]())), "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        XCTAssertEqual(hex(Digest.sha1(Array("abc".utf8))), "a9993e364706816aba3e25717850c26c9cd0d89d")
    }

    func testHMACSHA256MatchesRFC4231Case2() {
        let mac = Digest.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        XCTAssertEqual(hex(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    func testHMACSHA256WithEmptyKeyAndMessage() {
        XCTAssertEqual(hex(Digest.hmacSHA256(key: [UInt8](), message: [UInt8]())),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
    }

    func testKeyedHMACMatchesRFC4231() {
        // Case 2 (a key shorter than the block), case 6 (131 bytes: hashed first) and case 7 (a longer message).
        XCTAssertEqual(hex(HMACKey(Array("Jefe".utf8)).authenticate(Array("what do ya want for nothing?".utf8))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        let long = HMACKey([UInt8](repeating: 0xaa, count: 131))
        XCTAssertEqual(hex(long.authenticate(Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        let message = "This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."
        XCTAssertEqual(hex(long.authenticate(Array(message.utf8))),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2")
        XCTAssertEqual(hex(HMACKey([UInt8]()).authenticate([UInt8]())),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
    }

    func testKeyedHMACAroundTheBlockSize() {
        // Keys of 63 and 64 bytes are padded, one of 65 is hashed first: each as the one-shot HMAC computes it.
        let message = Array("around the block".utf8)
        for length in [63, 64, 65] {
            let key = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
            XCTAssertEqual(HMACKey(key).authenticate(message), Digest.hmacSHA256(key: key, message: message), "\(length)")
        }
    }

    func testOneKeyServesSeveralThreadsAtOnce() {
        let key = HMACKey(Array("shared".utf8))
        let expected = (0..<8).map { Digest.hmacSHA256(key: Array("shared".utf8), message: Array("message \($0)".utf8)) }
        let wrong = Tally()
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            var mine = 0
            for _ in 0..<2_000 where key.authenticate(Array("message \(thread)".utf8)) != expected[thread] { mine += 1 }
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
            XCTAssertEqual(key.authenticate(body[..<cut], body[cut...]),
                Digest.hmacSHA256(key: Array("engine-secret".utf8), message: body), "cut at \(cut)")
        }
        XCTAssertEqual(key.authenticate("1700000000.".utf8, body),
            Digest.hmacSHA256(key: Array("engine-secret".utf8), message: Array("1700000000.".utf8) + body))
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
