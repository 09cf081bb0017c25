#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import HubCore

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Play realistic executions into a hub's ingestion endpoint, as an engine would.",
        discussion: "Each execution is a DAG of nodes with varied durations, log lines and, for some, a failure.")

    @Option(help: "The hub's base URL.") var url = "http://127.0.0.1:8080"
    @Option(help: "The engine secret the hub was started with (HUB_ENGINE_SECRET).") var engineSecret: String?
    @Option(help: "Workspace of the executions.") var workspace = "demo"
    @Option(help: "Number of executions.") var executions = 3
    @Option(help: "Milliseconds between the starts of consecutive executions.") var stagger = 1500
    @Option(help: "Speed factor: 2 plays twice as fast.") var speed = 1.0
    @Option(help: "Every n-th execution fails (0: none fail).") var failEvery = 3
    @Option(help: "Random seed (the same seed plays the same executions).") var seed: UInt64 = 1
    @Option(help: "Prefix of the execution ids (default: exec-<unix time>).") var prefix: String?
    @Flag(help: "Keep starting new rounds of executions until stopped.") var loop = false
    @Flag(help: "Print each event and the hub's answer.") var verbose = false

    func run() throws {
        guard let secret = try setting(engineSecret, env: "HUB_ENGINE_SECRET", parse: { $0 }) else {
            throw ValidationError("the engine secret is required: --engine-secret or HUB_ENGINE_SECRET")
        }
        guard executions >= 1 else { throw ValidationError("--executions must be at least 1") }
        let client = try IngestClient(url: url, secret: secret)
        var round: UInt64 = 0
        repeat {
            let base = prefix ?? "exec-\(unixSeconds())"
            var timeline: [(at: Int64, event: JSON)] = []
            for i in 0..<executions {
                let id = executions == 1 && !loop ? base : "\(base)-\(i + 1)"
                let scenario = Scenario(workspace: workspace, execution: id, seed: seed &+ round &* 1000 &+ UInt64(i),
                    speed: speed, fail: failEvery > 0 && (i + 1) % failEvery == 0)
                let offset = Int64(Double(i * stagger) / max(speed, 0.001))
                timeline += scenario.steps.map { (offset + $0.at, $0.event) }
                print("execution \(workspace)/\(id)")
            }
            flushStandardOutput()
            timeline.sort { $0.at < $1.at }
            let start = monotonicMilliseconds()
            var sent = 0
            for step in timeline {
                let wait = step.at - (monotonicMilliseconds() - start)
                if wait > 0 { usleep(UInt32(min(wait, 10_000)) * 1000) }
                try post(client, step.event.serialized)
                sent += 1
            }
            print("sent \(sent) events")
            flushStandardOutput()
            round += 1
        } while loop
    }

    /// Posts until the hub stores the event: 503 means "retry after Retry-After", as the protocol says.
    private func post(_ client: IngestClient, _ body: String) throws {
        for attempt in 0..<20 {
            let response = try client.post(body, now: unixSeconds())
            if verbose { print("\(response.status) \(response.body)") }
            switch response.status {
            case 202: return
            case 503:
                let seconds = Int(response.headers["retry-after"] ?? "1") ?? 1
                usleep(UInt32(max(seconds, 1)) * 1_000_000 / UInt32(attempt + 1 > 5 ? 1 : 2))
            default:
                throw ValidationError("the hub refused an event (\(response.status)): \(response.body)")
            }
        }
        throw ValidationError("the hub stayed unavailable")
    }
}

func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
