import CHubCrypto

/// SHA-1 through OpenSSL libcrypto's one-shot `EVP_Digest` (not the deprecated `SHA1_Init` family), and HMAC-SHA256
/// through `HMACKey`.
public enum Digest {
    /// SHA-1 of `bytes` (20 bytes). Used for the WebSocket accept key (RFC 6455 §4.2.2).
    public static func sha1<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 20)
        var outLength: UInt32 = 0
        let ok = withContiguousBytes(bytes) { input in
            out.withUnsafeMutableBufferPointer { outPtr in
                EVP_Digest(input.baseAddress, input.count, outPtr.baseAddress, &outLength, EVP_sha1(), nil)
            }
        }
        precondition(ok == 1 && outLength == 20, "EVP_Digest(SHA-1) failed")
        return out
    }

    /// HMAC-SHA256 of `message` under `key` (32 bytes), for a key used once; `HMACKey` keeps one for many messages.
    public static func hmacSHA256<Key: Collection<UInt8>, Message: Collection<UInt8>>(
        key: Key, message: Message
    ) -> [UInt8] {
        HMACKey(key).authenticate(message)
    }

    /// Compares two byte strings in time that depends only on their lengths (OpenSSL `CRYPTO_memcmp`).
    public static func constantTimeEquals<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return withContiguousBytes(a) { pa in
            withContiguousBytes(b) { pb in
                CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, pa.count) == 0
            }
        }
    }
}

@inline(__always)
func withContiguousBytes<Bytes: Collection<UInt8>, R>(
    _ bytes: Bytes, _ body: (UnsafeRawBufferPointer) throws -> R
) rethrows -> R {
    if let result = try bytes.withContiguousStorageIfAvailable({ try body(UnsafeRawBufferPointer($0)) }) {
        return result
    }
    return try Array(bytes).withUnsafeBytes(body)
}

/// HMAC-SHA256 under one key, for many messages: the key's inner and outer pads are digested once, here, and each
/// message starts from copies of those two SHA-256 states (RFC 2104). OpenSSL 3's one-shot `HMAC` looks up the MAC
/// and the digest and digests both pads again on every call, which cost the hub about 15 µs per signed request.
///
/// Immutable after `init`: the two states are only ever copied, so one key may serve several threads.
public final class HMACKey: @unchecked Sendable {
    private let inner: OpaquePointer
    private let outer: OpaquePointer

    public init<Key: Collection<UInt8>>(_ key: Key) {
        guard let digest = EVP_MD_fetch(nil, "SHA256", nil), let inner = EVP_MD_CTX_new(), let outer = EVP_MD_CTX_new()
        else { preconditionFailure("OpenSSL has no SHA-256") }
        defer { EVP_MD_free(digest) }
        // A key longer than the block is hashed first; a shorter one is padded with zeros.
        var block = [UInt8](repeating: 0, count: 64)
        let bytes = Array(key)
        if bytes.count > 64 {
            let hashed = Self.sha256(bytes, digest: digest)
            block.replaceSubrange(0..<hashed.count, with: hashed)
        } else {
            block.replaceSubrange(0..<bytes.count, with: bytes)
        }
        let ok = EVP_DigestInit_ex(inner, digest, nil) == 1 && EVP_DigestInit_ex(outer, digest, nil) == 1
            && EVP_DigestUpdate(inner, block.map { $0 ^ 0x36 }, 64) == 1
            && EVP_DigestUpdate(outer, block.map { $0 ^ 0x5c }, 64) == 1
        precondition(ok, "SHA-256 of the HMAC pads failed")
        self.inner = inner
        self.outer = outer
    }

    deinit {
        EVP_MD_CTX_free(inner)
        EVP_MD_CTX_free(outer)
    }

    /// HMAC-SHA256 of `first` followed by `second` (32 bytes), without joining them.
    public func authenticate<A: Collection<UInt8>, B: Collection<UInt8>>(_ first: A, _ second: B) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { preconditionFailure("EVP_MD_CTX_new failed") }
        defer { EVP_MD_CTX_free(context) }
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = out.withUnsafeMutableBufferPointer { digest -> Bool in
            guard EVP_MD_CTX_copy_ex(context, inner) == 1,
                withContiguousBytes(first, { EVP_DigestUpdate(context, $0.baseAddress, $0.count) }) == 1,
                withContiguousBytes(second, { EVP_DigestUpdate(context, $0.baseAddress, $0.count) }) == 1,
                EVP_DigestFinal_ex(context, digest.baseAddress, &length) == 1, length == 32,
                EVP_MD_CTX_copy_ex(context, outer) == 1, EVP_DigestUpdate(context, digest.baseAddress, 32) == 1
            else { return false }
            return EVP_DigestFinal_ex(context, digest.baseAddress, &length) == 1 && length == 32
        }
        precondition(ok, "HMAC-SHA256 failed")
        return out
    }

    /// HMAC-SHA256 of `message` (32 bytes).
    public func authenticate<Message: Collection<UInt8>>(_ message: Message) -> [UInt8] {
        authenticate(message, EmptyCollection())
    }

    private static func sha256(_ bytes: [UInt8], digest: OpaquePointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBufferPointer { EVP_Digest(input.baseAddress, input.count, $0.baseAddress, &length, digest, nil) }
        }
        precondition(ok == 1 && length == 32, "SHA-256 failed")
        return out
    }
}
