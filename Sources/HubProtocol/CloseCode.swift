/// A WebSocket close status code (RFC 6455 §7.4).
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let normalClosure = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    public static let invalidPayload = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let messageTooBig = CloseCode(1009)
    public static let mandatoryExtension = CloseCode(1010)
    public static let internalError = CloseCode(1011)
    /// IANA-registered: the server is restarting; clients reconnect.
    public static let serviceRestart = CloseCode(1012)
    /// IANA-registered: try again later.
    public static let tryAgainLater = CloseCode(1013)

    /// Whether a peer may send this code in a close frame.
    ///
    /// RFC 6455 §7.4.1/§7.4.2: 1000-1003 and 1007-1011 are defined; 1004 is reserved, 1005, 1006 and 1015 must
    /// never be sent; 3000-4999 belong to libraries and applications. The hub also accepts 1012-1014, which IANA
    /// registered after the RFC (service restart, try again later, bad gateway): it sends 1012 itself when it drains.
    /// Everything else below 3000 is reserved for future versions, and 5000+ is outside the range.
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    public var description: String { String(rawValue) }
}
