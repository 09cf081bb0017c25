#!/usr/bin/env python3
"""Benchmarks of the hub against Nchan, in one run, on one machine.

The hub (embedded broker, and Redis), Nchan (nginx's pub/sub module: memory store, and Redis store) and the floor
server (`loadgen floor`: one read per ready connection and one write per connection with frames, per round of its
epoll loop, and nothing else) get the same workloads from the same load generator (`loadgen`, a SwiftNIO executable
of this package): the server runs pinned to CPU 0, the load generator (and Redis) to CPU 1. Each server's CPU
seconds and RSS are read from /proc. Every run counts lost, duplicated and out-of-order messages; a run with any of
them is marked.

    python3 Tests/bench/bench.py              # the full run (about 28 minutes), prints the table
    python3 Tests/bench/bench.py --quick      # a small smoke version (CI)

Needs: release builds of `hub` and `loadgen` (the script builds them), nginx with libnginx-mod-nchan, redis-server.
"""
import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from harness import (BENCH_LIMITS, LOAD_CPU, NCHAN_MODULE, ROOT, SERVER_CPU, Hub, Redis, Subscribers, build_release,
                     cpu_model, cpu_split, free_port, mem_total, percentile, proc_children, publish, rss_bytes,
                     wait_delivered, wait_port, WriteCalls)

# Nchan pings its subscribers as often as the hub sends its heartbeats (its `--heartbeat` default), so that both do
# the same work for an idle or quiet connection: one write every 15 s (and a pong to read, on WebSocket).
HEARTBEAT_SECONDS = 15


class Nchan:
    kind = "nchan"

    def __init__(self, tmp, redis=None):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(dir=tmp)
        store = f'nchan_redis_url "{redis.url}"; nchan_use_redis on;' if redis else ""
        user = "user root;" if os.geteuid() == 0 else ""
        conf = f"""
{user}
load_module {NCHAN_MODULE};
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body; proxy_temp_path {self.dir}/proxy; fastcgi_temp_path {self.dir}/fcgi;
  uwsgi_temp_path {self.dir}/uwsgi; scgi_temp_path {self.dir}/scgi;
  {store}
  server {{
    listen 127.0.0.1:{self.port} backlog=4096;
    location ~ ^/sub/(\\w+)$ {{
      nchan_subscriber; nchan_channel_id $1; nchan_subscriber_first_message newest;
      nchan_websocket_ping_interval {HEARTBEAT_SECONDS}; nchan_eventsource_ping_interval {HEARTBEAT_SECONDS};
    }}
    location ~ ^/pub/(\\w+)$ {{ nchan_publisher; nchan_channel_id $1; nchan_message_timeout 5m; }}
  }}
}}
"""
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, "nginx", "-c", path, "-p", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "stderr"), "w"))
        wait_port(self.port)
        deadline = time.monotonic() + 10
        while not proc_children(self.proc.pid):
            assert time.monotonic() < deadline, "nginx started no worker"
            time.sleep(0.05)
        self.pids = [self.proc.pid] + proc_children(self.proc.pid)
        self.token = ""

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


class Floor:
    """`loadgen floor`: a minimal server on Nchan's routes that does nothing but one read per ready connection and one
    write per connection with frames, per round of its epoll loop. What it reaches on a workload is what this host
    allows any server on one core."""
    kind = "nchan"

    def __init__(self, ctx):
        self.port = free_port()
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU, f"{ctx.bin}/loadgen", "floor", "--port",
                                      str(self.port)], stdout=subprocess.DEVNULL)
        wait_port(self.port)
        self.pids = [self.proc.pid]
        self.token = ""

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


SERVERS = {
    "hub": lambda ctx: Hub(ctx.bin, ctx.tmp, args=BENCH_LIMITS),
    "hub+redis": lambda ctx: Hub(ctx.bin, ctx.tmp, redis=ctx.redis, prefix=f"b{time.monotonic_ns()}", args=BENCH_LIMITS),
    "nchan": lambda ctx: Nchan(ctx.tmp),
    "nchan+redis": lambda ctx: Nchan(ctx.tmp, redis=ctx.redis),
    "floor": lambda ctx: Floor(ctx),
}


# Requests a publishing connection may have in flight, pipelined: a publisher that falls behind its schedule sends
# what is due without waiting for each answer, as an engine that reports faster than one round trip per event would.
# HTTP/1.1 answers pipelined requests in order, so each channel's messages still reach the server in order.
PIPELINE = 16

# How the subscribers of the measured workloads read: on a thread of their own with one epoll set (`loadgen
# subscribe --direct`), not through NIO's read path, whose user-space cost per read made the load generator's own
# queueing a large part of the latency it measured at saturation.
READER = ["--direct"]
# With --spin the readers never sleep (`loadgen subscribe --spin`): on loopback a server's write wakes its reader when
# it sleeps, and pays for it, which a server whose clients are on other hosts does not. For measuring that share.
SPIN = ["--spin"]


def measure(ctx, server, subs, channels, prefix, rate, duration, epoch, size=40, settle=0.5, connections=32,
            pipeline=PIPELINE):
    """One open-loop step: publish `rate` messages/s for `duration` s; returns the step's numbers."""
    subs.reset(epoch)
    user0, system0 = cpu_split(server.pids)
    write_calls = WriteCalls(server.pids)
    t0 = time.monotonic()
    pub = publish(ctx, server, channels, prefix, rate, duration, epoch, size, connections, pipeline)
    # Give the last messages time to arrive (bounded), then count.
    rep, expected = wait_delivered(subs, pub, timeout=10, settle=settle)
    user1, system1 = cpu_split(server.pids)
    user, system = user1 - user0, system1 - system0
    cpu = user + system
    writes = write_calls.stop()
    delivered = sum(rep["distinct"])
    hist = rep["histogram_us"]
    arrival = rep.get("arrival_histogram_us")
    return {
        "rate": rate, "published": sum(pub["per_channel"]), "publish_errors": pub["sent"] - sum(pub["per_channel"]),
        "statuses": pub["statuses"], "expected": expected, "delivered": delivered,
        "lost": expected - delivered, "duplicates": rep["duplicates"], "out_of_order": rep["out_of_order"],
        "closed": rep["closed_by_server"], "cpu_s": cpu, "wall_s": time.monotonic() - t0,
        "per_cpu_s": delivered / cpu if cpu > 0 else 0.0,
        "user_us": user / delivered * 1e6 if delivered else 0.0, "system_us": system / delivered * 1e6 if delivered else 0.0,
        "deliveries_per_s": delivered / pub["elapsed"],
        "writes": writes, "per_write": delivered / writes if writes else None,
        "p50_ms": percentile(hist, 50) / 1000, "p90_ms": percentile(hist, 90) / 1000,
        "p95_ms": percentile(hist, 95) / 1000, "p99_ms": percentile(hist, 99) / 1000,
        "p999_ms": percentile(hist, 99.9) / 1000, "max_ms": max(hist) / 1000 if hist else 0,
        # To the subscriber's socket, by the kernel's receive timestamp of the last segment of the read that completed
        # the message: at most the latency to the read, and at least the latency to the socket (segments that wait
        # in a socket merge, and the merged one keeps the later time, so a reader late by more than the time between
        # two messages of one socket still shows in it).
        "arrival_p50_ms": percentile(arrival, 50) / 1000 if arrival else None,
        "arrival_p99_ms": percentile(arrival, 99) / 1000 if arrival else None,
        "arrival_p999_ms": percentile(arrival, 99.9) / 1000 if arrival else None,
        "recorded": sum(hist.values()), "arrival_recorded": sum(arrival.values()) if arrival else 0,
        "rss": rss_bytes(server.pids), "publisher_max_queue": pub["max_queue"],
        # From each message's due time to the server's answer at the publisher: the part of the latency spent until
        # the server read the request and answered it (the subscribers' reading and the rest of the fan-out excluded).
        "answer_p50_ms": pub["answer_us"]["p50"] / 1000, "answer_p99_ms": pub["answer_us"]["p99"] / 1000,
    }


def arrival_errors(name, steps):
    """What is wrong with the socket latencies of a steady workload's rounds, read directly: every message recorded
    must have its kernel receive timestamp, which can only come before the reader's clock reading, so each percentile
    to the socket is at most the same percentile to the read."""
    errors = []
    for i, r in enumerate(steps):
        where = f"{name} round {i + 1}"
        if r["recorded"] == 0:
            continue
        if r["arrival_recorded"] != r["recorded"]:
            errors.append(f"{where}: {r['arrival_recorded']} socket times for {r['recorded']} messages")
            continue
        for p in ("p50", "p99", "p999"):
            if r[f"arrival_{p}_ms"] > r[f"{p}_ms"]:
                errors.append(f"{where}: {p} to the socket {r[f'arrival_{p}_ms']} ms > to the read {r[f'{p}_ms']} ms")
    return errors


def socket_p99(step):
    return "—" if step.get("arrival_p99_ms") is None else f"{step['arrival_p99_ms']:.2f}"


def clean(step):
    return step["lost"] == 0 and step["duplicates"] == 0 and step["out_of_order"] == 0 and step["publish_errors"] == 0


class Context:
    def __init__(self, bin_dir, tmp, quick, spin=False):
        self.bin = bin_dir
        self.reader = READER + (SPIN if spin else [])
        self.tmp = tmp
        self.quick = quick
        self.redis = Redis(tmp)
        self.epoch = 0
        self.prefixes = 0

    def next_epoch(self):
        self.epoch += 1
        return self.epoch

    def prefix(self):
        self.prefixes += 1
        return f"c{self.prefixes}x"


def run_with(ctx, name, fn):
    server = SERVERS[name](ctx)
    try:
        return fn(server)
    finally:
        server.stop()


# Connections opened before the idle-memory baseline.
WARM_CONNECTIONS = 10


def idle_memory(ctx, names, sizes, transports):
    """RSS the server gains per idle subscriber (connected and subscribed, no traffic)."""
    out = {}
    for name in names:
        for transport in transports:
            for n in sizes:
                def one(server):
                    # A few connections stay open from before the baseline, so that what the first connection costs
                    # once (code pages faulted in, first allocations of the event loop) is not counted per
                    # connection. They stay open, so the measured ones cannot reuse heap that theirs freed.
                    warm = Subscribers(ctx, server, transport, WARM_CONNECTIONS, 1, ctx.prefix())
                    try:
                        base = rss_bytes(server.pids)
                        subs = Subscribers(ctx, server, transport, n, 100, ctx.prefix())
                        try:
                            after = rss_bytes(server.pids)
                            return {"bytes_per_connection": (after - base) / max(subs.ok, 1), "connected": subs.ok,
                                    "base_rss": base, "rss": after}
                        finally:
                            subs.stop()
                    finally:
                        warm.stop()
                out[(name, transport, n)] = r = run_with(ctx, name, one)
                print(f"  idle {name:12} {transport:4} {n:6}: {r['bytes_per_connection'] / 1024:6.2f} KiB/conn "
                      f"({r['connected']} connected)", flush=True)
    return out


# Figures of a steady workload that are the median of its rounds, and counts that are their sum.
MEDIAN_FIELDS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "per_cpu_s", "user_us", "system_us", "per_write",
                 "deliveries_per_s", "answer_p50_ms", "answer_p99_ms", "arrival_p50_ms", "arrival_p99_ms",
                 "arrival_p999_ms")
SUM_FIELDS = ("published", "publish_errors", "expected", "delivered", "lost", "duplicates", "out_of_order", "closed",
              "cpu_s", "writes")


def median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def combine(rounds):
    """One figure per field from a workload's rounds on one server: the median of each measured figure (so that a
    round disturbed by another tenant of a shared machine does not decide the row), the sum of each count (nothing
    may be lost in any round). The rounds themselves are kept."""
    out = dict(rounds[-1])
    for field in MEDIAN_FIELDS:
        known = [r[field] for r in rounds if r.get(field) is not None]
        out[field] = median(known) if known else None
    for field in SUM_FIELDS:
        known = [r[field] for r in rounds if r[field] is not None]
        out[field] = sum(known) if len(known) == len(rounds) else None
    out["rounds"] = rounds
    return out


def steady(ctx, names, transport, subscribers, channels, deliveries_per_s, duration, size=40, rounds=1):
    """Publish-to-deliver latency and CPU per delivered message at a fixed delivery rate. With several `rounds` the
    servers take turns (hub, then nchan, ..., then again), each round on a fresh server with fresh subscribers, and
    each figure is the median of the server's rounds."""
    per_message = subscribers // channels
    measured = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names:
            def one(server):
                prefix = ctx.prefix()
                subs = Subscribers(ctx, server, transport, subscribers, channels, prefix, extra=ctx.reader)
                try:
                    # One small round first: every subscription is live (and caches are warm) before the measured one.
                    measure(ctx, server, subs, channels, prefix, min(200, channels * 2), 1, ctx.next_epoch(), size)
                    return measure(ctx, server, subs, channels, prefix, deliveries_per_s / per_message, duration,
                                   ctx.next_epoch(), size)
                finally:
                    subs.stop()
            r = run_with(ctx, name, one)
            measured[name].append(r)
            label = f" (round {round_index + 1}/{rounds})" if rounds > 1 else ""
            print(f"  {transport:10} {name:12} {subscribers:6} subs {deliveries_per_s:7.0f}/s: p50 {r['p50_ms']:.2f} "
                  f"p99 {r['p99_ms']:.2f} (socket {socket_p99(r)}) p99.9 {r['p999_ms']:.2f} ms, "
                  f"{r['per_cpu_s']:9.0f} msg/CPU-s, "
                  f"lost {r['lost']} dup {r['duplicates']} ooo {r['out_of_order']}{label}", flush=True)
    return {name: combine(rs) for name, rs in measured.items()}


# The saturation publisher uses one connection per channel (as one engine worker reports one execution), each with up
# to PIPELINE requests in flight.


def saturation(ctx, names, subscribers, channels, steps, duration, extra=None, publish_connections=None):
    """Raises the delivery rate step by step while the server sustains it: nothing lost, duplicated or out of order,
    and at least 95% of the offered rate delivered. Records the best step with p99 under 100 ms, the best with p99
    under 250 ms and the best sustained at any p99. `extra(name)` may name one more rate to measure (1.5x Nchan's
    saturation, for the hub)."""
    out = {}
    per_message = subscribers // channels
    connections = publish_connections or channels
    for name in names:
        def one(server):
            prefix = ctx.prefix()
            subs = Subscribers(ctx, server, "ws", subscribers, channels, prefix, extra=ctx.reader)
            result = {"steps": [], "best": None, "best_250": None, "sustained": None, "extra": None,
                      "publish_connections": connections, "publish_in_flight": connections * PIPELINE}

            def step_at(rate):
                return measure(ctx, server, subs, channels, prefix, rate / per_message, duration, ctx.next_epoch(),
                               connections=connections)
            try:
                measure(ctx, server, subs, channels, prefix, min(200, channels * 2), 1, ctx.next_epoch())
                for rate in steps:
                    step = step_at(rate)
                    result["steps"].append(step)
                    sustained = clean(step) and step["deliveries_per_s"] > 0.95 * rate
                    print(f"  saturation {name:12} {rate:7.0f}/s: got {step['deliveries_per_s']:8.0f}/s p99 "
                          f"{step['p99_ms']:8.2f} ms (answered {step['answer_p99_ms']:7.2f}), "
                          f"{step['per_cpu_s']:9.0f} msg/CPU-s, lost {step['lost']} "
                          f"dup {step['duplicates']} ooo {step['out_of_order']}{'' if sustained else '  <- limit'}",
                          flush=True)
                    if not sustained:
                        break
                    result["sustained"] = step
                    if step["p99_ms"] < 250:
                        result["best_250"] = step
                    if step["p99_ms"] < 100:
                        result["best"] = step
                more = extra(name) if extra else None
                if more:
                    step = step_at(more)
                    result["extra"] = step
                    print(f"  at {more:7.0f}/s {name:12}: p99 {step['p99_ms']:.2f} ms, lost {step['lost']}", flush=True)
                return result
            finally:
                subs.stop()
        out[name] = run_with(ctx, name, one)
    return out


def compression(ctx, names, subscribers, channels, deliveries_per_s, duration, rounds=1):
    """1 KiB JSON events to WebSocket subscribers with permessage-deflate, against the same without (taking turns,
    round after round; each figure is the median of the rounds)."""
    measured = {}
    for _ in range(rounds):
        for transport in ("ws", "ws-deflate"):
            r = steady(ctx, names, transport, subscribers, channels, deliveries_per_s, duration, size=1024)
            for name, step in r.items():
                measured.setdefault((name, transport), []).extend(step["rounds"])
    return {key: combine(rs) for key, rs in measured.items()}


def fmt_kib(b):
    return f"{b / 1024:.2f} KiB"


def table(results, names):
    hub_names = [n for n in names if n.startswith("hub")]
    lines = []
    add = lines.append
    # The ratios: the hub against Nchan on each broker, and against the floor (what the host allows) when it ran.
    pairs = [("hub", "nchan"), ("hub+redis", "nchan+redis")] + ([("hub", "floor")] if "floor" in names else [])
    head = "| workload | " + " | ".join(names) + " | " + " | ".join(f"{a} / {b}" for a, b in pairs) + " |"
    add(head)
    add("|" + "---|" * (len(names) + 1 + len(pairs)))
    blank = " |" * (len(names) + len(pairs))

    def row(label, values, fmt, _lower_is_better):
        cells = [fmt(values[n]) if values.get(n) is not None else "—" for n in names]
        ratios = []
        for a, b in pairs:
            if values.get(a) and values.get(b):
                ratios.append(f"{values[a] / values[b]:.2f}×")
            else:
                ratios.append("—")
        add(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

    # Per connection at each size, then what one more connection costs without the fixed costs that those figures
    # spread over N: the growth from the second-largest to the largest size, per connection added.
    idle = results.get("idle", {})
    for transport in sorted({t for (_, t, _) in idle}):
        sizes = sorted({n for (_, t, n) in idle if t == transport})
        for n in sizes:
            row(f"idle memory per {transport} connection, {n}",
                {name: idle.get((name, transport, n), {}).get("bytes_per_connection") for name in names}, fmt_kib, True)
        if len(sizes) < 2:
            continue
        low, high = sizes[-2], sizes[-1]

        def marginal(name):
            a, b = idle.get((name, transport, low)), idle.get((name, transport, high))
            if not a or not b or b["connected"] == a["connected"]:
                return None
            return ((b["rss"] - b["base_rss"]) - (a["rss"] - a["base_rss"])) / (b["connected"] - a["connected"])
        row(f"idle memory per {transport} connection, each one added from {low} to {high}",
            {name: marginal(name) for name in names}, fmt_kib, True)
    for key, label in (("latency_1k", "1k subscribers"), ("latency_10k", "10k subscribers"),
                       ("latency_10k_sse", "10k SSE subscribers"), ("many", "1,000 subscribers on one execution"),
                       ("ingest", "100 executions with one subscriber each (per event)")):
        if key not in results:
            continue
        r = results[key]
        # Latency to many is one fan-out of 1,000 writes per event: its spread (p90, p95) shows how long the pass
        # is, apart from the stalls of the host that decide p99.
        spread = (("p90_ms", "p90"), ("p95_ms", "p95")) if key == "many" and any(
            r[n].get("p90_ms") is not None for n in r) else ()
        for metric, what in (("p50_ms", "p50"),) + spread + (("p99_ms", "p99"), ("p999_ms", "p99.9")):
            row(f"{label}: {what} ms", {n: r[n].get(metric) for n in r}, lambda v: f"{v:.2f}", True)
        # The same to the subscriber's socket, by the kernel's receive timestamp (see `measure`): the difference is
        # at most what the load generator's own reading adds.
        if any(r[n].get("arrival_p99_ms") is not None for n in r):
            row(f"{label}: p99 ms to the subscriber's socket", {n: r[n].get("arrival_p99_ms") for n in r},
                lambda v: f"{v:.2f}", True)
        row(f"{label}: messages per server CPU-second", {n: r[n]["per_cpu_s"] for n in r}, lambda v: f"{v:,.0f}", False)
        row(f"{label}: server CPU µs per message, user space", {n: r[n].get("user_us") for n in r},
            lambda v: f"{v:.2f}", True)
        row(f"{label}: server CPU µs per message, kernel", {n: r[n].get("system_us") for n in r},
            lambda v: f"{v:.2f}", True)
        row(f"{label}: messages per write system call", {n: r[n].get("per_write") for n in r}, lambda v: f"{v:.2f}",
            False)
        add(f"| {label}: lost / duplicated / out of order | " + " | ".join(
            f"{r[n]['lost']} / {r[n]['duplicates']} / {r[n]['out_of_order']}" if n in r else "—" for n in names)
            + " |" + " |" * len(pairs))
    if "saturation" in results:
        s = results["saturation"]
        conns = {s[n].get("publish_in_flight", s[n].get("publish_connections", 32)) for n in s}

        def best(key, field):
            return {n: s[n][key].get(field) if s[n].get(key) else None for n in s}
        row("saturation: highest clean delivery rate (p99 < 100 ms, nothing lost)", best("best", "deliveries_per_s"),
            lambda v: f"{v:,.0f}/s", False)
        row("saturation: highest sustained delivery rate with p99 < 250 ms, nothing lost",
            best("best_250", "deliveries_per_s"), lambda v: f"{v:,.0f}/s", False)
        row("saturation: highest sustained delivery rate, nothing lost (any p99)", best("sustained", "deliveries_per_s"),
            lambda v: f"{v:,.0f}/s", False)
        row("saturation: its p50 ms", best("sustained", "p50_ms"), lambda v: f"{v:.2f}", True)
        row("saturation: its p99 ms", best("sustained", "p99_ms"), lambda v: f"{v:.2f}", True)
        row("saturation: messages per server CPU-second there", best("sustained", "per_cpu_s"),
            lambda v: f"{v:,.0f}", False)
        row("saturation: server CPU µs per message there, user space", best("sustained", "user_us"),
            lambda v: f"{v:.2f}", True)
        row("saturation: server CPU µs per message there, kernel", best("sustained", "system_us"),
            lambda v: f"{v:.2f}", True)
        row("saturation: messages per write system call there", best("sustained", "per_write"),
            lambda v: f"{v:.2f}", False)
        add(f"| saturation: publisher requests in flight at most | {', '.join(str(c) for c in sorted(conns))} |"
            + blank[2:])
        extra = {n: s[n]["extra"]["p99_ms"] for n in s if s[n].get("extra")}
        if extra:
            row("p99 ms at 1.5× Nchan's sustained rate with p99 < 250 ms", extra, lambda v: f"{v:.2f}", True)
    if "compression" in results:
        c = results["compression"]
        for name in hub_names:
            off, on = c.get((name, "ws")), c.get((name, "ws-deflate"))
            if off and on:
                add(f"| 1 KiB events, {name}: CPU per message, deflate on / off | "
                    f"{off['per_cpu_s'] / on['per_cpu_s']:.2f}× ({on['per_cpu_s']:,.0f} vs {off['per_cpu_s']:,.0f} "
                    f"msg/CPU-s; lost {on['lost'] + off['lost']}) |" + blank[2:])
    return "\n".join(lines)


def servers_in(results):
    """The servers a saved run measured, in the order of SERVERS."""
    seen = set()
    for workload in results.values():
        if isinstance(workload, dict):
            seen.update(k[0] if isinstance(k, tuple) else k for k in workload)
    return [name for name in SERVERS if name in seen]


def load_results(path):
    """A results.json as `main` wrote it, with its tuple keys (idle, compression) made tuples again."""
    with open(path) as f:
        raw = json.load(f)
    key = lambda k: ast.literal_eval(k) if k.startswith("(") else k
    return {k: {key(a): b for a, b in v.items()} if isinstance(v, dict) else v for k, v in raw.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small smoke version (CI)")
    parser.add_argument("--bin", help="folder with release builds of hub and loadgen (default: build them)")
    parser.add_argument("--only", help="comma-separated workloads: idle,latency,saturation,many,ingest,compression")
    parser.add_argument("--servers", help=f"comma-separated, of {','.join(SERVERS)} (default: all; with --table, those "
                        "in the results). floor: `loadgen floor`, a server that does nothing but the system calls")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of each latency workload, the servers taking turns; the table gives medians")
    parser.add_argument("--out", default=os.path.join(ROOT, ".build", "bench", "results.json"))
    parser.add_argument("--spin", action="store_true", help="the measured subscribers' readers poll without sleeping, "
                        "so no server pays for waking them (loopback's cost, which remote clients do not put on it)")
    parser.add_argument("--table", metavar="RESULTS", help="print the table of a saved run (its results.json) and exit")
    args = parser.parse_args()
    if args.table:
        results = load_results(args.table)
        print(table(results, args.servers.split(",") if args.servers else servers_in(results)))
        return 0
    if args.bin:
        bin_dir = args.bin
    else:
        bin_dir = build_release()
    names = args.servers.split(",") if args.servers else list(SERVERS)
    only = set(args.only.split(",")) if args.only else {"idle", "latency", "saturation", "many", "ingest", "compression"}
    tmp = tempfile.mkdtemp(prefix="hub-bench-")
    ctx = Context(bin_dir, tmp, args.quick, args.spin)
    q = args.quick
    results = {}
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {mem_total()}; server on CPU {SERVER_CPU}, load on CPU "
          f"{LOAD_CPU}{'; readers spin' if args.spin else ''}", flush=True)
    try:
        if "idle" in only:
            results["idle"] = idle_memory(ctx, names, [200] if q else [1000, 5000, 15000], ["ws", "sse"])
        rounds = 1 if q else args.rounds
        if "latency" in only:
            d = 2 if q else 10
            results["latency_1k"] = steady(ctx, names, "ws", 100 if q else 1000, 10, 2000 if q else 50000, d,
                                           rounds=rounds)
            results["latency_10k"] = steady(ctx, names, "ws", 200 if q else 10000, 100 if not q else 20,
                                            2000 if q else 50000, d, rounds=rounds)
            results["latency_10k_sse"] = steady(ctx, names, "sse", 200 if q else 10000, 100 if not q else 20,
                                                2000 if q else 50000, d, rounds=rounds)
        if "many" in only:
            results["many"] = steady(ctx, names, "ws", 100 if q else 1000, 1, (100 if q else 1000) * 20, 2 if q else 10,
                                     rounds=rounds)
        if "ingest" in only:
            # What an event costs apart from its fan-out: 500 events/s to 100 executions, each watched by one
            # subscriber, so that each delivery is one event's whole path (request, signature, decoding, storing,
            # encoding, the answer and one write).
            results["ingest"] = steady(ctx, names, "ws", 20 if q else 100, 20 if q else 100, 100 if q else 500,
                                       2 if q else 10, rounds=rounds)
        if "saturation" in only:
            steps = [2000, 4000] if q else [50000, 80000, 100000, 110000, 120000, 130000, 140000, 160000, 180000,
                                            200000, 220000, 240000, 260000, 280000, 300000]
            nchan_first = sorted(names, key=lambda n: not n.startswith("nchan"))
            sat = {}

            def extra(name):
                peer = "nchan+redis" if name == "hub+redis" else "nchan"
                if not name.startswith("nchan") and sat.get(peer, {}).get("best_250"):
                    return 1.5 * sat[peer]["best_250"]["deliveries_per_s"]
                return None
            for name in nchan_first:
                sat.update(saturation(ctx, [name], 200 if q else 10000, 20 if q else 100, steps, 2 if q else 6, extra))
            results["saturation"] = sat
        if "compression" in only:
            hubs = [n for n in names if n.startswith("hub")]
            results["compression"] = compression(ctx, hubs, 100 if q else 1000, 10, 2000 if q else 20000, 2 if q else 10,
                                                 rounds=rounds)
    finally:
        ctx.redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table(results, names))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({k if isinstance(k, str) else str(k): (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()})
                   for k, v in results.items()}, f, indent=1, default=str)
    bad = [f"{k}/{n}" for k in ("latency_1k", "latency_10k", "latency_10k_sse", "many", "ingest") if k in results
           for n, r in results[k].items() if not clean(r)]
    if bad:
        print(f"\nruns with lost, duplicated or out-of-order messages: {', '.join(bad)}")
        return 1
    # Socket times are taken by the direct reader only.
    wrong = [e for k in ("latency_1k", "latency_10k", "latency_10k_sse", "many", "ingest") if k in results
             for n, r in results[k].items() for e in arrival_errors(f"{k}/{n}", r["rounds"])] \
        if "--direct" in ctx.reader else []
    if wrong:
        print("\nsocket latencies that cannot be right:\n  " + "\n  ".join(wrong))
        return 1
    return 0

if __name__ == "__main__":
    sys.exit(main())
