@testable import HubCore
import XCTest

final class IngestDecoderTests: XCTestCase {
    let decoder = IngestDecoder()
    let now: Int64 = 1_764_072_000_000

    private func decode(_ text: String) throws -> [ProgressEvent] { try decoder.decode(Array(text.utf8), now: now) }

    private func expectField(_ text: String, _ field: String, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try decode(text), file: file, line: line) { error in
            XCTAssertEqual(error as? IngestDecoder.Failure, .invalidEvent(field: field, message: message), file: file, line: line)
        }
    }

    func testNodeCompletedKeepsOnlyTheOutputSummary() throws {
        let events = try decode(#"""
            {"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"fetch",
             "timestamp":"2026-11-25T12:00:00Z","idempotency_key":"k1",
             "data":{"duration_ms":120,"output":{"rows":3,"secret":"do-not-forward"}}}
            """#)
        XCTAssertEqual(events.count, 1)
        let e = events[0]
        XCTAssertEqual(e.type, .nodeCompleted)
        XCTAssertEqual(e.topic, TopicKey(workspace: "w1", execution: "e1"))
        XCTAssertEqual(e.idempotencyKey, "k1")
        XCTAssertEqual(e.data.serialized,
            #"{"status":"completed","duration_ms":120,"output_keys":["rows","secret"],"output_size_bytes":36,"output_preview":"{\"rows\":3,\"secret\":\"do-not-forward\"}"}"#)
        XCTAssertEqual(e.deliveredJSON(seq: 7),
            #"{"execution":"e1","workspace":"w1","seq":7,"event":"node.completed","node_key":"fetch","timestamp":"2026-11-25T12:00:00Z","data":"#
                + e.data.serialized + "}")
    }

    func testPreviewCanBeTurnedOff() throws {
        var quiet = IngestDecoder()
        quiet.outputPreviewBytes = 0
        let e = try quiet.decode(Array(#"{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":1,"output":{"k":"secret"}}}"#.utf8), now: now)[0]
        XCTAssertEqual(e.data.serialized, #"{"status":"completed","duration_ms":1,"output_keys":["k"],"output_size_bytes":14}"#)
    }

    func testLongOutputPreviewIsCutOnACharacterBoundary() throws {
        let long = String(repeating: "é", count: 300)
        let e = try decode(#"{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":1,"output":""# + long + #""}}"#)[0]
        guard case .string(let preview)? = e.data["output_preview"] else { return XCTFail() }
        XCTAssertEqual(preview, "\"" + String(repeating: "é", count: 99) + "…")
        XCTAssertEqual(e.data["output_size_bytes"], .number(602))
        XCTAssertEqual(e.data["output_keys"], .array([]))
    }

    func testEveryTypeNormalizes() throws {
        let body = #"""
            {"events":[
             {"event":"execution.started","execution_id":"e1","workspace_id":"w1","data":{"workflow":"wf","nodes":[{"key":"a"},{"key":"b","depends_on":["a"]}]}},
             {"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"a","data":{"attempt":2}},
             {"event":"node.log","execution_id":"e1","workspace_id":"w1","node_key":"a","data":{"message":"hi"}},
             {"event":"node.failed","execution_id":"e1","workspace_id":"w1","node_key":"a","data":{"error":"boom","duration_ms":5}},
             {"event":"execution.failed","execution_id":"e1","workspace_id":"w1","data":{"error":{"message":"m","code":"C"},"failed_node":"a"}},
             {"event":"execution.completed","execution_id":"e2","workspace_id":"w1","data":{"total_duration_ms":9,"node_count":2}}
            ]}
            """#
        let events = try decode(body)
        XCTAssertEqual(events.map(\.data.serialized), [
            #"{"status":"running","workflow":"wf","nodes":[{"key":"a","depends_on":[]},{"key":"b","depends_on":["a"]}]}"#,
            #"{"status":"running","attempt":2}"#,
            #"{"level":"info","message":"hi"}"#,
            #"{"status":"failed","error":{"message":"boom"},"duration_ms":5}"#,
            #"{"status":"failed","error":{"message":"m","code":"C"},"failed_node":"a"}"#,
            #"{"status":"completed","total_duration_ms":9,"node_count":2}"#,
        ])
        // Without a timestamp, the hub's receive time is used.
        XCTAssertEqual(events[0].timestamp, "2025-11-25T12:00:00.000Z")
    }

    func testErrorsNameTheField() {
        expectField(#"{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{}}"#,
            "data.duration_ms", "is required")
        expectField(#"{"events":[{"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"n"},{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":-1}}]}"#,
            "events[1].data.duration_ms", "must be an integer from 0 to 9007199254740991")
        // 2^53 is where a JSON number stops naming one integer (9007199254740993 parses as 9007199254740992).
        expectField(#"{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":9007199254740992}}"#,
            "data.duration_ms", "must be an integer from 0 to 9007199254740991")
        expectField(#"{"event":"execution.started","execution_id":"e1","workspace_id":"w1","node_key":"n"}"#,
            "node_key", "not allowed on execution.started events")
        expectField(#"{"event":"node.started","execution_id":"e1","workspace_id":"w1"}"#, "node_key", "is required")
        expectField(#"{"event":"node.started","execution_id":"e 1","workspace_id":"w1","node_key":"n"}"#,
            "execution_id", "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
        expectField(#"{"event":"node.begun","execution_id":"e1","workspace_id":"w1"}"#, "event",
            "unknown event type 'node.begun'; one of execution.started, node.started, node.completed, node.failed, node.log, execution.completed, execution.failed")
        expectField(#"{"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"n","extra":1}"#, "extra", "unknown field")
        expectField(#"{"event":"node.log","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"message":"x","level":"loud"}}"#,
            "data.level", "must be one of debug, info, warning, error")
        expectField(#"{"event":"node.failed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"error":{"code":"X"}}}"#,
            "data.error.message", "is required")
        expectField(#"{"event":"node.started","execution_id":"e1","workspace_id":"w1","node_key":"n","timestamp":"noon"}"#,
            "timestamp", "must be an RFC 3339 date-time such as 2026-11-25T12:00:00Z")
        expectField(#"{"events":[]}"#, "events", "must not be empty")
        expectField("[1]", "", "the body must be an event object or {\"events\":[...]}")
    }

    func testInvalidJSON() {
        XCTAssertThrowsError(try decode("{\"event\":")) { error in
            guard case .invalidJSON(let why)? = error as? IngestDecoder.Failure else { return XCTFail("\(error)") }
            XCTAssertEqual(why, "invalid JSON at byte 9: unexpected end of input")
        }
    }
}

final class EngineSignatureTests: XCTestCase {
    let signer = EngineSignature(secret: Array("engine-secret-0123".utf8), maxSkewSeconds: 300)
    let body = Array(#"{"event":"x"}"#.utf8)

    func testValidSignature() throws {
        let header = signer.header(timestamp: 1000, body: body)
        XCTAssertEqual(header.count, 7 + 64)
        XCTAssertNoThrow(try signer.verify(timestamp: "1000", signature: header, body: body, now: 1299))
        // Upper-case hex digits name the same bytes.
        XCTAssertNoThrow(try signer.verify(timestamp: "1000", signature: "sha256=" + header.dropFirst(7).uppercased(), body: body,
            now: 1000))
    }

    func testRefusals() {
        let header = signer.header(timestamp: 1000, body: body)
        func failure(_ ts: String?, _ sig: String?, now: Int64 = 1000, body: [UInt8]? = nil) -> EngineSignature.Failure? {
            do {
                try signer.verify(timestamp: ts, signature: sig, body: body ?? self.body, now: now)
                return nil
            } catch { return error }
        }
        XCTAssertEqual(failure(nil, header), .missing("X-Hub-Timestamp header is required"))
        XCTAssertEqual(failure("1000", nil), .missing("X-Hub-Signature header is required"))
        XCTAssertEqual(failure("soon", header), .missing("X-Hub-Timestamp must be Unix seconds"))
        XCTAssertEqual(failure("1000", "md5=abc"), .missing("X-Hub-Signature must be sha256=<64 hex digits>"))
        // An odd or short count of digits, one that is not a hex digit (first or second of its pair), one pair too many.
        let hex = String(header.dropFirst(7))
        for bad in [String(hex.dropLast()), String(hex.dropLast(2)), "g" + hex.dropFirst(), hex.dropLast() + "z", hex + "00", ""] {
            XCTAssertEqual(failure("1000", "sha256=" + bad), .missing("X-Hub-Signature must be sha256=<64 hex digits>"), bad)
        }
        XCTAssertEqual(failure("1000", header, now: 1301), .stale(skewSeconds: 301))
        XCTAssertEqual(failure("1000", header, body: Array(#"{"event":"y"}"#.utf8)), .mismatch)
        XCTAssertEqual(failure("1001", header), .mismatch)
        // The digits themselves, from a slice that does not start at the string's start.
        let digits = "sha256=00fFa0Ab19"
        XCTAssertEqual(EngineSignature.hexDecode(digits.dropFirst(7)), [0x00, 0xFF, 0xA0, 0xAB, 0x19])
        XCTAssertEqual(EngineSignature.hexDecode(digits.dropFirst(17)), [])
        for bad in ["0", "0g", "g0", "00f", "é0", "0 "] { XCTAssertNil(EngineSignature.hexDecode(Substring(bad)), bad) }
        XCTAssertEqual(EngineSignature.Failure.mismatch.status, 403)
        XCTAssertEqual(EngineSignature.Failure.stale(skewSeconds: 1).status, 401)
    }
}
