"""Operating the hub: /metrics, /healthz and /readyz, the config file and its precedence, start-up validation, and
JSON logs. Waits are blocking reads with timeouts; what the hub updates on its own is polled with a deadline."""
import json
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus

import hubclient as hc
from conftest import HUB_BIN, Hub, collect_stderr
from hubclient import Watcher, ingest, metric_deltas, mint, open_live_sse, open_sse, scrape

W = hc.SECRET_ARGS


def eventually(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s (last: {value!r})")
        time.sleep(0.05)
    return value


# --- /metrics ------------------------------------------------------------------------------------------------------

def test_metrics_move_by_the_expected_amounts_during_a_stream(hub_factory):
    # One event loop: the ingest-to-write histogram then gets exactly one sample per live event.
    hub = hub_factory(*W, "--threads", "1", "--allowed-origin", "https://app.example")
    token = mint(["w1"])
    before = scrape(hub)
    assert before["hub_open_connections{transport=websocket}"] == 0
    assert before["hub_open_connections{transport=sse}"] == 0

    ingest(hub, [hc.log_event("m-1", i) for i in range(2)])
    watcher = Watcher(hub, token)
    watcher.subscribe("w1", "m-1", since=0, expect_seq=2)
    assert [e["seq"] for e in watcher.events(2)] == [1, 2]  # replayed
    sse = open_live_sse(hub, "w1", "m-1", token)
    during = scrape(hub)
    assert during["hub_open_connections{transport=websocket}"] == 1
    assert during["hub_open_connections{transport=sse}"] == 1
    assert during["hub_subscriptions"] == 2

    ingest(hub, [hc.log_event("m-1", i) for i in range(2, 5)])
    keyed = hc.log_event("m-1", 5)
    keyed["idempotency_key"] = "retry-me"
    assert ingest(hub, keyed)[0]["duplicate"] is False
    assert ingest(hub, keyed)[0]["duplicate"] is True
    assert [e["seq"] for e in watcher.events(4)] == [3, 4, 5, 6]
    assert [sse.next_message()["json"]["seq"] for _ in range(4)] == [3, 4, 5, 6]

    # Refusals, one of each kind a watcher can meet here.
    with pytest.raises(InvalidStatus):
        Watcher(hub, "not-a-token")
    for headers, query in (({"Origin": "https://evil.example"}, f"access_token={token}"), ({}, ""),
                           ({}, f"access_token={mint(['w2'])}")):
        s = open_sse(hub, "w1", "m-1", query=query, headers=headers)
        assert s.status in (401, 403)
        s.close()

    watcher.close()
    sse.close()
    eventually(lambda: scrape(hub)["hub_open_connections{transport=sse}"] == 0
               and scrape(hub)["hub_open_connections{transport=websocket}"] == 0, what="connections closed")
    after = scrape(hub)
    deltas = metric_deltas(before, after)
    histogram = {k: deltas.pop(k) for k in list(deltas) if k.startswith("hub_ingest_to_write_seconds")}
    assert deltas == {
        "hub_events_ingested_total": 6,
        "hub_events_duplicate_total": 1,
        # 2 replayed to the WebSocket, then 4 live events to both watchers.
        "hub_events_delivered_total": 2 + 4 * 2,
        "hub_replays_total": 1,
        "hub_connections_refused_total{reason=invalid_token}": 1,
        "hub_connections_refused_total{reason=origin_not_allowed}": 1,
        "hub_connections_refused_total{reason=unauthenticated}": 1,
        "hub_connections_refused_total{reason=forbidden}": 1,
    }
    # One sample per live event on the one loop (replays are not samples); a loopback fan-out takes under a second.
    assert histogram["hub_ingest_to_write_seconds_count"] == 4
    assert histogram["hub_ingest_to_write_seconds_bucket{le=+Inf}"] == 4
    assert histogram["hub_ingest_to_write_seconds_bucket{le=1.0}"] == 4
    assert 0 < histogram["hub_ingest_to_write_seconds_sum"] < 4.0
    buckets = [after[k] for k in after if k.startswith("hub_ingest_to_write_seconds_bucket")]
    assert buckets == sorted(buckets) and len(buckets) == 16
    assert after["hub_subscriptions"] == 0


def test_truncated_replay_and_the_sse_cap_are_counted(hub_factory):
    hub = hub_factory(*W, "--max-events-per-execution", "3", "--max-sse-per-workspace", "1")
    token = mint(["w1"])
    ingest(hub, [hc.log_event("m-2", i) for i in range(5)])
    before = scrape(hub)
    watcher = Watcher(hub, token)
    watcher.subscribe("w1", "m-2", since=0, expect_seq=5)
    assert watcher.recv()["type"] == "replay.truncated"
    assert [e["seq"] for e in watcher.events(3)] == [3, 4, 5]
    first = open_live_sse(hub, "w1", "m-2", token)
    second = open_sse(hub, "w1", "m-2", token)
    assert second.status == 429
    second.close()
    deltas = metric_deltas(before, scrape(hub))
    assert deltas == {
        "hub_replays_total": 1,
        "hub_replays_truncated_total": 1,
        "hub_events_delivered_total": 3,
        "hub_subscriptions": 2,
        "hub_open_connections{transport=websocket}": 1,
        "hub_open_connections{transport=sse}": 1,
        "hub_connections_refused_total{reason=too_many_streams}": 1,
    }
    first.close()
    watcher.close()


def test_metrics_carry_no_execution_workspace_or_user_label(hub_factory):
    hub = hub_factory(*W)
    token = mint(["w-secret"], sub="user-secret")
    watcher = Watcher(hub, token)
    watcher.subscribe("w-secret", "exec-secret", expect_seq=0)
    ingest(hub, hc.log_event("exec-secret", 1, workspace="w-secret"))
    watcher.events(1)
    status, _, body = hc.request(hub, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and "hub_events_delivered_total 1" in text
    assert "secret" not in text
    labels = set(re.findall(r"\{([a-z_]+)=", text))
    assert labels == {"transport", "reason", "le"}
    watcher.close()


def test_healthz_and_readyz(hub_factory):
    hub = hub_factory(*W)
    status, headers, body = hc.request(hub, "GET", "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, headers, body = hc.request(hub, "GET", "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready", "broker": "embedded"})
    status, headers, body = hc.request(hub, "POST", "/metrics", body=b"")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_head_answers_carry_no_body_and_keep_the_connection_in_step(hub_factory):
    """HEAD to each route that takes it, pipelined on one connection before a GET: each answer is the GET's head
    without its body, so the GET's answer after them is read whole (a body sent with a HEAD answer would be read as
    the start of the next response)."""
    hub = hub_factory(*W)
    s = socket.create_connection((hub.host, hub.port), timeout=10)
    s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
              b"HEAD /client/hub.js HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    script_length = len(urllib.request.urlopen(f"http://{hub.host}:{hub.port}/client/hub.js", timeout=10).read())
    not_found = b'{"error":"not_found","message":"no route for /nowhere"}\n'
    assert data == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 39\r\n\r\n"
                    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(not_found)).encode() + b"\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/javascript; charset=utf-8\r\nContent-Length: "
                    + str(script_length).encode() + b"\r\nCache-Control: no-cache\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n"
                    b"Connection: close\r\n\r\n{\"status\":\"ok\"}\n")


# --- configuration -------------------------------------------------------------------------------------------------

def serve(*args, env=None, timeout=20):
    """Runs `hub serve` expecting it to refuse to start; returns (exit code, stderr)."""
    proc = subprocess.run([HUB_BIN, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})
    assert "hub listening" not in proc.stdout
    return proc.returncode, proc.stderr


def sse_cap(hub, token):
    """How many SSE streams of one workspace this hub accepts (the 429 message names the cap)."""
    s = open_sse(hub, "w1", "e1", token)
    opened = [s]
    while s.status == 200:
        s = open_sse(hub, "w1", "e1", token)
        opened.append(s)
    assert s.status == 429
    message = hc.error_body(s.read_body(), "too_many_streams")["message"]
    for stream in opened:
        stream.close()
    return len(opened) - 1, message


def test_config_file_then_environment_then_flag(hub_factory, tmp_path):
    config = tmp_path / "hub.conf"
    # CRLF line ends, a tab before a value, quotes: all read as meant.
    config.write_bytes(b'# the hub\r\n\r\nmax-sse-per-workspace =\t1 \r\nheartbeat = "7"\r\n'
                       b'allowed-origin = https://a.example, https://b.example\r\n')
    token = mint(["w1"])
    hub = hub_factory(*W, "--config", str(config))
    assert sse_cap(hub, token) == (1, "workspace w1 already has 1 open streams")
    for origin in ("https://a.example", "https://b.example"):
        Watcher(hub, token, origin=origin).close()
    with pytest.raises(InvalidStatus) as refused:
        Watcher(hub, token, origin="https://c.example")
    assert refused.value.response.status_code == 403
    # The environment wins over the file, and a flag over both.
    hub = hub_factory(*W, "--config", str(config), env={"HUB_MAX_SSE_PER_WORKSPACE": "2"})
    assert sse_cap(hub, token)[0] == 2
    hub = hub_factory(*W, "--config", str(config), "--max-sse-per-workspace", "3",
                      env={"HUB_MAX_SSE_PER_WORKSPACE": "2"})
    assert sse_cap(hub, token)[0] == 3
    # HUB_CONFIG names the file too.
    hub = hub_factory(*W, env={"HUB_CONFIG": str(config)})
    assert sse_cap(hub, token)[0] == 1


def test_bad_settings_stop_the_hub_with_a_message_that_names_them(tmp_path):
    config = tmp_path / "hub.conf"
    cases = [
        ("port = 8080\nprot = 8081\n", f"config file {config} line 2: unknown setting 'prot'"),
        ("heartbeat = soon\n", f"config file {config} line 1: heartbeat = 'soon' is not a valid value"),
        ("heartbeat = -1\n", "invalid setting heartbeat: must be 0 (off) or more seconds"),
        ("port = 1\nport = 2\n", f"config file {config} line 2: 'port' is already set on line 1"),
        ("just words\n", f"config file {config} line 1: expected name = value"),
        ("drain-timeout = 0\n", "invalid setting drain-timeout: must be more than 0 seconds"),
        ("log-format = xml\n", "invalid setting log-format: 'xml' is not text or json"),
        ("deflate = maybe\n", f"config file {config} line 1: deflate = 'maybe' is not a valid value"),
        ("drain-timeout = inf\n", "invalid setting drain-timeout: must be a finite number of seconds, at most a year"),
        # CRLF line ends: each line is its own (the comment does not swallow the file).
        ("# hub\r\nport = 1\r\nprot = 2\r\n", f"config file {config} line 3: unknown setting 'prot'"),
    ]
    for text, message in cases:
        config.write_text(text)
        code, err = serve("--config", str(config))
        assert code == 64, (text, err)
        assert f"Error: {message}" in err, (text, err)
    code, err = serve("--config", str(tmp_path / "missing.conf"))
    assert code == 64 and f"config file {tmp_path}/missing.conf cannot be read: No such file or directory" in err
    code, err = serve(env={"HUB_DRAIN_TIMEOUT": "later"})
    assert code == 64 and "environment variable HUB_DRAIN_TIMEOUT='later' is not a valid value" in err
    code, err = serve("--max-connection-age", "0")
    assert code == 64 and "invalid setting max-connection-age: must be more than 0 seconds" in err


def test_a_taken_port_is_one_clear_line_and_exit_2(hub_factory):
    hub = hub_factory(*W)
    proc = subprocess.run([HUB_BIN, "serve", "--port", str(hub.port), *W], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert f"cannot start: cannot listen on 127.0.0.1:{hub.port}: address already in use" in proc.stderr


def test_every_serve_option_can_be_set_in_the_config_file(tmp_path):
    """The file knows every option `hub serve --help` lists (but --config itself), so none drifts out of it."""
    help_text = subprocess.run([HUB_BIN, "serve", "--help"], capture_output=True, text=True, timeout=20).stdout
    names = sorted(set(re.findall(r"^\s+--([a-z][a-z0-9-]+)", help_text, re.M)) - {"config", "help"})
    assert len(names) >= 40 and "drain-timeout" in names and "log-format" in names
    config = tmp_path / "hub.conf"
    for name in names:
        # The file is read (a bad value is refused as a value, not as a name), then --threads -1 stops the hub.
        config.write_text(f"{name} = \x01\n")
        code, err = serve("--config", str(config), "--threads", "-1")
        assert code == 64, (name, err)
        assert "unknown setting" not in err, (name, err)
    config.write_text("no-such-option = 1\n")
    assert "unknown setting 'no-such-option'" in serve("--config", str(config))[1]


# --- logs ----------------------------------------------------------------------------------------------------------

def test_json_logs_are_one_object_per_line_without_tokens(tmp_path):
    hub = Hub(*W, "--log-format", "json", "--log-level", "info")
    lines = collect_stderr(hub)
    token = mint(["w1"])
    watcher = Watcher(hub, token)
    watcher.subscribe("w1", "e1", expect_seq=0)
    opened = lines.wait_for(lambda l: "websocket open" in l)
    watcher.close()
    hub.stop()
    assert hub.proc.returncode == 0
    assert lines.wait_for(lambda l: '"exiting"' in l)
    records = [json.loads(line) for line in lines.lines]
    for record in records:
        assert list(record)[:4] == ["time", "level", "logger", "message"], record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record
        assert record["level"] in ("trace", "debug", "info", "notice", "warning", "error", "critical")
    open_record = json.loads(opened[0])
    assert open_record["path"] == "/v1/ws?…" and open_record["level"] == "info"
    assert [r["message"] for r in records if r["level"] == "notice"][-1] == "exiting"
    assert all(token not in line for line in lines.lines)


def test_a_slow_sse_reader_is_cut_off_once_and_counted(hub_factory):
    """An SSE reader with a tiny receive buffer that never reads: once the kernel holds all it will and the budget is
    full too, the hub ends the stream, once."""
    budget = 65536
    hub = hub_factory(*W, "--outbound-budget", str(budget))
    token = mint(["w1"])
    slow = socket.create_connection((hub.host, hub.port), timeout=15)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(f"GET {hc.sse_path('w1', 'firehose')} HTTP/1.1\r\nHost: localhost\r\n"
                 f"Authorization: Bearer {token}\r\n\r\n".encode())
    head = b""
    while b"retry: 3000\n\n" not in head:
        head += slow.recv(4096)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    message = "x" * 8000
    for start in range(0, 700, 50):
        ingest(hub, [hc.node_event("firehose", "step", "node.log", {"level": "debug", "message": message})
                     for _ in range(start, start + 50)])
    eventually(lambda: scrape(hub)["hub_open_connections{transport=sse}"] == 0, what="the slow stream ended")
    metrics = scrape(hub)
    assert metrics["hub_slow_consumer_disconnects_total{transport=sse}"] == 1
    assert metrics["hub_slow_consumer_disconnects_total{transport=websocket}"] == 0
    # Reading at last: what the kernel had taken before the cut, in order from seq 1 (the first 100 KB of it; the
    # rest crawls through the 4 KB window).
    body = head
    while len(body) < 100_000 and (chunk := slow.recv(65536)):
        body += chunk
    seqs = [int(line[4:]) for line in body.decode().split("\n")[:-1] if line.startswith("id: ")]
    assert len(seqs) >= 10 and seqs == list(range(1, len(seqs) + 1))
    slow.close()


def test_a_burst_beyond_the_budget_in_one_tick_reaches_fast_readers(hub_factory):
    """One ingestion batch of 400 KB reaches an SSE stream and an uncompressed WebSocket whose budget is 64 KB: the
    hub hands the burst to the kernel as the budget fills, so readers that keep up are not taken for slow ones."""
    hub = hub_factory(*W, "--outbound-budget", "65536")
    token = mint(["w1"])
    watcher = Watcher(hub, token, timeout=15, compression=None)
    watcher.subscribe("w1", "burst", expect_seq=0)
    sse = open_live_sse(hub, "w1", "burst", token, timeout=15)
    message = "y" * 8000
    ingest(hub, [hc.node_event("burst", "step", "node.log", {"level": "debug", "message": message}) for _ in range(50)])
    assert [e["seq"] for e in watcher.events(50)] == list(range(1, 51))
    assert [sse.next_message()["json"]["seq"] for _ in range(50)] == list(range(1, 51))
    metrics = scrape(hub)
    assert metrics["hub_slow_consumer_disconnects_total{transport=sse}"] == 0
    assert metrics["hub_slow_consumer_disconnects_total{transport=websocket}"] == 0
    assert metrics["hub_open_connections{transport=sse}"] == 1
    watcher.close()
    sse.close()


def test_redis_parts_follow_the_one_precedence_order(hub_factory, redis_server, tmp_path):
    """The database named in HUB_REDIS_URL (environment) beats redis-db in the file; a --redis-db flag beats both."""
    config = tmp_path / "hub.conf"
    config.write_text("redis-db = 3\n")
    token = mint(["w1"])
    for args, expected in (((), "2"), (("--redis-db", "4"), "4")):
        hub = hub_factory(*W, "--config", str(config), *args, env={"HUB_REDIS_URL": f"{redis_server.url}/2"})
        execution = f"db-{expected}"
        ingest(hub, hc.log_event(execution, 0))
        stored = {db: redis_server.cli("-n", db, "EXISTS", f"execution:{execution}:log") for db in ("2", "3", "4")}
        assert stored == {db: ("1" if db == expected else "0") for db in ("2", "3", "4")}, (args, stored)
