"""Client helpers for the stream tests: engine signatures, watcher tokens, ingestion, an SSE reader and a JSON
WebSocket watcher. Standard library plus `websockets` only. Every wait is a blocking read with a timeout."""
import base64
import hashlib
import hmac
import http.client
import json
import socket
import time

from websockets.sync.client import connect as ws_connect

from protocol_schemas import validate, validate_event, validate_ws_server_message

TOKEN_SECRET = "token-secret-0123456789abcdef"
ENGINE_SECRET = "engine-secret-0123456789abcdef"
SECRET_ARGS = ("--token-secret", TOKEN_SECRET, "--engine-secret", ENGINE_SECRET)


# --- engine signatures and ingestion -------------------------------------------------------------------------------

def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def signature(body: bytes, ts, secret=ENGINE_SECRET):
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return "sha256=" + mac


def signed_headers(body: bytes, ts=None, secret=ENGINE_SECRET):
    ts = int(time.time()) if ts is None else ts
    return {"Content-Type": "application/json", "X-Hub-Timestamp": str(ts),
            "X-Hub-Signature": signature(body, ts, secret)}


def request(hub, method, path, body=None, headers=None, timeout=10.0, source=None):
    """One request on a fresh connection (from local address `source`, if given); returns (status, headers with
    lower-case names, body bytes)."""
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def error_body(data, code, field=None):
    """Parses and validates an HTTP refusal body; checks its code (and field)."""
    obj = json.loads(data)
    validate("error-response", obj)
    assert obj["error"] == code, obj
    if field is not None:
        assert obj.get("field") == field, obj
    return obj


def post_raw(hub, body: bytes, headers=None, method="POST", path="/v1/jobs/progress"):
    return request(hub, method, path, body=body, headers=headers)


def ingest(hub, payload):
    """Posts one event or a list of events (as a batch) signed correctly; expects 202; returns the accepted list."""
    body_obj = {"events": payload} if isinstance(payload, list) else payload
    validate("ingest-request", body_obj)
    body = compact(body_obj)
    status, headers, data = post_raw(hub, body, signed_headers(body))
    assert status == 202, (status, data)
    obj = json.loads(data)
    validate("ingest-response", obj)
    n = len(payload) if isinstance(payload, list) else 1
    assert len(obj["accepted"]) == n
    return obj["accepted"]


# --- tokens --------------------------------------------------------------------------------------------------------

def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(workspaces=("w1",), sub="alice", ttl=3600, exp=None, secret=TOKEN_SECRET, header=None, sign=True):
    header = header or {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "workspaces": list(workspaces), "exp": int(time.time()) + ttl if exp is None else exp}
    signing_input = b64url(compact(header)) + "." + b64url(compact(claims))
    sig = b64url(hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()) if sign else ""
    return signing_input + "." + sig


# --- delivered events ----------------------------------------------------------------------------------------------

def node_event(execution, node, event, data=None, workspace="w1", **extra):
    obj = {"event": event, "execution_id": execution, "workspace_id": workspace, "node_key": node}
    if data is not None:
        obj["data"] = data
    obj.update(extra)
    return obj


def exec_event(execution, event, data=None, workspace="w1", **extra):
    obj = {"event": event, "execution_id": execution, "workspace_id": workspace}
    if data is not None:
        obj["data"] = data
    obj.update(extra)
    return obj


def log_event(execution, i, size=40, workspace="w1", node="step"):
    message = (f"line {i} " + "x" * size)[:size]
    return node_event(execution, node, "node.log", {"level": "info", "message": message}, workspace=workspace)


# --- SSE -----------------------------------------------------------------------------------------------------------

class SSEStream:
    """A raw-socket SSE client: parses the response head, then `id/event/data/retry` blocks and comments
    incrementally. Every read blocks at most `timeout` seconds (socket.timeout otherwise)."""

    def __init__(self, hub, path, headers=None, timeout=5.0, rcvbuf=None):
        if rcvbuf:
            # Set before connecting, so that the small window is what the hub's side sees from the start.
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(timeout)
            self.sock.connect((hub.host, hub.port))
        else:
            self.sock = socket.create_connection((hub.host, hub.port), timeout=timeout)
        lines = [f"GET {path} HTTP/1.1", f"Host: {hub.host}:{hub.port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        self.eof = False
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"closed before the response head: {self.buf!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        head_lines = head.decode("latin-1").split("\r\n")
        self.status_line = head_lines[0]
        self.status = int(self.status_line.split()[1])
        self.header_list = []
        for line in head_lines[1:]:
            name, _, value = line.partition(":")
            self.header_list.append((name.strip(), value.strip()))
        self.headers = {k.lower(): v for k, v in self.header_list}
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.raw_body = b""    # every body byte decoded so far (after de-chunking)
        self._pending = b""    # body bytes not parsed into lines yet
        self._chunk_left = 0

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_body(self):
        """For refusals: the whole Content-Length body."""
        n = int(self.headers.get("content-length", "0"))
        while len(self.buf) < n and self._fill():
            pass
        return self.buf[:n]

    def _decode_available(self):
        if not self.chunked:
            self.raw_body += self.buf
            self._pending += self.buf
            self.buf = b""
            return
        while True:
            if self._chunk_left == 0:
                if b"\r\n" not in self.buf:
                    return
                size_line, _, rest = self.buf.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    self.buf = rest
                    self.eof = True
                    return
                self.buf = rest
                self._chunk_left = size + 2  # data plus CRLF
            take = self.buf[: self._chunk_left]
            self.buf = self.buf[self._chunk_left:]
            self._chunk_left -= len(take)
            data = take if self._chunk_left >= 2 else take[: len(take) - (2 - self._chunk_left)]
            self.raw_body += data
            self._pending += data
            if self._chunk_left:
                return

    def _next_line(self):
        while True:
            self._decode_available()
            if b"\n" in self._pending:
                line, _, self._pending = self._pending.partition(b"\n")
                return line.rstrip(b"\r").decode()
            if self.eof:
                return None
            if not self._fill():
                self._decode_available()
                if b"\n" not in self._pending:
                    return None

    def next(self):
        """The next block as a dict: {"comment": text} for a comment line, {"retry": n} for a retry-only block,
        else {"id": .., "event": .., "data": ..}; None at EOF."""
        block = {}
        data_lines = []
        while True:
            line = self._next_line()
            if line is None:
                assert not block and not data_lines, f"stream ended inside a block: {block} {data_lines}"
                return None
            if line == "":
                if block or data_lines:
                    if data_lines:
                        block["data"] = "\n".join(data_lines)
                    return block
                continue
            if line.startswith(":"):
                assert not block and not data_lines, "comment inside a block"
                return {"comment": line[1:].strip()}
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data_lines.append(value)
            elif name == "retry":
                block["retry"] = int(value)
            else:
                assert name in ("id", "event"), f"unexpected SSE field {line!r}"
                block[name] = value

    def next_message(self):
        """The next block that is not a comment (heartbeats are skipped); validates it against the schemas."""
        while True:
            block = self.next()
            if block is None or "comment" not in block:
                return check_sse_block(block)

    def close(self):
        self.sock.close()


def check_sse_block(block):
    if block is None or set(block) == {"retry"}:
        return block
    data = json.loads(block["data"])
    kind = block.get("event")
    if kind == "replay.truncated":
        assert "id" not in block
        validate("sse-replay-truncated", data)
    elif kind == "reconnect":
        assert "id" not in block
        validate("sse-reconnect", data)
    else:
        validate_event(data)
        assert block["id"] == str(data["seq"]) and kind == data["event"], block
    block["json"] = data
    return block


def sse_path(workspace, execution, query=""):
    return f"/api/v1/workspaces/{workspace}/executions/{execution}/stream" + (f"?{query}" if query else "")


def open_sse(hub, workspace, execution, token=None, query="", headers=None, timeout=5.0, rcvbuf=None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    s = SSEStream(hub, sse_path(workspace, execution, query), headers, timeout=timeout, rcvbuf=rcvbuf)
    return s


def open_live_sse(hub, workspace, execution, token, **kw):
    """Opens an accepted SSE stream and consumes its `retry:` preamble: the stream is registered by then."""
    s = open_sse(hub, workspace, execution, token, **kw)
    assert s.status == 200, (s.status_line, s.read_body())
    assert s.next() == {"retry": 3000}
    return s


# --- WebSocket -----------------------------------------------------------------------------------------------------

class Watcher:
    """A JSON watcher on /v1/ws using the `websockets` sync client. Every received message is schema-validated."""

    def __init__(self, hub, token=None, timeout=5.0, **kw):
        path = "/v1/ws" + (f"?access_token={token}" if token else "")
        self.ws = ws_connect(f"ws://{hub.host}:{hub.port}{path}", open_timeout=timeout, max_size=None, **kw)
        self.timeout = timeout
        self.next_id = 1

    def send(self, obj):
        self.ws.send(json.dumps(obj))

    def recv(self, timeout=None, skip_heartbeats=True):
        """The next message within `timeout` seconds (TimeoutError otherwise), heartbeats skipped by default."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0)))
            validate_ws_server_message(msg)
            if skip_heartbeats and msg == {"type": "heartbeat"}:
                continue
            return msg

    def op(self, op, **fields):
        """Sends an op with a fresh id; returns the id."""
        rid = self.next_id
        self.next_id += 1
        self.send({"op": op, "id": rid, **fields})
        return rid

    def subscribe(self, workspace, execution, since=None, expect_seq=None):
        fields = {"workspace": workspace, "execution": execution}
        if since is not None:
            fields["since"] = since
        rid = self.op("subscribe", **fields)
        reply = self.recv()
        assert reply["type"] == "subscribed" and reply["id"] == rid, reply
        assert (reply["workspace"], reply["execution"]) == (workspace, execution)
        if expect_seq is not None:
            assert reply["seq"] == expect_seq, reply
        return reply

    def events(self, n, timeout=None):
        """The next n messages, each of which must be an event."""
        out = []
        for _ in range(n):
            msg = self.recv(timeout)
            assert msg["type"] == "event", msg
            out.append(msg)
        return out

    def close(self):
        self.ws.close()


def strip_type(msg):
    return {k: v for k, v in msg.items() if k != "type"}


# --- metrics -------------------------------------------------------------------------------------------------------

def scrape(hub, source=None):
    """GET /metrics, parsed: {"name" or "name{label=value,...}": float}. Checks the content type and that every
    sample line belongs to a declared metric family."""
    status, headers, body = request(hub, "GET", "/metrics", source=source)
    assert status == 200, (status, body)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples, families = {}, set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{", 1)[0]
        family = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        assert name in families or family in families, f"sample without a TYPE line: {line}"
        samples[key.replace('"', "")] = float(value)
    return samples


def metric_deltas(before, after):
    """The samples that changed between two scrapes, as after - before."""
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k, 0.0)}
