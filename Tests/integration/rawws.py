"""A deliberately minimal WebSocket client over a raw socket, for tests that must misbehave on purpose
(never answer a ping, stop reading) or read the exact bytes the hub sends."""
import base64
import os
import socket
import struct

KEY = base64.b64encode(b"0123456789abcdef").decode()


def http_request(host, port, raw: bytes, timeout=10.0):
    """Sends raw bytes, returns (status line, headers dict, body, closed) after the server ends the response."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(raw)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    # A refusal must end the connection: the next read sees EOF (within the timeout, or this raises).
    closed = None
    if headers.get("connection", "").lower() == "close":
        closed = s.recv(1) == b""
    s.close()
    return lines[0], headers, body, closed


def upgrade_request(path="/ws/echo", extra=b"", key=KEY, version=b"13"):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + b"Sec-WebSocket-Key: " + key.encode() + b"\r\nSec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n")


class RawSocket:
    def __init__(self, host, port, path="/ws/echo", rcvbuf=None, timeout=10.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.sendall(upgrade_request(path))
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = head.split(b"\r\n")[0].decode()

    def send_frame(self, opcode, payload=b"", fin=True):
        mask = os.urandom(4)
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n <= 125:
            header = struct.pack("!BB", b0, 0x80 | n)
        elif n <= 0xFFFF:
            header = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", b0, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def read_frame(self):
        """Returns (opcode, payload, raw frame bytes) of the next server frame."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames are never masked"
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._need(off + n)
        raw = self.buf[:off + n]
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload, raw

    def read_eof(self):
        """True when the server closed TCP (after anything still buffered)."""
        if self.buf:
            return False
        return self.sock.recv(1) == b""

    def close(self):
        self.sock.close()
