"""End-to-end tests of the execution stream hub: ingestion over HTTP, delivery over multiplexed WebSocket and SSE.

Every wait is a blocking read with a timeout, never a sleep: a WebSocket subscription is live once its `subscribed`
reply arrived, an SSE stream once its `retry:` preamble arrived, and an event is stored once its POST returned 202.
Every message the hub emits is validated against Protocol/schemas (see hubclient.py and protocol_schemas.py)."""
import datetime
import json
import socket
import struct
import subprocess
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

import hubclient as hc
from conftest import HUB_BIN
from hubclient import Watcher, ingest, mint, open_live_sse, open_sse
from protocol_schemas import validate, validate_ws_server_message
from rawws import RawSocket, http_request, upgrade_request

W = hc.SECRET_ARGS


def ordered(obj):
    """JSON value with every object turned into its list of (key, value) pairs: comparing two of these also
    compares key order (the wire spec fixes it)."""
    if isinstance(obj, dict):
        return [(k, ordered(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [ordered(v) for v in obj]
    return obj


def output_summary(output):
    raw = hc.compact(output)
    preview = raw[:200].decode("utf-8", errors="ignore") + ("…" if len(raw) > 200 else "")
    return {"output_keys": list(output) if isinstance(output, dict) else [], "output_size_bytes": len(raw),
            "output_preview": preview}


def normalized_error(error):
    return {"message": error} if isinstance(error, str) else error


def expected_delivery(posted, seq):
    """The delivered event (wire spec section 2) for an ingested event, without the timestamp when none was sent."""
    kind, data = posted["event"], posted.get("data", {})
    out = {"execution": posted["execution_id"], "workspace": posted["workspace_id"], "seq": seq, "event": kind}
    if "node_key" in posted:
        out["node_key"] = posted["node_key"]
    if "timestamp" in posted:
        out["timestamp"] = posted["timestamp"]
    d = {}
    if kind == "execution.started":
        d["status"] = "running"
        if "workflow" in data:
            d["workflow"] = data["workflow"]
        if "nodes" in data:
            d["nodes"] = [{"key": n["key"], "depends_on": n.get("depends_on", [])} for n in data["nodes"]]
    elif kind == "node.started":
        d["status"] = "running"
        if "attempt" in data:
            d["attempt"] = data["attempt"]
    elif kind == "node.completed":
        d["status"] = data.get("status", "completed")
        d["duration_ms"] = data["duration_ms"]
        if "output" in data:
            d.update(output_summary(data["output"]))
    elif kind == "node.failed":
        d["status"] = "failed"
        d["error"] = normalized_error(data["error"])
        if "duration_ms" in data:
            d["duration_ms"] = data["duration_ms"]
    elif kind == "node.log":
        d["level"] = data.get("level", "info")
        d["message"] = data["message"]
    elif kind == "execution.completed":
        d = {"status": "completed", "total_duration_ms": data["total_duration_ms"], "node_count": data["node_count"]}
    elif kind == "execution.failed":
        d["status"] = "failed"
        d["error"] = normalized_error(data["error"])
        for k in ("total_duration_ms", "failed_node"):
            if k in data:
                d[k] = data[k]
    out["data"] = d
    return out


def assert_delivered(got, posted, seq, received_between=None):
    """`got` is a delivered event (WebSocket message without type, or SSE data): exact fields, exact key order."""
    got = hc.strip_type(got)
    want = expected_delivery(posted, seq)
    if "timestamp" not in posted:
        # Default timestamp: when the hub received the event.
        ts = datetime.datetime.fromisoformat(got["timestamp"].replace("Z", "+00:00")).timestamp()
        if received_between:
            assert received_between[0] - 1 <= ts <= received_between[1] + 1, got["timestamp"]
        want = {**want, "timestamp": got["timestamp"]}
        want = {k: want[k] for k in ("execution", "workspace", "seq", "event", "node_key", "timestamp", "data")
                if k in want}
    assert ordered(got) == ordered(want)


def no_message(watcher, timeout=0.3):
    """True when nothing (but heartbeats) arrives within `timeout` seconds."""
    try:
        msg = watcher.recv(timeout=timeout)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message {msg}")


def error_reply(watcher, code, rid=None):
    msg = watcher.recv()
    want = {"type": "error", "id": rid, "code": code} if rid is not None else {"type": "error", "code": code}
    assert {k: msg.get(k) for k in ("type", "id", "code") if k in want or k in msg} == want, msg
    assert isinstance(msg["message"], str) and msg["message"]
    return msg


# --- 1. multiplexing -------------------------------------------------------------------------------------------------

def script(execution, i, fail):
    """A realistic execution; `i` varies the data so that a mix-up between executions is visible."""
    big_output = {"blob": "é" * 150 + "RAW-OUTPUT-SECRET", "tail": list(range(5))}
    events = [
        hc.exec_event(execution, "execution.started",
                      {"workflow": f"etl-{i}", "nodes": [{"key": "fetch"}, {"key": "load", "depends_on": ["fetch"]}]},
                      timestamp=f"2026-11-25T12:00:0{i}.123Z"),
        hc.node_event(execution, "fetch", "node.started", {"attempt": i + 1}),
        hc.node_event(execution, "fetch", "node.log", {"message": f"{execution}: downloading {i} files"}),
        hc.node_event(execution, "fetch", "node.completed",
                      {"duration_ms": 1500 + i, "output": {"rows": 42 + i, "files": ["a", "b"], "ok": True}}),
        hc.node_event(execution, "load", "node.started", {}),
        hc.node_event(execution, "load", "node.log", {"level": "warning", "message": f"κόσμε slow {i}"}),
        hc.node_event(execution, "load", "node.completed", {"duration_ms": 7 + i, "output": big_output},
                      idempotency_key=f"{execution}-load-done"),
        hc.node_event(execution, "report", "node.completed", {"duration_ms": 0, "status": "skipped"}),
        hc.node_event(execution, "list", "node.completed", {"duration_ms": i, "output": [1, 2, i]}),
        hc.node_event(execution, "notify", "node.failed", {"error": f"smtp down {i}", "duration_ms": 30 + i}),
        hc.node_event(execution, "retry", "node.failed", {"error": {"message": "quota", "code": f"E4{i}"}}),
    ]
    if fail:
        events.append(hc.exec_event(execution, "execution.failed",
                                    {"error": "notify failed", "total_duration_ms": 2100 + i, "failed_node": "notify"}))
    else:
        events.append(hc.exec_event(execution, "execution.completed", {"total_duration_ms": 2000 + i, "node_count": 6}))
    return events


def test_one_websocket_receives_three_interleaved_executions(hub_factory):
    hub = hub_factory(*W)
    executions = ["run-a", "run-b", "run-c"]
    scripts = {e: script(e, i, fail=(e == "run-b")) for i, e in enumerate(executions)}
    steps = len(scripts["run-a"])
    assert output_summary(scripts["run-a"][6]["data"]["output"])["output_preview"].endswith("é…")

    watcher = Watcher(hub, mint())
    for e in executions:
        watcher.subscribe("w1", e, expect_seq=0)

    started = time.time()
    # Steps 0-3: one POST per event, round robin; 4-7: one batch per step holding all three executions;
    # 8-11: one batch of everything left.
    for step in range(4):
        for e in executions:
            assert ingest(hub, scripts[e][step]) == [
                {"execution_id": e, "workspace_id": "w1", "seq": step + 1, "duplicate": False}]
    for step in range(4, 8):
        accepted = ingest(hub, [scripts[e][step] for e in executions])
        assert [(a["execution_id"], a["seq"]) for a in accepted] == [(e, step + 1) for e in executions]
    rest = [scripts[e][step] for step in range(8, steps) for e in executions]
    accepted = ingest(hub, rest)
    assert [(a["execution_id"], a["seq"], a["duplicate"]) for a in accepted] == [
        (e, step + 1, False) for step in range(8, steps) for e in executions]
    finished = time.time()

    raw_frames = []
    received = {e: [] for e in executions}
    for _ in range(steps * len(executions)):
        text = watcher.ws.recv(timeout=5)
        raw_frames.append(text)
        msg = validate_ws_server_message(json.loads(text))
        if msg["type"] == "heartbeat":
            continue
        assert msg["type"] == "event" and msg["workspace"] == "w1", msg
        received[msg["execution"]].append(msg)
    assert no_message(watcher)

    for e in executions:
        assert [m["seq"] for m in received[e]] == list(range(1, steps + 1))
        for seq, (got, posted) in enumerate(zip(received[e], scripts[e]), start=1):
            assert_delivered(got, posted, seq, (started, finished))
    # Spot checks of the summary, spelled out.
    load_done = received["run-b"][6]["data"]
    assert load_done["output_keys"] == ["blob", "tail"]
    assert load_done["output_size_bytes"] == len(hc.compact(scripts["run-b"][6]["data"]["output"])) == 347
    assert load_done["output_preview"] == '{"blob":"' + "é" * 95 + "…"
    assert received["run-a"][3]["data"] == {"status": "completed", "duration_ms": 1500,
                                            "output_keys": ["rows", "files", "ok"], "output_size_bytes": 39,
                                            "output_preview": '{"rows":42,"files":["a","b"],"ok":true}'}
    assert received["run-c"][8]["data"]["output_keys"] == []
    assert received["run-b"][-1]["event"] == "execution.failed"
    # The raw output is never forwarded.
    for text in raw_frames:
        assert "RAW-OUTPUT-SECRET" not in text and '"output"' not in text
    watcher.close()


# --- 2. resume -------------------------------------------------------------------------------------------------------

def post_numbered(hub, execution, first, count, batch=50):
    """Posts node.log events whose message names the seq they must get (first .. first+count-1)."""
    n = first
    while n < first + count:
        k = min(batch, first + count - n)
        accepted = ingest(hub, [hc.node_event(execution, "step", "node.log", {"message": f"{execution} #{n + j}"})
                                for j in range(k)])
        assert [a["seq"] for a in accepted] == list(range(n, n + k))
        n += k


def check_numbered(event, execution, seq):
    assert event["execution"] == execution and event["seq"] == seq, event
    assert event["data"] == {"level": "info", "message": f"{execution} #{seq}"}, event


class Poster(threading.Thread):
    """Posts numbered events from another thread; join() re-raises its failure."""

    def __init__(self, hub, execution, first, count, batch=10):
        super().__init__(daemon=True)
        self.args = (hub, execution, first, count, batch)
        self.error = None

    def run(self):
        try:
            post_numbered(*self.args)
        except BaseException as e:  # noqa: BLE001 - re-raised in join
            self.error = e

    def join(self, timeout=30):
        super().join(timeout)
        assert not self.is_alive(), "poster hung"
        if self.error:
            raise self.error


def test_websocket_resume_gets_exactly_the_missed_events(hub_factory):
    hub = hub_factory(*W)
    ex = "resume-ws"
    token = mint()
    first = Watcher(hub, token)
    first.subscribe("w1", ex, expect_seq=0)  # live only
    post_numbered(hub, ex, 1, 10)
    for seq, event in enumerate(first.events(6), start=1):
        check_numbered(event, ex, seq)
    first.close()  # disconnects mid-execution, having seen 1..6

    post_numbered(hub, ex, 11, 390)  # missed while away: 7..400 are history now
    second = Watcher(hub, token)
    rid = second.op("subscribe", workspace="w1", execution=ex, since=6)
    poster = Poster(hub, ex, 401, 200)  # 401..600 posted while the replay is being sent
    poster.start()
    reply = second.recv()
    assert reply["type"] == "subscribed" and reply["id"] == rid and 400 <= reply["seq"] <= 600, reply
    for seq, event in enumerate(second.events(594), start=7):
        check_numbered(event, ex, seq)
    poster.join()
    assert no_message(second)  # none twice
    second.close()


@pytest.mark.parametrize("resume_by", ["header", "query"])
def test_sse_resume_gets_exactly_the_missed_events(hub_factory, resume_by):
    hub = hub_factory(*W)
    ex = "resume-sse-" + resume_by
    token = mint()
    first = open_live_sse(hub, "w1", ex, token)
    post_numbered(hub, ex, 1, 10)
    for seq in range(1, 7):
        check_numbered(first.next_message()["json"], ex, seq)
    first.close()

    post_numbered(hub, ex, 11, 390)
    poster = Poster(hub, ex, 401, 200)
    poster.start()  # concurrently with the resuming request and its replay
    if resume_by == "header":
        second = open_sse(hub, "w1", ex, token, headers={"Last-Event-ID": "6"})
    else:
        second = open_sse(hub, "w1", ex, token, query="last_event_id=6")
    assert second.status == 200
    assert second.next() == {"retry": 3000}
    for seq in range(7, 601):
        block = second.next_message()
        assert block["id"] == str(seq) and block["event"] == "node.log"
        check_numbered(block["json"], ex, seq)
    poster.join()
    second.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        second.next()  # none twice
    second.close()


def test_resume_in_the_middle_of_a_simulated_execution(hub_factory):
    """`hub simulate` plays a whole execution; a watcher that drops out after 5 events and resumes with since=5
    (WebSocket) and an SSE stream resumed with Last-Event-ID together see exactly what a watcher that stayed saw.
    (A failing simulated execution posts in-flight nodes' results after execution.failed, so the end is taken
    from the simulator's own count, not from the terminal event.)"""
    hub = hub_factory(*W)
    token = mint()
    stayer, dropper = Watcher(hub, token), Watcher(hub, token)
    stayer.subscribe("w1", "sim1", expect_seq=0)
    dropper.subscribe("w1", "sim1", expect_seq=0)
    sim = subprocess.Popen([HUB_BIN, "simulate", "--url", f"http://{hub.host}:{hub.port}", "--engine-secret",
                            hc.ENGINE_SECRET, "--workspace", "w1", "--executions", "1", "--prefix", "sim1",
                            "--speed", "5", "--fail-every", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = dropper.events(5)
        dropper.close()
        again = Watcher(hub, token)
        resumed_at = again.subscribe("w1", "sim1", since=5)["seq"]
        out, err = sim.communicate(timeout=30)
    finally:
        sim.kill()
        sim.wait()
    assert sim.returncode == 0, err
    total = int(out.strip().splitlines()[-1].split()[1])  # "sent N events"
    assert 25 <= total <= 60
    assert resumed_at < total, "the watcher resumed after the execution ended"
    seen += again.events(total - 5)
    everything = stayer.events(total)
    assert [m["seq"] for m in everything] == list(range(1, total + 1))
    assert everything[0]["event"] == "execution.started"
    assert "execution.failed" in [m["event"] for m in everything]  # --fail-every 1
    assert seen == everything
    assert no_message(again) and no_message(stayer)

    sse = open_sse(hub, "w1", "sim1", token, headers={"Last-Event-ID": "5"})
    assert sse.next() == {"retry": 3000}
    for m in everything[5:]:
        block = sse.next_message()
        assert ordered(block["json"]) == ordered(hc.strip_type(m))
    sse.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        sse.next()
    sse.close()


# --- 3. truncated replay ---------------------------------------------------------------------------------------------

def test_replay_truncated_when_history_no_longer_reaches_back(hub_factory):
    hub = hub_factory(*W, "--max-events-per-execution", "5")
    ex = "trunc"
    post_numbered(hub, ex, 1, 8)  # history keeps 4..8
    token = mint()

    watcher = Watcher(hub, token)
    watcher.subscribe("w1", ex, since=1, expect_seq=8)
    assert ordered(watcher.recv()) == ordered(
        {"type": "replay.truncated", "workspace": "w1", "execution": ex, "since": 1, "first_seq": 4})
    for seq, event in enumerate(watcher.events(5), start=4):
        check_numbered(event, ex, seq)
    post_numbered(hub, ex, 9, 1)  # then live
    check_numbered(watcher.events(1)[0], ex, 9)
    assert no_message(watcher)

    # since=4 still reaches back (5 is the oldest event kept after 9 arrived): no notice.
    exact = Watcher(hub, token)
    exact.subscribe("w1", ex, since=4, expect_seq=9)
    for seq, event in enumerate(exact.events(5), start=5):
        check_numbered(event, ex, seq)
    assert no_message(exact)

    sse = open_sse(hub, "w1", ex, token, headers={"Last-Event-ID": "2"})
    assert sse.next() == {"retry": 3000}
    block = sse.next_message()
    assert block == {"event": "replay.truncated",
                     "data": '{"workspace":"w1","execution":"trunc","since":2,"first_seq":5}',
                     "json": {"workspace": "w1", "execution": "trunc", "since": 2, "first_seq": 5}}
    for seq in range(5, 10):
        check_numbered(sse.next_message()["json"], ex, seq)
    sse.close()


# --- 4. authentication and authorization -----------------------------------------------------------------------------

BAD_TOKENS = [
    ("malformed", lambda: "not-a-jwt", 401, "invalid_token"),
    ("bad_signature", lambda: mint(secret="some-other-secret-0123456789"), 401, "invalid_token"),
    ("tampered", lambda: mint().rsplit(".", 2)[0] + "." + hc.b64url(hc.compact(
        {"sub": "alice", "workspaces": ["w1", "w2"], "exp": int(time.time()) + 600})) + "." + mint().rsplit(".", 1)[1],
     401, "invalid_token"),
    ("expired", lambda: mint(ttl=-30), 401, "token_expired"),
    ("alg_none", lambda: mint(header={"alg": "none", "typ": "JWT"}, sign=False), 401, "unsupported_alg"),
    ("alg_hs512", lambda: mint(header={"alg": "HS512", "typ": "JWT"}), 401, "unsupported_alg"),
]


def test_sse_refuses_bad_tokens_with_documented_codes(hub_factory):
    hub = hub_factory(*W)
    cases = [(name, make(), status, code) for name, make, status, code in BAD_TOKENS]
    cases.append(("foreign_workspace", mint(workspaces=["w2"]), 403, "forbidden"))
    for name, token, status, code in cases:
        for how in ("bearer", "query", "cookie"):
            headers, query = {}, ""
            if how == "bearer":
                headers["Authorization"] = f"Bearer {token}"
            elif how == "query":
                query = f"access_token={token}"
            else:
                headers["Cookie"] = f"theme=dark; hub_token={token}"
            s = open_sse(hub, "w1", "e1", query=query, headers=headers)
            assert s.status == status, (name, how, s.status_line)
            assert s.headers["content-type"] == "application/json"
            hc.error_body(s.read_body(), code)
            s.close()
    s = open_sse(hub, "w1", "e1")
    assert s.status == 401
    hc.error_body(s.read_body(), "unauthenticated")
    s.close()
    # The same three ways with a good token are accepted.
    good = mint(workspaces=["w2", "w1"])
    for headers, query in (({"Authorization": f"Bearer {good}"}, ""), ({}, f"access_token={good}"),
                           ({"Cookie": f"hub_token={good}"}, "")):
        s = open_sse(hub, "w1", "e1", query=query, headers=headers)
        assert s.status == 200 and s.next() == {"retry": 3000}
        s.close()


def test_websocket_url_token_refused_before_upgrade(hub_factory):
    hub = hub_factory(*W)
    for name, make, status, code in BAD_TOKENS:
        status_line, headers, body, closed = http_request(
            hub.host, hub.port, upgrade_request(path="/v1/ws?access_token=" + make()))
        assert status_line == "HTTP/1.1 401 Unauthorized", name
        assert "upgrade" not in headers and "sec-websocket-accept" not in headers
        hc.error_body(body, code)
        assert closed is True
    # A foreign-workspace token is a valid token: the upgrade succeeds, the subscription is forbidden.
    watcher = Watcher(hub, mint(workspaces=["w2"]))
    rid = watcher.op("subscribe", workspace="w1", execution="e1")
    error_reply(watcher, "forbidden", rid)
    watcher.close()


def test_websocket_auth_op(hub_factory, on_redis):
    hub = hub_factory(*W)
    # With Redis an execution id belongs to one workspace, so the w2 execution gets an id of its own there.
    w2_execution = "e1-of-w2" if on_redis else "e1"
    watcher = Watcher(hub)  # no token yet
    rid = watcher.op("subscribe", workspace="w1", execution="e1")
    error_reply(watcher, "unauthenticated", rid)
    for name, make, status, code in BAD_TOKENS:
        rid = watcher.op("auth", token=make())
        error_reply(watcher, code, rid)
    exp = int(time.time()) + 600
    rid = watcher.op("auth", token=mint(workspaces=["w1"], sub="alice", exp=exp))
    assert ordered(watcher.recv()) == ordered(
        {"type": "authenticated", "id": rid, "sub": "alice", "workspaces": ["w1"], "expires_at": exp})
    rid = watcher.op("subscribe", workspace="w2", execution="e1")
    error_reply(watcher, "forbidden", rid)
    watcher.subscribe("w1", "e1", expect_seq=0)
    # A bad re-auth changes nothing; the subscription still delivers.
    rid = watcher.op("auth", token=mint(ttl=-5))
    error_reply(watcher, "token_expired", rid)
    ingest(hub, hc.log_event("e1", 1))
    assert watcher.events(1)[0]["seq"] == 1

    # Re-auth with a token for w2 only ends the w1 subscription with reason forbidden.
    rid = watcher.op("auth", token=mint(workspaces=["w2"], sub="bob", exp=exp))
    replies = [watcher.recv(), watcher.recv()]
    replies.sort(key=lambda m: m["type"])
    assert ordered(replies) == ordered([
        {"type": "authenticated", "id": rid, "sub": "bob", "workspaces": ["w2"], "expires_at": exp},
        {"type": "unsubscribed", "workspace": "w1", "execution": "e1", "reason": "forbidden"}])
    watcher.subscribe("w2", w2_execution, expect_seq=0)
    ingest(hub, hc.log_event("e1", 2))  # w1/e1 seq 2: no longer delivered
    ingest(hub, hc.log_event(w2_execution, 3, workspace="w2"))
    event = watcher.events(1)[0]
    assert (event["workspace"], event["execution"], event["seq"]) == ("w2", w2_execution, 1)
    assert no_message(watcher)
    watcher.close()


def test_same_execution_id_in_two_workspaces_is_isolated(hub_factory, on_redis):
    hub = hub_factory(*W)
    w1, w2 = Watcher(hub, mint(workspaces=["w1"])), Watcher(hub, mint(workspaces=["w2"]))
    w1.subscribe("w1", "shared", expect_seq=0)
    w2.subscribe("w2", "shared", expect_seq=0)
    sse1 = open_live_sse(hub, "w1", "shared", mint(workspaces=["w1"]))
    if on_redis:
        # With Redis the id belongs to the workspace that reported it first; the other's events are refused (409)
        # and its watchers of that id receive nothing.
        accepted = ingest(hub, [hc.log_event("shared", 200, workspace="w1"), hc.log_event("shared", 500, workspace="w1")])
        assert [(a["workspace_id"], a["seq"]) for a in accepted] == [("w1", 1), ("w1", 2)]
        body = hc.compact(hc.log_event("shared", 100, workspace="w2"))
        status, _, data = hc.post_raw(hub, body, hc.signed_headers(body))
        assert status == 409
        hc.error_body(data, "execution_conflict", field="execution_id")
        assert [e["seq"] for e in w1.events(2)] == [1, 2]
        assert [sse1.next_message()["json"]["seq"] for _ in range(2)] == [1, 2]
        assert no_message(w2)
        sse1.close()
        return

    posted = [hc.log_event("shared", 100, workspace="w2"), hc.log_event("shared", 200, workspace="w1"),
              hc.log_event("shared", 300, workspace="w2"), hc.log_event("shared", 400, workspace="w2"),
              hc.log_event("shared", 500, workspace="w1")]
    accepted = ingest(hub, posted)
    assert [(a["workspace_id"], a["seq"]) for a in accepted] == [("w2", 1), ("w1", 1), ("w2", 2), ("w2", 3), ("w1", 2)]
    for seq, (event, p) in enumerate(zip(w2.events(3), [posted[0], posted[2], posted[3]]), start=1):
        assert_delivered(event, p, seq)
    # w2's events have been fanned out by now; a fence on w1 must come right after w1's own two.
    fence = hc.log_event("shared", 600, workspace="w1")
    ingest(hub, fence)
    for seq, (event, p) in enumerate(zip(w1.events(3), [posted[1], posted[4], fence]), start=1):
        assert_delivered(event, p, seq)
    for seq, p in enumerate([posted[1], posted[4], fence], start=1):
        assert_delivered(sse1.next_message()["json"], p, seq)
    assert no_message(w1)
    # Replays are per workspace too.
    replay = Watcher(hub, mint(workspaces=["w1", "w2"]))
    replay.subscribe("w1", "shared", since=0, expect_seq=3)
    assert [(e["workspace"], e["seq"]) for e in replay.events(3)] == [("w1", 1), ("w1", 2), ("w1", 3)]
    assert no_message(replay)
    sse1.close()


# --- 5. origin allow-list --------------------------------------------------------------------------------------------

def test_origin_allow_list(hub_factory):
    hub = hub_factory(*W, "--allowed-origin", "https://app.example")
    token = mint()
    for origin in ("https://evil.example", "http://app.example", "https://app.example.evil.example"):
        status_line, headers, body, closed = http_request(
            hub.host, hub.port,
            upgrade_request(path=f"/v1/ws?access_token={token}", extra=f"Origin: {origin}\r\n".encode()))
        assert status_line == "HTTP/1.1 403 Forbidden", origin
        hc.error_body(body, "origin_not_allowed")
        assert closed is True
        s = open_sse(hub, "w1", "e1", token, headers={"Origin": origin})
        assert s.status == 403, origin
        hc.error_body(s.read_body(), "origin_not_allowed")
        s.close()
    for kw in ({"origin": "https://app.example"}, {}):  # the allowed origin, and no Origin (non-browser client)
        watcher = Watcher(hub, token, **kw)
        watcher.subscribe("w1", "e1", expect_seq=0)
        watcher.close()
    for headers in ({"Origin": "https://app.example"}, {}):
        s = open_live_sse(hub, "w1", "e1", token, headers=headers)
        s.close()


# --- 6. SSE ----------------------------------------------------------------------------------------------------------

def test_sse_headers_preamble_and_heartbeat(hub_factory):
    hub = hub_factory(*W, "--heartbeat", "0.3")
    s = open_sse(hub, "w1", "e1", mint())
    assert s.status_line == "HTTP/1.1 200 OK"
    assert s.headers == {"content-type": "text/event-stream", "cache-control": "no-cache",
                         "x-accel-buffering": "no", "connection": "close"}
    assert s.next() == {"retry": 3000}
    assert s.raw_body.startswith(b"retry: 3000\n\n")
    started = time.monotonic()
    assert s.next() == {"comment": "heartbeat"}
    assert time.monotonic() - started < 3
    ingest(hub, hc.log_event("e1", 1))
    block = s.next_message()
    assert block["id"] == "1" and block["event"] == "node.log"
    assert s.next() == {"comment": "heartbeat"}
    assert b": heartbeat\n\n" in s.raw_body
    s.close()


def release(stream):
    """Closes a stream from the client side and waits (blocking read) until the hub closed it too."""
    stream.sock.shutdown(socket.SHUT_WR)
    while stream.sock.recv(65536):
        pass
    stream.close()


def test_sse_streams_per_workspace_are_capped(hub_factory):
    hub = hub_factory(*W, "--max-sse-per-workspace", "5", "--heartbeat", "0.2")
    token = mint(workspaces=["w1", "w2"])
    streams = [open_live_sse(hub, "w1", f"e{i}", token) for i in range(5)]
    sixth = open_sse(hub, "w1", "e1", token)
    assert sixth.status_line == "HTTP/1.1 429 Too Many Requests"
    assert sixth.headers["retry-after"] == "5"
    assert sixth.headers["content-type"] == "application/json"
    hc.error_body(sixth.read_body(), "too_many_streams")
    sixth.close()
    other = open_live_sse(hub, "w2", "e1", token)  # the cap is per workspace

    # A client closes one stream: a new one is accepted once the hub has processed that close. The hub frees
    # the place when the closed channel goes inactive, which may be just after the client saw EOF, so a refusal
    # is retried after a heartbeat has gone by on another stream (a blocking read, at most 5 times).
    release(streams.pop(0))
    for _ in range(5):
        again = open_sse(hub, "w1", "e1", token)
        if again.status == 200:
            break
        assert again.status == 429
        hc.error_body(again.read_body(), "too_many_streams")
        again.close()
        assert streams[0].next() == {"comment": "heartbeat"}
    else:
        pytest.fail("the place of a closed stream was never freed")
    assert again.next() == {"retry": 3000}
    seventh = open_sse(hub, "w1", "e9", token)
    assert seventh.status == 429
    hc.error_body(seventh.read_body(), "too_many_streams")
    for s in streams + [again, other, seventh]:
        s.close()


def test_sse_reconnect_after_max_connection_age_is_accepted_at_the_cap(hub_factory):
    """When the hub ends a stream with `event: reconnect`, the EventSource's reconnection must not be refused
    as too_many_streams: the place is free by the time the reconnect event arrives."""
    hub = hub_factory(*W, "--max-sse-per-workspace", "1", "--max-connection-age", "1")
    token = mint()
    first = open_live_sse(hub, "w1", "e1", token)
    refused = open_sse(hub, "w1", "e2", token)
    assert refused.status == 429
    hc.error_body(refused.read_body(), "too_many_streams")
    refused.close()
    assert first.next_message()["json"] == {"reason": "max_connection_age", "last_event_id": 0}
    again = open_live_sse(hub, "w1", "e1", token, headers={"Last-Event-ID": "0"})
    assert first.next() is None
    first.close()
    refused = open_sse(hub, "w1", "e2", token)
    assert refused.status == 429
    hc.error_body(refused.read_body(), "too_many_streams")
    refused.close()
    again.close()


def test_sse_ends_with_reconnect_at_max_connection_age(hub_factory):
    hub = hub_factory(*W, "--max-connection-age", "1.5", "--heartbeat", "0.3")
    started = time.monotonic()
    s = open_live_sse(hub, "w1", "aged", mint(), timeout=5)
    post_numbered(hub, "aged", 1, 3)
    for seq in range(1, 4):
        check_numbered(s.next_message()["json"], "aged", seq)
    block = s.next_message()  # heartbeats skipped
    assert block == {"event": "reconnect", "data": '{"reason":"max_connection_age","last_event_id":3}',
                     "json": {"reason": "max_connection_age", "last_event_id": 3}}
    assert 1.3 <= time.monotonic() - started < 5
    assert s.next() is None  # EOF right after
    assert s.raw_body.endswith(b'event: reconnect\ndata: {"reason":"max_connection_age","last_event_id":3}\n\n')
    s.close()


# --- 7. WebSocket ops ------------------------------------------------------------------------------------------------

def test_websocket_heartbeat_message(hub_factory):
    hub = hub_factory(*W, "--heartbeat", "0.3")
    watcher = Watcher(hub, mint())
    started = time.monotonic()
    assert watcher.recv(timeout=3, skip_heartbeats=False) == {"type": "heartbeat"}
    assert watcher.recv(timeout=3, skip_heartbeats=False) == {"type": "heartbeat"}
    assert time.monotonic() - started < 3
    watcher.close()


def test_websocket_op_errors_caps_and_unsubscribe(hub_factory):
    hub = hub_factory(*W, "--max-subscriptions", "2")
    watcher = Watcher(hub, mint())
    watcher.subscribe("w1", "a", expect_seq=0)
    rid = watcher.op("subscribe", workspace="w1", execution="a")
    error_reply(watcher, "already_subscribed", rid)
    watcher.subscribe("w1", "b", expect_seq=0)
    rid = watcher.op("subscribe", workspace="w1", execution="c")
    error_reply(watcher, "too_many_subscriptions", rid)
    rid = watcher.op("unsubscribe", workspace="w1", execution="c")
    error_reply(watcher, "not_subscribed", rid)
    rid = watcher.op("dance", workspace="w1")
    error_reply(watcher, "unknown_op", rid)
    watcher.ws.send("this is not json")
    error_reply(watcher, "invalid_message")
    watcher.ws.send(b'{"op":"subscribe","id":77,"workspace":"w1","execution":"d"}')  # a binary frame
    error_reply(watcher, "invalid_message")
    watcher.ws.send("[1,2,3]")
    error_reply(watcher, "invalid_message")
    watcher.send({"op": "subscribe", "id": 41, "workspace": "w1"})
    error_reply(watcher, "invalid_message", 41)
    watcher.send({"op": "subscribe", "id": 42, "workspace": "w1", "execution": "c", "since": -1})
    error_reply(watcher, "invalid_message", 42)
    watcher.send({"op": "subscribe", "id": 43, "workspace": "w1", "execution": "bad id!"})
    error_reply(watcher, "invalid_message", 43)

    rid = watcher.op("unsubscribe", workspace="w1", execution="a")
    assert ordered(watcher.recv()) == ordered({"type": "unsubscribed", "id": rid, "workspace": "w1", "execution": "a"})
    ingest(hub, hc.log_event("a", 1))  # no longer delivered
    ingest(hub, hc.log_event("b", 1))
    event = watcher.events(1)[0]
    assert (event["execution"], event["seq"]) == ("b", 1)
    watcher.subscribe("w1", "c", expect_seq=0)  # the freed slot can be used again
    rid = watcher.op("subscribe", workspace="w1", execution="a", since=0)
    error_reply(watcher, "too_many_subscriptions", rid)
    assert no_message(watcher)
    watcher.close()


def test_websocket_closes_1001_at_max_connection_age(hub_factory):
    hub = hub_factory(*W, "--max-connection-age", "1.5")
    watcher = Watcher(hub, mint())
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        watcher.recv(timeout=5)
    assert 1.3 <= time.monotonic() - started < 5
    assert watcher.ws.protocol.close_rcvd.code == 1001
    assert watcher.ws.protocol.close_rcvd.reason == "max connection age"



def test_websocket_closes_4401_when_its_token_expires_unless_a_new_token_came(hub_factory):
    """At the token's exp the hub sends token_expired and closes with 4401; a watcher that sent `auth` with a fresh
    token before its own exp stays open and keeps its subscription."""
    hub = hub_factory(*W)
    renewed = Watcher(hub, mint(ttl=2))  # its first token's close would come about a second before `expiring`'s
    renewed.subscribe("w1", "e1", expect_seq=0)
    rid = renewed.op("auth", token=mint(ttl=3600))
    reply = renewed.recv()
    assert (reply["type"], reply["id"]) == ("authenticated", rid), reply
    expiring = Watcher(hub, mint(ttl=4))
    expiring.subscribe("w1", "e1", expect_seq=0)
    started = time.monotonic()
    error_reply(expiring, "token_expired")
    with pytest.raises(ConnectionClosed):
        expiring.recv(timeout=5)
    assert 2 <= time.monotonic() - started < 6
    assert (expiring.ws.protocol.close_rcvd.code, expiring.ws.protocol.close_rcvd.reason) == (4401, "token expired")
    ingest(hub, hc.log_event("e1", 1))
    event = renewed.events(1)[0]
    assert (event["execution"], event["seq"]) == ("e1", 1)
    assert no_message(renewed)
    renewed.close()

# --- 8. slow subscriber ----------------------------------------------------------------------------------------------

def ws_json_frames(raw):
    """Reads text frames from a RawSocket until a close frame; returns (messages, close code, close reason)."""
    messages = []
    while True:
        opcode, payload, _ = raw.read_frame()
        if opcode == 0x1:
            messages.append(validate_ws_server_message(json.loads(payload)))
        elif opcode == 0x9:
            continue
        else:
            assert opcode == 0x8, opcode
            return messages, struct.unpack("!H", payload[:2])[0], payload[2:].decode()


BUDGET = 65536


def run_slow_consumer(hub_factory):
    """A raw-socket watcher with a tiny receive buffer that never reads, and a fast watcher, on one execution;
    700 node.log events of 8000 bytes (5.6 MB: beyond the budget plus what the kernel buffers on loopback).
    Returns (hub, token, messages by seq, total, what the slow one got, its close code and reason)."""
    hub = hub_factory(*W, "--outbound-budget", str(BUDGET), "--close-timeout", "20")
    token = mint()
    slow = RawSocket(hub.host, hub.port, path=f"/v1/ws?access_token={token}", rcvbuf=4096, timeout=10)
    assert slow.status == "HTTP/1.1 101 Switching Protocols"
    slow.send_frame(0x1, hc.compact({"op": "subscribe", "id": 1, "workspace": "w1", "execution": "firehose"}))
    opcode, payload, _ = slow.read_frame()
    assert opcode == 0x1
    assert ordered(validate_ws_server_message(json.loads(payload))) == ordered(
        {"type": "subscribed", "id": 1, "workspace": "w1", "execution": "firehose", "seq": 0})
    fast = Watcher(hub, token, timeout=10)
    fast.subscribe("w1", "firehose", expect_seq=0)

    total, message_size = 700, 8000
    messages = {}
    n = 1
    while n <= total:
        batch = []
        for seq in range(n, min(n + 50, total + 1)):
            messages[seq] = (f"#{seq} " + "x" * message_size)[:message_size]
            batch.append(hc.node_event("firehose", "step", "node.log", {"level": "debug", "message": messages[seq]}))
        accepted = ingest(hub, batch)
        assert [a["seq"] for a in accepted] == list(range(n, n + len(batch)))
        n += len(batch)
        # The fast watcher keeps up as we go, every event in order.
        for seq, event in enumerate(fast.events(len(batch)), start=accepted[0]["seq"]):
            assert event["seq"] == seq
            assert event["data"] == {"level": "debug", "message": messages[seq]}
    assert no_message(fast)
    fast.close()
    # Now the slow one reads: what was queued before the budget ran out, then the close frame.
    got, code, reason = ws_json_frames(slow)
    slow.send_frame(0x8, struct.pack("!H", 1000))
    assert slow.read_eof()
    slow.close()
    return hub, token, messages, total, got, code, reason


def test_slow_subscriber_is_closed_1013_while_a_fast_one_gets_everything(hub_factory):
    hub, token, messages, total, got, code, reason = run_slow_consumer(hub_factory)
    assert (code, reason) == (1013, "slow consumer: outbound budget exceeded")
    metrics = hc.scrape(hub)
    assert metrics["hub_slow_consumer_disconnects_total{transport=websocket}"] == 1
    assert metrics["hub_slow_consumer_disconnects_total{transport=sse}"] == 0
    assert all(m["type"] == "event" for m in got)
    assert 0 < len(got) < total
    assert [m["seq"] for m in got] == list(range(1, len(got) + 1))
    for m in got:
        assert m["data"] == {"level": "debug", "message": messages[m["seq"]]}


def test_readers_that_fall_behind_and_catch_up_again_get_every_event_once_in_order(hub_factory):
    """A WebSocket and an SSE reader with 4 KB receive buffers stop reading while 4.8 MB of events are delivered (more
    than the kernel buffers on loopback, less than the 16 MB budget, so the hub holds the rest in user space and the
    readers are not cut off), then read everything; two rounds. The hub writes a connection's socket directly only
    while it holds none of its bytes: a write that went ahead of held bytes would reorder the stream."""
    hub = hub_factory(*W, "--outbound-budget", str(16 * 1024 * 1024))
    token = mint()
    ws = RawSocket(hub.host, hub.port, path=f"/v1/ws?access_token={token}", rcvbuf=4096, timeout=15)
    assert ws.status == "HTTP/1.1 101 Switching Protocols"
    ws.send_frame(0x1, hc.compact({"op": "subscribe", "id": 1, "workspace": "w1", "execution": "lag"}))
    opcode, payload, _ = ws.read_frame()
    assert (opcode, json.loads(payload)["type"]) == (0x1, "subscribed")
    sse = open_live_sse(hub, "w1", "lag", token, timeout=15, rcvbuf=4096)
    messages = {}
    seq = 0
    for round_ in range(2):
        first = seq + 1
        for _ in range(12):
            batch = []
            for _ in range(50):
                seq += 1
                messages[seq] = (f"#{seq} " + "z" * 8000)[:8000]
                batch.append(hc.node_event("lag", "step", "node.log", {"level": "debug", "message": messages[seq]}))
            assert [a["seq"] for a in ingest(hub, batch)] == list(range(seq - 49, seq + 1))
        got = []
        while len(got) < seq - first + 1:
            opcode, payload, _ = ws.read_frame()
            if opcode == 0x9:
                continue
            assert opcode == 0x1, (round_, opcode, payload[:80])
            message = validate_ws_server_message(json.loads(payload))
            if message["type"] != "heartbeat":
                got.append(message)
        assert [m["seq"] for m in got] == list(range(first, seq + 1)), round_
        assert all(m["data"]["message"] == messages[m["seq"]] for m in got)
        streamed = [sse.next_message()["json"] for _ in range(seq - first + 1)]
        assert [m["seq"] for m in streamed] == list(range(first, seq + 1)), round_
        assert all(m["data"]["message"] == messages[m["seq"]] for m in streamed)
    metrics = hc.scrape(hub)
    assert metrics["hub_slow_consumer_disconnects_total{transport=websocket}"] == 0
    assert metrics["hub_slow_consumer_disconnects_total{transport=sse}"] == 0
    ws.close()
    sse.close()


def resume_until_done(hub, token, execution, since, total, max_rounds=100, **watcher_options):
    """Resubscribes with `since` = the last seq seen until `total` is reached, reconnecting after a 1013 close
    (which the spec allows while the hub's outbound budget is exceeded). Every subscribe op must get exactly one
    `subscribed`, and the events must continue exactly where the previous round stopped. Returns the rounds used."""
    last = since
    for rounds in range(1, max_rounds + 1):
        watcher = Watcher(hub, token, timeout=10, **watcher_options)
        reply = watcher.subscribe("w1", execution, since=last, expect_seq=total)
        try:
            while last < total:
                msg = watcher.recv()
                assert msg["type"] == "event", f"after seq {last} (round {rounds}, {reply}): {msg}"
                assert msg["seq"] == last + 1, f"round {rounds}: expected seq {last + 1}, got {msg['seq']}"
                last = msg["seq"]
                yield msg
        except ConnectionClosed:
            assert watcher.ws.protocol.close_rcvd.code == 1013
            continue
        assert no_message(watcher)
        watcher.close()
        return
    raise AssertionError(f"no progress to seq {total} in {max_rounds} rounds (stuck at {last})")


def test_slow_subscriber_resumes_with_since_and_gets_the_rest(hub_factory):
    hub, token, messages, total, got, code, reason = run_slow_consumer(hub_factory)
    assert code == 1013
    k = len(got)
    # A reader that keeps reading catches up on the whole backlog on its first reconnection.
    for event in resume_until_done(hub, token, "firehose", k, total, max_rounds=1, compression=None):
        assert event["data"]["message"] == messages[event["seq"]]


def test_websocket_replay_larger_than_the_budget_is_delivered_once(hub_factory):
    """12 stored events of 8 KB (96 KB) and a 64 KB budget; a fast watcher (no compression) subscribes with
    since=0: the replay is paced by the reader, not counted as live backlog, so it arrives whole, once, on one
    connection."""
    hub = hub_factory(*W, "--outbound-budget", str(BUDGET))
    ingest(hub, [hc.node_event("big", "step", "node.log", {"message": f"#{n} " + "x" * 7990}) for n in range(1, 13)])
    # Without permessage-deflate, so that the replay's wire size (about 97 KB) is what the budget sees.
    seqs = [event["seq"] for event in resume_until_done(hub, mint(), "big", 0, 12, max_rounds=1, compression=None)]
    assert seqs == list(range(1, 13))


def test_sse_replay_larger_than_the_budget_gets_a_response(hub_factory):
    """12 stored events of 8 KB and a 64 KB budget; GET the stream with Last-Event-ID: 0: 200, retry, then the
    whole replay on the first connection."""
    hub = hub_factory(*W, "--outbound-budget", str(BUDGET))
    ingest(hub, [hc.node_event("big", "step", "node.log", {"message": f"#{n} " + "x" * 7990}) for n in range(1, 13)])
    token = mint()
    last = 0
    for _ in range(1):
        s = open_sse(hub, "w1", "big", token, headers={"Last-Event-ID": str(last)})
        assert s.status == 200 and s.next() == {"retry": 3000}
        while last < 12:
            block = s.next_message()
            if block is None:
                break
            assert int(block["id"]) == last + 1
            last += 1
        s.close()
        if last == 12:
            return
    raise AssertionError(f"stuck at {last}")


# --- 9. ingestion ----------------------------------------------------------------------------------------------------

def refused(hub, body, status, code, field=None, headers=None, method="POST"):
    h = hc.signed_headers(body) if headers is None else headers
    got_status, got_headers, data = hc.post_raw(hub, body, h, method=method)
    assert got_status == status, (got_status, data)
    assert got_headers["content-type"] == "application/json"
    hc.error_body(data, code, field)
    return got_headers


def test_ingestion_refusals(hub_factory):
    hub = hub_factory(*W, "--max-ingest-bytes", "2048")
    ex = "refused"
    good = hc.compact(hc.exec_event(ex, "execution.started"))
    now = int(time.time())

    refused(hub, b'{"event": "node.log",', 400, "invalid_json")
    refused(hub, hc.compact(hc.node_event(ex, "a", "node.completed", {"status": "completed"})),
            400, "invalid_event", "data.duration_ms")
    refused(hub, hc.compact({"events": [hc.node_event(ex, "a", "node.completed", {"duration_ms": 1}),
                                        hc.node_event(ex, "a", "node.completed", {"output": 1})]}),
            400, "invalid_event", "events[1].data.duration_ms")
    refused(hub, hc.compact(hc.exec_event(ex, "execution.started", priority="high")), 400, "invalid_event", "priority")
    refused(hub, hc.compact(hc.node_event(ex, "a", "node.log", {"message": "m", "colour": "red"})),
            400, "invalid_event", "data.colour")
    refused(hub, hc.compact(hc.exec_event(ex, "execution.started", node_key="a")), 400, "invalid_event", "node_key")
    refused(hub, hc.compact(hc.exec_event(ex, "execution.paused")), 400, "invalid_event", "event")
    refused(hub, hc.compact({"events": []}), 400, "invalid_event", "events")

    h = hc.signed_headers(good)
    h["Content-Type"] = "text/plain"
    refused(hub, good, 415, "unsupported_media_type", headers=h)
    big = hc.compact(hc.node_event(ex, "a", "node.log", {"message": "x" * 3000}))
    refused(hub, big, 413, "payload_too_large")

    no_sig = hc.signed_headers(good)
    del no_sig["X-Hub-Signature"]
    refused(hub, good, 401, "missing_signature", headers=no_sig)
    no_ts = hc.signed_headers(good)
    del no_ts["X-Hub-Timestamp"]
    refused(hub, good, 401, "missing_signature", headers=no_ts)
    garbled = hc.signed_headers(good)
    garbled["X-Hub-Signature"] = "sha256=not-hex"
    refused(hub, good, 401, "missing_signature", headers=garbled)
    refused(hub, good, 401, "stale_timestamp", headers=hc.signed_headers(good, ts=now - 400))
    refused(hub, good, 401, "stale_timestamp", headers=hc.signed_headers(good, ts=now + 400))
    refused(hub, good, 403, "bad_signature", headers=hc.signed_headers(good, secret="wrong-engine-secret-0123456"))
    tampered = hc.signed_headers(good)
    refused(hub, good.replace(b'"w1"', b'"w2"'), 403, "bad_signature", headers=tampered)

    h = refused(hub, b"", 405, "method_not_allowed", headers={}, method="GET")
    assert h["allow"] == "POST"

    # Nothing refused was stored.
    watcher = Watcher(hub, mint())
    watcher.subscribe("w1", ex, since=0, expect_seq=0)

    # The size limit is inclusive; a charset parameter is fine.
    pad = 2048 - len(hc.compact(hc.node_event(ex, "a", "node.log", {"message": ""})))
    exact = hc.compact(hc.node_event(ex, "a", "node.log", {"message": "y" * pad}))
    assert len(exact) == 2048
    h = hc.signed_headers(exact)
    h["Content-Type"] = "application/json; charset=utf-8"
    status, _, data = hc.post_raw(hub, exact, h)
    assert status == 202, data
    assert validate("ingest-response", json.loads(data)) == {
        "accepted": [{"execution_id": ex, "workspace_id": "w1", "seq": 1, "duplicate": False}]}
    assert watcher.events(1)[0]["data"]["message"] == "y" * pad
    refused(hub, exact[:-3] + b'y"}}', 413, "payload_too_large")


def test_engine_retry_with_same_idempotency_key_is_delivered_once(hub_factory):
    hub = hub_factory(*W)
    ex = "idem"
    watcher = Watcher(hub, mint())
    watcher.subscribe("w1", ex, expect_seq=0)
    done = hc.node_event(ex, "fetch", "node.completed", {"duration_ms": 5}, idempotency_key="run-7-fetch-done")
    assert ingest(hub, done) == [{"execution_id": ex, "workspace_id": "w1", "seq": 1, "duplicate": False}]
    assert ingest(hub, hc.log_event(ex, 2)) == [{"execution_id": ex, "workspace_id": "w1", "seq": 2, "duplicate": False}]
    assert ingest(hub, done) == [{"execution_id": ex, "workspace_id": "w1", "seq": 1, "duplicate": True}]
    accepted = ingest(hub, [done, hc.log_event(ex, 3), done])
    assert [(a["seq"], a["duplicate"]) for a in accepted] == [(1, True), (3, False), (1, True)]
    # The same key on another execution is a different event.
    assert ingest(hub, {**done, "execution_id": "other"}) == [
        {"execution_id": "other", "workspace_id": "w1", "seq": 1, "duplicate": False}]
    fence = hc.log_event(ex, 4)
    assert ingest(hub, fence)[0]["seq"] == 4
    events = watcher.events(4)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert_delivered(events[0], done, 1)
    assert_delivered(events[3], fence, 4)
    assert no_message(watcher)


def read_responses(sock, count):
    """Reads `count` HTTP responses (with Content-Length bodies) from one connection, in order: [(status, body)]."""
    data = b""
    out = []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = next(int(line.split(":", 1)[1]) for line in head[1:] if line.lower().startswith("content-length:"))
            if len(data) >= head_end + 4 + length:
                out.append((int(head[0].split(" ")[1]), data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(out)} responses"
        data += chunk
    return out


def test_pipelined_ingestion_is_answered_and_numbered_in_request_order(hub_factory):
    """An engine may send an execution's reports pipelined on one keep-alive connection: every request is answered,
    in the order sent (a refused one in the middle too), and the events are numbered and delivered in that order."""
    hub = hub_factory(*W)
    ex = "pipelined"
    watcher = Watcher(hub, mint())
    watcher.subscribe("w1", ex, expect_seq=0)
    raw = b""
    for n in range(1, 61):
        if n == 30:
            body = b'{"event":"node.log",'  # cut short: 400, and the connection stays open
        else:
            body = hc.compact(hc.node_event(ex, "step", "node.log", {"message": f"{ex} #{n if n < 30 else n - 1}"}))
        headers = hc.signed_headers(body)
        raw += (b"POST /v1/jobs/progress HTTP/1.1\r\nHost: hub\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    raw += b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n"
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(raw)  # all of it at once: the hub reads many requests in one read
    responses = read_responses(sock, 61)
    sock.close()
    assert [status for status, _ in responses] == [202] * 29 + [400] + [202] * 30 + [200]
    assert json.loads(responses[29][1])["error"] == "invalid_json"
    seqs = [json.loads(body)["accepted"][0]["seq"] for status, body in responses if status == 202]
    assert seqs == list(range(1, 60))
    for seq, event in enumerate(watcher.events(59), start=1):
        check_numbered(event, ex, seq)
    assert no_message(watcher)


def test_malformed_request_pipelined_behind_ingestions_is_answered_after_them(hub_factory):
    """A request the parser rejects, pipelined behind ingestions still being stored (on Redis, a round trip each),
    gets its 400 after their 202s, and then the connection closes: no answer is lost or overtaken."""
    hub = hub_factory(*W)
    ex = "pipelined-then-garbage"
    raw = b""
    for n in range(1, 6):
        body = hc.compact(hc.node_event(ex, "step", "node.log", {"message": f"{ex} #{n}"}))
        raw += (b"POST /v1/jobs/progress HTTP/1.1\r\nHost: hub\r\n"
                + b"".join(f"{k}: {v}\r\n".encode() for k, v in hc.signed_headers(body).items())
                + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    raw += b"NOT HTTP AT ALL\r\n\r\n"
    sock = socket.create_connection((hub.host, hub.port), timeout=10)
    sock.sendall(raw)
    responses = read_responses(sock, 6)
    assert [status for status, _ in responses] == [202] * 5 + [400]
    assert [json.loads(body)["accepted"][0]["seq"] for _, body in responses[:5]] == [1, 2, 3, 4, 5]
    assert json.loads(responses[5][1])["error"] == "malformed_request"
    assert sock.recv(1) == b""
    sock.close()


def test_connections_opened_together_spread_their_heartbeats(hub_factory):
    """Connections opened together do not send their heartbeats in one burst, interval after interval: each
    one's first heartbeat comes a random part of the first half of the interval early (WebSocket and SSE)."""
    interval = 2.0
    hub = hub_factory(*W, "--heartbeat", str(interval), "--max-sse-per-workspace", "20")
    token = mint()
    offsets = {"ws": [], "sse": []}
    errors = []

    def first_heartbeat(kind, i):
        try:
            at = time.monotonic()
            if kind == "ws":
                conn = Watcher(hub, token)
                assert conn.recv(timeout=interval + 2, skip_heartbeats=False) == {"type": "heartbeat"}
            else:
                conn = open_sse(hub, "w1", f"spread-{i}", token, timeout=interval + 2)
                assert conn.next() == {"retry": 3000}
                assert conn.next() == {"comment": "heartbeat"}
            offsets[kind].append(time.monotonic() - at)
            conn.close()
        except Exception as e:  # reported below, in the test's thread
            errors.append(e)

    # Each connection waits for its first heartbeat in its own thread, so each arrival time is its own.
    threads = [threading.Thread(target=first_heartbeat, args=(kind, i)) for kind in offsets for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=interval + 10)
    assert errors == []
    for kind, values in offsets.items():
        assert len(values) == 12, (kind, values)
        assert all(interval / 2 - 0.05 <= v <= interval + 0.5 for v in values), (kind, values)
        # Twelve draws from one second: all within 0.3 s of each other has a probability of about 1e-5.
        assert max(values) - min(values) >= 0.3, (kind, values)
