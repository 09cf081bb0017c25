import HubNative

/// Encodes events on one event loop with that loop's deflater (never shared across threads).
/// Not thread-safe: each event loop owns one and uses it only on that loop (hence `@unchecked`).
public final class EventEncoder: @unchecked Sendable {
    private let deflater = Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits)

    public init() {}

    public func encode(_ event: SequencedEvent) -> EncodedEvent {
        EncodedEvent(event, deflater: deflater)
    }
}
