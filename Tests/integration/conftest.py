"""Fixtures that start a real hub process (the binary under test) on a free port."""
import os
import subprocess
import threading
import pytest

HUB_BIN = os.environ.get("HUB_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", ".build", "debug", "hub")


def terminate(proc, grace=10):
    """SIGTERM, then SIGKILL if the process is still there after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
        terminate(self.proc)


class StderrLines:
    """The hub's log (its stderr), collected line by line in a background thread, so that a test can look for a
    log line without blocking on the pipe. Attach with `collect_stderr(hub)` right after the hub started."""

    def __init__(self, stream):
        self.lines = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def matching(self, predicate):
        with self._cond:
            return [line for line in self.lines if predicate(line)]

    def wait_for(self, predicate, timeout=10.0):
        """The lines matching `predicate` once there is at least one (an empty list after `timeout` seconds)."""
        with self._cond:
            self._cond.wait_for(lambda: any(predicate(line) for line in self.lines), timeout)
            return [line for line in self.lines if predicate(line)]


def collect_stderr(hub):
    """Starts (once) collecting `hub`'s stderr lines; returns the StderrLines."""
    if getattr(hub, "stderr_lines", None) is None:
        hub.stderr_lines = StderrLines(hub.proc.stderr)
    return hub.stderr_lines


def pytest_addoption(parser):
    parser.addoption("--broker", choices=("embedded", "redis"), default="embedded",
                     help="run hubs started by hub_factory on the embedded broker or on a real redis-server")


@pytest.fixture(scope="session")
def broker_redis(request, tmp_path_factory):
    """With --broker redis: one redis-server for the session (each test gets its own key prefix)."""
    if request.config.getoption("--broker") != "redis":
        yield None
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def on_redis(broker_redis):
    """True when this run's hubs share a Redis (--broker redis)."""
    return broker_redis is not None


_prefixes = iter(range(1, 1 << 30))


@pytest.fixture
def hub_factory(broker_redis):
    """Starts hubs; with --broker redis every hub of one test shares one Redis key prefix, so they act as one."""
    started = []
    redis_args = ()
    if broker_redis is not None:
        redis_args = ("--redis", broker_redis.url, "--redis-prefix", f"t{next(_prefixes)}:")

    def start(*args, env=None):
        hub = Hub(*args, *redis_args, env=env)
        started.append(hub)
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def echo_hub(hub_factory):
    return hub_factory("--echo")


# --- Redis ---------------------------------------------------------------------------------------------------------

REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, in its own folder. Persistence is append-only with an fsync per
    write (`appendfsync always`, as Deploy/redis.conf recommends), so a killed and restarted server keeps every write
    it acknowledged."""

    def __init__(self, tmp_path, *extra, port=None):
        self.dir = tmp_path
        self.port = port or free_port()
        self.extra = list(extra)
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no", *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Redis logs "Ready to accept connections" once it listens (and has loaded its append-only file).
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server did not start on port {self.port}")
        threading.Thread(target=lambda out: [None for _ in out], args=(self.proc.stdout,), daemon=True).start()

    def kill(self):
        """SIGKILL: no goodbye to the clients, no final save."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc:
            terminate(self.proc)

    def cli(self, *args):
        """redis-cli's answer, stripped; raises on failure."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=10,
                             check=True)
        return out.stdout.strip()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    yield server
    server.stop()
