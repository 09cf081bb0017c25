/// Decodes and validates `POST /v1/jobs/progress` bodies (Protocol/README.md, "Engine ingestion").
///
/// Every rule refuses with the path of the offending field, so an engine author can fix a request from the error
/// alone. Unknown fields are refused rather than dropped: nothing the engine sends is silently lost.
public struct IngestDecoder: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case invalidJSON(String)
        case invalidEvent(field: String, message: String)
    }

    public var maxBatch = 500
    /// Bytes of an output's JSON shown as `output_preview`; 0 leaves the preview out.
    public var outputPreviewBytes = 200

    public init() {}

    /// - Parameter now: Unix milliseconds, the timestamp of events that carry none.
    public func decode<Bytes: Collection<UInt8>>(_ body: Bytes, now: Int64) throws(Failure) -> [ProgressEvent] {
        try decodeRequest(body, now: now).events
    }

    /// The events of a request, and whether it was a batch (`{"events":[…]}`), which names its fields `events[i].…`.
    public func decodeRequest<Bytes: Collection<UInt8>>(_ body: Bytes, now: Int64) throws(Failure) -> (events: [ProgressEvent], batch: Bool) {
        let root: JSON
        do {
            root = try JSON.parse(body)
        } catch {
            throw .invalidJSON(error.description)
        }
        guard case .object(let fields) = root else {
            throw .invalidEvent(field: "", message: "the body must be an event object or {\"events\":[...]}")
        }
        if fields.count == 1, fields[0].0 == "events" {
            guard case .array(let items) = fields[0].1 else {
                throw .invalidEvent(field: "events", message: "must be an array of events")
            }
            guard !items.isEmpty else { throw .invalidEvent(field: "events", message: "must not be empty") }
            guard items.count <= maxBatch else {
                throw .invalidEvent(field: "events", message: "at most \(maxBatch) events per request")
            }
            var result: [ProgressEvent] = []
            result.reserveCapacity(items.count)
            for (i, item) in items.enumerated() {
                result.append(try event(item, path: "events[\(i)]", now: now))
            }
            return (result, true)
        }
        return ([try event(root, path: "", now: now)], false)
    }

    /// Decodes one message that another producer published straight to an execution's channel in the seed's format
    /// (`{"event","execution_id","node_key","data":{…},"timestamp"}`). The same rules apply as to ingestion, except
    /// that `workspace_id` may be missing: the topic's workspace is then empty, and the broker fills in the workspace
    /// that owns the execution.
    public func decodeSeed<Bytes: Collection<UInt8>>(_ message: Bytes, now: Int64) throws(Failure) -> ProgressEvent {
        let root: JSON
        do {
            root = try JSON.parse(message)
        } catch {
            throw .invalidJSON(error.description)
        }
        return try event(root, path: "", now: now, workspaceOptional: true)
    }

    // MARK: One event

    private func event(_ value: JSON, path: String, now: Int64, workspaceOptional: Bool = false) throws(Failure) -> ProgressEvent {
        var f = try Fields(value, path: path)
        let typeName = try f.requiredString("event")
        guard let type = EventType(rawValue: typeName) else {
            throw .invalidEvent(field: f.path("event"),
                message: "unknown event type '\(typeName)'; one of \(EventType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let execution = try f.identifier("execution_id")
        let workspace = workspaceOptional && !f.has("workspace_id") ? "" : try f.identifier("workspace_id")
        var nodeKey: String?
        if type.isNodeEvent {
            nodeKey = try f.nodeKey("node_key", required: true)
        } else if f.has("node_key") {
            throw .invalidEvent(field: f.path("node_key"), message: "not allowed on \(type.rawValue) events")
        }
        let timestamp: String
        if let t = try f.optionalString("timestamp") {
            guard RFC3339.isValid(t) else {
                throw .invalidEvent(field: f.path("timestamp"), message: "must be an RFC 3339 date-time such as 2026-11-25T12:00:00Z")
            }
            timestamp = t
        } else {
            timestamp = RFC3339.format(unixMilliseconds: now)
        }
        var idempotencyKey: String?
        if let k = try f.optionalString("idempotency_key") {
            guard (1...128).contains(k.utf8.count), k.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw .invalidEvent(field: f.path("idempotency_key"), message: "must be 1 to 128 printable ASCII characters")
            }
            idempotencyKey = k
        }
        var d: Fields
        if let dataValue = f.take("data") {
            d = try Fields(dataValue, path: f.path("data"))
        } else {
            d = try Fields(.object([]), path: f.path("data"))
        }
        try f.refuseRest()
        let data = try self.data(type, &d)
        try d.refuseRest()
        return ProgressEvent(type: type, topic: TopicKey(workspace: workspace, execution: execution), nodeKey: nodeKey,
            timestamp: timestamp, idempotencyKey: idempotencyKey, data: data)
    }

    private func data(_ type: EventType, _ d: inout Fields) throws(Failure) -> JSON {
        var out: [(String, JSON)] = []
        switch type {
        case .executionStarted:
            out.append(("status", .string("running")))
            if let w = try d.optionalString("workflow") {
                guard (1...128).contains(w.count) else { throw .invalidEvent(field: d.path("workflow"), message: "must be 1 to 128 characters") }
                out.append(("workflow", .string(w)))
            }
            if let nodes = d.take("nodes") {
                out.append(("nodes", try self.nodes(nodes, path: d.path("nodes"))))
            }
        case .nodeStarted:
            out.append(("status", .string("running")))
            if let a = try d.optionalInteger("attempt", minimum: 1) { out.append(("attempt", .number(Double(a)))) }
        case .nodeCompleted:
            var status = "completed"
            if let s = try d.optionalString("status") {
                guard s == "completed" || s == "skipped" else {
                    throw .invalidEvent(field: d.path("status"), message: "must be \"completed\" or \"skipped\"")
                }
                status = s
            }
            out.append(("status", .string(status)))
            out.append(("duration_ms", .number(Double(try d.requiredInteger("duration_ms", minimum: 0)))))
            if let output = d.take("output") { out.append(contentsOf: summary(of: output)) }
        case .nodeFailed:
            out.append(("status", .string("failed")))
            out.append(("error", try error(&d)))
            if let ms = try d.optionalInteger("duration_ms", minimum: 0) { out.append(("duration_ms", .number(Double(ms)))) }
        case .nodeLog:
            var level = "info"
            if let l = try d.optionalString("level") {
                guard ["debug", "info", "warning", "error"].contains(l) else {
                    throw .invalidEvent(field: d.path("level"), message: "must be one of debug, info, warning, error")
                }
                level = l
            }
            let message = try d.requiredString("message")
            guard message.utf8.count <= 8192 else { throw .invalidEvent(field: d.path("message"), message: "at most 8192 bytes") }
            out.append(("level", .string(level)))
            out.append(("message", .string(message)))
        case .executionCompleted:
            out.append(("status", .string("completed")))
            out.append(("total_duration_ms", .number(Double(try d.requiredInteger("total_duration_ms", minimum: 0)))))
            out.append(("node_count", .number(Double(try d.requiredInteger("node_count", minimum: 0)))))
        case .executionFailed:
            out.append(("status", .string("failed")))
            out.append(("error", try error(&d)))
            if let ms = try d.optionalInteger("total_duration_ms", minimum: 0) {
                out.append(("total_duration_ms", .number(Double(ms))))
            }
            if let node = try d.nodeKey("failed_node", required: false) { out.append(("failed_node", .string(node))) }
        }
        return .object(out)
    }

    private func error(_ d: inout Fields) throws(Failure) -> JSON {
        guard let value = d.take("error") else { throw .invalidEvent(field: d.path("error"), message: "is required") }
        let path = d.path("error")
        switch value {
        case .string(let m):
            guard (1...2048).contains(m.count) else { throw .invalidEvent(field: path, message: "must be 1 to 2048 characters") }
            return .object([("message", .string(m))])
        case .object:
            var e = try Fields(value, path: path)
            let m = try e.requiredString("message")
            guard (1...2048).contains(m.count) else { throw .invalidEvent(field: e.path("message"), message: "must be 1 to 2048 characters") }
            var out: [(String, JSON)] = [("message", .string(m))]
            if let c = try e.optionalString("code") {
                guard (1...128).contains(c.count) else { throw .invalidEvent(field: e.path("code"), message: "must be 1 to 128 characters") }
                out.append(("code", .string(c)))
            }
            try e.refuseRest()
            return .object(out)
        default:
            throw .invalidEvent(field: path, message: "must be a string or an object with a message")
        }
    }

    private func nodes(_ value: JSON, path: String) throws(Failure) -> JSON {
        guard case .array(let items) = value else { throw .invalidEvent(field: path, message: "must be an array") }
        guard items.count <= 500 else { throw .invalidEvent(field: path, message: "at most 500 nodes") }
        var out: [JSON] = []
        for (i, item) in items.enumerated() {
            var n = try Fields(item, path: "\(path)[\(i)]")
            let key = try n.nodeKey("key", required: true)!
            var deps: [JSON] = []
            if let list = n.take("depends_on") {
                guard case .array(let ds) = list, ds.count <= 500 else {
                    throw .invalidEvent(field: n.path("depends_on"), message: "must be an array of node keys")
                }
                for (j, dep) in ds.enumerated() {
                    guard let s = dep.stringValue, Fields.isNodeKey(s) else {
                        throw .invalidEvent(field: "\(n.path("depends_on"))[\(j)]", message: "must be a node key")
                    }
                    deps.append(.string(s))
                }
            }
            try n.refuseRest()
            out.append(.object([("key", .string(key)), ("depends_on", .array(deps))]))
        }
        return .array(out)
    }

    /// What watchers learn of an output: its keys, its size and a short preview; never the output itself.
    func summary(of output: JSON) -> [(String, JSON)] {
        let text = output.serialized
        var keys: [JSON] = []
        if case .object(let fields) = output { keys = fields.map { .string($0.0) } }
        var preview = text
        if text.utf8.count > outputPreviewBytes {
            var cut = Substring(text).utf8.prefix(outputPreviewBytes)
            while String(cut) == nil { cut = cut.dropLast() }
            preview = String(cut)! + "…"
        }
        var fields: [(String, JSON)] = [("output_keys", .array(keys)), ("output_size_bytes", .number(Double(text.utf8.count)))]
        if outputPreviewBytes > 0 { fields.append(("output_preview", .string(preview))) }
        return fields
    }
}

/// The fields of one JSON object being validated; each taken field is removed, so leftovers are unknown fields.
private struct Fields {
    var fields: [(String, JSON)]
    let base: String

    init(_ value: JSON, path: String) throws(IngestDecoder.Failure) {
        guard case .object(let f) = value else {
            throw .invalidEvent(field: path, message: "must be an object")
        }
        fields = f
        base = path
    }

    func path(_ key: String) -> String { base.isEmpty ? key : "\(base).\(key)" }

    func has(_ key: String) -> Bool { fields.contains { $0.0 == key } }

    mutating func take(_ key: String) -> JSON? {
        guard let i = fields.firstIndex(where: { $0.0 == key }) else { return nil }
        return fields.remove(at: i).1
    }

    mutating func optionalString(_ key: String) throws(IngestDecoder.Failure) -> String? {
        guard let v = take(key) else { return nil }
        guard let s = v.stringValue else { throw .invalidEvent(field: path(key), message: "must be a string") }
        return s
    }

    mutating func requiredString(_ key: String) throws(IngestDecoder.Failure) -> String {
        guard let s = try optionalString(key) else { throw .invalidEvent(field: path(key), message: "is required") }
        return s
    }

    /// The largest integer an event field may hold: 2^53 - 1. Beyond it a JSON number no longer names one integer
    /// (9007199254740993 parses as 9007199254740992), and watchers' JSON parsers would round it (RFC 7493 §2.2).
    static let maxInteger: Int64 = 9_007_199_254_740_991

    mutating func optionalInteger(_ key: String, minimum: Int64) throws(IngestDecoder.Failure) -> Int64? {
        guard let v = take(key) else { return nil }
        guard let i = v.integerValue, i >= minimum, i <= Fields.maxInteger else {
            throw .invalidEvent(field: path(key), message: "must be an integer from \(minimum) to \(Fields.maxInteger)")
        }
        return i
    }

    mutating func requiredInteger(_ key: String, minimum: Int64) throws(IngestDecoder.Failure) -> Int64 {
        guard let i = try optionalInteger(key, minimum: minimum) else { throw .invalidEvent(field: path(key), message: "is required") }
        return i
    }

    mutating func identifier(_ key: String) throws(IngestDecoder.Failure) -> String {
        let s = try requiredString(key)
        guard Fields.isIdentifier(s) else {
            throw .invalidEvent(field: path(key), message: "must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
        }
        return s
    }

    mutating func nodeKey(_ key: String, required: Bool) throws(IngestDecoder.Failure) -> String? {
        guard let s = required ? try requiredString(key) : try optionalString(key) else { return nil }
        guard Fields.isNodeKey(s) else {
            throw .invalidEvent(field: path(key), message: "must match ^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
        }
        return s
    }

    func refuseRest() throws(IngestDecoder.Failure) {
        if let (key, _) = fields.first { throw .invalidEvent(field: path(key), message: "unknown field") }
    }

    static func isIdentifier(_ s: String) -> Bool { matches(s, extra: Array("_.:-".utf8)) }
    static func isNodeKey(_ s: String) -> Bool { matches(s, extra: Array("_.:/-".utf8)) }

    private static func matches(_ s: String, extra: [UInt8]) -> Bool {
        let b = Array(s.utf8)
        guard (1...128).contains(b.count), isAlnum(b[0]) else { return false }
        return b.allSatisfy { isAlnum($0) || extra.contains($0) }
    }

    private static func isAlnum(_ c: UInt8) -> Bool {
        (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c)
    }
}

extension TopicKey {
    /// Whether both names are valid identifiers (used for URL path segments and WebSocket ops too).
    public var isValid: Bool { IngestDecoder.isIdentifier(workspace) && IngestDecoder.isIdentifier(execution) }
}

extension IngestDecoder {
    public static func isIdentifier(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard (1...128).contains(b.count) else { return false }
        func alnum(_ c: UInt8) -> Bool { (48...57).contains(c) || (65...90).contains(c) || (97...122).contains(c) }
        return alnum(b[0]) && b.allSatisfy { alnum($0) || $0 == 0x5F || $0 == 0x2E || $0 == 0x3A || $0 == 0x2D }
    }
}
