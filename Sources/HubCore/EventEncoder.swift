/// Builds the wire forms of events. Stateless: the compressed WebSocket form is made on first use, with the deflater of
/// the loop that needs it (`EncodedEvent.webSocketDeflatedFrame(_:)`).
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
