"""Every refusal over a real socket: the exact status line, a JSON reason, and a connection that is closed."""
import json
from rawws import http_request, upgrade_request


def test_malformed_request_is_400(echo_hub):
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, b"GARBAGE /\x01 HTTP/9\r\n\r\n")
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body)["error"] == "malformed_request"
    assert closed is True


def test_oversized_headers_are_431(echo_hub):
    raw = upgrade_request(extra=b"X-Padding: " + b"a" * 9000 + b"\r\n")
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, raw)
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert json.loads(body)["error"] == "headers_too_large"
    assert closed is True


def test_post_to_websocket_route_is_405(echo_hub):
    raw = b"POST /ws/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, raw)
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert headers["allow"] == "GET"
    assert closed is True


def test_missing_key_is_400(echo_hub):
    raw = (b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, raw)
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body) == {"error": "bad_websocket_key", "message": "missing Sec-WebSocket-Key"}
    assert closed is True


def test_bad_key_is_400(echo_hub):
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, upgrade_request(key="c2hvcnQ="))
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body)["message"] == "Sec-WebSocket-Key must be the base64 encoding of 16 bytes"
    assert closed is True


def test_wrong_version_is_426_with_version_header(echo_hub):
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, upgrade_request(version=b"8"))
    assert status == "HTTP/1.1 426 Upgrade Required"
    assert headers["sec-websocket-version"] == "13"
    assert closed is True


def test_unknown_path_is_404(echo_hub):
    status, headers, body, closed = http_request(echo_hub.host, echo_hub.port, upgrade_request(path="/nowhere?token=secret"))
    assert status == "HTTP/1.1 404 Not Found"
    assert json.loads(body) == {"error": "not_found", "message": "no route for /nowhere?…"}
    assert closed is True


def test_echo_route_is_absent_without_the_flag(hub_factory):
    hub = hub_factory()
    status, _, _, _ = http_request(hub.host, hub.port, upgrade_request())
    assert status == "HTTP/1.1 404 Not Found"


def test_slow_request_head_is_408(hub_factory):
    hub = hub_factory("--request-timeout", "0.3")
    # Half a request line, then nothing: the hub answers 408 and closes instead of waiting forever.
    status, _, body, closed = http_request(hub.host, hub.port, b"GET /heal")
    assert status == "HTTP/1.1 408 Request Timeout"
    assert closed is True


def test_accepted_upgrade_status_and_accept_key(echo_hub):
    import socket
    s = socket.create_connection((echo_hub.host, echo_hub.port), timeout=5)
    s.sendall(upgrade_request(key="dGhlIHNhbXBsZSBub25jZQ=="))
    data = s.recv(4096).decode()
    s.close()
    assert data.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in data


def test_sse_from_an_allowed_origin_gets_cors_headers(hub_factory):
    """A page on another allowed origin can open an EventSource: the stream answers with the CORS headers."""
    import subprocess
    from conftest import HUB_BIN
    hub = hub_factory("--token-secret", "s" * 20, "--allowed-origin", "https://app.example")
    token = subprocess.check_output([HUB_BIN, "token", "--secret", "s" * 20, "--workspace", "w1"], text=True).strip()
    raw = (f"GET /api/v1/workspaces/w1/executions/e1/stream?access_token={token} HTTP/1.1\r\nHost: x\r\n"
           "Origin: https://app.example\r\nAccept: text/event-stream\r\n\r\n").encode()
    import socket
    s = socket.create_connection((hub.host, hub.port), timeout=5)
    s.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    s.close()
    head = data.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 200 OK")
    assert "Access-Control-Allow-Origin: https://app.example\r\n" in head
    assert "Access-Control-Allow-Credentials: true\r\n" in head


def test_a_request_head_that_comes_in_pieces_is_answered_once_whole(hub_factory):
    """The first request's head may take several reads (the receive buffer starts at 256 bytes; a client may send it
    in pieces): nothing is answered until it is whole, then it is answered as usual."""
    import socket
    import pytest
    hub = hub_factory()
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    for piece in (b"GET /heal", b"thz HTTP/1.1\r\nHost: x\r\n", b"Connection: close\r\n" + b"X-Pad: " + b"p" * 600 + b"\r\n"):
        sock.sendall(piece)
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(1)  # an incomplete head gets no answer
    sock.settimeout(10)
    sock.sendall(b"\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 200 OK"
    assert json.loads(body)["status"] == "ok"


def test_bytes_that_cannot_start_a_request_are_refused_at_once(hub_factory):
    """A TLS handshake (or any bytes that cannot begin a request line) sent to the plain port is refused when it
    arrives, not at the request deadline."""
    import time
    hub = hub_factory("--request-timeout", "30")
    started = time.monotonic()
    status, _, body, closed = http_request(hub.host, hub.port, b"\x16\x03\x01\x00\x05hello")
    assert status == "HTTP/1.1 400 Bad Request"
    assert json.loads(body)["error"] == "malformed_request"
    assert closed is True
    assert time.monotonic() - started < 10


def test_a_connect_request_is_answered_and_the_connection_closed(hub_factory):
    """After a CONNECT head the HTTP parser reads nothing more on the connection (the rest would be a tunnel's bytes),
    so the refusal closes it at once rather than leaving it to wait for the request deadline."""
    import time
    hub = hub_factory("--request-timeout", "30")
    started = time.monotonic()
    status, headers, body, closed = http_request(hub.host, hub.port, b"CONNECT /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert json.loads(body) == {"error": "method_not_allowed", "message": "use GET"}
    assert headers.get("connection") == "close"
    assert closed is True
    assert time.monotonic() - started < 10
