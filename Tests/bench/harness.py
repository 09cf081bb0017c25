"""What the benchmarks share: the hub and Redis processes, `loadgen` subscriber groups and publishers, and the
server's CPU and RSS from /proc. Used by bench.py (against Nchan), soak.py and slow_readers.py."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOKEN_SECRET = "bench-token-secret-0123456789"
ENGINE_SECRET = "bench-engine-secret-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SERVER_CPU, LOAD_CPU = "0", "1"
NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"
# The limits the Nchan comparison raises (many SSE streams in one workspace; a short history per channel).
BENCH_LIMITS = ["--max-sse-per-workspace", "1000000", "--max-events-per-execution", "200"]
# Subscribers per loadgen process, and the source addresses they connect from (each has ~28k ephemeral ports).
PER_PROCESS = 15000
SOURCES = ",".join(f"127.0.0.{i}" for i in range(2, 10))


def build_release(products=("hub", "loadgen")):
    for product in products:
        subprocess.run(["swift", "build", "-c", "release", "--product", product], cwd=ROOT, check=True)
    return os.path.join(ROOT, ".build", "release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on {port}")
            time.sleep(0.05)


def proc_children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def cpu_split(pids):
    """(user, system) CPU seconds of the processes: utime and stime from /proc/PID/stat."""
    user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        system += int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_split(pids))


class WriteCalls:
    """Counts the write-family system calls (write, writev, send, sendto, sendmsg, sendmmsg) that the processes make
    between construction and `stop()`, with `perf stat` on the system-call tracepoints. /proc/PID/io's `syscw` does not
    count send and sendmsg, which the hub writes its sockets with, so without perf (or when it cannot attach) the count
    is None: unknown rather than wrong."""

    EVENTS = ["syscalls:sys_enter_write", "syscalls:sys_enter_writev", "syscalls:sys_enter_sendto",
              "syscalls:sys_enter_sendmsg", "syscalls:sys_enter_sendmmsg"]

    def __init__(self, pids):
        self.proc = None
        if shutil.which("perf") is None:
            return
        fd, self.path = tempfile.mkstemp(suffix=".perfstat")
        os.close(fd)
        self.proc = subprocess.Popen(["perf", "stat", "-x", ",", "-o", self.path, "-e", ",".join(self.EVENTS),
                                      "-p", ",".join(str(p) for p in pids)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        counted = {}
        with open(self.path) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) > 2 and fields[2] in self.EVENTS and fields[0].isdigit():
                    counted[fields[2]] = int(fields[0])
        os.unlink(self.path)
        return sum(counted.values()) if len(counted) == len(self.EVENTS) else None


def rss_bytes(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/statm") as f:
            total += int(f.read().split()[1]) * PAGE
    return total


def load_average():
    """The 1, 5 and 15 minute load averages (other work shares the machine)."""
    with open("/proc/loadavg") as f:
        return tuple(float(v) for v in f.read().split()[:3])


def mib(b):
    return b / 1024 / 1024


class Redis:
    def __init__(self, tmp):
        self.port = free_port()
        self.proc = subprocess.Popen(["taskset", "-c", LOAD_CPU, "redis-server", "--port", str(self.port), "--bind",
                                      "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class Hub:
    """`hub serve` pinned to the server CPU with one event loop thread; `args` are the settings of the run."""
    kind = "hub"

    def __init__(self, bin_dir, tmp, redis=None, prefix="b", args=BENCH_LIMITS):
        self.port = free_port()
        self.args = ["--port", str(self.port), "--threads", "1", "--token-secret", TOKEN_SECRET, "--engine-secret",
                     ENGINE_SECRET, "--log-level", "warning"] + list(args)
        if redis:
            self.args += ["--redis", redis.url, "--redis-prefix", prefix + ":"]
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, f"{bin_dir}/hub", "serve"] + self.args,
                                     stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "hub.log"), "a"), text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("hub listening"), line
        self.pids = [self.proc.pid]
        self.token = subprocess.run([f"{bin_dir}/hub", "token", "--secret", TOKEN_SECRET, "--workspace", "w1",
                                     "--ttl", "86400"], capture_output=True, text=True, check=True).stdout.strip()

    def rss(self):
        return rss_bytes(self.pids)

    def metrics(self):
        """`/metrics` as {'name{label=value}': number} (labels without quotes)."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name.replace('"', "")] = float(value)
        return out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


REPORT_SUMS = ("opened", "open", "closed_by_server", "reconnects", "reconnect_failures", "truncated", "pings", "pongs",
               "heartbeat_messages", "heartbeat_comments", "received", "duplicates", "out_of_order", "other_epoch")


# A report's latency histograms: to the load generator's read, and (read directly) to the socket, by the kernel's
# receive timestamp.
HISTOGRAMS = ("histogram_us", "arrival_histogram_us")


def merge_reports(reports):
    """One report out of several `loadgen subscribe` reports on the same channels: counts add up per channel,
    histograms merge, `fewest_heartbeats` is the least of all."""
    merged = None
    for r in reports:
        if merged is None:
            merged = dict(r)
            merged["close_codes"] = dict(r.get("close_codes", {}))
            for key in HISTOGRAMS:
                hist = r.get(key, [])
                merged[key] = dict(hist) if isinstance(hist, dict) else dict((v, c) for v, c in hist)
            continue
        for key in REPORT_SUMS:
            if key in r:
                merged[key] += r[key]
        if "fewest_heartbeats" in r:
            merged["fewest_heartbeats"] = min(merged["fewest_heartbeats"], r["fewest_heartbeats"])
        for code, n in r.get("close_codes", {}).items():
            merged["close_codes"][code] = merged["close_codes"].get(code, 0) + n
        merged["distinct"] = [a + b for a, b in zip(merged["distinct"], r["distinct"])]
        merged["connections_per_channel"] = [a + b for a, b in zip(merged["connections_per_channel"],
                                                                    r["connections_per_channel"])]
        for key in HISTOGRAMS:
            hist = r.get(key, [])
            for v, c in (hist.items() if isinstance(hist, dict) else hist):
                merged[key][v] = merged[key].get(v, 0) + c
    return merged


class Subscribers:
    """`loadgen subscribe` processes (at most 15,000 connections each), spread over source addresses 127.0.0.2-9.
    `extra` are more `loadgen subscribe` options (--rcvbuf, --mss, --reconnect)."""

    def __init__(self, ctx, server, transport, connections, channels, prefix, extra=(), wait=True):
        self.procs = []
        self.connections = connections
        n = 0
        while n < connections:
            count = min(PER_PROCESS, connections - n)
            proc = subprocess.Popen(
                ["taskset", "-c", LOAD_CPU, f"{ctx.bin}/loadgen", "subscribe", "--server", server.kind, "--transport",
                 transport, "--port", str(server.port), "--connections", str(count), "--channels", str(channels),
                 "--channel-prefix", prefix, "--token", server.token, "--source", SOURCES] + list(extra),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            self.procs.append(proc)
            n += count
        self.ok = self.failed = 0
        if wait:
            self.wait_ready()

    def wait_ready(self):
        for proc in self.procs:
            while True:
                line = proc.stdout.readline()
                assert line, "loadgen subscribe died"
                if line.startswith("ready "):
                    _, ok, failed = line.split()
                    self.ok += int(ok)
                    self.failed += int(failed)
                    break
        if self.failed:
            print(f"  ! {self.failed} of {self.connections} subscribers failed to connect", file=sys.stderr)

    def command(self, text):
        for proc in self.procs:
            proc.stdin.write(text + "\n")
        return [self.read(proc) for proc in self.procs]

    @staticmethod
    def read(proc):
        while True:
            line = proc.stdout.readline()
            assert line, "loadgen subscribe died"
            if not line.startswith("#"):
                return line.strip()

    def reset(self, epoch):
        assert self.command(f"reset {epoch}") == ["ok"] * len(self.procs)

    def pause(self):
        assert self.command("pause") == ["ok"] * len(self.procs)

    def resume(self):
        assert self.command("resume") == ["ok"] * len(self.procs)

    def report(self):
        return merge_reports(json.loads(text) for text in self.command("report"))

    def stop(self):
        for proc in self.procs:
            try:
                proc.stdin.write("quit\n")
                proc.stdin.close()
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def percentile(hist, p):
    total = sum(hist.values())
    if total == 0:
        return 0
    rank = p / 100 * total
    seen = 0
    for v in sorted(hist):
        seen += hist[v]
        if seen >= rank:
            return v
    return max(hist)


def publish_command(ctx, server, channels, prefix, rate, duration, epoch, size=40, connections=32, pipeline=1):
    return ["taskset", "-c", LOAD_CPU, f"{ctx.bin}/loadgen", "publish", "--server", server.kind, "--port",
            str(server.port), "--channels", str(channels), "--channel-prefix", prefix, "--rate", str(rate), "--duration",
            str(duration), "--epoch", str(epoch), "--size", str(size), "--engine-secret", ENGINE_SECRET,
            "--connections", str(connections), "--pipeline", str(pipeline)]


def publish(ctx, server, channels, prefix, rate, duration, epoch, size=40, connections=32, pipeline=1):
    """Publishes open-loop and waits for every answer; returns the publisher's report."""
    out = subprocess.run(publish_command(ctx, server, channels, prefix, rate, duration, epoch, size, connections,
                                         pipeline),
                         capture_output=True, text=True, timeout=duration + 120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


class Publisher:
    """A publisher running in the background (for a soak, or a phase during which the script samples the server)."""

    def __init__(self, ctx, server, channels, prefix, rate, duration, epoch, size=40, connections=32):
        self.duration = duration
        self.proc = subprocess.Popen(publish_command(ctx, server, channels, prefix, rate, duration, epoch, size,
                                                     connections), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def result(self):
        out, err = self.proc.communicate(timeout=self.duration + 120)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])


def expected_deliveries(pub, report):
    """Deliveries every accepted event owes: per channel, events accepted times subscribers of the channel."""
    return sum(p * c for p, c in zip(pub["per_channel"], report["connections_per_channel"]))


def wait_delivered(subscribers, pub, timeout=30, settle=0.5):
    """Reports until every subscriber has every event the publisher got accepted (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while True:
        rep = subscribers.report() if hasattr(subscribers, "report") else merge_reports(s.report() for s in subscribers)
        expected = expected_deliveries(pub, rep)
        if sum(rep["distinct"]) >= expected or time.monotonic() > deadline:
            return rep, expected
        time.sleep(settle)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def mem_total():
    with open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
    return f"{kb / 1024 / 1024:.0f} GiB"


def parse_mix(text):
    """`ws=0.4,sse=0.6` as {transport: share}, the shares scaled to sum to 1."""
    mix = {}
    for part in text.split(","):
        name, share = part.split("=")
        mix[name] = float(share)
    total = sum(mix.values())
    return {name: share / total for name, share in mix.items()}


def split(connections, mix):
    """Connections per transport, in proportion to `mix`, summing to `connections` exactly."""
    names = list(mix)
    counts = {name: int(connections * mix[name]) for name in names}
    counts[names[0]] += connections - sum(counts.values())
    return counts
