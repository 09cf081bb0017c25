"""Fixtures that start a real hub process (the binary under test) on a free port."""
import os
import subprocess
import pytest

HUB_BIN = os.environ.get("HUB_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", ".build", "debug", "hub")


class Hub:
    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen(
            [HUB_BIN, "serve", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stdout.readline()
        if not line.startswith("hub listening on "):
            self.proc.kill()
            raise RuntimeError(f"hub did not start: {line!r} {self.proc.stderr.read()}")
        self.host, port = line.split()[-1].rsplit(":", 1)
        self.port = int(port)

    @property
    def url(self):
        return f"ws://{self.host}:{self.port}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def hub_factory():
    started = []

    def start(*args, env=None):
        hub = Hub(*args, env=env)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def echo_hub(hub_factory):
    return hub_factory("--echo")
