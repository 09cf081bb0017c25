"""Interoperability with Python's `websockets` client, compression negotiated."""
import asyncio
import os
import random

import pytest
from websockets.asyncio.client import connect

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 4 << 20]


def text_of(size, rng):
    # Mixed ASCII and multi-byte characters, exactly `size` bytes of UTF-8.
    alphabet = "abcdefghij κόσμε ✓ 𝄞"
    out = []
    n = 0
    while n < size:
        ch = rng.choice(alphabet)
        b = len(ch.encode())
        if n + b > size:
            ch, b = "x", 1
        out.append(ch)
        n += b
    return "".join(out)


@pytest.mark.parametrize("compression", ["deflate", None])
def test_text_and_binary_round_trip(echo_hub, compression):
    async def run():
        rng = random.Random(42)
        async with connect(echo_hub.url + "/ws/echo", compression=compression, max_size=None) as ws:
            negotiated = ws.response.headers.get("Sec-WebSocket-Extensions")
            if compression:
                assert negotiated == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            else:
                assert negotiated is None
            for size in SIZES:
                message = text_of(size, rng)
                await ws.send(message)
                assert await ws.recv() == message
                payload = os.urandom(size // 2) + bytes(size - size // 2)  # half random, half compressible
                await ws.send(payload)
                assert await ws.recv() == payload
            # Fragmented sends are reassembled by the hub.
            await ws.send(iter(["frag", "mented ", "κόσμε"]))
            assert await ws.recv() == "fragmented κόσμε"
    asyncio.run(run())


def test_hub_answers_client_pings(echo_hub):
    async def run():
        async with connect(echo_hub.url + "/ws/echo") as ws:
            latency = await asyncio.wait_for(await ws.ping(b"are you there"), timeout=5)
            assert latency >= 0
    asyncio.run(run())


def test_close_handshake_echoes_code(echo_hub):
    async def run():
        async with connect(echo_hub.url + "/ws/echo") as ws:
            await ws.close(code=4001, reason="done")
            assert ws.close_code == 4001
            assert ws.protocol.close_rcvd.code == 4001
            assert ws.protocol.close_rcvd.reason == ""
    asyncio.run(run())


def test_negotiated_small_server_window_is_honoured(echo_hub):
    """A client that allows the hub only a 512-byte window (server_max_window_bits=9) must get frames that
    inflate with that window, even for messages that repeat content from further back."""
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

    async def run():
        factory = ClientPerMessageDeflateFactory(server_max_window_bits=9, client_max_window_bits=True)
        async with connect(echo_hub.url + "/ws/echo", extensions=[factory], compression=None, max_size=None) as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].endswith("server_max_window_bits=9")
            block = os.urandom(2048)
            payload = block * 16  # repeats at a distance of 2048 bytes: a 15-bit window would reach back that far
            await ws.send(payload)
            assert await ws.recv() == payload
    asyncio.run(run())
