/// Every way a peer can break the WebSocket protocol or the opening handshake.
///
/// This is the module's one error type; `closeCode` and `httpStatus` below are the only places where errors
/// are mapped to what goes on the wire.
public enum ProtocolError: Error, Equatable, Sendable {
    // MARK: Framing (RFC 6455 §5)
    /// §5.1: a server must close the connection when it receives an unmasked frame.
    case unmaskedFrame
    /// §5.1: a client must close the connection when it receives a masked frame.
    case maskedFrame
    /// §5.2: RSV1-3 must be 0 unless an extension defines them (RFC 7692 §6: RSV1 on a message's first frame).
    case reservedBitsSet
    /// §5.2: opcodes 3-7 and 0xB-0xF are reserved.
    case reservedOpcode(UInt8)
    /// §5.5: control frames carry at most 125 payload bytes.
    case controlFrameTooLong
    /// §5.5: control frames must not be fragmented.
    case fragmentedControlFrame
    /// §5.4: a continuation frame with no message in progress.
    case continuationWithoutStart
    /// §5.4: a new text or binary frame while a fragmented message is in progress.
    case dataFrameInsideFragmentedMessage
    /// §5.2: the most significant bit of a 64-bit length must be 0; and lengths use the minimal encoding.
    case invalidLength
    /// A frame larger than the configured limit (checked before its payload is buffered).
    case frameTooLarge(limit: Int)
    /// A message larger than the configured limit, after inflation if it is compressed.
    case messageTooLarge(limit: Int)
    /// §8.1: a text message (or close reason) that is not valid UTF-8.
    case invalidUTF8
    /// §5.5.1: a close payload of exactly one byte.
    case invalidClosePayload
    /// §7.4: a close code that must not appear on the wire.
    case invalidCloseCode(UInt16)
    /// RFC 7692: compressed data that does not inflate.
    case invalidCompressedData

    // MARK: Opening handshake (RFC 6455 §4.2.1)
    case methodNotAllowed(String)
    case httpVersionNotSupported
    case missingHost
    case missingUpgradeHeader
    case missingConnectionUpgrade
    case unsupportedVersion(String?)
    case missingKey
    case invalidKey
}

extension ProtocolError {
    /// The close code the endpoint sends when it fails the connection for this error (RFC 6455 §7.4.1).
    public var closeCode: CloseCode {
        switch self {
        case .unmaskedFrame, .maskedFrame, .reservedBitsSet, .reservedOpcode, .controlFrameTooLong,
            .fragmentedControlFrame, .continuationWithoutStart, .dataFrameInsideFragmentedMessage, .invalidLength,
            .invalidClosePayload, .invalidCloseCode:
            return .protocolError
        case .frameTooLarge, .messageTooLarge:
            return .messageTooBig
        case .invalidUTF8, .invalidCompressedData:
            return .invalidPayload
        case .methodNotAllowed, .httpVersionNotSupported, .missingHost, .missingUpgradeHeader, .missingConnectionUpgrade,
            .unsupportedVersion, .missingKey, .invalidKey:
            return .protocolError
        }
    }

    /// The HTTP status that refuses an upgrade request for this error.
    public var httpStatus: (code: Int, reason: String) {
        switch self {
        case .methodNotAllowed: return (405, "Method Not Allowed")
        case .unsupportedVersion, .missingUpgradeHeader, .missingConnectionUpgrade: return (426, "Upgrade Required")
        default: return (400, "Bad Request")
        }
    }

    /// A sentence for people: the close reason or the body of an HTTP refusal.
    public var message: String {
        switch self {
        case .unmaskedFrame: return "client frames must be masked"
        case .maskedFrame: return "server frames must not be masked"
        case .reservedBitsSet: return "reserved bits set without a negotiated extension"
        case .reservedOpcode(let op): return "reserved opcode \(op)"
        case .controlFrameTooLong: return "control frame longer than 125 bytes"
        case .fragmentedControlFrame: return "fragmented control frame"
        case .continuationWithoutStart: return "continuation frame without a message to continue"
        case .dataFrameInsideFragmentedMessage: return "new data frame inside a fragmented message"
        case .invalidLength: return "invalid payload length encoding"
        case .frameTooLarge(let limit): return "frame larger than \(limit) bytes"
        case .messageTooLarge(let limit): return "message larger than \(limit) bytes"
        case .invalidUTF8: return "invalid UTF-8 in text"
        case .invalidClosePayload: return "close payload of one byte"
        case .invalidCloseCode(let code): return "close code \(code) is not allowed"
        case .invalidCompressedData: return "compressed data does not inflate"
        case .methodNotAllowed(let method): return "method \(method) not allowed: a WebSocket upgrade is a GET"
        case .httpVersionNotSupported: return "a WebSocket upgrade needs HTTP/1.1 or later"
        case .missingHost: return "missing Host header"
        case .missingUpgradeHeader: return "missing 'Upgrade: websocket'"
        case .missingConnectionUpgrade: return "missing 'Connection: Upgrade'"
        case .unsupportedVersion(let v):
            return v.map { "unsupported Sec-WebSocket-Version '\($0)': this server speaks 13" }
                ?? "missing Sec-WebSocket-Version: this server speaks 13"
        case .missingKey: return "missing Sec-WebSocket-Key"
        case .invalidKey: return "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
        }
    }
}
