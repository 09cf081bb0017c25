import HubNative

/// Encodes events on one event loop with that loop's deflater (never shared across threads).
public final class EventEncoder {
    private let deflater = Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits)

    public init() {}

    public func encode(_ event: SequencedEvent) -> EncodedEvent {
        EncodedEvent(event, deflater: deflater)
    }
}
