/// An incremental UTF-8 validator (Unicode 15 §3.9, Table 3-7): bytes are fed in any chunking and the first
/// invalid byte is reported at once, so a text message can be failed before the rest of it arrives.
public struct UTF8Validator: Sendable {
    /// Continuation bytes still expected for the current code point.
    private var remaining: UInt8 = 0
    /// Bounds of the next continuation byte (narrower after E0, ED, F0 and F4).
    private var low: UInt8 = 0x80
    private var high: UInt8 = 0xBF

    public init() {}

    /// True when the bytes so far end on a code point boundary.
    public var isComplete: Bool { remaining == 0 }

    /// Validates the next bytes; returns false at the first byte that makes the sequence invalid.
    public mutating func validate(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let count = bytes.count
        while i < count {
            if remaining == 0 {
                // ASCII fast path: eight bytes at a time.
                while i + 8 <= count, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                    i += 8
                }
                if i == count { break }
                let b = bytes[i]
                i += 1
                switch b {
                case 0x00...0x7F: continue
                case 0xC2...0xDF: remaining = 1; low = 0x80; high = 0xBF
                case 0xE0: remaining = 2; low = 0xA0; high = 0xBF
                case 0xE1...0xEC, 0xEE...0xEF: remaining = 2; low = 0x80; high = 0xBF
                case 0xED: remaining = 2; low = 0x80; high = 0x9F  // no UTF-16 surrogates
                case 0xF0: remaining = 3; low = 0x90; high = 0xBF
                case 0xF1...0xF3: remaining = 3; low = 0x80; high = 0xBF
                case 0xF4: remaining = 3; low = 0x80; high = 0x8F  // nothing above U+10FFFF
                default: return false  // 80-C1 (continuation or overlong lead), F5-FF
                }
            } else {
                let b = bytes[i]
                i += 1
                guard b >= low && b <= high else { return false }
                remaining -= 1
                low = 0x80
                high = 0xBF
            }
        }
        return true
    }

    public mutating func validate<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> Bool {
        if let r = bytes.withContiguousStorageIfAvailable({ validate(UnsafeRawBufferPointer($0)) }) { return r }
        return Array(bytes).withUnsafeBytes { validate($0) }
    }

    /// Whether `bytes` is complete, valid UTF-8.
    public static func isValid<Bytes: Collection<UInt8>>(_ bytes: Bytes) -> Bool {
        var v = UTF8Validator()
        return v.validate(bytes) && v.isComplete
    }
}
