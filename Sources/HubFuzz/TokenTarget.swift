import HubCore
import HubNative

/// Watcher tokens through `TokenVerifier`.
///
/// Input: a mode byte, then
/// - mode 0: the token as it arrives (any bytes);
/// - mode 1: a JWS header and claims (separated by a NUL byte; without one, the bytes are the claims under an HS256
///   header) that the harness signs correctly, so verification gets past the signature to the claims;
/// - mode 2: a subject and workspaces (NUL-separated) and an expiry offset that `mint` turns into a token.
enum TokenTarget {
    static let secret = Array("fuzz-secret-0123456789abcdef".utf8)
    static let verifier = TokenVerifier(secret: secret)
    static let now: Int64 = 1_764_000_000

    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let mode = input.byte()
        switch mode % 3 {
        case 0: raw(String(decoding: input.rest, as: UTF8.self))
        case 1: signed(Array(input.rest))
        default:
            let offset = Int8(bitPattern: input.byte())
            minted(Array(input.rest), expiresAt: now + Int64(offset) * 97, customAlgorithm: mode & 0x80 != 0)
        }
    }

    static func verify(_ token: String) -> Result<Principal, TokenVerifier.Failure> {
        Result { () throws(TokenVerifier.Failure) -> Principal in try verifier.verify(token, now: now) }
    }

    /// Whether the token's third part is the HMAC of the first two (computed here, not by the verifier).
    static func signatureMatches(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Base64.decode(parts[2], alphabet: .url) else { return false }
        return signature == Digest.hmacSHA256(key: secret, message: Array((parts[0] + "." + parts[1]).utf8))
    }

    static func checkCommon(_ token: String, _ result: Result<Principal, TokenVerifier.Failure>) {
        switch result {
        case .success(let principal):
            require(token.utf8.count <= TokenVerifier.maxLength, "accepted a token of \(token.utf8.count) bytes")
            require(signatureMatches(token), "accepted a token whose signature does not match")
            require(principal.expiresAt > now, "accepted an expired token")
        case .failure(let failure):
            require(["invalid_token", "unsupported_alg", "token_expired"].contains(failure.code), "code \(failure.code)")
            require(!failure.message.isEmpty, "empty message")
            switch failure {
            case .badSignature: require(!signatureMatches(token), "a correct signature refused")
            case .expired: require(signatureMatches(token), "expiry checked before the signature")
            default: break
            }
        }
    }

    static func raw(_ token: String) {
        checkCommon(token, verify(token))
    }

    static func signed(_ bytes: [UInt8]) {
        var header = Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8)
        var claims = bytes
        if let nul = bytes.firstIndex(of: 0) {
            header = Array(bytes[..<nul])
            claims = Array(bytes[(nul + 1)...])
        }
        let input = Base64.encode(header, alphabet: .url) + "." + Base64.encode(claims, alphabet: .url)
        let token = input + "." + Base64.encode(Digest.hmacSHA256(key: secret, message: Array(input.utf8)), alphabet: .url)
        let result = verify(token)
        checkCommon(token, result)
        // What the result must be, from the rules of Protocol/README.md.
        if token.utf8.count > TokenVerifier.maxLength { return require(isMalformed(result), "an overlong token") }
        guard case .object? = try? JSON.parse(header) else { return require(isMalformed(result), "a header that is not an object") }
        let h = try? JSON.parse(header)
        guard let alg = h?["alg"]?.stringValue else { return require(isMalformed(result), "a header without alg") }
        guard alg == "HS256" else { return require(result == .failure(.unsupportedAlgorithm(alg)), "alg \(alg)") }
        guard let c = try? JSON.parse(claims), case .object = c, let exp = c["exp"]?.integerValue,
            let sub = c["sub"]?.stringValue, case .array(let list)? = c["workspaces"]
        else { return require(isMalformed(result), "claims without exp, sub or workspaces: \(result)") }
        let workspaces = list.compactMap(\.stringValue)
        guard workspaces.count == list.count else { return require(isMalformed(result), "a workspace that is not a string") }
        if exp <= now { return require(result == .failure(.expired), "exp \(exp) at \(now): \(result)") }
        require(result == .success(Principal(subject: sub, workspaces: Set(workspaces), expiresAt: exp)),
            "a correctly signed token with valid claims: \(result)")
    }

    static func isMalformed(_ result: Result<Principal, TokenVerifier.Failure>) -> Bool {
        if case .failure(.malformed) = result { return true }
        return false
    }

    static func minted(_ bytes: [UInt8], expiresAt: Int64, customAlgorithm: Bool) {
        var fields = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        let algorithm = customAlgorithm && fields.count > 1 ? fields.removeLast() : "HS256"
        let subject = fields.first ?? ""
        let workspaces = Array(fields.dropFirst())
        let token = verifier.mint(subject: subject, workspaces: workspaces, expiresAt: expiresAt, algorithm: algorithm)
        let result = verify(token)
        checkCommon(token, result)
        if token.utf8.count > TokenVerifier.maxLength { return require(isMalformed(result), "an overlong token") }
        if algorithm != "HS256" { return require(result == .failure(.unsupportedAlgorithm(algorithm)), "alg \(algorithm)") }
        if expiresAt <= now { return require(result == .failure(.expired), "expired token: \(result)") }
        require(result == .success(Principal(subject: subject, workspaces: Set(workspaces), expiresAt: expiresAt)),
            "a minted token does not verify to what was minted: \(result)")
    }
}
