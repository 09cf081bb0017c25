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
        if head.version == .http1_1 && head.headers[canonicalForm: "host"].count != 1 {
            return Problem(status: .badRequest, code: "malformed_request",
                message: "an HTTP/1.1 request needs exactly one Host header")
        }
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
}
