import HubNative

/// A watcher's verified identity: who it is, which workspaces it may watch, and until when.
public struct Principal: Equatable, Sendable {
    public var subject: String
    public var workspaces: Set<String>
    /// Expiry in Unix seconds.
    public var expiresAt: Int64

    public init(subject: String, workspaces: Set<String>, expiresAt: Int64) {
        self.subject = subject
        self.workspaces = workspaces
        self.expiresAt = expiresAt
    }

    public func grants(_ workspace: String) -> Bool { workspaces.contains(workspace) }
}

/// HS256 JSON Web Tokens (RFC 7519) minted by the application with the hub's shared secret.
public struct TokenVerifier: Sendable {
    public enum Failure: Error, Equatable, Sendable {
        case malformed(String)
        case unsupportedAlgorithm(String)
        case badSignature
        case expired

        /// The machine-readable code of the wire protocol.
        public var code: String {
            switch self {
            case .malformed, .badSignature: return "invalid_token"
            case .unsupportedAlgorithm: return "unsupported_alg"
            case .expired: return "token_expired"
            }
        }

        public var message: String {
            switch self {
            case .malformed(let why): return "malformed token: \(why)"
            case .unsupportedAlgorithm(let alg): return "token algorithm '\(alg)' is not accepted; only HS256 is"
            case .badSignature: return "token signature does not verify"
            case .expired: return "token expired"
            }
        }
    }

    private let key: HMACKey
    /// Tokens longer than this are refused before any work (a token rides in a URL or a header).
    public static let maxLength = 4096

    public init(secret: [UInt8]) {
        self.key = HMACKey(secret)
    }

    /// Verifies a compact JWS: `alg` must be HS256, the signature must match (constant-time compare), `exp` must
    /// be in the future, `sub` a string and `workspaces` an array of strings.
    public func verify(_ token: String, now: Int64) throws(Failure) -> Principal {
        guard token.utf8.count <= Self.maxLength else { throw .malformed("longer than \(Self.maxLength) bytes") }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw .malformed("expected three dot-separated parts") }
        guard let headerBytes = Base64.decode(parts[0], alphabet: .url),
            let header = try? JSON.parse(headerBytes), case .object = header
        else { throw .malformed("header is not base64url JSON") }
        // The algorithm is checked before the signature, so `none` or RS256 never reach the verifier.
        guard let alg = header["alg"]?.stringValue else { throw .malformed("header has no alg") }
        guard alg == "HS256" else { throw .unsupportedAlgorithm(alg) }
        guard let signature = Base64.decode(parts[2], alphabet: .url) else { throw .malformed("signature is not base64url") }
        let signingInput = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        let expected = key.authenticate(signingInput)
        guard Digest.constantTimeEquals(signature, expected) else { throw .badSignature }
        guard let claimBytes = Base64.decode(parts[1], alphabet: .url), let claims = try? JSON.parse(claimBytes),
            case .object = claims
        else { throw .malformed("claims are not base64url JSON") }
        guard let exp = claims["exp"]?.integerValue else { throw .malformed("exp claim missing or not an integer") }
        guard let sub = claims["sub"]?.stringValue else { throw .malformed("sub claim missing or not a string") }
        guard case .array(let list)? = claims["workspaces"] else { throw .malformed("workspaces claim missing or not an array") }
        var workspaces = Set<String>()
        for item in list {
            guard let w = item.stringValue else { throw .malformed("workspaces must be strings") }
            workspaces.insert(w)
        }
        guard exp > now else { throw .expired }
        return Principal(subject: sub, workspaces: workspaces, expiresAt: exp)
    }

    /// Mints a token (for `hub token` and tests).
    public func mint(subject: String, workspaces: [String], expiresAt: Int64, algorithm: String = "HS256") -> String {
        let header = JSON.object([("alg", .string(algorithm)), ("typ", .string("JWT"))]).serialized
        let claims = JSON.object([
            ("sub", .string(subject)), ("workspaces", .array(workspaces.map { .string($0) })),
            ("exp", .number(Double(expiresAt))),
        ]).serialized
        let input = Base64.encode(Array(header.utf8), alphabet: .url) + "." + Base64.encode(Array(claims.utf8), alphabet: .url)
        let signature = key.authenticate(input.utf8)
        return input + "." + Base64.encode(signature, alphabet: .url)
    }
}

/// The tokens one event loop verified lately, by their exact text, so that connections opened with the same token
/// share one `Principal` (one copy of its workspace set, instead of one per connection) and skip the HMAC.
///
/// A token's text fixes its claims and its signature, so a verified token stays valid until its `exp`, which is
/// checked on every use. Touched from one event loop only. When full it starts again empty: a flood of distinct
/// tokens costs at most `capacity` entries.
public final class VerifiedTokens {
    private let verifier: TokenVerifier
    private let capacity: Int
    private var entries: [String: Principal] = [:]
    /// Verifications answered from the cache.
    public private(set) var hits = 0

    public init(verifier: TokenVerifier, capacity: Int = 256) {
        self.verifier = verifier
        self.capacity = capacity
    }

    public var count: Int { entries.count }

    public func verify(_ token: String, now: Int64) throws(TokenVerifier.Failure) -> Principal {
        if let principal = entries[token] {
            guard principal.expiresAt > now else {
                entries[token] = nil
                throw .expired
            }
            hits += 1
            return principal
        }
        let principal = try verifier.verify(token, now: now)
        if entries.count >= capacity { entries.removeAll(keepingCapacity: true) }
        entries[token] = principal
        return principal
    }
}
