import NIOCore

/// The payload of a close frame (RFC 6455 §5.5.1): an optional 2-byte code and a UTF-8 reason.
public struct CloseFrame: Equatable, Sendable {
    public var code: CloseCode?
    public var reason: String

    public init(code: CloseCode?, reason: String = "") {
        self.code = code
        self.reason = reason
    }

    /// Validates a received close payload: one byte is malformed (1002), the code must be one a peer may send
    /// (1002), and the reason must be UTF-8 (1007).
    public static func parse(_ payload: ByteBuffer) throws(ProtocolError) -> CloseFrame {
        switch payload.readableBytes {
        case 0:
            return CloseFrame(code: nil)
        case 1:
            throw .invalidClosePayload
        default:
            let raw = payload.getInteger(at: payload.readerIndex, as: UInt16.self)!
            let code = CloseCode(raw)
            guard code.isValidOnWire else { throw .invalidCloseCode(raw) }
            let reasonBytes = payload.getBytes(at: payload.readerIndex + 2, length: payload.readableBytes - 2)!
            guard UTF8Validator.isValid(reasonBytes) else { throw .invalidUTF8 }
            return CloseFrame(code: code, reason: String(decoding: reasonBytes, as: UTF8.self))
        }
    }

    /// The payload bytes: the code in network order, then the reason cut to fit 125 bytes on a character boundary.
    public func payload() -> ByteBuffer {
        var buffer = ByteBuffer()
        guard let code else { return buffer }
        buffer.writeInteger(code.rawValue)
        var reasonBytes = Array(reason.utf8.prefix(123))
        while !reasonBytes.isEmpty && !UTF8Validator.isValid(reasonBytes) { reasonBytes.removeLast() }
        buffer.writeBytes(reasonBytes)
        return buffer
    }
}
