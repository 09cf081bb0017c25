import HubCore
import NIOConcurrencyHelpers
import NIOCore

/// `hub serve --demo`: plays a round of simulated executions into the hub every few seconds, through the same
/// validation and broker as `POST /v1/jobs/progress`, so a newcomer sees something move at once.
final class DemoRunner: Sendable {
    static let workspace = "demo"
    struct Started: Sendable {
        let execution: String
        let startedAt: String
    }

    private let recent = NIOLockedValueBox([Started]())
    private let round = NIOLockedValueBox(0)

    /// The executions started so far, newest first (at most 20).
    var executions: [Started] { recent.withLockedValue { Array($0.reversed().prefix(20)) } }

    func start(server: ServerContext, eventLoop: EventLoop) {
        let interval = nanoseconds(server.configuration.demoIntervalSeconds)
        eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(300), delay: .nanoseconds(interval)) { _ in
            self.playRound(server: server, eventLoop: eventLoop)
        }
    }

    private func playRound(server: ServerContext, eventLoop: EventLoop) {
        let n = round.withLockedValue { $0 += 1; return $0 }
        var timeline: [(at: Int64, event: JSON)] = []
        for i in 1...3 {
            let id = "demo-\(n)-\(i)"
            let scenario = Scenario(workspace: Self.workspace, execution: id, seed: UInt64(n * 10 + i),
                speed: server.configuration.demoSpeed, fail: i == 3)
            let offset = Int64(Double((i - 1) * 1200) / server.configuration.demoSpeed)
            timeline += scenario.steps.map { (offset + $0.at, $0.event) }
            recent.withLockedValue {
                $0.append(Started(execution: id, startedAt: RFC3339.format(unixMilliseconds: server.wallClock() + offset)))
                if $0.count > 20 { $0.removeFirst($0.count - 20) }
            }
        }
        timeline.sort { $0.at < $1.at }
        let encoder = server.loops.resources(for: eventLoop).encoder
        let start = NIODeadline.now()
        // One chain of tasks, so events of an execution are published in order.
        func step(_ index: Int) {
            guard index < timeline.count else { return }
            let deadline = start + .milliseconds(timeline[index].at)
            eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
                let body = Array(timeline[index].event.serialized.utf8)
                if let events = try? server.ingestDecoder.decode(body, now: server.wallClock()) {
                    _ = server.broker.publish(events, on: eventLoop, encoder: encoder)
                }
                step(index + 1)
            }
        }
        step(0)
    }
}
