/// A realistic execution for demos and load: a DAG of nodes with varied durations, log lines and an optional
/// failure, as the timed ingestion events an engine would send. Seeded, so a run can be replayed exactly.
public struct Scenario: Sendable {
    public struct Step: Sendable {
        /// Milliseconds after the execution started.
        public var at: Int64
        /// The ingestion event object (Protocol/README.md, "Engine ingestion"), without a timestamp.
        public var event: JSON
    }

    public struct Node: Sendable {
        public var key: String
        public var dependsOn: [String]
    }

    /// A small order-processing workflow: two fetches in parallel, a join, scoring fanned out, then notify.
    public static let workflow: [Node] = [
        Node(key: "trigger", dependsOn: []),
        Node(key: "fetch_orders", dependsOn: ["trigger"]),
        Node(key: "fetch_customers", dependsOn: ["trigger"]),
        Node(key: "join", dependsOn: ["fetch_orders", "fetch_customers"]),
        Node(key: "score_risk", dependsOn: ["join"]),
        Node(key: "score_value", dependsOn: ["join"]),
        Node(key: "notify", dependsOn: ["score_risk", "score_value"]),
        Node(key: "archive", dependsOn: ["join"]),
    ]

    public var steps: [Step] = []

    /// - Parameters:
    ///   - speed: durations are divided by this (2 = twice as fast).
    ///   - fail: whether one node (chosen by the seed) fails and ends the execution.
    public init(workspace: String, execution: String, seed: UInt64, speed: Double = 1, fail: Bool = false) {
        var rng = SeededGenerator(seed: seed)
        let nodes = Self.workflow
        let failing = fail ? nodes[Int.random(in: 1..<nodes.count, using: &rng)].key : nil
        func base(_ type: String, node: String? = nil) -> [(String, JSON)] {
            var f: [(String, JSON)] = [("event", .string(type)), ("execution_id", .string(execution)),
                ("workspace_id", .string(workspace))]
            if let node { f.append(("node_key", .string(node))) }
            return f
        }
        func ms(_ v: Double) -> Int64 { Int64(v / max(speed, 0.001)) }
        var steps: [Step] = []
        steps.append(Step(at: 0, event: .object(base("execution.started") + [
            ("idempotency_key", .string("\(execution):start")),
            ("data", .object([("workflow", .string("order-processing")),
                ("nodes", .array(nodes.map { .object([("key", .string($0.key)), ("depends_on", .array($0.dependsOn.map { .string($0) }))]) }))])),
        ])))
        var finish: [String: Int64] = [:]
        var failedAt: Int64?
        for node in nodes {
            // A node runs only when every node it depends on completed (not failed, not skipped).
            guard node.dependsOn.allSatisfy({ finish[$0] != nil && $0 != failing }) else { continue }
            let start = (node.dependsOn.compactMap { finish[$0] }.max() ?? 0) + ms(Double.random(in: 20...80, using: &rng))
            if let failedAt, start >= failedAt { continue }
            let duration = ms(Double.random(in: 250...1800, using: &rng))
            steps.append(Step(at: start, event: .object(base("node.started", node: node.key) + [
                ("idempotency_key", .string("\(execution):\(node.key):start")), ("data", .object([("attempt", .number(1))])),
            ])))
            let logs = Int.random(in: 1...3, using: &rng)
            for i in 0..<logs {
                let at = start + duration * Int64(i + 1) / Int64(logs + 1)
                steps.append(Step(at: at, event: .object(base("node.log", node: node.key) + [
                    ("idempotency_key", .string("\(execution):\(node.key):log\(i)")),
                    ("data", .object([("level", .string(i == logs - 1 && node.key == failing ? "error" : "info")),
                        ("message", .string(Self.logLine(node.key, i, &rng)))])),
                ])))
            }
            let end = start + duration
            if node.key == failing {
                steps.append(Step(at: end, event: .object(base("node.failed", node: node.key) + [
                    ("idempotency_key", .string("\(execution):\(node.key):end")),
                    ("data", .object([("error", .object([("message", .string("upstream returned 503 Service Unavailable")),
                        ("code", .string("UPSTREAM_UNAVAILABLE"))])), ("duration_ms", .number(Double(duration)))])),
                ])))
                failedAt = end
                finish[node.key] = end
                continue
            }
            finish[node.key] = end
            let rows = Int.random(in: 10...5000, using: &rng)
            steps.append(Step(at: end, event: .object(base("node.completed", node: node.key) + [
                ("idempotency_key", .string("\(execution):\(node.key):end")),
                ("data", .object([("duration_ms", .number(Double(duration))),
                    ("output", .object([("rows", .number(Double(rows))), ("status", .string("ok")),
                        ("sample", .array((0..<3).map { .object([("id", .number(Double($0 + 1))), ("score", .number(Double(Int.random(in: 1...100, using: &rng))))]) }))]))])),
            ])))
        }
        let total = finish.values.max() ?? 0
        if failedAt != nil, let failing {
            // Nodes already running when one failed finish first; then the execution fails.
            steps.append(Step(at: total + 5, event: .object(base("execution.failed") + [
                ("idempotency_key", .string("\(execution):end")),
                ("data", .object([("error", .object([("message", .string("node \(failing) failed")), ("code", .string("NODE_FAILED"))])),
                    ("total_duration_ms", .number(Double(total + 5))), ("failed_node", .string(failing))])),
            ])))
        } else {
            steps.append(Step(at: total + 5, event: .object(base("execution.completed") + [
                ("idempotency_key", .string("\(execution):end")),
                ("data", .object([("total_duration_ms", .number(Double(total + 5))), ("node_count", .number(Double(nodes.count)))])),
            ])))
        }
        // Stable order by time; events at the same time keep their causal order.
        self.steps = steps.enumerated().sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }.map(\.element)
    }

    private static func logLine(_ node: String, _ i: Int, _ rng: inout SeededGenerator) -> String {
        let lines = ["connecting to upstream", "fetched page \(Int.random(in: 1...9, using: &rng))",
            "processed \(Int.random(in: 100...900, using: &rng)) records", "cache hit ratio 0.\(Int.random(in: 50...99, using: &rng))",
            "retrying after timeout", "writing results"]
        return "[\(node)] " + lines[Int.random(in: 0..<lines.count, using: &rng)]
    }
}

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
