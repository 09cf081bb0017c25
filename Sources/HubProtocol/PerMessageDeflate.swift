/// permessage-deflate (RFC 7692) as the hub agrees to it.
///
/// The hub's policy: the response always carries `server_no_context_takeover`, so every message is compressed on
/// its own and one compressed frame serves every subscriber, and `client_no_context_takeover`, so the inflater is
/// reset after each message and can be shared by all connections of an event loop (an idle connection holds no
/// zlib memory). A server may add `client_no_context_takeover` even when the client did not offer it (§7.1.1.2).
public struct PerMessageDeflate: Equatable, Sendable {
    /// The window the hub compresses with (9...15).
    public var serverMaxWindowBits: Int
    /// Whether the response must state `server_max_window_bits` (the client asked for a limit, §7.1.2.1).
    public var announcesServerWindow: Bool

    public static let extensionName = "permessage-deflate"

    public init(serverMaxWindowBits: Int, announcesServerWindow: Bool) {
        self.serverMaxWindowBits = serverMaxWindowBits
        self.announcesServerWindow = announcesServerWindow
    }

    /// The hub's side of the negotiation.
    public struct Policy: Sendable {
        public var enabled: Bool
        /// The largest window the hub compresses with; smaller windows use less memory per compressor.
        public var maxWindowBits: Int

        public init(enabled: Bool = true, maxWindowBits: Int = 15) {
            precondition((9...15).contains(maxWindowBits), "window bits must be 9...15")
            self.enabled = enabled
            self.maxWindowBits = maxWindowBits
        }
    }

    /// The `Sec-WebSocket-Extensions` response value.
    public var responseHeader: String {
        var value = "\(Self.extensionName); server_no_context_takeover; client_no_context_takeover"
        if announcesServerWindow { value += "; server_max_window_bits=\(serverMaxWindowBits)" }
        return value
    }

    /// Accepts the first acceptable permessage-deflate offer, or nil when there is none.
    ///
    /// An offer is declined (and the next one tried) when it has an unknown or duplicate parameter, a parameter
    /// value where none is allowed, or a window size outside 8...15 or with leading zeros (§7.1). An offer that
    /// limits the server's window to 8 is declined too: zlib cannot produce raw deflate with a 256-byte window.
    public static func negotiate(offers: [ExtensionOffer], policy: Policy) -> PerMessageDeflate? {
        guard policy.enabled else { return nil }
        for offer in offers where offer.name == extensionName {
            if let accepted = accept(offer, policy: policy) { return accepted }
        }
        return nil
    }

    private static func accept(_ offer: ExtensionOffer, policy: Policy) -> PerMessageDeflate? {
        var seen = Set<String>()
        var serverWindow: Int?
        for (name, value) in offer.parameters {
            guard seen.insert(name).inserted else { return nil }
            switch name {
            case "server_no_context_takeover", "client_no_context_takeover":
                guard value == nil else { return nil }
            case "server_max_window_bits":
                guard let value, let bits = windowBits(value) else { return nil }
                serverWindow = bits
            case "client_max_window_bits":
                // Without a value it only says the client supports the parameter; the hub's inflater uses a
                // 15-bit window and so decodes any window the client picks, and the response leaves it out.
                if let value { guard windowBits(value) != nil else { return nil } }
            default:
                return nil
            }
        }
        if let serverWindow {
            guard serverWindow >= 9 else { return nil }
            return PerMessageDeflate(serverMaxWindowBits: min(serverWindow, policy.maxWindowBits), announcesServerWindow: true)
        }
        return PerMessageDeflate(serverMaxWindowBits: policy.maxWindowBits, announcesServerWindow: false)
    }

    /// §7.1.2: a decimal integer 8...15 without leading zeros.
    private static func windowBits(_ text: String) -> Int? {
        guard let first = text.first, first != "0", text.allSatisfy({ $0.isASCII && $0.isNumber }),
            let v = Int(text), (8...15).contains(v)
        else { return nil }
        return v
    }
}
