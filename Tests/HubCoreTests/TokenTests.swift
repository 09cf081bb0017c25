import HubCore
import HubNative
import XCTest

final class TokenTests: XCTestCase {
    let verifier = TokenVerifier(secret: Array("a-secret-of-some-length".utf8))
    let now: Int64 = 1_764_000_000

    func testValidTokenGivesPrincipal() throws {
        let token = verifier.mint(subject: "alice", workspaces: ["w1", "w2"], expiresAt: now + 60)
        XCTAssertEqual(try verifier.verify(token, now: now), Principal(subject: "alice", workspaces: ["w1", "w2"], expiresAt: now + 60))
    }

    func testExpiredToken() {
        let token = verifier.mint(subject: "alice", workspaces: ["w1"], expiresAt: now)
        XCTAssertThrowsError(try verifier.verify(token, now: now)) { XCTAssertEqual($0 as? TokenVerifier.Failure, .expired) }
    }

    func testAlgNoneAndOtherAlgorithmsAreRefusedBeforeTheSignature() {
        let none = verifier.mint(subject: "a", workspaces: ["w1"], expiresAt: now + 60, algorithm: "none")
        let unsigned = none.split(separator: ".").prefix(2).joined(separator: ".") + "."
        XCTAssertThrowsError(try verifier.verify(unsigned, now: now)) {
            XCTAssertEqual($0 as? TokenVerifier.Failure, .unsupportedAlgorithm("none"))
        }
        let rs = verifier.mint(subject: "a", workspaces: ["w1"], expiresAt: now + 60, algorithm: "RS256")
        XCTAssertThrowsError(try verifier.verify(rs, now: now)) {
            XCTAssertEqual(($0 as? TokenVerifier.Failure)?.code, "unsupported_alg")
        }
    }

    func testWrongSecretOrTamperedClaims() {
        let other = TokenVerifier(secret: Array("another-secret-value".utf8))
        let token = other.mint(subject: "alice", workspaces: ["w1"], expiresAt: now + 60)
        XCTAssertThrowsError(try verifier.verify(token, now: now)) { XCTAssertEqual($0 as? TokenVerifier.Failure, .badSignature) }
        // Same signature, claims swapped for a wider grant.
        let good = verifier.mint(subject: "alice", workspaces: ["w1"], expiresAt: now + 60)
        let parts = good.split(separator: ".")
        let wider = Base64.encode(Array(#"{"sub":"alice","workspaces":["w1","w2"],"exp":1764000060}"#.utf8), alphabet: .url)
        XCTAssertThrowsError(try verifier.verify("\(parts[0]).\(wider).\(parts[2])", now: now)) {
            XCTAssertEqual($0 as? TokenVerifier.Failure, .badSignature)
        }
    }

    func testMalformedTokens() {
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.e30.sig", String(repeating: "a", count: 5000)] {
            XCTAssertThrowsError(try verifier.verify(bad, now: now)) { error in
                XCTAssertEqual((error as? TokenVerifier.Failure)?.code, "invalid_token", bad)
            }
        }
    }
}
