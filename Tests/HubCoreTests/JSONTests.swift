import HubCore
import XCTest

final class JSONTests: XCTestCase {
    func testRoundTripKeepsKeyOrder() throws {
        let text = #"{"b":1,"a":[true,false,null,"x\n\"y\"",-2.5,1e3],"c":{}}"#
        let value = try JSON.parse(text)
        XCTAssertEqual(value.serialized, #"{"b":1,"a":[true,false,null,"x\n\"y\"",-2.5,1000],"c":{}}"#)
    }

    func testEscapesAndSurrogatePairs() throws {
        XCTAssertEqual(try JSON.parse(#""\u00e9\ud834\udd1e\/""#), .string("é𝄞/"))
        XCTAssertThrowsError(try JSON.parse(#""\ud834""#))
        XCTAssertEqual(JSON.string("\u{01}\u{2028}").serialized, #""\u0001\u2028""#)
    }

    func testStringsWithoutEscapesAreWrittenWholeAndOthersScalarByScalar() {
        // Plain ASCII and UTF-8 without escapes, a lead byte 0xE2 that is not U+2028 (€, U+2029's neighbours), and
        // escapes at the start and the end.
        let cases: [(String, String)] = [
            ("plain node_key-1", #""plain node_key-1""#), ("héllo 𝄞", #""héllo 𝄞""#), ("5 €", #""5 €""#),
            ("a\u{2027}b\u{2029}", #""a\#u{2027}b\u2029""#), ("\"x\\", #""\"x\\""#), ("tab\t", #""tab\t""#),
            ("", #""""#),
        ]
        for (value, expected) in cases {
            XCTAssertEqual(JSON.string(value).serialized, expected, value)
            XCTAssertEqual(try JSON.parse(JSON.string(value).serialized), .string(value), value)
        }
    }

    func testRefusals() {
        for bad in ["", "{", "[1,]", "{\"a\":1,}", "01", "1.", "+1", "nul", "\"\u{01}\"", "{\"a\":1,\"a\":2}", "[1] 2", "\"\\x\""] {
            XCTAssertThrowsError(try JSON.parse(bad), bad)
        }
        XCTAssertThrowsError(try JSON.parse([0x22, 0xFF, 0x22]))  // invalid UTF-8 in a string
    }

    /// Strings without escapes, short integers and small objects take shorter ways through the parser: they give the
    /// same values and the same errors (at the same bytes) as the general ones.
    func testShortWaysGiveTheSameValuesAndErrors() throws {
        XCTAssertEqual(try JSON.parse(#"["plain","é𝄞","pre\\tfix\u00e9","","a\"b"]"#),
            .array([.string("plain"), .string("é𝄞"), .string("pre\\tfixé"), .string(""), .string("a\"b")]))
        XCTAssertEqual(try JSON.parse("[0,-0,7,-42,999999999999999,-999999999999999,9999999999999999,12345678901234567890,1.5,-2e2]"),
            .array([.number(0), .number(-0.0), .number(7), .number(-42), .number(999_999_999_999_999), .number(-999_999_999_999_999),
                .number(10_000_000_000_000_000), .number(12_345_678_901_234_567_168), .number(1.5), .number(-200)]))
        guard case .number(let negativeZero) = try JSON.parse("-0") else { return XCTFail("-0") }
        XCTAssertEqual(negativeZero.sign, .minus)
        // "offset: reason" of the error, or nil.
        func failure(_ bytes: [UInt8]) -> String? {
            do { _ = try JSON.parse(bytes); return nil } catch { return "\(error.offset): \(error.reason)" }
        }
        // Invalid UTF-8 before the closing quote, with and without an escape before it: the error is at the byte
        // after the string either way.
        XCTAssertEqual(failure([0x5B, 0x22, 0x61, 0xFF, 0x62, 0x22, 0x5D]), "6: invalid UTF-8")
        XCTAssertEqual(failure([0x5B, 0x22, 0x5C, 0x6E, 0xC3, 0x22, 0x5D]), "6: invalid UTF-8")
        XCTAssertEqual(failure(Array("\"ab\u{01}\"".utf8)), "3: control character in string")
        XCTAssertEqual(failure(Array("\"abc".utf8)), "4: unterminated string")
        XCTAssertEqual(failure(Array("tru".utf8)), "0: unexpected character")
        XCTAssertEqual(failure(Array("[nulL]".utf8)), "1: unexpected character")
        // A duplicate key is found among the first 16 keys, and past them, where a set takes over.
        for count in [2, 16, 17, 40] {
            let keys = (1...count).map { "\"k\($0)\":\($0)" }
            let good = "{" + keys.joined(separator: ",") + "}"
            guard case .object(let fields) = try JSON.parse(good) else { return XCTFail(good) }
            XCTAssertEqual(fields.map(\.0), (1...count).map { "k\($0)" })
            for repeated in [1, count] {
                let bad = "{" + keys.joined(separator: ",") + ",\"k\(repeated)\":0}"
                XCTAssertEqual(failure(Array(bad.utf8)), "\(bad.utf8.count - 3): duplicate key \"k\(repeated)\"", bad)
            }
            let late = "{" + keys.joined(separator: ",") + ",\"x\":1,\"k1\":0}"
            XCTAssertEqual(failure(Array(late.utf8)), "\(late.utf8.count - 3): duplicate key \"k1\"", late)
        }
    }

    func testDepthLimit() {
        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        XCTAssertThrowsError(try JSON.parse(deep, maxDepth: 32)) { error in
            XCTAssertEqual((error as? JSON.ParseError)?.reason, "nesting deeper than 32")
        }
        XCTAssertNoThrow(try JSON.parse(deep, maxDepth: 40))
    }

    func testIntegerValue() throws {
        XCTAssertEqual(try JSON.parse("42").integerValue, 42)
        XCTAssertNil(try JSON.parse("4.5").integerValue)
        XCTAssertNil(try JSON.parse("1e300").integerValue)
    }
}

final class TimeTests: XCTestCase {
    func testFormat() {
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 0), "1970-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 1_764_072_000_123), "2025-11-25T12:00:00.123Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 951_782_400_000), "2000-02-29T00:00:00.000Z")
        // Every field at its widest, the last millisecond of a year, before 1970, and outside years 0-9999.
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 253_402_300_799_999), "9999-12-31T23:59:59.999Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 1_798_761_599_009), "2026-12-31T23:59:59.009Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: -1), "1969-12-31T23:59:59.999Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: -62_135_596_800_000), "0001-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 253_402_300_800_000), "10000-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: -62_167_219_200_000), "0000-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: -62_167_219_200_001), "-0001-12-31T23:59:59.999Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: -62_198_755_200_000), "-0001-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: 3_156_641_884_800_000), "102000-01-01T00:00:00.000Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: .max), "292278994-08-17T07:12:55.807Z")
        XCTAssertEqual(RFC3339.format(unixMilliseconds: .min), "-292275055-05-16T16:47:04.192Z")
    }

    func testValidation() {
        for good in ["2026-11-25T12:00:00Z", "2026-11-25T12:00:00.5+01:00", "2026-11-25t12:00:00.123456-05:30",
            "2000-02-29T00:00:00Z", "2016-12-31T23:59:59Z"]
        {
            XCTAssertTrue(RFC3339.isValid(good), good)
        }
        for bad in ["2026-11-25", "2026-13-01T00:00:00Z", "2026-11-25T12:00:00", "2026-11-25T24:00:00Z", "2026-11-25T12:00:00.Z",
            "2026-11-25T12:00:00+0100", "yesterday",
            // RFC 3339 §5.7: the day exists in its month and year. Leap seconds (60) are refused: watchers'
            // JavaScript Date cannot parse them.
            "2026-02-31T00:00:00Z", "2026-04-31T00:00:00Z", "2100-02-29T00:00:00Z", "2001-02-29T00:00:00Z",
            "2026-11-25T12:00:60Z", "2016-12-31T23:59:60Z"]
        {
            XCTAssertFalse(RFC3339.isValid(bad), bad)
        }
    }
}

final class StreamTimerTests: XCTestCase {
    /// Heartbeats every interval and an end at the maximum age, driven by a fake clock (nanoseconds).
    func testHeartbeatsThenExpiry() {
        var timer = StreamTimer(now: 1000, heartbeatInterval: 15, maxAge: 50)
        XCTAssertEqual(timer.tick(now: 1000).actions, [])
        XCTAssertEqual(timer.tick(now: 1000).next, 1015)
        XCTAssertEqual(timer.tick(now: 1015).actions, [.heartbeat])
        XCTAssertEqual(timer.tick(now: 1016).next, 1030)
        // A stall past two beats sends one heartbeat, not a burst.
        let late = timer.tick(now: 1046)
        XCTAssertEqual(late.actions, [.heartbeat])
        XCTAssertEqual(late.next, 1050)
        XCTAssertEqual(timer.tick(now: 1050).actions, [.expire])
        XCTAssertTrue(timer.expired)
        XCTAssertEqual(timer.tick(now: 2000).actions, [])
    }

    /// A stream's first heartbeat may come early by its spread; the later ones follow a whole interval apart.
    func testTheFirstHeartbeatComesEarlyByTheSpread() {
        var timer = StreamTimer(now: 1000, heartbeatInterval: 20, maxAge: 100, firstHeartbeatEarly: 7)
        XCTAssertEqual(timer.tick(now: 1000).next, 1013)
        XCTAssertEqual(timer.tick(now: 1012).actions, [])
        XCTAssertEqual(timer.tick(now: 1013).actions, [.heartbeat])
        XCTAssertEqual(timer.tick(now: 1014).next, 1033)
    }

    /// Connections opened together draw their spreads from the first half of the interval, so their heartbeats do
    /// not come in one tick.
    func testSpreadsFallInTheFirstHalfOfTheIntervalAndDiffer() {
        let second: Int64 = 1_000_000_000
        let spreads = (0..<1000).map { _ in StreamTimer.heartbeatSpread(interval: 15 * second) }
        XCTAssertTrue(spreads.allSatisfy { $0 >= 0 && $0 < 15 * second / 2 })
        // 1,000 draws from 7.5 s in nanoseconds: a repeat is all but impossible, and both quarters are used.
        XCTAssertEqual(Set(spreads).count, 1000)
        XCTAssertTrue(spreads.contains { $0 < 15 * second / 4 })
        XCTAssertTrue(spreads.contains { $0 >= 15 * second / 4 })
        XCTAssertEqual(StreamTimer.heartbeatSpread(interval: 0), 0)
    }

    func testDefaultsAreFifteenSecondsAndThirtyMinutes() {
        let second: Int64 = 1_000_000_000
        var timer = StreamTimer(now: 0, heartbeatInterval: 15 * second, maxAge: 1800 * second)
        var heartbeats = 0
        var now: Int64 = 0
        while true {
            let (actions, next) = timer.tick(now: now)
            heartbeats += actions.filter { $0 == .heartbeat }.count
            if actions.contains(.expire) { break }
            now = next!
        }
        XCTAssertEqual(now, 1800 * second)
        XCTAssertEqual(heartbeats, 119)  // at 15 s, 30 s, … 1785 s; the 1800 s mark is the end
    }
}

final class DeliveredEventHeaderTests: XCTestCase {
    func testHeaderOfADeliveredEventIsReadBack() {
        let event = ProgressEvent(type: .nodeCompleted, topic: TopicKey(workspace: "w-1", execution: "run:42"), nodeKey: "fetch",
            timestamp: "2026-11-29T10:00:00Z", idempotencyKey: nil, data: .object([("status", .string("completed"))]))
        let json = event.deliveredJSON(seq: 1234)
        XCTAssertEqual(json, #"{"execution":"run:42","workspace":"w-1","seq":1234,"event":"node.completed","node_key":"fetch","timestamp":"2026-11-29T10:00:00Z","data":{"status":"completed"}}"#)
        XCTAssertEqual(DeliveredEventHeader.parse(Array(json.utf8)),
            DeliveredEventHeader(topic: event.topic, seq: 1234, type: .nodeCompleted))
        // Bytes that are not contiguous in memory, and a slice that does not start at index 0.
        XCTAssertEqual(DeliveredEventHeader.parse(AnyCollection(Array(json.utf8))),
            DeliveredEventHeader(topic: event.topic, seq: 1234, type: .nodeCompleted))
        XCTAssertEqual(DeliveredEventHeader.parse(Array(("xx" + json).utf8).dropFirst(2)),
            DeliveredEventHeader(topic: event.topic, seq: 1234, type: .nodeCompleted))
    }

    func testTheTailIsTheDeliveredObjectAfterItsSeqWithAndWithoutANodeKey() throws {
        let events = [
            ProgressEvent(type: .executionCompleted, topic: TopicKey(workspace: "w", execution: "e"), nodeKey: nil,
                timestamp: "2026-11-29T10:00:00Z", idempotencyKey: nil, data: .object([])),
            ProgressEvent(type: .nodeLog, topic: TopicKey(workspace: "w", execution: "e"), nodeKey: "n-\u{e9}",
                timestamp: "2026-11-29T10:00:00.5+01:00", idempotencyKey: "k",
                data: .object([("level", .string("info")), ("message", .string("a \"quoted\"\nline"))])),
        ]
        XCTAssertEqual(events[0].deliveredTail, #""event":"execution.completed","timestamp":"2026-11-29T10:00:00Z","data":{}}"#)
        XCTAssertEqual(events[1].deliveredTail, #""event":"node.log","node_key":"n-\#u{e9}","timestamp":"2026-11-29T10:00:00.5+01:00","data":{"level":"info","message":"a \"quoted\"\nline"}}"#)
        for event in events {
            let parsed = try JSON.parse(event.deliveredJSON(seq: 9))
            XCTAssertEqual(parsed["seq"], .number(9))
            XCTAssertEqual(parsed["event"], .string(event.type.rawValue))
            XCTAssertEqual(parsed["node_key"], event.nodeKey.map { .string($0) })
            XCTAssertEqual(parsed["data"], event.data)
        }
    }

    func testAnythingElseIsNotAHeader() {
        for text in [#"{"event":"node.log","execution_id":"e1"}"#, #"{"execution":"e1","workspace":"w1","seq":x,"event":"node.log"}"#,
            #"{"execution":"e1","workspace":"w1","seq":1,"event":"node.exploded"}"#, #"{"execution":"e 1","workspace":"w1","seq":1,"event":"node.log"}"#,
            #"{"execution":"e1","workspace":"w1","seq":1"#, #"{"execution":"e1","workspace":"w1","seq":1,"event":"node.log"#,
            #"{"execution":"e1"#, #"{"execution":"e1","workspace":"w1","seq":,"event":"node.log"}"#, "{", ""]
        {
            XCTAssertNil(DeliveredEventHeader.parse(Array(text.utf8)), text)
        }
    }
}
