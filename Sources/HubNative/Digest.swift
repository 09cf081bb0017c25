import CHubCrypto

/// SHA-1 and HMAC-SHA256 through OpenSSL libcrypto's one-shot functions (OpenSSL 3: `EVP_Digest` and `HMAC`,
/// not the deprecated `SHA1_Init` family).
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

    /// HMAC-SHA256 of `message` under `key` (32 bytes).
    public static func hmacSHA256<Key: Collection<UInt8>, Message: Collection<UInt8>>(
        key: Key, message: Message
    ) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 0
        let result = withContiguousBytes(key) { keyPtr in
            withContiguousBytes(message) { msgPtr in
                out.withUnsafeMutableBufferPointer { outPtr in
                    // A zero-length key still needs a non-null pointer for OpenSSL.
                    var empty: UInt8 = 0
                    return withUnsafePointer(to: &empty) { emptyPtr in
                        HMAC(
                            EVP_sha256(),
                            keyPtr.baseAddress ?? UnsafeRawPointer(emptyPtr), Int32(keyPtr.count),
                            msgPtr.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyPtr, msgPtr.count,
                            outPtr.baseAddress, &outLength
                        )
                    }
                }
            }
        }
        precondition(result != nil && outLength == 32, "HMAC(SHA-256) failed")
        return out
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
