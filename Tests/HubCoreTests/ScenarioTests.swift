import HubCore
import XCTest

final class ScenarioTests: XCTestCase {
    private func events(_ s: Scenario) -> [(type: String, node: String?)] {
        s.steps.map { ($0.event["event"]!.stringValue!, $0.event["node_key"]?.stringValue) }
    }

    func testSuccessfulExecutionRunsEveryNodeAfterItsDependencies() {
        let steps = events(Scenario(workspace: "w", execution: "e", seed: 4))
        XCTAssertEqual(steps.first?.type, "execution.started")
        XCTAssertEqual(steps.last?.type, "execution.completed")
        var done = Set<String>()
        for (type, node) in steps {
            guard let node else { continue }
            if type == "node.started" {
                let deps = Scenario.workflow.first { $0.key == node }!.dependsOn
                XCTAssertTrue(deps.allSatisfy(done.contains), "\(node) started before \(deps)")
            }
            if type == "node.completed" { done.insert(node) }
        }
        XCTAssertEqual(done.count, Scenario.workflow.count)
    }

    /// Nothing downstream of a failed node runs, and the execution's failure is the last event.
    func testFailureStopsEverythingDownstream() {
        for seed: UInt64 in 1...30 {
            let steps = events(Scenario(workspace: "w", execution: "e", seed: seed, fail: true))
            XCTAssertEqual(steps.last?.type, "execution.failed", "seed \(seed)")
            guard let failed = steps.first(where: { $0.type == "node.failed" })?.node else { return XCTFail("no failure") }
            var blocked: Set<String> = [failed]
            for node in Scenario.workflow where node.dependsOn.contains(where: blocked.contains) { blocked.insert(node.key) }
            let started = Set(steps.filter { $0.type == "node.started" }.compactMap(\.node))
            XCTAssertTrue(started.isDisjoint(with: blocked.subtracting([failed])), "seed \(seed): \(started.intersection(blocked))")
        }
    }
}
