import HubNative
import HubProtocol
import NIOConcurrencyHelpers
import NIOCore

/// One event in every wire form, built once and then written as the same buffers to every subscriber.
public final class EncodedEvent: Sendable {
    public let topic: TopicKey
    public let seq: UInt64
    public let type: EventType
    /// The delivered event object (Protocol/README.md §2), compact JSON.
    public let json: String
    /// A complete unmasked WebSocket text frame: `{"type":"event",…}`.
    public let webSocketFrame: ByteBuffer
    /// The same message compressed (RFC 7692, RSV1 set), made when the first subscriber that uses permessage-deflate
    /// needs it (`webSocketDeflatedFrame(_:)`): most events reach none, and compressing costs more than the rest of
    /// the encoding.
    private let deflated = NIOLockedValueBox<ByteBuffer?>(nil)
    /// `id:`, `event:` and `data:` lines and the blank line that ends an SSE event.
    public let sse: ByteBuffer
    /// When this hub encoded the event (monotonic nanoseconds): as it was ingested here or arrived from Redis. The
    /// start of the ingest-to-write latency.
    public let encodedAt: UInt64

    /// The window every shared compressed frame uses.
    public static let sharedDeflateWindowBits = 9

    public convenience init(_ sequenced: SequencedEvent) {
        self.init(topic: sequenced.event.topic, seq: sequenced.seq, type: sequenced.event.type,
            json: sequenced.event.deliveredJSON(seq: sequenced.seq))
    }

    /// Builds every wire form of a delivered event object (`json`, as `ProgressEvent.deliveredJSON` makes it).
    public init(topic: TopicKey, seq: UInt64, type: EventType, json: String) {
        self.topic = topic
        self.seq = seq
        self.type = type
        self.json = json
        encodedAt = NIODeadline.now().uptimeNanoseconds
        // `{"type":"event",` followed by the delivered object without its opening brace, behind the frame's header:
        // built in place, in one buffer.
        let length = json.utf8.count + 15
        var frame = ByteBuffer()
        frame.reserveCapacity(FrameEncoder.headerSize(payloadLength: length) + length)
        FrameEncoder.writeHeader(into: &frame, opcode: .text, payloadLength: length)
        frame.writeStaticString(#"{"type":"event","#)
        frame.writeSubstring(json.dropFirst())
        webSocketFrame = frame
        // The JSON holds no raw line breaks (they are escaped), so it is one data line.
        var sse = ByteBuffer()
        sse.reserveCapacity(json.utf8.count + 40)
        try! SSEEncoder.writeEvent(into: &sse, id: String(seq), event: type.rawValue, data: json)
        self.sse = sse
    }

    /// The message compressed without context and with a 512-byte window, so that one frame is valid for every
    /// connection whatever window it agreed to (the hub never agrees to less than 9). Compressed once, by the first
    /// caller, with `deflater` (its loop's, of `sharedDeflateWindowBits`); later callers on any loop get the same bytes.
    public func webSocketDeflatedFrame(_ deflater: Deflater) -> ByteBuffer {
        deflated.withLockedValue { frame in
            if let frame { return frame }
            let length = json.utf8.count + 15
            let message = webSocketFrame.getSlice(
                at: webSocketFrame.readerIndex + FrameEncoder.headerSize(payloadLength: length), length: length)!
            var compressed = ByteBuffer()
            deflater.compressMessage(message, into: &compressed)
            let made = FrameEncoder.frame(opcode: .text, rsv1: true, payload: compressed)
            frame = made
            return made
        }
    }
}
