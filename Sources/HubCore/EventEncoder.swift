/// Builds the wire forms of events. Stateless: the SSE form (`EncodedEvent.sse`) and the compressed WebSocket form
/// (`EncodedEvent.webSocketDeflatedFrame(_:)`, with the deflater of the loop that needs it) are made on first use.
public final class EventEncoder: Sendable {
    public init() {}

    public func encode(_ event: SequencedEvent) -> EncodedEvent {
        EncodedEvent(event)
    }

    /// Encodes a delivered event object that arrived already serialized (from Redis).
    public func encode(_ header: DeliveredEventHeader, json: String) -> EncodedEvent {
        EncodedEvent(topic: header.topic, seq: header.seq, type: header.type, json: json)
    }
}
