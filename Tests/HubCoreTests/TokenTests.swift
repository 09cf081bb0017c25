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

    /// The storage of a set, to tell whether two principals hold one copy of their workspaces or two.
    private func storage(_ set: Set<String>) -> ObjectIdentifier {
        precondition(MemoryLayout<Set<String>>.size == MemoryLayout<AnyObject>.size)
        return ObjectIdentifier(unsafeBitCast(set, to: AnyObject.self))
    }

    func testConnectionsWithOneTokenShareOnePrincipal() throws {
        let cache = VerifiedTokens(verifier: verifier)
        let token = verifier.mint(subject: "alice", workspaces: ["w1", "w2"], expiresAt: now + 60)
        let first = try cache.verify(token, now: now)
        let second = try cache.verify(token, now: now + 30)
        XCTAssertEqual(second, Principal(subject: "alice", workspaces: ["w1", "w2"], expiresAt: now + 60))
        XCTAssertEqual(cache.hits, 1)
        XCTAssertEqual(storage(first.workspaces), storage(second.workspaces))
        // Without the cache every verification builds its own set: what each connection held before.
        XCTAssertNotEqual(storage(try verifier.verify(token, now: now).workspaces), storage(first.workspaces))
    }

    func testACachedTokenStillExpiresAndABadOneIsNeverCached() throws {
        let cache = VerifiedTokens(verifier: verifier)
        let token = verifier.mint(subject: "alice", workspaces: ["w1"], expiresAt: now + 60)
        _ = try cache.verify(token, now: now)
        XCTAssertThrowsError(try cache.verify(token, now: now + 60)) { XCTAssertEqual($0 as? TokenVerifier.Failure, .expired) }
        XCTAssertEqual(cache.count, 0)
        let forged = TokenVerifier(secret: Array("another-secret-value".utf8)).mint(subject: "alice", workspaces: ["w1"], expiresAt: now + 60)
        for _ in 0..<2 {
            XCTAssertThrowsError(try cache.verify(forged, now: now)) { XCTAssertEqual($0 as? TokenVerifier.Failure, .badSignature) }
        }
        XCTAssertEqual(cache.count, 0)
        XCTAssertEqual(cache.hits, 0)
    }

    func testAFullCacheStartsAgainEmpty() throws {
        let cache = VerifiedTokens(verifier: verifier, capacity: 3)
        let tokens = (0..<4).map { verifier.mint(subject: "u\($0)", workspaces: ["w1"], expiresAt: now + 60) }
        for token in tokens { _ = try cache.verify(token, now: now) }
        XCTAssertEqual(cache.count, 1)
        XCTAssertEqual(try cache.verify(tokens[3], now: now).subject, "u3")
        XCTAssertEqual(cache.hits, 1)
        XCTAssertEqual(try cache.verify(tokens[0], now: now).subject, "u0")
        XCTAssertEqual(cache.hits, 1)
        XCTAssertEqual(cache.count, 2)
    }
}
