/// One extension offered in `Sec-WebSocket-Extensions` (RFC 6455 §9.1), with its parameters in order.
public struct ExtensionOffer: Equatable, Sendable {
    public var name: String
    /// Parameter names (lowercased) and values (nil for a bare parameter; quoted values are unescaped).
    public var parameters: [(name: String, value: String?)]

    public init(name: String, parameters: [(name: String, value: String?)] = []) {
        self.name = name
        self.parameters = parameters
    }

    public static func == (a: ExtensionOffer, b: ExtensionOffer) -> Bool {
        a.name == b.name && a.parameters.elementsEqual(b.parameters, by: { $0.name == $1.name && $0.value == $1.value })
    }
}

/// Parses `Sec-WebSocket-Extensions` values:
///
///     extension-list  = 1#extension
///     extension       = extension-token *( ";" extension-param )
///     extension-param = token [ "=" (token | quoted-string) ]
///
/// An element that does not follow the grammar is dropped (it is an offer the server declines); the rest of the
/// header still counts. Several header lines are read as one comma-separated list.
public enum ExtensionHeader {
    public static func parse<S: Sequence<String>>(_ values: S) -> [ExtensionOffer] {
        var offers: [ExtensionOffer] = []
        for value in values {
            for element in splitElements(Array(value.utf8)) {
                if let offer = parseElement(element) { offers.append(offer) }
            }
        }
        return offers
    }

    public static func parse(_ value: String) -> [ExtensionOffer] { parse([value]) }

    /// Splits on commas that are outside quoted strings.
    private static func splitElements(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var parts: [ArraySlice<UInt8>] = []
        var start = 0
        var inQuotes = false
        var escaped = false
        for (i, b) in bytes.enumerated() {
            if inQuotes {
                if escaped { escaped = false } else if b == UInt8(ascii: "\\") { escaped = true } else if b == UInt8(ascii: "\"") { inQuotes = false }
            } else if b == UInt8(ascii: "\"") {
                inQuotes = true
            } else if b == UInt8(ascii: ",") {
                parts.append(bytes[start..<i])
                start = i + 1
            }
        }
        parts.append(bytes[start..<bytes.count])
        // RFC 7230 §7: empty list elements are ignored.
        return parts.filter { !trim($0).isEmpty }
    }

    private static func parseElement(_ element: ArraySlice<UInt8>) -> ExtensionOffer? {
        var scanner = Scanner(bytes: Array(element))
        scanner.skipSpace()
        guard let name = scanner.token() else { return nil }
        var offer = ExtensionOffer(name: name.lowercased())
        scanner.skipSpace()
        while !scanner.atEnd {
            guard scanner.consume(UInt8(ascii: ";")) else { return nil }
            scanner.skipSpace()
            guard let param = scanner.token() else { return nil }
            scanner.skipSpace()
            var value: String?
            if scanner.consume(UInt8(ascii: "=")) {
                scanner.skipSpace()
                if scanner.peek == UInt8(ascii: "\"") {
                    // §9.1: after unescaping, a quoted value must still be a token.
                    guard let quoted = scanner.quotedString(), isToken(Array(quoted.utf8)) else { return nil }
                    value = quoted
                } else {
                    guard let token = scanner.token() else { return nil }
                    value = token
                }
                scanner.skipSpace()
            }
            offer.parameters.append((param.lowercased(), value))
        }
        return offer
    }

    private static func trim(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        var s = s
        while let f = s.first, f == 0x20 || f == 0x09 { s.removeFirst() }
        while let l = s.last, l == 0x20 || l == 0x09 { s.removeLast() }
        return s
    }

    /// RFC 7230 §3.2.6 tchar.
    static func isTokenChar(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(b)
        }
    }

    static func isToken(_ bytes: [UInt8]) -> Bool { !bytes.isEmpty && bytes.allSatisfy(isTokenChar) }

    private struct Scanner {
        let bytes: [UInt8]
        var index = 0
        var atEnd: Bool { index >= bytes.count }
        var peek: UInt8? { atEnd ? nil : bytes[index] }

        mutating func skipSpace() {
            while let b = peek, b == 0x20 || b == 0x09 { index += 1 }
        }

        mutating func consume(_ b: UInt8) -> Bool {
            guard peek == b else { return false }
            index += 1
            return true
        }

        mutating func token() -> String? {
            let start = index
            while let b = peek, ExtensionHeader.isTokenChar(b) { index += 1 }
            return index > start ? String(decoding: bytes[start..<index], as: UTF8.self) : nil
        }

        mutating func quotedString() -> String? {
            guard consume(UInt8(ascii: "\"")) else { return nil }
            var out: [UInt8] = []
            while let b = peek {
                index += 1
                if b == UInt8(ascii: "\"") { return String(decoding: out, as: UTF8.self) }
                if b == UInt8(ascii: "\\") {
                    guard let next = peek else { return nil }
                    index += 1
                    out.append(next)
                } else {
                    out.append(b)
                }
            }
            return nil  // unterminated
        }
    }
}
