"""Graceful drain: SIGTERM makes a hub stop accepting, send every watcher its reconnect signal (WebSocket close 1012,
SSE `event: reconnect` with `reason: draining`), and exit 0 within --drain-timeout. With Redis the watchers resume on
another hub with no event lost. Waits are blocking reads with timeouts."""
import json
import signal
import socket
import struct
import threading
import time

from websockets.exceptions import ConnectionClosed

import hubclient as hc
from conftest import collect_stderr
from hubclient import Watcher, ingest, mint, open_live_sse, open_sse
from protocol_schemas import validate_ws_server_message
from rawws import RawSocket, http_request

W = hc.SECRET_ARGS
DRAIN_REASON = "hub restarting: reconnect and resume with since"


def sigterm(hub):
    hub.proc.send_signal(signal.SIGTERM)
    return time.monotonic()


def read_ws_until_closed(watcher, seqs):
    """Appends every event's seq until the hub closes the socket; returns (close code, reason)."""
    try:
        while True:
            msg = watcher.recv(timeout=15)
            assert msg["type"] == "event", msg
            seqs.append(msg["seq"])
    except ConnectionClosed:
        close = watcher.ws.protocol.close_rcvd
        return close.code, close.reason


def read_sse_until_reconnect(stream, seqs):
    """Appends every event's seq until `event: reconnect`; returns its data, after checking the body then ends."""
    while True:
        block = stream.next_message()
        assert block is not None, "the stream ended without a reconnect event"
        if block.get("event") == "reconnect":
            assert stream.next() is None  # the body ends right after it
            return block["json"]
        seqs.append(block["json"]["seq"])


def test_sigterm_sends_every_watcher_to_a_second_hub_with_no_event_lost(hub_factory, redis_server):
    """Hubs A and B share a Redis; an engine keeps posting to B. A gets SIGTERM while 3 WebSocket watchers (one
    without compression) and 2 SSE streams watch through it: each gets its signal, resumes on B from its own last
    seq, and ends with every event exactly once, in order. A exits 0 well within its drain deadline."""
    a = hub_factory(*W, "--redis", redis_server.url, "--drain-timeout", "10")
    b = hub_factory(*W, "--redis", redis_server.url)
    a_log, _ = collect_stderr(a), collect_stderr(b)
    token = mint(["w1"])
    total = 200
    ingest(b, [hc.log_event("drain-1", i) for i in range(20)])

    watchers = [Watcher(a, token, timeout=15), Watcher(a, token, timeout=15),
                Watcher(a, token, timeout=15, compression=None)]
    for w in watchers:
        w.subscribe("w1", "drain-1", since=0, expect_seq=20)
    streams = [open_live_sse(a, "w1", "drain-1", token, query="last_event_id=0", timeout=15) for _ in range(2)]
    ws_seqs = [[] for _ in watchers]
    sse_seqs = [[] for _ in streams]

    posted = threading.Event()
    halfway = threading.Event()
    errors = []

    def engine():
        try:
            for i in range(20, total):
                ingest(b, hc.log_event("drain-1", i))
                if i == 60:
                    halfway.set()
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)
        finally:
            halfway.set()
            posted.set()

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()
    assert halfway.wait(30)
    started = sigterm(a)

    # Every WebSocket watcher: events, then close 1012 with the documented reason.
    for w, seqs in zip(watchers, ws_seqs):
        assert read_ws_until_closed(w, seqs) == (1012, DRAIN_REASON)
    # Every SSE stream: events, then `reconnect` naming the last one it wrote.
    for s, seqs in zip(streams, sse_seqs):
        info = read_sse_until_reconnect(s, seqs)
        assert info == {"reason": "draining", "last_event_id": seqs[-1]}
        s.close()
    assert a.proc.wait(timeout=15) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"the drain took {elapsed:.1f} s, beyond its 10 s deadline"
    assert a_log.wait_for(lambda l: "drained" in l and "forced=0" in l)

    # Each resumes on B from its own last seq.
    for seqs in ws_seqs:
        w = Watcher(b, token, timeout=15)
        w.subscribe("w1", "drain-1", since=seqs[-1])
        while seqs[-1] < total:
            msg = w.recv()
            assert msg["type"] == "event", msg
            seqs.append(msg["seq"])
        w.close()
    for seqs in sse_seqs:
        s = open_sse(b, "w1", "drain-1", token, headers={"Last-Event-ID": str(seqs[-1])}, timeout=15)
        assert s.status == 200 and s.next() == {"retry": 3000}
        while seqs[-1] < total:
            seqs.append(s.next_message()["json"]["seq"])
        s.close()
    assert posted.wait(60) and not errors, errors
    for seqs in ws_seqs + sse_seqs:
        assert seqs == list(range(1, total + 1))


def test_drain_deadline_closes_a_peer_that_never_answers_and_still_exits_0(hub_factory):
    """A WebSocket peer that never reads holds its close handshake open (close timeout 30 s); the drain deadline (2 s)
    closes it, and the hub exits 0. An idle keep-alive HTTP connection is closed at once."""
    hub = hub_factory(*W, "--drain-timeout", "2", "--close-timeout", "30")
    log = collect_stderr(hub)
    token = mint(["w1"])
    deaf = RawSocket(hub.host, hub.port, path=f"/v1/ws?access_token={token}", timeout=15)
    assert deaf.status == "HTTP/1.1 101 Switching Protocols"
    deaf.send_frame(0x1, hc.compact({"op": "subscribe", "id": 1, "workspace": "w1", "execution": "e1"}))
    opcode, payload, _ = deaf.read_frame()
    assert validate_ws_server_message(json.loads(payload))["type"] == "subscribed"
    idle = socket.create_connection((hub.host, hub.port), timeout=15)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    response = b""
    while not response.endswith(b'{"status":"ok"}\n'):
        response += idle.recv(4096)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" not in response.lower()

    started = sigterm(hub)
    assert idle.recv(1) == b""  # closed by the drain, long before the deadline
    idle_closed = time.monotonic() - started
    assert hub.proc.wait(timeout=15) == 0
    elapsed = time.monotonic() - started
    assert idle_closed < 1.9  # before the deadline
    assert 1.9 <= elapsed < 10, elapsed
    assert log.wait_for(lambda l: "drain deadline passed" in l and "connections=1" in l)
    # The deaf peer, reading at last: the close frame 1012, then the end of the connection.
    opcode, payload, _ = deaf.read_frame()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1012 and payload[2:].decode() == DRAIN_REASON
    assert deaf.read_eof()
    deaf.close()
    idle.close()


def test_drain_closes_a_connection_that_has_sent_nothing_at_once(hub_factory):
    """A connection accepted before the drain that has not sent a byte has no request to finish: the drain closes it
    at once (not at its request deadline, 60 s away), and the hub exits 0."""
    hub = hub_factory(*W, "--request-timeout", "60", "--drain-timeout", "20")
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    # The hub has accepted it (an answered request on a second connection comes after the accept of the first).
    status, _, _, _ = http_request(hub.host, hub.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == "HTTP/1.1 200 OK"
    started = sigterm(hub)
    assert sock.recv(1) == b""
    sock.close()
    assert hub.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10


def test_drain_with_no_connections_exits_at_once_and_sigint_drains_too(hub_factory):
    hub = hub_factory(*W, "--drain-timeout", "20")
    log = collect_stderr(hub)
    started = time.monotonic()
    hub.proc.send_signal(signal.SIGINT)
    assert hub.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10  # far from the 20 s deadline: nothing to wait for
    assert log.wait_for(lambda l: "signal received: draining" in l and "signal=SIGINT" in l)


def test_sse_and_websocket_on_the_embedded_broker_get_their_signal(hub_factory):
    hub = hub_factory(*W, "--drain-timeout", "10")
    token = mint(["w1"])
    ingest(hub, [hc.log_event("drain-2", i) for i in range(3)])
    w = Watcher(hub, token)
    w.subscribe("w1", "drain-2", since=1, expect_seq=3)
    s = open_live_sse(hub, "w1", "drain-2", token, query="last_event_id=2")
    assert [e["seq"] for e in w.events(2)] == [2, 3]
    assert s.next_message()["json"]["seq"] == 3
    sigterm(hub)
    seqs = []
    assert read_ws_until_closed(w, seqs) == (1012, DRAIN_REASON) and seqs == []
    assert read_sse_until_reconnect(s, seqs) == {"reason": "draining", "last_event_id": 3} and seqs == []
    assert hub.proc.wait(timeout=15) == 0


def test_an_ingest_in_flight_when_the_drain_begins_gets_its_answer(hub_factory, redis_server):
    """Redis holds the hub's write (CLIENT PAUSE … WRITE) while SIGTERM arrives: the engine's request is not cut off;
    it gets its 202, with Connection: close, and then the hub exits 0."""
    hub = hub_factory(*W, "--redis", redis_server.url, "--redis-timeout", "30", "--drain-timeout", "20")
    log = collect_stderr(hub)
    ingest(hub, hc.log_event("drain-3", 0))
    assert redis_server.cli("CLIENT", "PAUSE", "3000", "WRITE") == "OK"
    answer = {}

    def engine():
        body = hc.compact(hc.log_event("drain-3", 1))
        answer["response"] = hc.post_raw(hub, body, hc.signed_headers(body))

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()
    blocked = lambda: "blocked_clients:1" in redis_server.cli("INFO", "clients")
    deadline = time.monotonic() + 10
    while not blocked():
        assert time.monotonic() < deadline, "the hub's write never reached Redis"
        time.sleep(0.02)
    sigterm(hub)
    assert log.wait_for(lambda l: "draining" in l)
    thread.join(timeout=20)
    status, headers, data = answer["response"]
    assert status == 202 and headers["connection"] == "close", (status, headers, data)
    assert json.loads(data)["accepted"] == [{"execution_id": "drain-3", "workspace_id": "w1", "seq": 2, "duplicate": False}]
    assert hub.proc.wait(timeout=20) == 0
