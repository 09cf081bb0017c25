"""Hostile peers: cross-site WebSocket hijacking, secrets in logs, request smuggling, oversized and slow request
heads, half-open connections, and the limit on connections per client address. Protocol/SECURITY.md lists each
defence with the test here that proves it.

Waits are blocking reads with timeouts. The only sleeps pace a deliberately slow client (a slow-loris sender), they
never wait for the hub."""
import json
import socket
import threading
import time

import pytest

import hubclient as hc
from conftest import Hub, RedisServer, collect_stderr
from hubclient import Watcher, mint, open_live_sse, open_sse
from rawws import RawSocket, http_request, upgrade_request

W = hc.SECRET_ARGS


def read_until_closed(sock, timeout=10.0):
    """Every byte the hub sends until it closes the connection (raises socket.timeout if it never does)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def responses(data):
    """The status lines of every HTTP response in `data`."""
    return [line.rstrip("\r") for line in data.decode("latin-1").split("\n") if line.startswith("HTTP/1.1 ")]


# --- cross-site WebSocket hijacking and credentialed cross-origin streams -------------------------------------------

def test_cross_site_websocket_hijacking_is_refused(hub_factory):
    """A page on another site can make a browser open a WebSocket to the hub (with its cookies and any token the page
    can name); the Origin header gives it away and the handshake is refused before any frame."""
    hub = hub_factory(*W, "--allowed-origin", "https://app.example")
    token = mint(["w1"])
    before = hc.scrape(hub)
    for origin in ("https://evil.example", "null", "https://app.example.evil.example", "http://app.example",
                   "https://app.example:8443"):
        status, _, body, closed = http_request(
            hub.host, hub.port, upgrade_request(path=f"/v1/ws?access_token={token}", extra=f"Origin: {origin}\r\n".encode()))
        assert status == "HTTP/1.1 403 Forbidden", origin
        assert json.loads(body) == {"error": "origin_not_allowed",
                                    "message": f"origin {origin} is not allowed to open streams"}
        assert closed is True
    assert hc.metric_deltas(before, hc.scrape(hub)).get("hub_connections_refused_total{reason=origin_not_allowed}") == 5
    status, headers, _, _ = http_request(
        hub.host, hub.port, upgrade_request(path=f"/v1/ws?access_token={token}", extra=b"Origin: https://app.example\r\n"))
    assert status == "HTTP/1.1 101 Switching Protocols"


def test_the_cookie_is_honoured_only_for_origins_listed_by_name(hub_factory):
    """With the default allow-list "*", any page may open a stream with a token it holds, but not ride on the
    hub_token cookie a browser attaches by itself: that needs the origin listed by name, and only then do responses
    allow credentials."""
    hub = hub_factory(*W)  # allowed-origin "*"
    token = mint(["w1"])
    cookie = {"Cookie": f"hub_token={token}"}
    s = open_sse(hub, "w1", "e1", headers={**cookie, "Origin": "https://evil.example"})
    assert s.status == 403
    assert json.loads(s.read_body()) == {
        "error": "origin_not_allowed",
        "message": "origin https://evil.example may not authenticate with the hub_token cookie: "
                   "only origins listed in allowed-origin may"}
    s.close()
    # The same page with a token it was given: allowed, but the response does not allow credentials.
    s = open_live_sse(hub, "w1", "e1", token, headers={"Origin": "https://evil.example"})
    assert s.headers["access-control-allow-origin"] == "https://evil.example"
    assert "access-control-allow-credentials" not in s.headers
    s.close()
    # The cookie on a same-origin request (browsers send no Origin on a same-origin GET).
    s = open_sse(hub, "w1", "e1", headers=cookie)
    assert s.status == 200 and s.next() == {"retry": 3000}
    s.close()
    listed = hub_factory(*W, "--allowed-origin", "https://app.example")
    s = open_sse(listed, "w1", "e1", headers={**cookie, "Origin": "https://app.example"})
    assert s.status == 200 and s.next() == {"retry": 3000}
    assert s.headers["access-control-allow-origin"] == "https://app.example"
    assert s.headers["access-control-allow-credentials"] == "true"
    s.close()


# --- secrets never reach the log -----------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_tokens_and_secrets_never_reach_the_log(tmp_path, log_format):
    """At the most verbose level, through every way a token reaches the hub (good, forged, expired; query, header,
    cookie; on routes that exist and that do not) and a Redis password, nothing secret is written to the log."""
    password = "redis-password-7f3a9c"
    redis = RedisServer(tmp_path, "--requirepass", password)
    hub = None
    try:
        hub = Hub(*W, "--log-level", "trace", "--log-format", log_format,
                  "--redis", f"redis://:{password}@127.0.0.1:{redis.port}")
        lines = collect_stderr(hub)
        good = mint(["w1"])
        forged = mint(["w1"], secret="not-the-token-secret-0123")
        expired = mint(["w1"], exp=int(time.time()) - 60)
        secrets = [good, forged, expired, password, hc.TOKEN_SECRET, hc.ENGINE_SECRET]
        for token in (good, forged, expired):
            # Only the signature part of a JWT is secret-bearing on its own; check it too.
            secrets.append(token.rsplit(".", 1)[1])
        watcher = Watcher(hub, good)
        watcher.subscribe("w1", "e1", expect_seq=0)
        watcher.close()
        for token in (forged, expired):
            status, _, _, _ = http_request(hub.host, hub.port, upgrade_request(path=f"/v1/ws?access_token={token}"))
            assert status == "HTTP/1.1 401 Unauthorized"
        for token in (good, forged, expired):
            for headers, query in (({"Authorization": f"Bearer {token}"}, ""), ({}, f"access_token={token}"),
                                   ({"Cookie": f"hub_token={token}"}, "")):
                s = open_sse(hub, "w1", "e1", query=query, headers=headers)
                assert s.status == (200 if token == good else 401)
                s.close()
        status, _, body = hc.request(hub, "GET", f"/no/such/route?access_token={good}")
        assert status == 404 and good not in body.decode()
        body = hc.compact(hc.exec_event("e1", "execution.started"))
        status, _, _ = hc.request(hub, "POST", "/v1/jobs/progress", body,
                                  hc.signed_headers(body, secret="wrong-engine-secret-0123456789"))
        assert status == 403
        assert hc.ingest(hub, hc.exec_event("e1", "execution.started"))[0]["seq"] == 1
        # Close the hub so that every line it would write is written, then read them all.
        hub.stop()
        assert hub.proc.returncode == 0
        log = lines.wait_for(lambda l: "exiting" in l)
        assert log, "the hub's log has no exiting line"
        text = "\n".join(lines.lines) + hub.proc.stdout.read()
        # The log is not empty: it names the WebSocket that opened (its path without the query).
        assert "/v1/ws?…" in text and "websocket open" in text
        for secret in secrets:
            assert secret not in text
    finally:
        if hub is not None:
            hub.stop()
        redis.stop()


# --- request smuggling ---------------------------------------------------------------------------------------------

BODY = b'{"x":1}'
SMUGGLED = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
FRAMING = "malformed HTTP request: conflicting or invalid message framing headers"
SMUGGLING = [
    ("duplicate Content-Length, same value",
     b"Content-Length: 7\r\nContent-Length: 7\r\n", BODY,
     400, "malformed_request", "malformed HTTP request: unexpected content-length header"),
    ("duplicate Content-Length, different values",
     b"Content-Length: 7\r\nContent-Length: 41\r\n", BODY + SMUGGLED,
     400, "malformed_request", "malformed HTTP request: unexpected content-length header"),
    ("Content-Length as a list",
     b"Content-Length: 7, 7\r\n", BODY,
     400, "malformed_request", "malformed HTTP request: invalid character in content-length header"),
    ("Content-Length with Transfer-Encoding",
     b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"7\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", FRAMING),
    ("Transfer-Encoding with Content-Length",
     b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", b"7\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", "malformed HTTP request: invalid character in content-length header"),
    ("Transfer-Encoding twice",
     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", FRAMING),
    ("Transfer-Encoding not ending in chunked",
     b"Transfer-Encoding: gzip\r\n", BODY + SMUGGLED,
     400, "malformed_request", "Transfer-Encoding must end with chunked"),
    ("a coding before chunked",
     b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED,
     501, "unsupported_transfer_encoding", "only Transfer-Encoding: chunked is supported"),
    ("space before the colon",
     b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", "malformed HTTP request: invalid character in header"),
    ("obsolete line folding",
     b"Transfer-Encoding: identity\r\n chunked\r\n", b"0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", "malformed HTTP request: invalid character in header"),
    ("bad chunk size",
     b"Transfer-Encoding: chunked\r\n", b"7zz\r\n" + BODY + b"\r\n0\r\n\r\n" + SMUGGLED,
     400, "malformed_request", "malformed HTTP request: invalid character in chunk size header"),
]


@pytest.mark.parametrize("name,headers,body,status,code,message", SMUGGLING, ids=[c[0] for c in SMUGGLING])
def test_request_smuggling_shapes_are_refused(hub_factory, name, headers, body, status, code, message):
    """Each ambiguous framing gets one precise refusal and the connection closes: the request hidden after it is
    never answered, and nothing is ingested."""
    hub = hub_factory(*W)
    before = hc.scrape(hub)
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(b"POST /v1/jobs/progress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers
                 + b"\r\n" + body)
    data = read_until_closed(sock)
    sock.close()
    assert responses(data) == [f"HTTP/1.1 {status} {'Bad Request' if status == 400 else 'Not Implemented'}"]
    head, _, payload = data.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close\r\n" in head + b"\r\n"
    assert json.loads(payload) == {"error": code, "message": message}
    assert "hub_events_ingested_total" not in hc.metric_deltas(before, hc.scrape(hub))


@pytest.mark.parametrize("hosts,ok", [(b"", False), (b"Host: a\r\nHost: b\r\n", False), (b"Host: a\r\n", True)])
def test_an_http11_request_needs_exactly_one_host(hub_factory, hosts, ok):
    hub = hub_factory()
    status, _, body, closed = http_request(hub.host, hub.port, b"GET /healthz HTTP/1.1\r\n" + hosts + b"\r\n")
    if ok:
        assert status == "HTTP/1.1 200 OK"
    else:
        assert status == "HTTP/1.1 400 Bad Request"
        assert json.loads(body) == {"error": "malformed_request",
                                    "message": "an HTTP/1.1 request needs exactly one Host header"}
        assert closed is True


# --- oversized and slow request heads, half-open connections -------------------------------------------------------

def test_a_never_ending_request_head_is_cut_off(hub_factory):
    """A head that never ends is refused once the parser has buffered its bound, long before the sender stops: the
    431 and the end of the stream reach the client while it is still sending."""
    hub = hub_factory()
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    sent = [0]

    def send():
        try:
            while sent[0] < 64 * 1024 * 1024:
                sock.sendall(b"X-Pad: " + b"a" * 1017 + b"\r\n")
                sent[0] += 1026
        except OSError:
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = read_until_closed(sock)
    sent_when_refused = sent[0]
    sender.join()
    sock.close()
    assert sent_when_refused < 16 * 1024 * 1024
    assert responses(data) == ["HTTP/1.1 431 Request Header Fields Too Large"]
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "headers_too_large", "message": "request head too large"}


def trickle(sock, chunks, interval, stop):
    """A slow-loris sender: one chunk every `interval` seconds until told to stop or the hub closes."""
    for chunk in chunks:
        if stop.wait(interval):
            return
        try:
            sock.sendall(chunk)
        except OSError:
            return


@pytest.mark.parametrize("kind", ["head", "body"])
def test_a_slow_loris_request_is_answered_408_at_its_deadline(hub_factory, kind):
    """Bytes that keep trickling in do not extend the deadline: the whole head (and body) must arrive within
    request-timeout of the connection's start."""
    hub = hub_factory(*W, "--request-timeout", "1")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    started = time.monotonic()
    if kind == "head":
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        chunks = [b"X-Slow-%d: 1\r\n" % i for i in range(100)]
    else:
        sock.sendall(b"POST /v1/jobs/progress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n")
        chunks = [b" " for _ in range(100)]
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(sock, chunks, 0.1, stop), daemon=True)
    sender.start()
    data = read_until_closed(sock)
    elapsed = time.monotonic() - started
    stop.set()
    sender.join()
    sock.close()
    assert responses(data) == ["HTTP/1.1 408 Request Timeout"]
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "request_timeout",
                                                          "message": "no complete request within 1.0 s"}
    # Ten chunks would have arrived by the deadline; the sender had ninety more to go.
    assert 0.9 <= elapsed < 5, elapsed


def read_request_timeout(sock, started, seconds):
    """Reads until the hub closes; checks that it answered only 408 for `seconds`; returns the time since `started`."""
    data = read_until_closed(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert responses(data) == ["HTTP/1.1 408 Request Timeout"]
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "request_timeout",
                                                          "message": f"no complete request within {seconds} s"}
    return elapsed


def test_a_connection_that_sends_nothing_is_answered_408_at_its_deadline(hub_factory):
    """A connection that is accepted and then sends nothing holds no request handler, but keeps its deadline: it is
    answered 408 and closed at request-timeout after the accept."""
    hub = hub_factory(*W, "--request-timeout", "1")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    started = time.monotonic()
    elapsed = read_request_timeout(sock, started, "1.0")
    assert 0.9 <= elapsed < 5, elapsed


def test_a_request_that_starts_late_must_still_end_by_the_deadline_of_the_accept(hub_factory):
    """The first bytes do not start the deadline again: a client that waits 2.2 s, then sends half a request head,
    is answered 408 at 3 s after the accept, not 3 s after its first byte."""
    hub = hub_factory(*W, "--request-timeout", "3")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    started = time.monotonic()
    sock.settimeout(2.2)
    with pytest.raises(socket.timeout):
        sock.recv(1)  # the hub sends nothing before the deadline
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    elapsed = read_request_timeout(sock, started, "3.0")
    # Counted from the first byte, the answer would come at 5.2 s.
    assert 2.9 <= elapsed < 4.5, elapsed


def test_a_client_still_sending_when_refused_reads_the_whole_refusal(hub_factory):
    """A body far over the limit is refused with 413 while the client is still sending it. The hub shuts down its
    output and reads (and drops) the rest, so the client's send completes and it reads the 413, then the end of the
    stream. A plain close would reset the connection: the client's send would fail and the 413 could be lost."""
    hub = hub_factory(*W, "--max-ingest-bytes", "65536")
    body = b" " * (16 * 1024 * 1024)
    for _ in range(3):
        sock = socket.create_connection((hub.host, hub.port), timeout=10)
        sock.sendall(b"POST /v1/jobs/progress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sock.shutdown(socket.SHUT_WR)
        data = read_until_closed(sock)
        sock.close()
        assert responses(data) == ["HTTP/1.1 413 Payload Too Large"]
        assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"error": "payload_too_large",
                                                              "message": "body larger than 65536 bytes"}


def test_a_client_that_never_stops_sending_is_let_go_after_the_linger(hub_factory):
    """Lingering is bounded: a client that keeps sending after its refusal reads the refusal and end of stream at
    once, and is cut off about two seconds later (the hub's linger), not held forever."""
    hub = hub_factory(*W, "--max-ingest-bytes", "65536")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(b"POST /v1/jobs/progress HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000000\r\n\r\n" + b" " * 70000)
    data = read_until_closed(sock)
    assert responses(data) == ["HTTP/1.1 413 Payload Too Large"]
    refused = time.monotonic()
    sock.settimeout(10)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        while True:
            sock.sendall(b" " * 65536)
    elapsed = time.monotonic() - refused
    sock.close()
    assert 1.5 <= elapsed < 5, elapsed


def test_an_idle_keep_alive_connection_is_closed(hub_factory):
    hub = hub_factory("--request-timeout", "1")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    started = time.monotonic()
    data = read_until_closed(sock)
    elapsed = time.monotonic() - started
    sock.close()
    assert responses(data) == ["HTTP/1.1 200 OK", "HTTP/1.1 408 Request Timeout"]
    assert 0.9 <= elapsed < 5, elapsed


def test_a_peer_that_half_closes_mid_request_is_let_go_at_once(hub_factory):
    """A client that sends half a request and shuts its side does not hold the connection until the deadline."""
    hub = hub_factory("--request-timeout", "60")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    sock.shutdown(socket.SHUT_WR)
    started = time.monotonic()
    assert read_until_closed(sock, timeout=10) == b""
    assert time.monotonic() - started < 5
    sock.close()


def test_a_websocket_peer_that_vanishes_is_dropped(hub_factory):
    """A watcher that stops answering (no pong) is closed after heartbeat + pong timeout, and forgotten."""
    hub = hub_factory(*W, "--heartbeat", "0.5", "--pong-timeout", "0.5")
    token = mint(["w1"])
    peer = RawSocket(hub.host, hub.port, path=f"/v1/ws?access_token={token}")
    assert peer.status == "HTTP/1.1 101 Switching Protocols"
    started = time.monotonic()
    frames = []
    while not frames or frames[-1][0] != 0x8:
        opcode, payload, _ = peer.read_frame()
        frames.append((opcode, payload))
    # A ping went unanswered (the JSON heartbeats beside it are for browsers), then the close.
    assert (0x9, b"") in frames
    assert frames[-1] == (0x8, (1001).to_bytes(2, "big") + b"no pong within 500 ms")
    assert peer.read_eof()
    assert time.monotonic() - started < 5
    peer.sock.close()
    assert hc.scrape(hub)["hub_open_connections{transport=websocket}"] == 0


# --- connections per client address --------------------------------------------------------------------------------

def connect_from(hub, source):
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((hub.host, hub.port))
    return sock


def test_connections_per_client_address_are_limited(hub_factory):
    hub = hub_factory(*W, "--max-connections-per-address", "3")
    token = mint(["w1"])
    before = hc.scrape(hub, source="127.0.0.3")
    # Three connections from 127.0.0.1 of every kind: a WebSocket, an SSE stream, an idle HTTP connection.
    watcher = Watcher(hub, token)
    watcher.subscribe("w1", "e1", expect_seq=0)
    stream = open_live_sse(hub, "w1", "e1", token)
    idle = connect_from(hub, "127.0.0.1")
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
    # The fourth is answered 429 before it sends anything, and closed.
    refused = connect_from(hub, "127.0.0.1")
    data = read_until_closed(refused)
    refused.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 429 Too Many Requests"
    assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close" in head
    assert json.loads(body) == {"error": "too_many_connections",
                                "message": "this address already holds 3 connections (max-connections-per-address)"}
    # Another address is not affected.
    other = connect_from(hub, "127.0.0.2")
    other.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert other.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
    other.close()
    # The refusal is counted (scraped from another address, which has room).
    deltas = hc.metric_deltas(before, hc.scrape(hub, source="127.0.0.3"))
    assert deltas["hub_connections_refused_total{reason=too_many_connections}"] == 1
    # Once a connection closes, its place is free again. The hub releases it when it reads the FIN; a probe that
    # comes before that is refused (and counted) too, so probe until one is served.
    idle.close()
    deadline = time.monotonic() + 10
    while True:
        probe = connect_from(hub, "127.0.0.1")
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = read_until_closed(probe)
        probe.close()
        if reply.startswith(b"HTTP/1.1 200 OK"):
            break
        assert reply.startswith(b"HTTP/1.1 429 Too Many Requests") and time.monotonic() < deadline
    watcher.close()
    stream.close()


def test_without_a_limit_one_address_may_hold_many_connections(hub_factory):
    hub = hub_factory()
    socks = [connect_from(hub, "127.0.0.1") for _ in range(200)]
    for s in socks:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert all(s.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n") for s in socks)
    for s in socks:
        s.close()


# --- frame and message limits on the hub's own route ---------------------------------------------------------------

def test_frame_limit_is_its_own_setting_on_the_hub_route(hub_factory):
    """--max-frame-size bounds each frame even when --max-message-size allows more: a message may come in several
    frames within both limits, but one frame beyond the frame limit closes the socket with 1009."""
    hub = hub_factory(*W, "--max-frame-size", "1000", "--max-message-size", "4000")
    peer = RawSocket(hub.host, hub.port, path=f"/v1/ws?access_token={mint(['w1'])}")
    assert peer.status == "HTTP/1.1 101 Switching Protocols"
    op = json.dumps({"op": "subscribe", "id": 1, "workspace": "w1", "execution": "e1", "pad": "x" * 1500}).encode()
    assert 1000 < len(op) < 4000
    peer.send_frame(0x1, op[:900], fin=False)
    peer.send_frame(0x0, op[900:], fin=True)
    opcode, payload, _ = peer.read_frame()
    assert opcode == 0x1 and json.loads(payload)["type"] == "subscribed"
    peer.send_frame(0x1, op)
    frames = []
    while not frames or frames[-1][0] != 0x8:
        opcode, payload, _ = peer.read_frame()
        frames.append((opcode, payload))
    assert frames[-1] == (0x8, (1009).to_bytes(2, "big") + b"frame larger than 1000 bytes")
    # Then TCP ends: with the refused frame's remaining bytes unread, the kernel may end it with a reset.
    try:
        assert peer.read_eof()
    except ConnectionResetError:
        pass
