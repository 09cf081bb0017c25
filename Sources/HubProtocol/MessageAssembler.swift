import HubNative
import NIOCore

/// Something a peer said, as the connection acts on it.
public enum WebSocketMessage: Equatable, Sendable {
    case text(ByteBuffer)
    case binary(ByteBuffer)
    case ping(ByteBuffer)
    case pong(ByteBuffer)
    /// A valid close frame: its code (nil when the payload was empty) and reason.
    case close(CloseCode?, String)
}

/// Turns frame events into whole messages: joins fragments, inflates compressed messages (RFC 7692), validates
/// text as UTF-8 as each chunk arrives (§8.1: fail fast), enforces the message size limit before buffering, and
/// validates close payloads (§5.5.1, §7.4).
///
/// A compressed message gets an inflater of its own for as long as it is in flight, released when it ends: an idle
/// connection holds no zlib memory, and no two connections ever share one message's inflate state.
public struct MessageAssembler {
    public struct Configuration: Sendable {
        /// Largest accepted message, counted after inflation.
        public var maxMessageSize: Int
        /// Whether permessage-deflate was negotiated.
        public var deflate: Bool
        public init(maxMessageSize: Int, deflate: Bool = false) {
            self.maxMessageSize = maxMessageSize
            self.deflate = deflate
        }
    }

    public var configuration: Configuration
    private var opcode: Opcode?
    private var compressed = false
    private var message = ByteBuffer()
    private var utf8 = UTF8Validator()
    private var inflater: Inflater?

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Bytes currently buffered for an incomplete message.
    public var bufferedBytes: Int { message.readableBytes }

    /// Consumes one decoder event; returns a message when one is complete.
    public mutating func receive(_ event: FrameDecoder.Event) throws(ProtocolError) -> WebSocketMessage? {
        switch event {
        case .control(let frame):
            return try Self.controlMessage(frame)
        case .dataHeader(let header):
            if header.opcode != .continuation {
                opcode = header.opcode
                compressed = header.rsv1
                utf8 = UTF8Validator()
                if compressed {
                    guard configuration.deflate else { throw .reservedBitsSet }
                    // client_no_context_takeover: every message starts from an empty window.
                    inflater = Inflater()
                }
            }
            if !compressed {
                // Checked before a byte of the payload is buffered.
                guard message.readableBytes + header.length <= configuration.maxMessageSize else {
                    throw .messageTooLarge(limit: configuration.maxMessageSize)
                }
                if header.fin && message.readableBytes == 0 {
                    message = ByteBufferAllocator().buffer(capacity: header.length)
                }
            }
            return nil
        case .dataPayload(let chunk):
            if compressed, let inflater {
                let start = message.writerIndex
                do {
                    _ = try chunk.withUnsafeReadableBytes { (raw) throws(Inflater.Error) in
                        try inflater.inflate(raw, into: &message,
                            limit: configuration.maxMessageSize - message.readableBytes)
                    }
                } catch {
                    self.inflater = nil
                    throw map(error)
                }
                try validateText(from: start)
            } else {
                let start = message.writerIndex
                var chunk = chunk
                message.writeBuffer(&chunk)
                try validateText(from: start)
            }
            return nil
        case .dataEnd(let fin):
            guard fin, let opcode else { return nil }
            if compressed, let inflater {
                let start = message.writerIndex
                do {
                    try inflater.finishMessage(into: &message,
                        limit: configuration.maxMessageSize - message.readableBytes, resetContext: true)
                } catch {
                    self.inflater = nil
                    throw map(error)
                }
                self.inflater = nil
                try validateText(from: start)
            }
            if opcode == .text && !utf8.isComplete { throw .invalidUTF8 }
            let result = message
            message = ByteBuffer()
            self.opcode = nil
            return opcode == .text ? .text(result) : .binary(result)
        }
    }

    private mutating func validateText(from start: Int) throws(ProtocolError) {
        guard opcode == .text, message.writerIndex > start else { return }
        let ok = message.withUnsafeReadableBytes { raw in
            utf8.validate(UnsafeRawBufferPointer(rebasing: raw[(start - message.readerIndex)...]))
        }
        if !ok { throw .invalidUTF8 }
    }

    private func map(_ error: Inflater.Error) -> ProtocolError {
        switch error {
        case .limitExceeded: return .messageTooLarge(limit: configuration.maxMessageSize)
        case .corrupt: return .invalidCompressedData
        }
    }

    static func controlMessage(_ frame: ControlFrame) throws(ProtocolError) -> WebSocketMessage {
        switch frame.opcode {
        case .ping: return .ping(frame.payload)
        case .pong: return .pong(frame.payload)
        default:
            let close = try CloseFrame.parse(frame.payload)
            return .close(close.code, close.reason)
        }
    }
}
