import HubNative
import HubProtocol
@_spi(CustomByteBufferAllocator) import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One event in every wire form, each built once and then written as the same buffers to every subscriber.
///
/// Only the WebSocket frame is built with the event: the SSE form and the compressed frame are made when the first
/// subscriber that needs them asks, and the delivered JSON is read back from the frame. An event that no SSE stream
/// watches (and every event kept in history until one does) holds one copy of its JSON, not three.
public final class EncodedEvent: Sendable {
    public let topic: TopicKey
    public let seq: UInt64
    public let type: EventType
    /// A complete unmasked WebSocket text frame: `{"type":"event",…}`.
    public let webSocketFrame: ByteBuffer
    /// The SSE form (`sse`) and the compressed frame (`webSocketDeflatedFrame(_:)`), each made by the first
    /// subscriber that needs it, on any loop, and read by every other after that without a lock.
    private let sseForm = AtomicLazyReference<Form>()
    private let deflatedForm = AtomicLazyReference<Form>()
    /// When this hub encoded the event (monotonic nanoseconds): as it was ingested here or arrived from Redis. The
    /// start of the ingest-to-write latency.
    public let encodedAt: UInt64

    /// A form made on use.
    private final class Form: Sendable {
        let bytes: ByteBuffer
        init(_ bytes: ByteBuffer) { self.bytes = bytes }
    }

    /// What the frame's message puts before the delivered object's members: `{"type":"event",` (16 bytes), where
    /// the delivered object has its opening brace.
    private static let messagePrefix = 16

    /// The window every shared compressed frame uses.
    public static let sharedDeflateWindowBits = 9

    public convenience init(_ sequenced: SequencedEvent) {
        self.init(topic: sequenced.event.topic, seq: sequenced.seq, type: sequenced.event.type,
            json: sequenced.event.deliveredJSON(seq: sequenced.seq))
    }

    /// Builds the WebSocket frame of a delivered event object (`json`, as `ProgressEvent.deliveredJSON` makes it).
    public init(topic: TopicKey, seq: UInt64, type: EventType, json: String) {
        self.topic = topic
        self.seq = seq
        self.type = type
        encodedAt = NIODeadline.now().uptimeNanoseconds
        // `{"type":"event",` followed by the delivered object without its opening brace, behind the frame's header:
        // built in place, in one buffer.
        let length = json.utf8.count + Self.messagePrefix - 1
        var frame = Self.buffer(exactly: FrameEncoder.headerSize(payloadLength: length) + length)
        FrameEncoder.writeHeader(into: &frame, opcode: .text, payloadLength: length)
        frame.writeStaticString(#"{"type":"event","#)
        frame.writeSubstring(json.dropFirst())
        webSocketFrame = frame
    }

    /// An empty buffer whose storage is exactly `capacity` bytes. NIO rounds what it allocates for a buffer up to a
    /// power of two (a 270-byte frame takes 512), and the forms of an event live as long as its history: this storage
    /// is `malloc`'s, and the buffer frees it with the default allocator's `free`, as its own.
    private static func buffer(exactly capacity: Int) -> ByteBuffer {
        let size = max(capacity, 1)
        guard let memory = malloc(size) else { fatalError("out of memory: \(size) bytes") }
        return ByteBuffer(takingOwnershipOf: UnsafeMutableRawBufferPointer(start: memory, count: size),
            allocator: ByteBufferAllocator(), readerIndex: 0, writerIndex: 0)
    }

    /// The frame's message (its payload): `{"type":"event",` and the delivered object's members.
    private var message: ByteBuffer {
        // The second byte holds the payload length, or 126 / 127 for a 2- / 8-byte length after it (unmasked).
        let lengthByte = webSocketFrame.getInteger(at: webSocketFrame.readerIndex + 1, as: UInt8.self)! & 0x7F
        let header = lengthByte < 126 ? 2 : (lengthByte == 126 ? 4 : 10)
        return webSocketFrame.getSlice(at: webSocketFrame.readerIndex + header,
            length: webSocketFrame.readableBytes - header)!
    }

    /// The delivered event object (Protocol/README.md §2), compact JSON, read back from the frame.
    public var json: String {
        let members = message.readableBytesView.dropFirst(Self.messagePrefix)
        return String(unsafeUninitializedCapacity: members.count + 1) { out in
            out[0] = UInt8(ascii: "{")
            _ = UnsafeMutableBufferPointer(rebasing: out[1...]).initialize(from: members)
            return members.count + 1
        }
    }

    /// `id:`, `event:` and `data:` lines and the blank line that ends an SSE event: made by the first SSE stream
    /// that needs it, on any loop, and the same bytes for every stream after it. (Two loops that both find it missing
    /// both make it; the first stored is the one every stream gets.)
    public var sse: ByteBuffer {
        if let made = sseForm.load() { return made.bytes }
        let json = self.json
        let id = String(seq)
        // The JSON holds no raw line breaks (they are escaped), so it is one data line: `id: …\nevent: …\ndata: …\n\n`.
        var built = Self.buffer(exactly: id.utf8.count + type.rawValue.utf8.count + json.utf8.count + 21)
        try! SSEEncoder.writeEvent(into: &built, id: id, event: type.rawValue, data: json)
        return sseForm.storeIfNil(Form(built)).bytes
    }

    /// Whether the SSE form has been made (`sse`): for tests.
    public var hasSSEForm: Bool { sseForm.load() != nil }

    /// The message compressed without context and with a 512-byte window, so that one frame is valid for every
    /// connection whatever window it agreed to (the hub never agrees to less than 9). Compressed by the first caller,
    /// with `deflater` (its loop's, of `sharedDeflateWindowBits`); later callers on any loop get the same bytes. (Two
    /// loops that both find it missing both compress it; the first stored is the one every subscriber gets.)
    public func webSocketDeflatedFrame(_ deflater: Deflater) -> ByteBuffer {
        if let made = deflatedForm.load() { return made.bytes }
        var compressed = ByteBuffer()
        deflater.compressMessage(message, into: &compressed)
        var made = Self.buffer(exactly: FrameEncoder.headerSize(payloadLength: compressed.readableBytes)
            + compressed.readableBytes)
        FrameEncoder.writeFrame(into: &made, opcode: .text, rsv1: true, payload: compressed)
        return deflatedForm.storeIfNil(Form(made)).bytes
    }
}
