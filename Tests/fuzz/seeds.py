#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into corpus/<target>/seed-*.

The seeds are the vectors of the unit tests and the examples of RFC 6455, RFC 7692 and Protocol/README.md, laid out
as each entry point reads its input (Sources/HubFuzz: leading configuration bytes, then the bytes under test).
Running it again rewrites the same files.
"""
import base64
import hashlib
import hmac
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# ---- frames: [config][chunk seed] wire, or structured records when config & 8 ----

def frame(opcode, payload, fin=True, rsv1=False, key=b"\x37\xfa\x21\x3d"):
    b0 = opcode | (0x80 if fin else 0) | (0x40 if rsv1 else 0)
    n = len(payload)
    if n < 126:
        head = bytes([b0, 0x80 | n])
    elif n < 65536:
        head = bytes([b0, 0x80 | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, 0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def deflate(data, level=6, wbits=15):
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def record(b0, payload, zero_key=True):
    n = len(payload)
    flag = 0 if zero_key else 0x80
    if n < 127:
        return bytes([b0, flag | n]) + payload
    return bytes([b0, flag | 127]) + struct.pack(">H", n) + payload


hello_deflated = bytes([0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00])  # RFC 7692 §7.2.3.1
client_ops = [
    b'{"op":"auth","id":1,"token":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}',
    b'{"op":"subscribe","id":2,"workspace":"w1","execution":"e9","since":41}',
    b'{"op":"unsubscribe","id":3,"workspace":"w1","execution":"e9"}',
]
frame_seeds = {
    # RFC 6455 §5.7, as a client sends them (masked).
    "masked-hello": frame(0x1, b"Hello"),
    "fragmented-hello": frame(0x1, b"Hel", fin=False) + frame(0x0, b"lo"),
    "ping-pong": frame(0x9, b"Hello") + frame(0xA, b"Hello"),
    "binary-256": frame(0x2, bytes(range(256))),
    "binary-64k": frame(0x2, bytes((i * 7) & 0xFF for i in range(65536))),
    "control-between-fragments": frame(0x1, b"Hel", fin=False) + frame(0x9, b"\x01\x02") + frame(0x0, b"lo"),
    "empty-and-uneven": frame(0x1, b"") + frame(0x2, b"0123456789abcdefghij", key=b"\x01\x02\x03\x04")
    + frame(0x1, "é✓".encode()),
    "close-1000": frame(0x8, struct.pack(">H", 1000) + b"bye"),
    "close-empty": frame(0x8, b""),
    "close-one-byte": frame(0x8, b"\x03"),
    "close-1005": frame(0x8, struct.pack(">H", 1005)),
    "close-bad-utf8": frame(0x8, struct.pack(">H", 1000) + b"\xff"),
    "unmasked": bytes([0x81, 0x05]) + b"Hello",
    "rsv2": bytes([0xA1, 0x80, 0, 0, 0, 0]),
    "reserved-opcode": frame(0x3, b""),
    "long-ping": frame(0x9, bytes(126)),
    "fragmented-ping": frame(0x9, b"\x01", fin=False),
    "continuation-first": frame(0x0, b"\x01"),
    "top-bit-length": bytes([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
    "non-minimal-length": bytes([0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4]),
    "too-large": bytes([0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0x11, 0x70, 1, 2, 3, 4]),
    "invalid-utf8": frame(0x1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"),
    "utf8-split": frame(0x1, b"\xce", fin=False) + frame(0x0, b"\xba"),
    # RFC 7692 §7.2.3: one frame, two frames, a stored block, a final block, two blocks.
    "deflate-hello": frame(0x1, hello_deflated, rsv1=True),
    "deflate-hello-split": frame(0x1, hello_deflated[:3], fin=False, rsv1=True) + frame(0x0, hello_deflated[3:]),
    "deflate-stored": frame(0x1, bytes([0x00, 0x05, 0x00, 0xFA, 0xFF]) + b"Hello\x00", rsv1=True),
    "deflate-bfinal": frame(0x1, bytes([0xF3, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00, 0x00]), rsv1=True),
    "deflate-two-blocks": frame(0x1, bytes([0xF2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xCA, 0xC9, 0xC9, 0x07, 0x00]),
                                rsv1=True),
    "deflate-context-takeover": frame(0x1, hello_deflated, rsv1=True) + frame(0x1, bytes([0xF2, 0x00, 0x11, 0x00, 0x00]),
                                                                             rsv1=True),
    "deflate-bomb": frame(0x2, deflate(bytes(200_000), 9), rsv1=True),
    "deflate-corrupt": frame(0x1, b"\xff\xff\xff\xff", rsv1=True),
    "deflate-bad-utf8": frame(0x1, deflate(b"ok \xff\xfe"), rsv1=True),
    "deflate-continuation-rsv1": frame(0x1, b"\x00", fin=False, rsv1=True) + frame(0x0, b"\x00", rsv1=True),
    "deflate-control-rsv1": frame(0x9, b"", rsv1=True),
    "deflate-window-9": frame(0x1, deflate(b"execution node.completed " * 40, 6, 9), rsv1=True),
    "deflate-ops": b"".join(frame(0x1, deflate(op), rsv1=True) for op in client_ops) + frame(0x8, struct.pack(">H", 1001)),
}
for name, wire in frame_seeds.items():
    write("frames", name, bytes([0x03, 0x00]) + wire)
# A few under the smaller limits and in other chunkings.
write("frames", "deflate-bomb-limit-1000", bytes([0x01, 0x05]) + frame_seeds["deflate-bomb"])
write("frames", "binary-256-limit-125", bytes([0x00, 0x01]) + frame_seeds["binary-256"])
write("frames", "fragments-frame-limit", bytes([0x06, 0x07]) + frame(0x2, bytes(900), fin=False) + frame(0x0, bytes(900)))
write("frames", "no-deflate-rsv1", bytes([0x33, 0x00]) + frame_seeds["deflate-hello"])
# Structured records (mask key 0): the same messages without header arithmetic.
write("frames", "records-deflate-hello", bytes([0x0B, 0x00]) + record(0xC1, hello_deflated))
write("frames", "records-deflate-fragments", bytes([0x0B, 0x03]) + record(0x41, hello_deflated[:4])
      + record(0x89, b"ping") + record(0x80, hello_deflated[4:]))
write("frames", "records-ops", bytes([0x0B, 0x09]) + b"".join(record(0xC1, deflate(op)) for op in client_ops)
      + record(0x81, client_ops[0]) + record(0x88, struct.pack(">H", 4000) + b"done"))
write("frames", "records-bomb", bytes([0x0A, 0x00]) + record(0xC2, deflate(bytes(100_000), 9)))

# ---- handshake: [config] request bytes (config & 0x40 == 0) or header lines ----

rfc_request = (b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\n"
               b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n")
hub_request = (b"GET /v1/ws HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
               b"Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\nSec-WebSocket-Version: 13\r\n"
               b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
write("handshake", "rfc6455-request", b"\x00" + rfc_request)
write("handshake", "hub-request-deflate", b"\x00" + hub_request)
write("handshake", "pipelined", b"\x06" + hub_request + rfc_request)
write("handshake", "post", b"\x00" + rfc_request.replace(b"GET", b"POST", 1))
write("handshake", "http10", b"\x00" + rfc_request.replace(b"HTTP/1.1", b"HTTP/1.0", 1))
write("handshake", "version-8", b"\x00" + rfc_request.replace(b"Version: 13", b"Version: 8"))
write("handshake", "chrome-extensions", b"\x03" + hub_request.replace(
    b"permessage-deflate; client_max_window_bits", b"permessage-deflate; client_max_window_bits, x-webkit-deflate-frame"))
lines = [
    "Host: server.example.com", "Upgrade: websocket", "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13",
]
extension_values = [
    "foo, permessage-deflate; client_max_window_bits=\"10\"; server_no_context_takeover",
    "bar; x=\"a\\\"b\"",
    "a; p=\"x,y\", b",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; mystery",
    "permessage-deflate; server_max_window_bits=12",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits=8, permessage-deflate",
    "permessage-deflate; client_max_window_bits=8",
    "permessage-deflate; ;",
    "UPGRADE: h2c, WebSocket",
]
for i, value in enumerate(extension_values):
    body = "\n".join(lines + ["Sec-WebSocket-Extensions: " + value]).encode()
    write("handshake", "lines-%02d" % i, bytes([0x40 | (i % 7)]) + body)
write("handshake", "lines-two-keys", b"\x40" + "\n".join(lines + ["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]).encode())
write("handshake", "lines-no-host", b"\x40" + "\n".join(lines[1:]).encode())

# ---- resp: [chunk seed] replies ----

def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)


resp_seeds = {
    "every-type": b"+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*2\r\n$1\r\na\r\n:7\r\n*0\r\n$0\r\n\r\n",
    "malformed": b"?what\r\n",
    "subscribe": b"*3\r\n" + bulk(b"subscribe") + bulk(b"hub:execution:e9:events") + b":1\r\n",
    "message": b"*3\r\n" + bulk(b"message") + bulk(b"hub:execution:e9:events")
    + bulk(b'{"execution":"e9","workspace":"w1","seq":1,"event":"execution.started","timestamp":"2026-11-25T12:00:00.000Z","data":{"status":"running"}}'),
    "script-reply": b"*3\r\n:0\r\n:2\r\n" + bulk(b"w1"),
    "xrange": b"*2\r\n*2\r\n" + bulk(b"1-0") + b"*2\r\n" + bulk(b"e") + bulk(b'{"seq":1}')
    + b"*2\r\n" + bulk(b"2-0") + b"*2\r\n" + bulk(b"e") + bulk(b'{"seq":2}'),
    "null-array": b"*-1\r\n",
    "nested": b"*1\r\n" * 7 + b":1\r\n",
    "too-deep": b"*1\r\n" * 9 + b":1\r\n",
    "noscript": b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
    "bad-integer": b":12a\r\n",
    # Found by fuzzing: hiredis allocated room for every announced element at the header (16 GiB here).
    "huge-array": b"*2147483647\r\n",
    "nested-array-headers": b"*1000000\r\n" * 8,
}
for name, wire in resp_seeds.items():
    write("resp", name, b"\x00" + wire)
    write("resp", name + "-bytewise", b"\x01" + wire)

# ---- ingest: [config] body ----

ingest_bodies = {
    "readme-node-completed": b'{"event":"node.completed","execution_id":"e-123","workspace_id":"w1","node_key":"fetch","data":{"duration_ms":1520}}',
    "readme-seed": b'{"event":"node.completed","execution_id":"e-123","node_key":"fetch","data":{"duration_ms":1234},"timestamp":"2026-11-29T10:00:00Z"}',
    "readme-batch": b'{"events":[' + b",".join([
        b'{"event":"execution.started","execution_id":"e9","workspace_id":"w1","timestamp":"2026-11-25T12:00:00.000Z","data":{"workflow":"nightly-etl","nodes":[{"key":"fetch"},{"key":"load","depends_on":["fetch"]}]}}',
        b'{"event":"node.started","execution_id":"e9","workspace_id":"w1","node_key":"fetch","data":{"attempt":1}}',
        b'{"event":"node.log","execution_id":"e9","workspace_id":"w1","node_key":"fetch","data":{"level":"warning","message":"slow mirror, retrying"}}',
        b'{"event":"node.completed","execution_id":"e9","workspace_id":"w1","node_key":"fetch","idempotency_key":"e9-fetch-done","data":{"duration_ms":1520,"output":{"rows":42,"files":3}}}',
        b'{"event":"node.failed","execution_id":"e9","workspace_id":"w1","node_key":"load","data":{"error":{"message":"connection refused","code":"ECONNREFUSED"},"duration_ms":30012}}',
        b'{"event":"execution.completed","execution_id":"e9","workspace_id":"w1","data":{"total_duration_ms":4210,"node_count":2}}',
        b'{"event":"execution.failed","execution_id":"e9","workspace_id":"w1","data":{"error":"node load failed","total_duration_ms":31570,"failed_node":"load"}}',
    ]) + b"]}",
    "output-preview-utf8": ('{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":1,"output":"'
                            + "é" * 300 + '"}}').encode(),
    "escapes": b'{"event":"node.log","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"message":"tab\\t nl\\n \\u00e9 \\ud83d\\ude00 \\u2028 \\"q\\""}}',
    "numbers": b'{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":1e3,"output":[0,-0,1.5e300,-2.5E-7,9007199254740993,1234567890123456789]}}',
    "errors": b'{"event":"node.completed","execution_id":"e1","workspace_id":"w1","node_key":"n","data":{"duration_ms":-1}}',
    "bad-json": b'{"event":',
    "duplicate-key": b'{"event":"node.started","event":"node.started"}',
    "deep": b"[" * 40 + b"]" * 40,
    "not-object": b"[1]",
    "empty-batch": b'{"events":[]}',
}
for name, body in ingest_bodies.items():
    write("ingest", name, b"\x00" + body)
write("ingest", "small-preview", b"\x05" + ingest_bodies["readme-batch"])
write("ingest", "small-batch", b"\x08" + ingest_bodies["readme-batch"])

# ---- token: [mode] ... ----

SECRET = b"fuzz-secret-0123456789abcdef"  # TokenTarget.secret


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def sign(header, claims):
    signing_input = b64url(header) + b"." + b64url(claims)
    return signing_input + b"." + b64url(hmac.new(SECRET, signing_input, hashlib.sha256).digest())


hs256 = b'{"alg":"HS256","typ":"JWT"}'
good_claims = b'{"sub":"alice","workspaces":["w1","w2"],"exp":1764000060}'
write("token", "raw-valid", b"\x00" + sign(hs256, good_claims))
write("token", "raw-expired", b"\x00" + sign(hs256, b'{"sub":"alice","workspaces":["w1"],"exp":1764000000}'))
write("token", "raw-wrong-secret", b"\x00" + sign(hs256, good_claims)[:-4] + b"AAAA")
write("token", "raw-alg-none", b"\x00" + b64url(b'{"alg":"none","typ":"JWT"}') + b"." + b64url(good_claims) + b".")
write("token", "raw-malformed", b"\x00!!.e30.sig")
write("token", "signed-claims", b"\x01" + good_claims)
write("token", "signed-header-and-claims", b"\x01" + b'{"alg":"HS256","kid":"k1"}\x00' + good_claims)
write("token", "signed-rs256", b"\x01" + b'{"alg":"RS256"}\x00' + good_claims)
write("token", "signed-bad-claims", b"\x01" + b'{"sub":"alice","workspaces":["w1",2],"exp":1764000060}')
write("token", "signed-float-exp", b"\x01" + b'{"sub":"a","workspaces":[],"exp":1.764000060e9}')
write("token", "minted", b"\x02\x10" + b"alice\x00w1\x00w2")
write("token", "minted-expired", b"\x02\xf0" + b"alice\x00w1")
write("token", "minted-escapes", b"\x02\x7f" + "al\"ice\\\u2028\x01\x00wé\x00".encode())
write("token", "minted-alg", b"\x82\x10" + b"alice\x00w1\x00none")
