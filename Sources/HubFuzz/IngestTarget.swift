import HubCore
import HubProtocol

/// Ingestion bodies (`POST /v1/jobs/progress`) and seed-format messages through `IngestDecoder` and `JSON`.
///
/// Input: a configuration byte (preview size, batch limit), then the body. Whatever the decoder accepts must make a
/// delivered event that is valid JSON saying the same things, and JSON must survive a serialization round trip.
enum IngestTarget {
    static let now: Int64 = 1_764_072_000_000
    static let previewSizes = [200, 0, 1, 2, 3, 7, 64, 4096]

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let config = input.byte()
        var decoder = IngestDecoder()
        decoder.outputPreviewBytes = previewSizes[Int(config & 7)]
        decoder.maxBatch = config & 8 == 0 ? 500 : 3
        let body = Array(input.rest)

        let json = try? JSON.parse(body)
        if let json {
            let text = json.serialized
            guard let again = try? JSON.parse(Array(text.utf8)) else { return require(false, "serialized JSON does not parse") }
            require(again == json, "JSON changed in a round trip")
            require(again.serialized == text, "serialization is not stable")
        }

        do {
            let (events, batch) = try decoder.decodeRequest(body, now: now)
            require(json != nil, "a body that is not JSON was accepted")
            require(!events.isEmpty && events.count <= decoder.maxBatch, "\(events.count) events accepted")
            require(batch || events.count == 1, "\(events.count) events from a single-event body")
            for event in events { check(event, decoder: decoder, seedFormat: false) }
        } catch {
            switch error {
            case .invalidJSON(let why): require(json == nil && why.hasPrefix("invalid JSON at byte "), "invalidJSON: \(why)")
            case .invalidEvent(let field, let message):
                require(json != nil && !message.isEmpty, "invalidEvent \(field): \(message)")
            }
        }

        if let event = try? decoder.decodeSeed(body, now: now) {
            require(json != nil, "a seed message that is not JSON was accepted")
            check(event, decoder: decoder, seedFormat: true)
        }
    }

    static func isIdentifier(_ s: String, extra: String) -> Bool {
        let b = Array(s.utf8)
        func alnum(_ c: UInt8) -> Bool { (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) }
        return (1...128).contains(b.count) && alnum(b[0]) && b.allSatisfy { alnum($0) || extra.utf8.contains($0) }
    }

    static func check(_ event: ProgressEvent, decoder: IngestDecoder, seedFormat: Bool) {
        require(isIdentifier(event.topic.execution, extra: "_.:-"), "execution \(event.topic.execution)")
        require(isIdentifier(event.topic.workspace, extra: "_.:-") || (seedFormat && event.topic.workspace.isEmpty),
            "workspace \(event.topic.workspace)")
        require((event.nodeKey != nil) == event.type.isNodeEvent, "node_key on \(event.type)")
        if let key = event.nodeKey { require(isIdentifier(key, extra: "_.:/-"), "node_key \(key)") }
        require(RFC3339.isValid(event.timestamp), "timestamp \(event.timestamp)")
        if let k = event.idempotencyKey {
            require((1...128).contains(k.utf8.count) && k.utf8.allSatisfy { (0x21...0x7E).contains($0) }, "idempotency key")
        }
        if case .string(let preview)? = event.data["output_preview"] {
            require(decoder.outputPreviewBytes > 0, "a preview although previews are off")
            require(preview.utf8.count <= decoder.outputPreviewBytes + "…".utf8.count, "preview of \(preview.utf8.count) bytes")
        }

        // The delivered object (Protocol/README.md §2) is JSON that says the same, and its start reads back.
        let seq: UInt64 = 9_007_199_254_740_993
        let text = event.deliveredJSON(seq: seq)
        guard let delivered = try? JSON.parse(Array(text.utf8)) else { return require(false, "delivered event is not JSON") }
        require(delivered["execution"] == .string(event.topic.execution), "delivered execution")
        require(delivered["workspace"] == .string(event.topic.workspace), "delivered workspace")
        require(delivered["event"] == .string(event.type.rawValue), "delivered event type")
        require(delivered["node_key"] == event.nodeKey.map { .string($0) }, "delivered node_key")
        require(delivered["timestamp"] == .string(event.timestamp), "delivered timestamp")
        require(delivered["data"] == event.data, "delivered data")
        if !event.topic.workspace.isEmpty {
            require(DeliveredEventHeader.parse(Array(text.utf8)) == DeliveredEventHeader(topic: event.topic, seq: seq, type: event.type),
                "delivered header does not read back")
        }
    }
}
