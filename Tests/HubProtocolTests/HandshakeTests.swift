import HubProtocol
import XCTest

final class HandshakeTests: XCTestCase {
    private func request(method: String = "GET", minor: Int = 1, _ headers: [(String, String)]) -> HandshakeRequest {
        HandshakeRequest(method: method, uri: "/ws", versionMajor: 1, versionMinor: minor,
            headers: headers.map { (name: $0.0, value: $0.1) })
    }

    private let good: [(String, String)] = [
        ("Host", "server.example.com"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
    ]

    func testRFC6455AcceptKey() {
        XCTAssertEqual(Handshake.acceptValue(forKey: "dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    func testAcceptedRequestGetsTheAcceptHeader() throws {
        let accepted = try Handshake.accept(request(good), deflate: .init(enabled: false)).get()
        XCTAssertEqual(accepted.headers.map { "\($0.name): \($0.value)" },
            ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        XCTAssertNil(accepted.deflate)
    }

    func testTokenListsAreCaseInsensitive() throws {
        var headers = good
        headers[1] = ("UPGRADE", "h2c, WebSocket")
        headers[2] = ("connection", "keep-alive, UPGRADE")
        XCTAssertNoThrow(try Handshake.accept(request(headers)).get())
    }

    private func refusal(_ r: HandshakeRequest) -> ProtocolError? {
        if case .failure(let e) = Handshake.accept(r) { return e }
        return nil
    }

    func testEachRejectionHasOneStatus() {
        func without(_ name: String) -> [(String, String)] { good.filter { $0.0 != name } }
        func replacing(_ name: String, _ value: String) -> [(String, String)] { without(name) + [(name, value)] }

        let post = refusal(request(method: "POST", good))
        XCTAssertEqual(post, .methodNotAllowed("POST"))
        XCTAssertEqual(post?.httpStatus.code, 405)
        XCTAssertEqual(refusal(request(minor: 0, good)), .httpVersionNotSupported)
        XCTAssertEqual(refusal(request(minor: 0, good))?.httpStatus.code, 400)
        XCTAssertEqual(refusal(request(without("Upgrade"))), .missingUpgradeHeader)
        XCTAssertEqual(refusal(request(without("Upgrade")))?.httpStatus.code, 426)
        XCTAssertEqual(refusal(request(replacing("Connection", "keep-alive"))), .missingConnectionUpgrade)
        let v8 = refusal(request(replacing("Sec-WebSocket-Version", "8")))
        XCTAssertEqual(v8, .unsupportedVersion("8"))
        XCTAssertEqual(v8?.httpStatus.code, 426)
        XCTAssertEqual(Handshake.refusalHeaders(for: v8!).map { "\($0.name): \($0.value)" }, ["Sec-WebSocket-Version: 13"])
        XCTAssertEqual(refusal(request(without("Sec-WebSocket-Version"))), .unsupportedVersion(nil))
        XCTAssertEqual(refusal(request(without("Sec-WebSocket-Key"))), .missingKey)
        XCTAssertEqual(refusal(request(without("Sec-WebSocket-Key")))?.httpStatus.code, 400)
        // Not base64, base64 of 15 bytes, and two keys.
        XCTAssertEqual(refusal(request(replacing("Sec-WebSocket-Key", "not base64!"))), .invalidKey)
        XCTAssertEqual(refusal(request(replacing("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"))), .invalidKey)
        XCTAssertEqual(refusal(request(good + [("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")])), .invalidKey)
    }

    /// RFC 7230 §3.2.6: tokens are ASCII and compared case-insensitively in ASCII only. Unicode lowercases the Kelvin
    /// sign (U+212A) to "k", so "WEBSOC\u{212A}ET" is not "websocket" (found by the handshake fuzz target's reference).
    func testTokensAreComparedCaseInsensitivelyInASCIIOnly() {
        var headers = good
        headers[1] = ("Upgrade", "WEBSOC\u{212A}ET")
        XCTAssertEqual(refusal(request(headers)), .missingUpgradeHeader)
        XCTAssertEqual(request(headers).tokens("Upgrade"), ["websoc\u{212A}et"])
        headers[1] = ("Upgrade", "WEBSOCKET")
        XCTAssertNil(refusal(request(headers)))
    }

    func testSubprotocolHook() throws {
        let accepted = try Handshake.accept(request(good + [("Sec-WebSocket-Protocol", "chat, hub.v1")]),
            selectSubprotocol: { $0.contains("hub.v1") ? "hub.v1" : nil }).get()
        XCTAssertEqual(accepted.subprotocol, "hub.v1")
        XCTAssertEqual(accepted.headers.last?.value, "hub.v1")
    }

    func testDeflateIsNegotiatedInTheHandshake() throws {
        let accepted = try Handshake.accept(request(good + [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")])).get()
        XCTAssertEqual(accepted.deflate, PerMessageDeflate(serverMaxWindowBits: 15, announcesServerWindow: false))
        XCTAssertEqual(accepted.headers.last?.value, "permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    }
}

final class ExtensionNegotiationTests: XCTestCase {
    private func negotiate(_ headers: [String], policy: PerMessageDeflate.Policy = .init()) -> String? {
        PerMessageDeflate.negotiate(offers: ExtensionHeader.parse(headers), policy: policy)?.responseHeader
    }

    let base = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

    func testParsesSeveralExtensionsAndQuotedValues() {
        let offers = ExtensionHeader.parse(["foo, permessage-deflate; client_max_window_bits=\"10\"; server_no_context_takeover",
            "bar; x=\"a\\\"b\""])
        XCTAssertEqual(offers.map(\.name), ["foo", "permessage-deflate"])  // bar's quoted value is not a token
        XCTAssertEqual(offers[1].parameters.map(\.name), ["client_max_window_bits", "server_no_context_takeover"])
        XCTAssertEqual(offers[1].parameters.map(\.value), ["10", nil])
    }

    func testCommaInsideQuotesDoesNotSplit() {
        let offers = ExtensionHeader.parse("a; p=\"x,y\", b")
        XCTAssertEqual(offers.map(\.name), ["b"])  // "x,y" is not a token after unescaping, so a is declined
    }

    func testPlainOfferGetsBothNoContextTakeovers() {
        XCTAssertEqual(negotiate(["permessage-deflate"]), base)
    }

    func testFirstAcceptableOfferWins() {
        // The first offer has a duplicate parameter, the second an unknown one; the third is accepted.
        XCTAssertEqual(negotiate([
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=12",
        ]), base + "; server_max_window_bits=12")
    }

    func testInvalidParameterValuesDeclineTheOffer() {
        XCTAssertNil(negotiate(["permessage-deflate; server_max_window_bits"]))  // value required
        XCTAssertNil(negotiate(["permessage-deflate; server_max_window_bits=16"]))
        XCTAssertNil(negotiate(["permessage-deflate; server_max_window_bits=010"]))  // leading zero
        XCTAssertNil(negotiate(["permessage-deflate; client_max_window_bits=7"]))
        XCTAssertNil(negotiate(["permessage-deflate; server_no_context_takeover=1"]))
        XCTAssertNil(negotiate(["permessage-deflate; ;"]))
        XCTAssertNil(negotiate(["x-webkit-deflate-frame"]))
    }

    func testWindowBitsFollowSection712() {
        // The response never states a larger server window than the client allowed.
        XCTAssertEqual(negotiate(["permessage-deflate; server_max_window_bits=10"], policy: .init(maxWindowBits: 12)),
            base + "; server_max_window_bits=10")
        XCTAssertEqual(negotiate(["permessage-deflate; server_max_window_bits=15"], policy: .init(maxWindowBits: 12)),
            base + "; server_max_window_bits=12")
        // zlib cannot write an 8-bit raw window, so that offer is declined and the next one taken.
        XCTAssertEqual(negotiate(["permessage-deflate; server_max_window_bits=8, permessage-deflate"]), base)
        XCTAssertNil(negotiate(["permessage-deflate; server_max_window_bits=8"]))
        // client_max_window_bits with or without a value is accepted; the hub inflates any window.
        XCTAssertEqual(negotiate(["permessage-deflate; client_max_window_bits=8"]), base)
        XCTAssertEqual(negotiate(["permessage-deflate; client_max_window_bits"]), base)
    }

    func testDisabledPolicyDeclines() {
        XCTAssertNil(negotiate(["permessage-deflate"], policy: .init(enabled: false)))
    }
}

final class HostHeaderTests: XCTestCase {
    func testRequestWithoutHostIsRefused() {
        let request = HandshakeRequest(method: "GET", uri: "/ws", headers: [
            (name: "Upgrade", value: "websocket"), (name: "Connection", value: "Upgrade"),
            (name: "Sec-WebSocket-Key", value: "dGhlIHNhbXBsZSBub25jZQ=="), (name: "Sec-WebSocket-Version", value: "13"),
        ])
        guard case .failure(let error) = Handshake.accept(request) else { return XCTFail("accepted without Host") }
        XCTAssertEqual(error, .missingHost)
        XCTAssertEqual(error.httpStatus.code, 400)
    }
}
