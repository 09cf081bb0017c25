/// Base64 (RFC 4648 §4) and base64url (§5) with strict decoding: wrong characters, wrong padding or non-zero
/// trailing bits are refused, so that one value has exactly one accepted spelling.
public enum Base64 {
    public enum Alphabet: Sendable {
        /// `+` `/` with `=` padding (the WebSocket key and accept values).
        case standard
        /// `-` `_` without padding (JSON Web Tokens).
        case url
    }

    private static let standardTable = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let urlTable = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    private static let standardDecode: [UInt8] = decodeTable(standardTable)
    private static let urlDecode: [UInt8] = decodeTable(urlTable)

    private static func decodeTable(_ table: [UInt8]) -> [UInt8] {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in table.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }

    public static func encode<Bytes: Collection<UInt8>>(_ bytes: Bytes, alphabet: Alphabet = .standard) -> String {
        let table = alphabet == .standard ? standardTable : urlTable
        let input = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out.append(table[Int(n >> 18 & 63)])
            out.append(table[Int(n >> 12 & 63)])
            out.append(table[Int(n >> 6 & 63)])
            out.append(table[Int(n & 63)])
            i += 3
        }
        let rest = input.count - i
        if rest > 0 {
            var n = UInt32(input[i]) << 16
            if rest == 2 { n |= UInt32(input[i + 1]) << 8 }
            out.append(table[Int(n >> 18 & 63)])
            out.append(table[Int(n >> 12 & 63)])
            if rest == 2 {
                out.append(table[Int(n >> 6 & 63)])
            }
            if alphabet == .standard {
                out.append(contentsOf: rest == 2 ? [UInt8(ascii: "=")] : [UInt8(ascii: "="), UInt8(ascii: "=")])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes `text`, or returns nil when it is not canonical base64 of the given alphabet.
    public static func decode<S: StringProtocol>(_ text: S, alphabet: Alphabet = .standard) -> [UInt8]? {
        let table = alphabet == .standard ? standardDecode : urlDecode
        var chars = Array(text.utf8)
        if alphabet == .standard {
            guard chars.count % 4 == 0 else { return nil }
            var padding = 0
            while padding < 2, let last = chars.last, last == UInt8(ascii: "=") {
                chars.removeLast()
                padding += 1
            }
        } else if chars.count % 4 == 1 {
            return nil
        }
        var out = [UInt8]()
        out.reserveCapacity(chars.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        for c in chars {
            let v = table[Int(c)]
            if v == 0xFF { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: acc >> UInt32(bits)))
            }
        }
        // The leftover bits must be zero: otherwise two spellings would decode to the same bytes.
        if bits > 0, acc & ((1 << UInt32(bits)) - 1) != 0 { return nil }
        if alphabet == .standard, chars.count % 4 == 1 { return nil }
        return out
    }
}
