import NIOHTTP1

/// Request heads the hub refuses even though the HTTP parser let them through: shapes that proxies and servers read
/// differently (RFC 9112 §3.2, §6.1, §6.3), which is what request smuggling needs. The parser already refuses
/// Content-Length with Transfer-Encoding, repeated Content-Length and invalid characters.
enum HTTPRequestShape {
    struct Problem: Equatable {
        var status: HTTPResponseStatus
        var code: String
        var message: String
    }

    static func problem(_ head: HTTPRequestHead) -> Problem? {
        if head.version == .http1_1 && !hasOneHost(head.headers) {
            return Problem(status: .badRequest, code: "malformed_request",
                message: "an HTTP/1.1 request needs exactly one Host header")
        }
        // Most requests have no Transfer-Encoding: no list to build for them.
        guard head.headers.contains(name: "transfer-encoding") else { return nil }
        let codings = head.headers[canonicalForm: "transfer-encoding"].map { $0.lowercased() }
        if let last = codings.last {
            // The body's length is known only if chunked is the final coding; anything else cannot be framed.
            guard last == "chunked" else {
                return Problem(status: .badRequest, code: "malformed_request",
                    message: "Transfer-Encoding must end with chunked")
            }
            guard codings.count == 1 else {
                return Problem(status: .notImplemented, code: "unsupported_transfer_encoding",
                    message: "only Transfer-Encoding: chunked is supported")
            }
        }
        return nil
    }

    /// Exactly one Host value: one non-empty header without a comma (the usual case, checked without building the
    /// list of values), or else one value in the canonical form (split on commas, empty pieces dropped).
    private static func hasOneHost(_ headers: HTTPHeaders) -> Bool {
        let values = headers["host"]
        if values.count == 1, !values[0].isEmpty, !values[0].utf8.contains(UInt8(ascii: ",")) {
            return true
        }
        return headers[canonicalForm: "host"].count == 1
    }
}
