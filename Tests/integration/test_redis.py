"""The Redis-backed topic router: many hub processes on one real redis-server act as one hub.

Waits are blocking reads with timeouts. Where the hub changes state on its own (a reconnect, an expired lease, a
channel unsubscribed after the last watcher left) the test polls that state with a deadline: `eventually`."""
import json
import signal
import socket
import subprocess
import threading
import time

import pytest

import hubclient as hc
from conftest import HUB_BIN, RedisServer, collect_stderr, free_port
from hubclient import Watcher, ingest, mint, open_live_sse, open_sse
from protocol_schemas import validate

W = hc.SECRET_ARGS


def eventually(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {value!r})")
        time.sleep(interval)


def start_hub(hub_factory, redis, *args):
    hub = hub_factory(*W, "--redis", redis.url, *args)
    collect_stderr(hub)  # keeps the log pipe drained
    return hub


def readiness(hub):
    try:
        status, _, body = hc.request(hub, "GET", "/readyz", timeout=2)
        return status, json.loads(body)
    except OSError as e:
        return None, str(e)


def messages(events):
    return [(e["seq"], e["data"]["message"]) for e in events]


def log_line(i):
    return (f"line {i} " + "x" * 40)[:40]


def assert_received_exactly(total, watchers, sse, quiet=0.3):
    """Every WebSocket watcher and the SSE stream received log lines 0 … total-1 as seqs 1 … total, in order, and
    the watchers nothing more (no event twice)."""
    want = [(i + 1, log_line(i)) for i in range(total)]
    for w in watchers:
        assert messages(w.events(total)) == want
    assert messages([sse.next_message()["json"] for _ in range(total)]) == want
    for w in watchers:
        with pytest.raises(TimeoutError):
            w.recv(timeout=quiet)


def test_events_ingested_on_one_hub_reach_watchers_on_another_in_order(hub_factory, redis_server):
    a = start_hub(hub_factory, redis_server)
    b = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    ws = Watcher(b, token)
    ws.subscribe("w1", "run-1", since=0, expect_seq=0)
    sse = open_live_sse(b, "w1", "run-1", token)
    posted = [hc.log_event("run-1", i) for i in range(30)]
    seqs = []
    for i in range(0, 30, 3):
        seqs += [r["seq"] for r in ingest(a, posted[i:i + 3])]
    assert seqs == list(range(1, 31))
    got_ws = ws.events(30)
    got_sse = [sse.next_message()["json"] for _ in range(30)]
    want = [(i + 1, log_line(i)) for i in range(30)]
    assert messages(got_ws) == want
    assert messages(got_sse) == want
    # The same bytes from every hub: what hub A's own watcher gets is what hub B's got.
    wa = Watcher(a, token)
    wa.subscribe("w1", "run-1", since=0, expect_seq=30)
    assert [hc.strip_type(m) for m in wa.events(30)] == [hc.strip_type(m) for m in got_ws]
    assert [m["workspace"] for m in got_ws] == ["w1"] * 30


def test_replay_and_live_join_across_hubs_with_no_gap_and_no_duplicate(hub_factory, redis_server):
    a = start_hub(hub_factory, redis_server)
    b = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    ingest(a, [hc.log_event("run-2", i) for i in range(20)])
    # Events keep arriving while watchers on hub B join with since; each gets exactly since+1 ... end.
    stop = threading.Event()
    total = {"n": 20}

    def engine():
        while not stop.is_set() and total["n"] < 200:
            ingest(a, [hc.log_event("run-2", total["n"] + k) for k in range(2)])
            total["n"] += 2

    t = threading.Thread(target=engine)
    t.start()
    watchers = []
    for since in (0, 5, 13, 19):
        w = Watcher(b, token, timeout=15)
        w.subscribe("w1", "run-2", since=since)
        watchers.append((since, w))
    t.join()
    n = total["n"]
    for since, w in watchers:
        got = w.events(n - since)
        assert messages(got) == [(i + 1, log_line(i)) for i in range(since, n)], since


def test_redis_killed_and_restarted_mid_stream_loses_nothing_acknowledged(hub_factory, tmp_path):
    redis = RedisServer(tmp_path)
    try:
        a = start_hub(hub_factory, redis, "--redis-timeout", "1")
        b = start_hub(hub_factory, redis, "--redis-timeout", "1")
        token = mint(["w1"])
        watchers = [Watcher(b, token, timeout=30), Watcher(a, token, timeout=30)]
        for w in watchers:
            w.subscribe("w1", "run-3", since=0, expect_seq=0)
        sse = open_live_sse(b, "w1", "run-3", token, timeout=30)

        total = 240
        lock = threading.Condition()
        state = {"acked": 0, "refused": 0, "refused_since_kill": 0, "seqs": {}}

        def post(i):
            """Posts event i until it is acknowledged; counts 503s (and connections refused while hubs restart)."""
            event = hc.log_event("run-3", i)
            event["idempotency_key"] = f"run-3/{i}"
            body = hc.compact(event)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status, headers, data = hc.post_raw(a, body, hc.signed_headers(body))
                if status == 202:
                    return json.loads(data)["accepted"][0]
                assert status == 503, (status, data)
                assert headers.get("retry-after") == "1"
                hc.error_body(data, "unavailable")
                with lock:
                    state["refused"] += 1
                    state["refused_since_kill"] += 1
                    lock.notify_all()
                time.sleep(0.05)  # the engine's retry interval (pacing a retry, not waiting for a state)
            raise AssertionError(f"event {i} was never acknowledged")

        def engine():
            for i in range(total):
                accepted = post(i)
                with lock:
                    state["seqs"][i] = accepted["seq"]
                    state["acked"] += 1
                    lock.notify_all()

        t = threading.Thread(target=engine)
        t.start()
        kills = 0
        for threshold in (40, 110, 180):
            with lock:
                assert lock.wait_for(lambda: state["acked"] >= threshold, timeout=60)
                state["refused_since_kill"] = 0
            redis.kill()
            kills += 1
            # While Redis is down both hubs say so, and the engine is told to retry.
            for hub in (a, b):
                eventually(lambda: readiness(hub)[0] == 503, what="readyz 503")
                assert readiness(hub)[1] == {"status": "unavailable", "broker": "redis", "redis": "down"}
            with lock:
                assert lock.wait_for(lambda: state["refused_since_kill"] > 0, timeout=30)
            redis.start()
            for hub in (a, b):
                eventually(lambda: readiness(hub)[0] == 200, what="readyz 200")
        t.join()
        assert kills == 3 and state["refused"] >= 3
        # Each event got one seq, in the order the engine sent them.
        assert [state["seqs"][i] for i in range(total)] == list(range(1, total + 1))
        assert_received_exactly(total, watchers, sse, quiet=0.5)
        # The hubs say they reconnected.
        assert any("redis connection restored" in line for line in collect_stderr(a).lines)
    finally:
        redis.stop()


def test_events_published_while_the_pubsub_connection_is_down_are_backfilled(hub_factory, redis_server):
    """Redis drops every pub/sub connection while the command connections stay: events acknowledged meanwhile never
    arrive live, so each hub reads them from the history stream when it has subscribed again."""
    a = start_hub(hub_factory, redis_server)
    b = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    watchers = [Watcher(a, token, timeout=15), Watcher(b, token, timeout=15)]
    for w in watchers:
        w.subscribe("w1", "run-8", since=0, expect_seq=0)
    sse = open_live_sse(b, "w1", "run-8", token, timeout=15)
    ingest(a, [hc.log_event("run-8", i) for i in range(5)])
    numsub = lambda: redis_server.cli("PUBSUB", "NUMSUB", "execution:run-8:events").split()[1]
    for round in range(3):
        eventually(lambda: numsub() == "2", what="both hubs subscribed")
        assert int(redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")) == 2
        # Nobody listens on the channel now, yet the engine's events are acknowledged (they are stored).
        start = 5 + round * 20
        for i in range(start, start + 20, 4):
            ingest(a, [hc.log_event("run-8", k) for k in range(i, i + 4)])
    assert_received_exactly(65, watchers, sse)
    eventually(lambda: numsub() == "2", what="both hubs subscribed again")
    # Each hub's pub/sub connection came back three times; its command connection never dropped.
    for hub in (a, b):
        assert hc.scrape(hub)["hub_redis_reconnects_total"] == 3


def test_a_hung_redis_times_out_and_a_waiting_subscription_completes_after(hub_factory, redis_server):
    """Redis stops answering (CLIENT PAUSE): commands time out, the hub drops and re-opens its connections, says it
    is not ready meanwhile, and a subscription made during the pause is answered once Redis answers again."""
    hub = start_hub(hub_factory, redis_server, "--redis-timeout", "0.4")
    token = mint(["w1"])
    ingest(hub, hc.log_event("run-10", 0))
    w = Watcher(hub, token, timeout=20)
    assert redis_server.cli("CLIENT", "PAUSE", "2500", "ALL") == "OK"
    rid = w.op("subscribe", workspace="w1", execution="run-10", since=0)
    body = hc.compact(hc.log_event("run-10", 1))
    status, headers, data = hc.post_raw(hub, body, hc.signed_headers(body))
    assert status == 503 and headers["retry-after"] == "1"
    eventually(lambda: readiness(hub)[0] == 503, what="not ready while Redis hangs")
    assert w.recv() == {"type": "subscribed", "id": rid, "workspace": "w1", "execution": "run-10", "seq": 1}
    assert messages(w.events(1)) == [(1, log_line(0))]
    eventually(lambda: readiness(hub)[0] == 200, what="ready again")
    ingest(hub, hc.log_event("run-10", 1))
    assert messages(w.events(1)) == [(2, log_line(1))]
    assert collect_stderr(hub).wait_for(lambda l: "no reply within 400 ms" in l)


def test_command_connection_lost_while_a_subscription_reads_history(hub_factory, redis_server):
    """The command connection drops while a subscription's history read waits for its answer (writes paused, so the
    read script waits); the pub/sub connection stays. The read is made again on the new connection."""
    hub = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    ingest(hub, hc.log_event("run-12", 0))
    w = Watcher(hub, token, timeout=20)
    w.subscribe("w1", "run-12")  # the channel is subscribed from here on
    assert redis_server.cli("CLIENT", "PAUSE", "1500", "WRITE") == "OK"
    w2 = Watcher(hub, token, timeout=20)
    rid = w2.op("subscribe", workspace="w1", execution="run-12", since=0)
    eventually(lambda: " flags=b " in redis_server.cli("CLIENT", "LIST"), what="the read script waiting (blocked)")
    assert int(redis_server.cli("CLIENT", "KILL", "TYPE", "normal")) >= 1
    assert w2.recv() == {"type": "subscribed", "id": rid, "workspace": "w1", "execution": "run-12", "seq": 1}
    assert messages(w2.events(1)) == [(1, log_line(0))]
    ingest(hub, hc.log_event("run-12", 1))
    assert messages(w.events(1)) == [(2, log_line(1))] and messages(w2.events(1)) == [(2, log_line(1))]


def test_numbering_that_starts_again_is_handed_on(hub_factory, redis_server):
    """Redis loses its data (FLUSHALL here) while a hub watches an execution: the execution's numbering starts again
    at 1, and the hub hands the new events on instead of taking them for old ones."""
    hub = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    old = Watcher(hub, token)
    old.subscribe("w1", "run-11", since=0)
    ingest(hub, [hc.log_event("run-11", i) for i in range(5)])
    assert [e["seq"] for e in old.events(5)] == [1, 2, 3, 4, 5]
    assert redis_server.cli("FLUSHALL") == "OK"
    new = Watcher(hub, token)
    new.subscribe("w1", "run-11", since=0, expect_seq=0)
    assert ingest(hub, hc.log_event("run-11", 100))[0]["seq"] == 1
    assert messages(new.events(1)) == [(1, log_line(100))]
    assert collect_stderr(hub).wait_for(lambda l: "numbering started again" in l)


def test_seed_format_publish_reaches_watchers_once(hub_factory, redis_server):
    a = start_hub(hub_factory, redis_server)
    b = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    # The execution is reported through the hub first: that binds its id to workspace w1.
    ingest(a, hc.exec_event("run-4", "execution.started", {"workflow": "etl"}))
    wa, wb = Watcher(a, token), Watcher(b, token)
    wa.subscribe("w1", "run-4", since=0, expect_seq=1)
    wb.subscribe("w1", "run-4", since=0, expect_seq=1)
    assert [e["seq"] for e in wa.events(1)] == [1] and [e["seq"] for e in wb.events(1)] == [1]
    seed = {"event": "node.completed", "execution_id": "run-4", "node_key": "fetch",
            "data": {"duration_ms": 1234, "output": {"rows": 3}}, "timestamp": "2026-11-29T10:00:00Z"}
    validate("redis-seed-message", seed)
    # Both hubs are subscribed to the channel (one subscriber each).
    assert redis_server.cli("PUBSUB", "NUMSUB", "execution:run-4:events").split() == ["execution:run-4:events", "2"]
    assert redis_server.cli("PUBLISH", "execution:run-4:events", json.dumps(seed)) == "2"
    want = {"type": "event", "execution": "run-4", "workspace": "w1", "seq": 2, "event": "node.completed",
            "node_key": "fetch", "timestamp": "2026-11-29T10:00:00Z",
            "data": {"status": "completed", "duration_ms": 1234, "output_keys": ["rows"], "output_size_bytes": 10,
                     "output_preview": "{\"rows\":3}"}}
    assert wa.recv() == want and wb.recv() == want
    # Exactly once, even though both hubs received the message: the next event is seq 3.
    assert ingest(a, hc.log_event("run-4", 0))[0]["seq"] == 3
    assert wa.recv()["seq"] == 3 and wb.recv()["seq"] == 3
    # A message for an execution no workspace owns, or one that is not an event, is dropped with a log line.
    assert redis_server.cli("PUBLISH", "execution:run-4:events", "not json") == "2"
    assert collect_stderr(a).wait_for(lambda l: "dropping a message on an execution channel" in l)


def test_hub_subscribes_once_per_execution_and_unsubscribes_after_the_last_watcher(hub_factory, redis_server):
    hub = start_hub(hub_factory, redis_server)
    token = mint(["w1"])
    numsub = lambda: redis_server.cli("PUBSUB", "NUMSUB", "execution:run-5:events").split()[1]
    w1, w2 = Watcher(hub, token), Watcher(hub, token)
    w1.subscribe("w1", "run-5")
    w2.subscribe("w1", "run-5")
    sse = open_live_sse(hub, "w1", "run-5", token)
    w3 = Watcher(hub, token)
    w3.subscribe("w1", "run-5")
    assert numsub() == "1"
    assert redis_server.cli("PUBSUB", "NUMSUB", "execution:other:events").split()[1] == "0"
    w1.close()
    rid = w2.op("unsubscribe", workspace="w1", execution="run-5")
    assert w2.recv() == {"type": "unsubscribed", "id": rid, "workspace": "w1", "execution": "run-5"}
    sse.close()
    # One watcher is left: the channel stays subscribed, once, and delivers.
    ingest(hub, hc.log_event("run-5", 0))
    assert w3.events(1)[0]["seq"] == 1
    assert numsub() == "1"
    w3.close()
    eventually(lambda: numsub() == "0", what="PUBSUB NUMSUB 0 after the last watcher left")
    # Watching again subscribes again.
    w4 = Watcher(hub, token)
    w4.subscribe("w1", "run-5", since=0, expect_seq=1)
    assert numsub() == "1"


def place_counts(redis_server, workspace):
    """{hub id: SSE places it holds} from the workspace's count hash."""
    fields = redis_server.cli("HGETALL", f"sse:{workspace}:streams").split()
    return {fields[i]: int(fields[i + 1]) for i in range(0, len(fields), 2)}


def test_sse_cap_holds_across_hubs_and_a_dead_hubs_leases_expire(hub_factory, redis_server):
    a = start_hub(hub_factory, redis_server, "--lease-ttl", "2")
    b = start_hub(hub_factory, redis_server, "--lease-ttl", "2")
    token = mint(["w1"])
    streams = [open_live_sse(a, "w1", f"run-{i}", token) for i in range(3)]
    counts = place_counts(redis_server, "w1")
    assert sorted(counts.values()) == [3]
    (a_id,) = counts
    streams += [open_live_sse(b, "w1", f"run-{i}", token) for i in range(3, 5)]
    counts = place_counts(redis_server, "w1")
    assert sorted(counts.values()) == [2, 3] and counts[a_id] == 3
    (b_id,) = set(counts) - {a_id}
    for hub in (a, b):
        refused = open_sse(hub, "w1", "run-9", token)
        assert refused.status == 429 and refused.headers["retry-after"] == "5"
        hc.error_body(refused.read_body(), "too_many_streams")
    # Another workspace has its own places.
    other = open_live_sse(b, "w2", "run-9", mint(["w2"]))
    assert place_counts(redis_server, "w2") == {b_id: 1}
    # A stream that ends gives its place back at once.
    streams[4].close()
    eventually(lambda: place_counts(redis_server, "w1") == {a_id: 3, b_id: 1}, what="place released")
    streams[4] = open_live_sse(b, "w1", "run-4", token)
    # Hub A dies without a word: its places are not renewed and expire within the TTL; hub B's are renewed.
    redis_ms = lambda: int(redis_server.cli("TIME").split()[0]) * 1000
    live = lambda: redis_server.cli("ZRANGEBYSCORE", "sse:w1:hubs", str(redis_ms()), "+inf").split()
    killed_at = redis_ms()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    refused = open_sse(b, "w1", "run-9", token)
    assert refused.status == 429
    eventually(lambda: live() == [b_id], timeout=10, what="the dead hub's places expire")
    # Two TTLs after the kill, hub B's places are still live: B renews them.
    eventually(lambda: redis_ms() > killed_at + 4000, timeout=10, what="two lease TTLs")
    assert live() == [b_id]
    fresh = [open_live_sse(b, "w1", f"run-1{i}", token) for i in range(3)]
    refused = open_sse(b, "w1", "run-9", token)
    assert refused.status == 429
    # The first acquisition after A's expiry dropped A's count.
    assert place_counts(redis_server, "w1") == {b_id: 5}
    for s in streams[3:] + fresh + [other]:
        s.close()
    eventually(lambda: place_counts(redis_server, "w1") == {} and place_counts(redis_server, "w2") == {},
               what="every place given back")
    assert redis_server.cli("ZCARD", "sse:w1:hubs") == "0"


def test_renewing_places_is_one_call_per_workspace_and_repairs_the_count(hub_factory, redis_server):
    """A hub renews its SSE places with one script call per workspace, whatever the number of its streams (one call
    per stream held Redis for tens of milliseconds every few seconds at 10,000 streams), and the renewal sets the
    count, so a count gone wrong in Redis is repaired within a third of the TTL."""
    hub = start_hub(hub_factory, redis_server, "--lease-ttl", "1.5", "--max-sse-per-workspace", "20")
    token = mint(["w1", "w2"])
    streams = [open_live_sse(hub, "w1", f"run-{i}", token) for i in range(12)]
    streams += [open_live_sse(hub, "w2", f"run-{i}", token) for i in range(3)]
    (hub_id,) = place_counts(redis_server, "w1")
    expiry = lambda: redis_server.cli("ZSCORE", "sse:w1:hubs", hub_id)
    redis_server.cli("CONFIG", "RESETSTAT")
    # Three renewals: the hub's expiry moves three times.
    seen = [expiry()]

    def moved():
        now = expiry()
        if now != seen[-1]:
            seen.append(now)
        return len(seen) == 4

    eventually(moved, timeout=10, interval=0.02, what="three renewals")
    stats = redis_server.cli("INFO", "commandstats")
    calls = {line.split(":")[0]: int(line.split("calls=")[1].split(",")[0])
             for line in stats.splitlines() if line.startswith("cmdstat_")}
    # Each renewal is one EVALSHA per workspace (two here), making one ZADD and one HSET: at least the three renewals
    # seen (one more may have come between the reset and the first reading, or since the third).
    renewals = calls["cmdstat_evalsha"]
    assert renewals >= 6 and renewals % 2 == 0, calls
    assert calls["cmdstat_zadd"] == renewals and calls["cmdstat_hset"] == renewals, calls
    # A count gone wrong (a release lost with its connection, say) is set right by the next renewal.
    redis_server.cli("HSET", "sse:w1:streams", hub_id, "40")
    eventually(lambda: place_counts(redis_server, "w1") == {hub_id: 12}, timeout=5, what="the count repaired")
    assert place_counts(redis_server, "w2") == {hub_id: 3}
    for s in streams:
        s.close()


def test_an_execution_id_belongs_to_one_workspace(hub_factory, redis_server):
    a = start_hub(hub_factory, redis_server)
    b = start_hub(hub_factory, redis_server)
    ingest(a, hc.log_event("shared-id", 0, workspace="w1"))
    body = hc.compact({"events": [hc.log_event("fresh", 0, workspace="w2"), hc.log_event("shared-id", 1, workspace="w2")]})
    status, _, data = hc.post_raw(b, body, hc.signed_headers(body))
    assert status == 409
    err = hc.error_body(data, "execution_conflict", field="events[1].execution_id")
    assert err["message"] == "events[1].execution_id shared-id belongs to another workspace"
    # Nothing of the refused batch was stored.
    assert redis_server.cli("EXISTS", "execution:fresh:meta") == "0"
    # A w2 watcher of the same id sees nothing of w1's events.
    w2 = Watcher(b, mint(["w2"]))
    w2.subscribe("w2", "shared-id", since=0, expect_seq=0)
    ingest(a, hc.log_event("shared-id", 2, workspace="w1"))
    with pytest.raises(TimeoutError):
        w2.recv(timeout=0.5)


def test_hub_starts_without_redis_and_becomes_ready_when_it_comes(hub_factory, tmp_path):
    port = free_port()
    hub = hub_factory(*W, "--redis", f"redis://127.0.0.1:{port}")
    collect_stderr(hub)
    assert readiness(hub) == (503, {"status": "unavailable", "broker": "redis", "redis": "down"})
    body = hc.compact(hc.log_event("run-6", 0))
    status, headers, data = hc.post_raw(hub, body, hc.signed_headers(body))
    assert status == 503 and headers["retry-after"] == "1"
    assert hc.error_body(data, "unavailable")["message"] == "events could not be stored; retry"
    # A watcher may connect and subscribe meanwhile; it is answered once Redis is there.
    token = mint(["w1"])
    w = Watcher(hub, token, timeout=20)
    rid = w.op("subscribe", workspace="w1", execution="run-6", since=0)
    sse = open_sse(hub, "w1", "run-6", token)
    assert sse.status == 503  # the cluster-wide stream count cannot be checked
    hc.error_body(sse.read_body(), "unavailable")
    redis = RedisServer(tmp_path, port=port)
    try:
        eventually(lambda: readiness(hub)[0] == 200, what="ready once Redis is up")
        assert w.recv() == {"type": "subscribed", "id": rid, "workspace": "w1", "execution": "run-6", "seq": 0}
        ingest(hub, hc.log_event("run-6", 0))
        assert messages(w.events(1)) == [(1, log_line(0))]
    finally:
        redis.stop()


def run_hub_expecting_failure(*args, timeout=20):
    proc = subprocess.run([HUB_BIN, "serve", "--port", "0", *W, *args], capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_wrong_password_is_a_clear_error_at_startup(tmp_path):
    redis = RedisServer(tmp_path, "--requirepass", "right-password")
    try:
        code, out, err = run_hub_expecting_failure("--redis", f"redis://:wrong@127.0.0.1:{redis.port}")
        assert code == 2 and "hub listening" not in out
        assert "cannot start: redis error reply: AUTH refused by 127.0.0.1:" in err
        assert "WRONGPASS" in err
        # No password at all: the first command is refused.
        code, _, err = run_hub_expecting_failure("--redis", redis.url)
        assert code == 2 and "PING refused by" in err and "NOAUTH" in err
    finally:
        redis.stop()


def test_unknown_database_is_a_clear_error_at_startup(redis_server):
    code, _, err = run_hub_expecting_failure("--redis", redis_server.url + "/99")
    assert code == 2
    assert f"cannot start: redis error reply: SELECT 99 refused by 127.0.0.1:{redis_server.port}/99: ERR DB index is out of range" in err


def test_password_and_database_from_flags_work(hub_factory, tmp_path):
    redis = RedisServer(tmp_path, "--requirepass", "pw-0123")
    try:
        hub = start_hub(hub_factory, redis, "--redis-password", "pw-0123", "--redis-db", "3", "--redis-prefix", "hubA:")
        ingest(hub, hc.log_event("run-7", 0))
        assert redis.cli("-a", "pw-0123", "--no-auth-warning", "-n", "3", "EXISTS", "hubA:execution:run-7:log") == "1"
        assert redis.cli("-a", "pw-0123", "--no-auth-warning", "-n", "0", "DBSIZE") == "0"
    finally:
        redis.stop()


@pytest.mark.parametrize("reply", [b"?what\r\n", b"$-5\r\n", b"*1\r\n:abc\r\n"])
def test_malformed_replies_are_a_clear_error_at_startup(reply):
    """Something that is not a Redis answers on the port: the hub says so and exits instead of crashing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(1024)
            conn.sendall(reply)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        code, out, err = run_hub_expecting_failure("--redis", f"redis://127.0.0.1:{port}")
        assert code == 2 and "hub listening" not in out
        assert "cannot start: redis protocol error:" in err
    finally:
        listener.close()


def test_redis_url_and_settings_are_validated(tmp_path):
    code, _, err = run_hub_expecting_failure("--redis", "http://127.0.0.1:6379")
    assert code != 0 and "redis URL 'http://127.0.0.1:6379' must start with redis://" in err
    code, _, err = run_hub_expecting_failure("--redis", "redis://127.0.0.1:6379", "--lease-ttl", "0.5")
    assert code != 0 and "lease-ttl must be at least 1 second" in err
    code, _, err = run_hub_expecting_failure("--redis", "redis://127.0.0.1:6379", "--max-events-per-execution", "1000001",
                                             "--max-events-total", "2000000")
    assert code == 64 and ("invalid setting max-events-per-execution: must be at most 1000000 with Redis (a replay is "
                           "one reply)") in err.splitlines()[0]


class PipelinedEngine:
    """An engine reporting one execution on one keep-alive connection, with up to `depth` requests sent ahead of
    their answers (HTTP/1.1 pipelining). Each request carries one event; `seqs` gets each answer's seq, in the order
    the answers arrive, which is the order the requests were sent."""

    def __init__(self, hub, execution, total, depth=16):
        self.execution = execution
        self.total = total
        self.seqs = []
        self.statuses = []
        self.sock = socket.create_connection((hub.host, hub.port), timeout=30)
        self.window = threading.Semaphore(depth)
        self.errors = []
        self.reader = threading.Thread(target=self._guarded, args=(self._read,))
        self.writer = threading.Thread(target=self._guarded, args=(self._write,))

    def start(self):
        self.reader.start()
        self.writer.start()

    def join(self):
        self.writer.join()
        self.reader.join()
        self.sock.close()
        assert self.errors == [], self.errors

    def _guarded(self, work):
        try:
            work()
        except Exception as e:  # reported by join
            self.errors.append(repr(e))
            self.sock.close()

    def _write(self):
        for i in range(self.total):
            body = hc.compact(hc.log_event(self.execution, i))
            headers = hc.signed_headers(body)
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            request = (f"POST /v1/jobs/progress HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(body)}\r\n{head}\r\n"
                       ).encode() + body
            assert self.window.acquire(timeout=30)
            self.sock.sendall(request)

    def _read(self):
        with self.sock.makefile("rb") as stream:
            self._read_from(stream)

    def _read_from(self, stream):
        for _ in range(self.total):
            status = int(stream.readline().split()[1])
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            data = stream.read(length)
            self.statuses.append(status)
            if status == 202:
                self.seqs.append(json.loads(data)["accepted"][0]["seq"])
            self.window.release()


@pytest.mark.parametrize("hubs", [1, 2], ids=["one-hub", "two-hubs"])
def test_scripts_flushed_under_pipelined_publishes_keep_each_execution_in_order(hub_factory, redis_server, hubs):
    """`SCRIPT FLUSH`, again and again, while engines pipeline events: the hubs' script calls come back NOSCRIPT and
    are run again with EVAL. Each execution's events must still take their seqs in the order its engine sent them
    (`RedisConnection.runScript`), on every hub, whichever hub loads its scripts again first; nothing is refused,
    and calls held back after a NOSCRIPT answer always go on. (The exact interleavings that reorder events without
    the fence are in `RedisConnectionTests`; here they occur only now and then.)"""
    servers = [start_hub(hub_factory, redis_server) for _ in range(hubs)]
    total = 3000
    engines = [PipelinedEngine(hub, f"flush-{h}-{k}", total) for h, hub in enumerate(servers) for k in range(3)]
    done = threading.Event()
    flushes = {"n": 0}

    def flusher():
        with socket.create_connection(("127.0.0.1", redis_server.port), timeout=10) as s, s.makefile("rb") as replies:
            while not done.is_set():
                s.sendall(b"*2\r\n$6\r\nSCRIPT\r\n$5\r\nFLUSH\r\n")
                assert replies.readline() == b"+OK\r\n"
                flushes["n"] += 1

    f = threading.Thread(target=flusher)
    f.start()
    try:
        for e in engines:
            e.start()
        for e in engines:
            e.join()
    finally:
        done.set()
        f.join()
    info = dict(line.split(":", 1) for line in redis_server.cli("INFO", "errorstats").splitlines() if ":" in line)
    noscript = int(info.get("errorstat_NOSCRIPT", "count=0").split(",")[0].split("=")[1])
    assert flushes["n"] > 100 and noscript > 100, (flushes, noscript)
    for e in engines:
        assert e.statuses == [202] * total, e.execution
        assert e.seqs == list(range(1, total + 1)), e.execution

