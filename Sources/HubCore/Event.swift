/// The event types an execution reports.
public enum EventType: String, CaseIterable, Sendable {
    case executionStarted = "execution.started"
    case nodeStarted = "node.started"
    case nodeCompleted = "node.completed"
    case nodeFailed = "node.failed"
    case nodeLog = "node.log"
    case executionCompleted = "execution.completed"
    case executionFailed = "execution.failed"

    public var isNodeEvent: Bool { rawValue.hasPrefix("node.") }
    /// True for the events that end an execution.
    public var isTerminal: Bool { self == .executionCompleted || self == .executionFailed }
}

/// An execution is named by its workspace and id: ids may collide across workspaces, events never do.
public struct TopicKey: Hashable, Sendable, CustomStringConvertible {
    public var workspace: String
    public var execution: String

    public init(workspace: String, execution: String) {
        self.workspace = workspace
        self.execution = execution
    }

    public var description: String { "\(workspace)/\(execution)" }
}

/// A validated progress report, normalized to what watchers receive (outputs already reduced to a summary).
public struct ProgressEvent: Equatable, Sendable {
    public var type: EventType
    public var topic: TopicKey
    public var nodeKey: String?
    /// RFC 3339 time of the step, as the engine reported it (or when the hub received it).
    public var timestamp: String
    public var idempotencyKey: String?
    /// The delivered `data` object.
    public var data: JSON

    public init(type: EventType, topic: TopicKey, nodeKey: String?, timestamp: String, idempotencyKey: String?, data: JSON) {
        self.type = type
        self.topic = topic
        self.nodeKey = nodeKey
        self.timestamp = timestamp
        self.idempotencyKey = idempotencyKey
        self.data = data
    }

    /// The delivered event object (Protocol/README.md §2) for sequence number `seq`.
    public func deliveredJSON(seq: UInt64) -> JSON {
        var fields: [(String, JSON)] = [
            ("execution", .string(topic.execution)), ("workspace", .string(topic.workspace)),
            ("seq", .number(Double(seq))), ("event", .string(type.rawValue)),
        ]
        if let nodeKey { fields.append(("node_key", .string(nodeKey))) }
        fields.append(("timestamp", .string(timestamp)))
        fields.append(("data", data))
        return .object(fields)
    }
}

/// An event with its place in its execution's sequence.
public struct SequencedEvent: Equatable, Sendable {
    public var seq: UInt64
    public var event: ProgressEvent

    public init(seq: UInt64, event: ProgressEvent) {
        self.seq = seq
        self.event = event
    }
}
