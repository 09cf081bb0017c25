#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
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

    /// The delivered event object (Protocol/README.md §2) for sequence number `seq`, serialized:
    /// `DeliveredEventHeader.writePrefix` followed by `deliveredTail`.
    public func deliveredJSON(seq: UInt64) -> String {
        var out = ""
        out.reserveCapacity(Self.usualJSONCapacity)
        DeliveredEventHeader.writePrefix(workspace: topic.workspace, execution: topic.execution, seq: seq, to: &out)
        writeDeliveredTail(to: &out)
        return out
    }

    /// Room reserved for an event's JSON before it is written: most events fit, so the string is allocated once
    /// instead of once per doubling.
    static let usualJSONCapacity = 512

    /// The delivered object after its `seq` member: `"event":…,"node_key":…,"timestamp":…,"data":{…}}`. The Redis
    /// broker's publish script puts the prefix (with the seq it assigns) in front of it.
    public var deliveredTail: String {
        var out = ""
        out.reserveCapacity(Self.usualJSONCapacity)
        writeDeliveredTail(to: &out)
        return out
    }

    /// Appends `deliveredTail` to `out`, member by member (no object of the members is built).
    func writeDeliveredTail(to out: inout String) {
        out += #""event":"#
        JSON.writeString(type.rawValue, to: &out)
        if let nodeKey {
            out += #","node_key":"#
            JSON.writeString(nodeKey, to: &out)
        }
        out += #","timestamp":"#
        JSON.writeString(timestamp, to: &out)
        out += #","data":"#
        data.write(to: &out)
        out += "}"
    }
}

/// The fixed start of every delivered event object: `{"execution":"…","workspace":"…","seq":N,"event":"…"`.
/// Identifiers never need escaping (they match `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`), so the start can be built and
/// read back without a JSON parser; an event that arrives from Redis is routed by reading just this.
public struct DeliveredEventHeader: Equatable, Sendable {
    public var topic: TopicKey
    public var seq: UInt64
    public var type: EventType

    public init(topic: TopicKey, seq: UInt64, type: EventType) {
        self.topic = topic
        self.seq = seq
        self.type = type
    }

    /// Appends the start of a delivered event object, up to its `seq` member and the comma after it:
    /// `{"execution":"…","workspace":"…","seq":N,`.
    static func writePrefix(workspace: String, execution: String, seq: UInt64, to out: inout String) {
        out += #"{"execution":""#
        out += execution
        out += #"","workspace":""#
        out += workspace
        out += #"","seq":"#
        out += String(seq)
        out += ","
    }

    /// Reads the header of a delivered event object; nil when `json` does not start like one.
    public static func parse<Bytes: Collection<UInt8>>(_ json: Bytes) -> DeliveredEventHeader? {
        if let header = json.withContiguousStorageIfAvailable({ parse(bytes: $0) }) { return header }
        return Array(json).withUnsafeBufferPointer { parse(bytes: $0) }
    }

    /// `parse` on the bytes themselves (every event from Redis goes through it, so it is not generic).
    private static func parse(bytes json: UnsafeBufferPointer<UInt8>) -> DeliveredEventHeader? {
        var i = 0
        func literal(_ s: StaticString) -> Bool {
            let count = s.utf8CodeUnitCount
            guard json.count - i >= count, memcmp(json.baseAddress! + i, s.utf8Start, count) == 0 else { return false }
            i += count
            return true
        }
        func until(_ quote: UInt8) -> String? {
            let start = i
            while i < json.count, json[i] != quote { i += 1 }
            guard i < json.count else { return nil }
            i += 1
            return String(decoding: UnsafeBufferPointer(rebasing: json[start..<(i - 1)]), as: UTF8.self)
        }
        guard literal(#"{"execution":""#), let execution = until(0x22), literal(#","workspace":""#),
            let workspace = until(0x22), literal(#","seq":"#)
        else { return nil }
        var seq: UInt64 = 0
        var digits = 0
        while i < json.count, (0x30...0x39).contains(json[i]), digits < 19 {
            seq = seq * 10 + UInt64(json[i] - 0x30)
            digits += 1
            i += 1
        }
        guard digits > 0, literal(#","event":""#), let name = until(0x22), let type = EventType(rawValue: name) else { return nil }
        let topic = TopicKey(workspace: workspace, execution: execution)
        guard topic.isValid else { return nil }
        return DeliveredEventHeader(topic: topic, seq: seq, type: type)
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
