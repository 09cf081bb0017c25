@testable import HubRedis
import XCTest

final class RedisConfigurationTests: XCTestCase {
    func testFullURL() throws {
        let c = try RedisConfiguration(url: "redis://hub:s%40cret@10.0.0.5:6380/3?prefix=prod:")
        XCTAssertEqual([c.host, String(c.port), c.username ?? "-", c.password ?? "-", String(c.database), c.keyPrefix],
            ["10.0.0.5", "6380", "hub", "s@cret", "3", "prod:"])
    }

    func testPasswordWithoutUserAndDefaults() throws {
        let c = try RedisConfiguration(url: "redis://:pw@localhost")
        XCTAssertEqual([c.host, String(c.port), c.username ?? "-", c.password ?? "-", String(c.database), c.keyPrefix],
            ["localhost", "6379", "-", "pw", "0", ""])
        let bare = try RedisConfiguration(url: "redis://127.0.0.1:7000/")
        XCTAssertEqual([bare.host, String(bare.port), bare.password ?? "-"], ["127.0.0.1", "7000", "-"])
        let v6 = try RedisConfiguration(url: "redis://[::1]:7001")
        XCTAssertEqual([v6.host, String(v6.port)], ["::1", "7001"])
    }

    func testMalformedURLsSayWhy() {
        let cases: [(String, String)] = [
            ("http://x", "redis URL 'http://x' must start with redis:// (TLS is not supported)"),
            ("redis://x:99999", "redis URL port '99999' is not 1...65535"),
            ("redis://x/db", "redis URL database 'db' is not a number"),
            ("redis://x?tls=1", "redis URL parameter 'tls' is unknown (known: prefix)"),
            ("redis://:pw@", "redis URL 'redis://:pw@' has no host"),
        ]
        for (url, message) in cases {
            XCTAssertThrowsError(try RedisConfiguration(url: url), url) { error in
                XCTAssertEqual((error as? RedisConfiguration.URLError)?.message, message)
            }
        }
    }

    func testKeysAndChannelNames() {
        let keys = RedisKeys(prefix: "p:")
        XCTAssertEqual(
            [keys.meta("e1"), keys.log("e1"), keys.idempotency("e1"), keys.channel("e1"), keys.leaseHubs("w1"),
                keys.leaseCounts("w1")],
            ["p:execution:e1:meta", "p:execution:e1:log", "p:execution:e1:idem", "p:execution:e1:events",
                "p:sse:w1:hubs", "p:sse:w1:streams"])
        XCTAssertEqual(keys.execution(ofChannel: Array("p:execution:run:42:events".utf8)), "run:42")
        XCTAssertNil(keys.execution(ofChannel: Array("execution:run:42:events".utf8)))
        XCTAssertNil(keys.execution(ofChannel: Array("p:execution::events".utf8)))
    }

    func testScriptCommandsAreFormattedByHiredis() {
        let script = RedisScript("return 1")
        // SHA-1 of "return 1", as Redis computes it for SCRIPT LOAD.
        XCTAssertEqual(script.sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
        let command = script.evalsha(keys: ["k"], arguments: [Array("a".utf8)])
        XCTAssertEqual(String(buffer: command),
            "*5\r\n$7\r\nEVALSHA\r\n$40\r\ne0e1f9fabfc9d4800c877a703b823ac0578ff8db\r\n$1\r\n1\r\n$1\r\nk\r\n$1\r\na\r\n")
    }
}

final class ReconnectBackoffTests: XCTestCase {
    func testDoublesUpToTheCapWithTheUpperHalfRandom() {
        let lowest = (0..<8).map { RedisClient.backoffMilliseconds(attempt: $0, initial: 50, max: 2000, jitter: 0) }
        let highest = (0..<8).map { RedisClient.backoffMilliseconds(attempt: $0, initial: 50, max: 2000, jitter: 1) }
        XCTAssertEqual(lowest, [25, 50, 100, 200, 400, 800, 1000, 1000])
        XCTAssertEqual(highest, [50, 100, 200, 400, 800, 1600, 2000, 2000])
        XCTAssertEqual(RedisClient.backoffMilliseconds(attempt: 1000, initial: 50, max: 2000, jitter: 0.5), 1500)
    }
}
