import HubNative
import NIOCore

/// Frame decoder and message assembler together: bytes in, whole messages out.
public struct WebSocketReader {
    public var decoder: FrameDecoder
    public var assembler: MessageAssembler

    public init(maxFrameSize: Int, maxMessageSize: Int, expectMasked: Bool = true, deflate: Bool = false) {
        decoder = FrameDecoder(configuration: .init(maxFrameSize: maxFrameSize, expectMasked: expectMasked, allowRSV1: deflate))
        assembler = MessageAssembler(configuration: .init(maxMessageSize: maxMessageSize, deflate: deflate))
    }

    /// The next complete message from the front of `buffer`, or nil when more bytes are needed.
    public mutating func next(_ buffer: inout ByteBuffer) throws(ProtocolError) -> WebSocketMessage? {
        while true {
            switch try decoder.next(&buffer) {
            case .needMoreData:
                return nil
            case .event(let event):
                if let message = try assembler.receive(event) { return message }
            }
        }
    }
}
