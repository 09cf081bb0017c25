import HubNative

/// How the engine proves a progress report is its own: `X-Hub-Timestamp: <unix seconds>` and
/// `X-Hub-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`. Signing the timestamp with the
/// body makes a captured request useless after the allowed clock skew.
public struct EngineSignature: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case missing(String)
        case stale(skewSeconds: Int64)
        case mismatch

        public var status: Int {
            switch self {
            case .missing, .stale: return 401
            case .mismatch: return 403
            }
        }

        public var code: String {
            switch self {
            case .missing: return "missing_signature"
            case .stale: return "stale_timestamp"
            case .mismatch: return "bad_signature"
            }
        }

        public var message: String {
            switch self {
            case .missing(let why): return why
            case .stale(let skew): return "X-Hub-Timestamp is \(skew) s away from the hub's clock; sign requests with the current time"
            case .mismatch: return "X-Hub-Signature does not match the body"
            }
        }
    }

    private let key: HMACKey
    public let maxSkewSeconds: Int64

    public init(secret: [UInt8], maxSkewSeconds: Int64) {
        self.key = HMACKey(secret)
        self.maxSkewSeconds = maxSkewSeconds
    }

    public func verify<Body: Collection<UInt8>>(timestamp: String?, signature: String?, body: Body, now: Int64) throws(Failure) {
        guard let timestamp else { throw .missing("X-Hub-Timestamp header is required") }
        guard let signature else { throw .missing("X-Hub-Signature header is required") }
        guard timestamp.utf8.count <= 12, let ts = Int64(timestamp), ts >= 0 else {
            throw .missing("X-Hub-Timestamp must be Unix seconds")
        }
        guard signature.utf8.count == 7 + 64, signature.hasPrefix("sha256="), let given = Self.hexDecode(signature.dropFirst(7))
        else {
            throw .missing("X-Hub-Signature must be sha256=<64 hex digits>")
        }
        let skew = abs(now - ts)
        guard skew <= maxSkewSeconds else { throw .stale(skewSeconds: skew) }
        guard Digest.constantTimeEquals(given, sign(timestamp: ts, body: body)) else { throw .mismatch }
    }

    public func sign<Body: Collection<UInt8>>(timestamp: Int64, body: Body) -> [UInt8] {
        key.authenticate("\(timestamp).".utf8, body)
    }

    /// The header value for a body (for `hub simulate` and tests).
    public func header<Body: Collection<UInt8>>(timestamp: Int64, body: Body) -> String {
        "sha256=" + Hex.encode(sign(timestamp: timestamp, body: body))
    }

    static func hexDecode(_ s: Substring) -> [UInt8]? {
        let chars = s.utf8
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            case 65...70: return c - 55
            default: return nil
            }
        }
        var out = [UInt8](repeating: 0, count: chars.count / 2)
        var i = chars.startIndex
        for n in out.indices {
            guard let h = nibble(chars[i]) else { return nil }
            i = chars.index(after: i)
            guard let l = nibble(chars[i]) else { return nil }
            i = chars.index(after: i)
            out[n] = h << 4 | l
        }
        return out
    }
}
