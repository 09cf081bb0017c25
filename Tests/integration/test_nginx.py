"""End to end through a real nginx running the shipped Deploy/nginx/hub.conf (only its upstream port, listening
address and access log path changed, see test_deploy.nginx_site). Events are posted one at a time and each must reach the watcher
within 2 s before the next is posted: a proxy that buffers a stream fails here. nginx is started and stopped by
the test, on a free loopback port; it never depends on a system nginx service."""
import http.client
import json
import socket
import subprocess
import time

import pytest

import hubclient as hc
from conftest import free_port, terminate
from hubclient import Watcher, exec_event, ingest, log_event, mint, node_event, open_live_sse, open_sse
from test_deploy import nginx_command, nginx_main_conf, nginx_site

LOCKSTEP_TIMEOUT = 2.0


class Nginx:
    """nginx in the foreground with the shipped site config in front of `hub`; ready once its port accepts."""

    host = "127.0.0.1"

    def __init__(self, tmp_path, hub, timeout=10.0):
        self.port = free_port()
        self.access_log = tmp_path / "hub-access.log"
        self.conf = nginx_main_conf(tmp_path, nginx_site(hub.port, self.port, self.access_log))
        self.proc = subprocess.Popen(nginx_command(self.conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except ConnectionRefusedError:
                pass
            try:  # waits a little, and notices at once if nginx gave up (the port was taken, a config error)
                self.proc.wait(timeout=0.05)
                raise RuntimeError(f"nginx exited: {(self.conf.parent / 'error.log').read_text()}")
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not listen on {self.port} within {timeout} s")

    def stop(self):
        terminate(self.proc)


@pytest.fixture
def proxied(hub_factory, tmp_path):
    hub = hub_factory(*hc.SECRET_ARGS)
    nginx = Nginx(tmp_path, hub)
    yield hub, nginx
    nginx.stop()


def execution(e):
    """A small execution's events, in the order the engine reports them."""
    return [exec_event(e, "execution.started", {"workflow": "wf", "nodes": [{"key": "a"}, {"key": "b",
                                                                                            "depends_on": ["a"]}]}),
            node_event(e, "a", "node.started"), log_event(e, 1, node="a"),
            node_event(e, "a", "node.completed", {"duration_ms": 5}), node_event(e, "b", "node.started"),
            node_event(e, "b", "node.failed", {"error": "boom"}),
            exec_event(e, "execution.failed", {"error": "boom", "failed_node": "b"})]


def test_websocket_through_nginx_delivers_each_event_before_the_next_is_posted(proxied):
    hub, nginx = proxied
    direct = Watcher(hub)
    negotiated = direct.ws.response.headers["Sec-WebSocket-Extensions"]
    direct.close()

    watcher = Watcher(nginx, timeout=LOCKSTEP_TIMEOUT)  # the websockets client offers permessage-deflate
    # Negotiated end to end: the hub's answer passes nginx unchanged.
    assert [ext.name for ext in watcher.ws.protocol.extensions] == ["permessage-deflate"]
    assert watcher.ws.response.headers["Sec-WebSocket-Extensions"] == negotiated
    exp = int(time.time()) + 3600
    rid = watcher.op("auth", token=mint(exp=exp))
    assert watcher.recv() == {"type": "authenticated", "id": rid, "sub": "alice", "workspaces": ["w1"],
                              "expires_at": exp}
    watcher.subscribe("w1", "e1", expect_seq=0)
    for seq, event in enumerate(execution("e1"), 1):
        assert [a["seq"] for a in ingest(nginx, event)] == [seq]
        msg = watcher.recv(timeout=LOCKSTEP_TIMEOUT)
        assert (msg["type"], msg["execution"], msg["seq"], msg["event"]) == ("event", "e1", seq, event["event"])
    watcher.close()


def test_sse_through_nginx_delivers_each_event_before_the_next_is_posted(proxied):
    hub, nginx = proxied
    stream = open_live_sse(nginx, "w1", "e1", mint(), timeout=LOCKSTEP_TIMEOUT)
    assert stream.headers["content-type"] == "text/event-stream"
    for seq, event in enumerate(execution("e1"), 1):
        assert [a["seq"] for a in ingest(nginx, event)] == [seq]
        block = stream.next_message()  # each read waits at most LOCKSTEP_TIMEOUT (socket.timeout otherwise)
        assert (block["id"], block["event"], block["json"]["seq"]) == (str(seq), event["event"], seq)
    stream.close()


def test_ingestion_through_nginx(proxied):
    hub, nginx = proxied
    body = hc.compact({"events": [log_event("e2", 1), log_event("e2", 2)]})
    status, _, data = hc.post_raw(nginx, body, hc.signed_headers(body))
    assert status == 202
    assert json.loads(data) == {"accepted": [
        {"execution_id": "e2", "workspace_id": "w1", "seq": 1, "duplicate": False},
        {"execution_id": "e2", "workspace_id": "w1", "seq": 2, "duplicate": False}]}
    # Refusals are the hub's own (its JSON body), passed through.
    status, _, data = hc.post_raw(nginx, body, hc.signed_headers(body, secret="not-the-engine-secret-0123"))
    assert status == 403
    hc.error_body(data, "bad_signature")


def get(nginx, path, source="127.0.0.1"):
    conn = http.client.HTTPConnection(nginx.host, nginx.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def test_plain_routes_through_nginx(proxied):
    hub, nginx = proxied
    status, content_type, body = get(nginx, "/healthz")
    assert status == 200
    status, content_type, body = get(nginx, "/readyz")
    assert status == 200
    status, content_type, body = get(nginx, "/client/hub.js")
    assert (status, content_type) == (200, "text/javascript; charset=utf-8")
    assert b"export class HubClient" in body
    # Only the hub's public routes are proxied.
    assert get(nginx, "/ws/echo")[0] == 404

    # /metrics from this machine, in Prometheus text; from any other address nginx refuses it. On loopback,
    # 127.0.0.2 is another client address.
    status, content_type, body = get(nginx, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    status, _, _ = get(nginx, "/metrics", source="127.0.0.2")
    assert status == 403


def test_tokens_in_query_strings_stay_out_of_nginx_access_log(proxied):
    """EventSource and the browser WebSocket carry the token in the URL; the shipped access log format drops the
    query string, so the token is never written, while each request is still logged."""
    hub, nginx = proxied
    token = mint(["w1"])
    watcher = Watcher(nginx, token)
    watcher.subscribe("w1", "e7", expect_seq=0)
    watcher.close()
    stream = open_sse(nginx, "w1", "e7", query=f"access_token={token}&last_event_id=0")
    assert stream.status == 200 and stream.next() == {"retry": 3000}
    stream.close()
    # nginx writes an access log line when a request ends; stopping it gracefully ends every request first.
    nginx.stop()
    lines = [l for l in nginx.access_log.read_text().splitlines() if "/v1/ws" in l or "/stream" in l]
    assert len(lines) == 2, lines
    assert '"GET /v1/ws HTTP/1.1" 101 ' in lines[0]
    assert '"GET /api/v1/workspaces/w1/executions/e7/stream HTTP/1.1" 200 ' in lines[1]
    text = nginx.access_log.read_text()
    assert token not in text and token.rsplit(".", 1)[1] not in text and "access_token" not in text
