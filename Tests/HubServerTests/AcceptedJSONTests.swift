import HubCore
import XCTest

@testable import HubServer

final class AcceptedJSONTests: XCTestCase {
    func testTheAnswerToAnIngestionListsEveryEventInOrder() throws {
        let results = [
            PublishResult(topic: TopicKey(workspace: "ws-1", execution: "exec.a"), seq: 7, duplicate: false),
            PublishResult(topic: TopicKey(workspace: "ws-1", execution: "exec:b"), seq: 18_446_744_073_709_551_615,
                duplicate: true),
        ]
        let text = HTTPHandler.acceptedJSON(results)
        XCTAssertEqual(text, #"{"accepted":[{"execution_id":"exec.a","workspace_id":"ws-1","seq":7,"duplicate":false},"#
            + #"{"execution_id":"exec:b","workspace_id":"ws-1","seq":18446744073709551615,"duplicate":true}]}"#)
        XCTAssertEqual(try JSON.parse(text)["accepted"], .array([
            .object([("execution_id", .string("exec.a")), ("workspace_id", .string("ws-1")), ("seq", .number(7)),
                ("duplicate", .bool(false))]),
            .object([("execution_id", .string("exec:b")), ("workspace_id", .string("ws-1")),
                ("seq", .number(Double(UInt64.max))), ("duplicate", .bool(true))]),
        ]))
        XCTAssertEqual(HTTPHandler.acceptedJSON([]), #"{"accepted":[]}"#)
    }
}
