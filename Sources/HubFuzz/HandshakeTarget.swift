import HubNative
import HubProtocol
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// The opening handshake (RFC 6455 §4.2) and `Sec-WebSocket-Extensions` (§9.1, RFC 7692 §7).
///
/// Input: a configuration byte (the deflate policy, and the mode), then either request bytes, which NIO's HTTP/1
/// decoder turns into request heads as in the hub's pipeline (there fed by `HTTPRequestReader`), or `Name: value` lines taken as they are (so
/// header values can hold what an HTTP parser would refuse).
enum HandshakeTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let config = input.byte()
        let policy = PerMessageDeflate.Policy(enabled: config & 0x80 == 0, maxWindowBits: 9 + Int(config & 0x07) % 7)
        let requests = config & 0x40 == 0 ? heads(from: input.rest) : [lines(input.rest)]
        for request in requests {
            check(request, policy: policy)
            checkExtensions(request.values("Sec-WebSocket-Extensions"), policy: policy)
        }
    }

    /// Request heads as `HTTPHandler` builds them from NIO's `HTTPRequestHead`.
    static func heads(from bytes: ArraySlice<UInt8>) -> [HandshakeRequest] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        defer { _ = try? channel.finish() }
        // A parse error ends the request (the hub answers 400); heads decoded before it still count.
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes))
        var requests: [HandshakeRequest] = []
        while let part = try? channel.readInbound(as: HTTPServerRequestPart.self) {
            guard case .head(let head) = part else { continue }
            requests.append(HandshakeRequest(method: head.method.rawValue, uri: head.uri,
                versionMajor: head.version.major, versionMinor: head.version.minor,
                headers: head.headers.map { (name: $0.name, value: $0.value) }))
        }
        return requests
    }

    /// `Name: value` lines (LF-separated, value without the first space after the colon); a GET over HTTP/1.1.
    static func lines(_ bytes: ArraySlice<UInt8>) -> HandshakeRequest {
        var headers: [(name: String, value: String)] = []
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                headers.append((String(decoding: line, as: UTF8.self), ""))
                continue
            }
            var value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
            headers.append((String(decoding: line[..<colon], as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return HandshakeRequest(method: "GET", uri: "/v1/ws", headers: headers)
    }

    static func trimmed(_ s: String) -> String {
        var u = Substring(s)
        while let f = u.first, f == " " || f == "\t" { u.removeFirst() }
        while let l = u.last, l == " " || l == "\t" { u.removeLast() }
        return String(u)
    }

    static func check(_ request: HandshakeRequest, policy: PerMessageDeflate.Policy) {
        let keys = request.values("Sec-WebSocket-Key").map(trimmed)
        let versions = request.values("Sec-WebSocket-Version").map(trimmed)
        switch Handshake.accept(request, deflate: policy) {
        case .success(let accepted):
            require(request.method == "GET", "accepted a \(request.method)")
            require(request.versionMajor > 1 || (request.versionMajor == 1 && request.versionMinor >= 1),
                "accepted HTTP/\(request.versionMajor).\(request.versionMinor)")
            require(!request.values("Host").isEmpty, "accepted without Host")
            require(versions == ["13"], "accepted versions \(versions)")
            require(keys.count == 1 && Base64.decode(keys[0])?.count == 16, "accepted keys \(keys)")
            require(accepted.headers.count >= 3, "response headers \(accepted.headers)")
            require(accepted.headers[2].name == "Sec-WebSocket-Accept"
                && accepted.headers[2].value == Handshake.acceptValue(forKey: keys[0])
                && Base64.decode(accepted.headers[2].value)?.count == 20, "accept header \(accepted.headers[2])")
            for (name, value) in accepted.headers {
                // Nothing from the request may break the response head open.
                require(!(name + value).utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 }, "CR/LF/NUL in \(name)")
            }
            require(accepted.subprotocol == nil, "a subprotocol without a selector")
            if let deflate = accepted.deflate {
                require(policy.enabled, "deflate agreed while disabled")
                require((9...policy.maxWindowBits).contains(deflate.serverMaxWindowBits),
                    "server window \(deflate.serverMaxWindowBits), policy \(policy.maxWindowBits)")
                require(accepted.headers.last.map { $0.name == "Sec-WebSocket-Extensions" && $0.value == deflate.responseHeader }
                    == true, "extension response header")
                // The response is itself an offer the hub would accept with the same result.
                let back = ExtensionHeader.parse(deflate.responseHeader)
                require(back.count == 1 && PerMessageDeflate.negotiate(offers: back, policy: policy) == deflate,
                    "response header \(deflate.responseHeader) does not parse back")
                require(ExtensionHeader.parse(request.values("Sec-WebSocket-Extensions")).contains {
                    $0.name == "permessage-deflate"
                }, "deflate agreed without an offer")
            } else if policy.enabled {
                // A bare offer is always acceptable (RFC 7692 §7.1: no parameter needs an answer).
                require(!ExtensionHeader.parse(request.values("Sec-WebSocket-Extensions")).contains {
                    $0.name == "permessage-deflate" && $0.parameters.isEmpty
                }, "a bare permessage-deflate offer declined")
            }
        case .failure(let error):
            require(error.closeCode == .protocolError, "handshake error \(error) with close code \(error.closeCode)")
            require([400, 405, 426].contains(error.httpStatus.code), "status \(error.httpStatus.code)")
            // The refusal names something that is really wrong with the request.
            switch error {
            case .methodNotAllowed(let m): require(m == request.method && m != "GET", "405 for \(m)")
            case .httpVersionNotSupported:
                require(request.versionMajor < 1 || (request.versionMajor == 1 && request.versionMinor < 1), "version refusal")
            case .missingHost: require(request.values("Host").isEmpty, "missingHost with a Host")
            case .missingUpgradeHeader:
                require(!request.tokens("Upgrade").contains("websocket"), "missingUpgradeHeader with websocket")
            case .missingConnectionUpgrade:
                require(!request.tokens("Connection").contains("upgrade"), "missingConnectionUpgrade with upgrade")
            case .unsupportedVersion(let v): require(versions != ["13"] && v == versions.first, "unsupportedVersion \(String(describing: v))")
            case .missingKey: require(keys.isEmpty, "missingKey with keys \(keys)")
            case .invalidKey:
                require(keys.count > 1 || Base64.decode(keys[0])?.count != 16, "invalidKey for \(keys)")
            default: require(false, "a framing error from the handshake: \(error)")
            }
        }
    }

    static func checkExtensions(_ values: [String], policy: PerMessageDeflate.Policy) {
        let offers = ExtensionHeader.parse(values)
        // Several header lines read as one list.
        require(offers == values.flatMap { ExtensionHeader.parse($0) }, "header lines parse differently together")
        for offer in offers {
            require(isToken(offer.name) && offer.name == offer.name.lowercased(), "offer name \(offer.name)")
            for (name, value) in offer.parameters {
                require(isToken(name) && name == name.lowercased(), "parameter name \(name)")
                if let value { require(isToken(value), "parameter value \(value)") }
            }
        }
        // Written out again, plainly or with every value quoted (§9.1), the offers parse to the same thing.
        func serialize(quoted: Bool) -> String {
            offers.map { offer in
                ([offer.name] + offer.parameters.map { p in
                    p.value.map { quoted ? "\(p.name)=\"\($0)\"" : "\(p.name)=\($0)" } ?? p.name
                }).joined(separator: "; ")
            }.joined(separator: ", ")
        }
        require(ExtensionHeader.parse(serialize(quoted: false)) == offers, "offers do not round-trip")
        require(ExtensionHeader.parse(serialize(quoted: true)) == offers, "quoted offers do not round-trip")
        if let agreed = PerMessageDeflate.negotiate(offers: offers, policy: policy) {
            require(policy.enabled && (9...policy.maxWindowBits).contains(agreed.serverMaxWindowBits),
                "agreed \(agreed) under \(policy)")
        }
    }
}
