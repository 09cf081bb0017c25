import HubNative

/// An HTTP request as the opening handshake sees it; the server fills it from whatever parsed the bytes.
public struct HandshakeRequest: Sendable {
    public var method: String
    public var uri: String
    public var versionMajor: Int
    public var versionMinor: Int
    public var headers: [(name: String, value: String)]

    public init(method: String, uri: String, versionMajor: Int = 1, versionMinor: Int = 1,
        headers: [(name: String, value: String)])
    {
        self.method = method
        self.uri = uri
        self.versionMajor = versionMajor
        self.versionMinor = versionMinor
        self.headers = headers
    }

    /// Every value of a header, by case-insensitive name, in order.
    public func values(_ name: String) -> [String] {
        headers.filter { $0.name.caseInsensitiveCompare(name) }.map(\.value)
    }

    /// The comma-separated tokens of every value of a header, trimmed and lowercased (RFC 7230 §7). Tokens are ASCII
    /// (§3.2.6) and compare case-insensitively in ASCII only: Unicode would lowercase the Kelvin sign to "k".
    public func tokens(_ name: String) -> [String] {
        values(name).flatMap { $0.split(separator: ",") }.map { $0.trimmingSpace().asciiLowercased() }.filter { !$0.isEmpty }
    }
}

/// The agreed parameters of an accepted upgrade.
public struct HandshakeAcceptance: Sendable {
    /// Response headers besides the status line (`Upgrade`, `Connection`, `Sec-WebSocket-Accept`, and the agreed
    /// extension and subprotocol, if any).
    public var headers: [(name: String, value: String)]
    public var deflate: PerMessageDeflate?
    public var subprotocol: String?
}

/// The server side of the opening handshake (RFC 6455 §4.2).
public enum Handshake {
    /// §1.3 / §4.2.2: the GUID appended to the key before hashing.
    public static let guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    /// `Sec-WebSocket-Accept`: base64(SHA-1(key + GUID)).
    public static func acceptValue(forKey key: String) -> String {
        Base64.encode(Digest.sha1(Array((key + guid).utf8)))
    }

    /// Validates an upgrade request (§4.2.1) and builds the response headers, or says why it is refused.
    /// - Parameters:
    ///   - selectSubprotocol: picks one of the client's `Sec-WebSocket-Protocol` values, or nil for none.
    ///   - deflate: the hub's permessage-deflate policy.
    public static func accept(
        _ request: HandshakeRequest,
        deflate policy: PerMessageDeflate.Policy = .init(),
        selectSubprotocol: ([String]) -> String? = { _ in nil }
    ) -> Result<HandshakeAcceptance, ProtocolError> {
        // §4.2.1 (1): an HTTP/1.1 or higher GET.
        guard request.method == "GET" else { return .failure(.methodNotAllowed(request.method)) }
        guard request.versionMajor > 1 || (request.versionMajor == 1 && request.versionMinor >= 1) else {
            return .failure(.httpVersionNotSupported)
        }
        // (2) a Host header (RFC 7230 §5.4: an HTTP/1.1 request without one is refused).
        guard !request.values("Host").isEmpty else { return .failure(.missingHost) }
        // (3) Upgrade contains "websocket"; (4) Connection contains "upgrade"; both case-insensitive token lists.
        guard request.tokens("Upgrade").contains("websocket") else { return .failure(.missingUpgradeHeader) }
        guard request.tokens("Connection").contains("upgrade") else { return .failure(.missingConnectionUpgrade) }
        // (6) version 13; otherwise 426 with the version we speak (§4.4).
        let versions = request.values("Sec-WebSocket-Version").map { $0.trimmingSpace() }
        guard versions == ["13"] else { return .failure(.unsupportedVersion(versions.first)) }
        // (5) a key that is base64 of 16 bytes, sent once.
        let keys = request.values("Sec-WebSocket-Key").map { $0.trimmingSpace() }
        guard let key = keys.first else { return .failure(.missingKey) }
        guard keys.count == 1, let decoded = Base64.decode(key), decoded.count == 16 else {
            return .failure(.invalidKey)
        }

        var headers: [(name: String, value: String)] = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", acceptValue(forKey: key)),
        ]
        let offers = ExtensionHeader.parse(request.values("Sec-WebSocket-Extensions"))
        let agreed = PerMessageDeflate.negotiate(offers: offers, policy: policy)
        if let agreed { headers.append(("Sec-WebSocket-Extensions", agreed.responseHeader)) }
        let subprotocol = selectSubprotocol(request.tokens("Sec-WebSocket-Protocol"))
        if let subprotocol { headers.append(("Sec-WebSocket-Protocol", subprotocol)) }
        return .success(HandshakeAcceptance(headers: headers, deflate: agreed, subprotocol: subprotocol))
    }

    /// Extra response headers for a refusal (§4.4: 426 names the version the server speaks).
    public static func refusalHeaders(for error: ProtocolError) -> [(name: String, value: String)] {
        switch error {
        case .unsupportedVersion: return [("Sec-WebSocket-Version", "13")]
        case .missingUpgradeHeader, .missingConnectionUpgrade:
            return [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")]
        case .methodNotAllowed: return [("Allow", "GET")]
        default: return []
        }
    }
}

extension String {
    /// RFC 7230 §3.2: header names compare case-insensitively, in ASCII.
    func caseInsensitiveCompare(_ other: String) -> Bool {
        self.utf8.count == other.utf8.count && self.asciiLowercased() == other.asciiLowercased()
    }

    /// A-Z to a-z; every other byte unchanged.
    func asciiLowercased() -> String {
        String(decoding: utf8.map { (0x41...0x5A).contains($0) ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}

extension StringProtocol {
    func trimmingSpace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
