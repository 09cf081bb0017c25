"""Connection lifecycle over real sockets: heartbeats, close handshake, slow consumers. Intervals are made small by
configuration; every wait is a blocking read with a timeout, never a sleep."""
import struct
import time

from rawws import RawSocket


def close_code(payload):
    return struct.unpack("!H", payload[:2])[0]


def test_unanswered_ping_closes_the_connection(hub_factory):
    hub = hub_factory("--echo", "--heartbeat", "0.2", "--pong-timeout", "0.3")
    ws = RawSocket(hub.host, hub.port)
    started = time.monotonic()
    opcode, payload, raw = ws.read_frame()
    assert (opcode, raw) == (0x9, b"\x89\x00")  # an empty ping after the quiet interval
    opcode, payload, raw = ws.read_frame()  # never answered: a close frame, then TCP closes
    assert opcode == 0x8
    assert close_code(payload) == 1001
    assert payload[2:] == b"no pong within 300 ms"
    assert ws.read_eof()
    assert time.monotonic() - started < 5


def test_answered_pings_keep_the_connection(hub_factory):
    hub = hub_factory("--echo", "--heartbeat", "0.2", "--pong-timeout", "0.3")
    ws = RawSocket(hub.host, hub.port)
    for _ in range(3):
        opcode, payload, _ = ws.read_frame()
        assert opcode == 0x9
        ws.send_frame(0xA, payload)
    ws.send_frame(0x1, b"still here")
    # Skip any further pings and find the echo.
    while True:
        opcode, payload, _ = ws.read_frame()
        if opcode == 0x9:
            ws.send_frame(0xA, payload)
            continue
        assert (opcode, payload) == (0x1, b"still here")
        break


def test_server_closes_tcp_after_replying_to_close(echo_hub):
    ws = RawSocket(echo_hub.host, echo_hub.port)
    ws.send_frame(0x8, struct.pack("!H", 1000) + b"bye")
    opcode, payload, raw = ws.read_frame()
    assert raw == b"\x88\x02\x03\xe8"
    # §7.1.1: the server closes TCP first; the client sends nothing more and sees EOF.
    assert ws.read_eof()


def test_protocol_error_gets_exact_close_frame(echo_hub):
    ws = RawSocket(echo_hub.host, echo_hub.port)
    ws.sock.sendall(b"\x81\x05Hello")  # unmasked client frame
    opcode, payload, raw = ws.read_frame()
    assert raw == b"\x88\x1e\x03\xea" + b"client frames must be masked"
    assert ws.read_eof()


def test_slow_consumer_is_closed_at_its_budget(hub_factory):
    budget = 64 * 1024
    hub = hub_factory("--echo", "--outbound-budget", str(budget), "--echo-max-message-size", "1024",
                      "--close-timeout", "10")
    ws = RawSocket(hub.host, hub.port, rcvbuf=4096)
    message = b"m" * 1000
    sent = 4000  # 4 MB of echoes: far more than the budget plus what the kernel buffers on loopback
    frames = []
    for i in range(sent):
        frames.append(message)
    for m in frames:
        ws.send_frame(0x2, m)
    # Now read again: everything queued before the budget ran out, then the close frame with 1013.
    received = 0
    while True:
        opcode, payload, _ = ws.read_frame()
        if opcode == 0x2:
            assert payload == message
            received += 1
            continue
        assert opcode == 0x8
        assert close_code(payload) == 1013
        assert payload[2:] == b"slow consumer: outbound budget exceeded"
        break
    # The hub stopped queueing at the budget instead of holding all 4 MB for this peer.
    assert 0 < received < sent
    ws.send_frame(0x8, struct.pack("!H", 1000))
    assert ws.read_eof()


def test_frames_sent_with_the_upgrade_request_are_answered(echo_hub):
    """Bytes that arrive in the same read as the upgrade request are handed to the WebSocket handler and answered
    without the client sending anything more (they used to wait for the next read to be flushed)."""
    import socket
    from rawws import upgrade_request
    s = socket.create_connection((echo_hub.host, echo_hub.port), timeout=5)
    ping = bytes([0x89, 0x82, 0, 0, 0, 0]) + b"hi"
    s.sendall(upgrade_request() + ping)
    data = b""
    while b"\x8a\x02hi" not in data:
        chunk = s.recv(4096)
        assert chunk, f"closed before the pong: {data!r}"
        data += chunk
    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    s.close()


def test_frames_sent_with_the_upgrade_request_are_read_after_it(hub_factory):
    """A client may send its first frames right behind the upgrade request, in the same packet: they reach the
    WebSocket handler after the handshake, in order, and nothing of them is lost or parsed as HTTP."""
    import os
    import socket
    from rawws import upgrade_request

    def masked(payload):
        mask = os.urandom(4)
        return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    hub = hub_factory("--echo")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(upgrade_request() + masked(b"together") + masked(b"again"))
    data = b""
    expected = b"\x81\x08together\x81\x05again"
    while not data.endswith(expected):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    sock.close()
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 101 Switching Protocols"
    assert frames == expected


def test_an_upgrade_that_waits_behind_an_ingestion_still_gets_the_frames_sent_with_it(hub_factory, redis_server):
    """One connection sends, in one packet: an ingestion, a WebSocket upgrade and a subscribe frame. On Redis the
    ingestion's answer takes a round trip, so the upgrade is handled after the read, once that answer is out; the
    frame that came with it still reaches the WebSocket session after the session has started, and is answered."""
    import json
    import os
    import socket
    import hubclient as hc

    def masked(payload):
        mask = os.urandom(4)
        return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    hub = hub_factory(*hc.SECRET_ARGS, "--redis", redis_server.url)
    body = hc.compact(hc.log_event("behind-ingest", 1))
    headers = "".join(f"{k}: {v}\r\n" for k, v in hc.signed_headers(body).items())
    ingestion = (f"POST /v1/jobs/progress HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body
    upgrade = (f"GET /v1/ws?access_token={hc.mint(['w1'])} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    frame = masked(hc.compact({"op": "subscribe", "id": 7, "workspace": "w1", "execution": "behind-ingest"}))
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(ingestion + upgrade + frame)
    data = b""

    def need(n):
        nonlocal data
        while len(data) < n:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk

    def head():
        nonlocal data
        while b"\r\n\r\n" not in data:
            need(len(data) + 1)
        text, _, data = data.partition(b"\r\n\r\n")
        return text.decode().split("\r\n")

    answer = head()
    assert answer[0] == "HTTP/1.1 202 Accepted"
    length = next(int(line.split(":", 1)[1]) for line in answer if line.lower().startswith("content-length:"))
    need(length)
    assert json.loads(data[:length])["accepted"][0]["seq"] == 1
    data = data[length:]
    assert head()[0] == "HTTP/1.1 101 Switching Protocols"
    need(2)
    assert data[0] == 0x81 and data[1] < 126
    need(2 + data[1])
    reply = json.loads(data[2:2 + data[1]])
    sock.close()
    assert (reply["type"], reply["id"]) == ("subscribed", 7)
