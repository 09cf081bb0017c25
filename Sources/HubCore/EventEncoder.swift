import HubNative

/// Encodes events on one event loop with that loop's deflater (never shared across threads).
/// Not thread-safe: each event loop owns one and uses it only on that loop (hence `@unchecked`).
public final class EventEncoder: @unchecked Sendable {
    private let deflater = Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits)

    public init() {}

    public func encode(_ event: SequencedEvent) -> EncodedEvent {
        EncodedEvent(event, deflater: deflater)
    }

    /// Encodes a delivered event object that arrived already serialized (from Redis).
    public func encode(_ header: DeliveredEventHeader, json: String) -> EncodedEvent {
        EncodedEvent(topic: header.topic, seq: header.seq, type: header.type, json: json, deflater: deflater)
    }
}
