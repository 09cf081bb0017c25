#!/usr/bin/env python3
"""Two builds of the hub on one workload, in alternating rounds: CPU per delivered message, split into user space and
kernel, and latency, for each build and as a ratio. For a change whose effect is smaller than what separates two full
benchmark runs on a shared machine.

    python3 Tests/bench/ab.py --a OLD_BIN_DIR --b NEW_BIN_DIR                 # 1k WebSocket subscribers, 50k/s
    python3 Tests/bench/ab.py --a OLD --b NEW --transport sse --subscribers 10000 --channels 100 --rounds 4
    python3 Tests/bench/ab.py --a OLD --b NEW --idle --server hub+redis --rounds 20   # idle memory, 1k WebSockets
    python3 Tests/bench/ab.py --a OLD --b NEW --history --rounds 4    # memory per event kept in history

With --idle each round measures the idle memory per connection instead, as `bench.py` does (--subscribers connections
on 100 channels; the server's RSS after they connect minus before, divided by their number), and the summary gives the
least, the median and the most of each build's rounds: what one full run shows is one draw of them.

With --history each round measures the memory an event kept in history costs instead, on the embedded broker: the
server keeps up to 1,000 events of each of 100 executions, a publisher fills them (20,000 events/s for 5 s, `node.log`
events of about 190 bytes of JSON) with no one watching, and the server's RSS after it minus before is divided by the
events accepted.

Each folder holds a release `hub` (and `loadgen`; the load generator of --a is used for both). Each round starts a
fresh server of each build in turn (a, b, a, b, ...) with fresh subscribers, warms it up with one second of light
traffic, then measures one open-loop step, as `bench.py` does for moderate load.

CPU: the server's total run time comes from /proc/PID/task/*/schedstat (nanoseconds). Its split into user space and
kernel comes from `perf record` sampling at 1 kHz when perf is installed (some 3,000 samples a step), otherwise from
utime and stime in /proc/PID/stat (ticks of 10 ms, so the split is coarser).

Latency: `perf record` shares the two cores with the server and the load generator, so with it the p99 of a large
step is inflated (10k WebSocket subscribers at 50k/s: some 250-450 ms with perf, 19-41 ms with --no-perf, for both
builds alike). Compare latencies between the builds of one run, or run with --no-perf.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench  # noqa: E402
from harness import Hub, Subscribers, cpu_split, publish, rss_bytes  # noqa: E402


def run_time(pids):
    """Seconds the processes' threads have run (schedstat's first field, in nanoseconds)."""
    total = 0
    for pid in pids:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
    return total / 1e9


def kernel_share_from_perf(data):
    """The share of samples in the kernel, from a `perf record` file."""
    report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio"], capture_output=True, text=True,
                            check=True).stdout
    kernel = sum(float(line.split("%")[0]) for line in report.splitlines()
                 if "[kernel" in line and "%" in line and not line.lstrip().startswith("#"))
    return kernel / 100


def one_round(ctx, server_name, transport, subscribers, channels, rate, duration, use_perf):
    server = bench.SERVERS[server_name](ctx)
    try:
        prefix = ctx.prefix()
        subs = Subscribers(ctx, server, transport, subscribers, channels, prefix)
        try:
            bench.measure(ctx, server, subs, channels, prefix, 100, 1, ctx.next_epoch())
            perf = None
            if use_perf:
                data = os.path.join(ctx.tmp, "perf.data")
                perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "1000", "-o", data, "-p",
                                         ",".join(map(str, server.pids))],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            user0, system0 = cpu_split(server.pids)
            t0 = run_time(server.pids)
            step = bench.measure(ctx, server, subs, channels, prefix, rate / (subscribers // channels), duration,
                                 ctx.next_epoch())
            t1 = run_time(server.pids)
            user1, system1 = cpu_split(server.pids)
            if perf:
                perf.send_signal(2)
                perf.wait()
                kernel = kernel_share_from_perf(data)
            else:
                ticks = (user1 - user0) + (system1 - system0)
                kernel = (system1 - system0) / ticks if ticks else 0
            per = (t1 - t0) / step["delivered"] * 1e6
            return {"user_us": per * (1 - kernel), "kernel_us": per * kernel, "total_us": per, "p50_ms": step["p50_ms"],
                    "p99_ms": step["p99_ms"], "lost": step["lost"], "duplicates": step["duplicates"],
                    "out_of_order": step["out_of_order"], "delivered": step["delivered"]}
        finally:
            subs.stop()
    finally:
        server.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="folder with the first build (hub, loadgen)")
    p.add_argument("--b", required=True, help="folder with the second build")
    p.add_argument("--server", default="hub", choices=["hub", "hub+redis"])
    p.add_argument("--transport", default="ws", choices=["ws", "ws-deflate", "sse"])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--rate", type=int, default=50_000, help="deliveries per second")
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-perf", action="store_true", help="split CPU by utime/stime even when perf is installed")
    p.add_argument("--idle", action="store_true", help="measure idle memory per connection instead")
    p.add_argument("--history", action="store_true", help="measure memory per event kept in history instead")
    args = p.parse_args()
    use_perf = not args.no_perf and shutil.which("perf") is not None
    tmp = tempfile.mkdtemp(prefix="hub-ab-")
    loadgen = os.path.join(os.path.abspath(args.a), "loadgen")
    builds = {}
    for name in ("a", "b"):
        folder = os.path.abspath(getattr(args, name))
        # One load generator for both builds: only the hub differs.
        mixed = os.path.join(tmp, name)
        os.makedirs(mixed)
        os.symlink(os.path.join(folder, "hub"), os.path.join(mixed, "hub"))
        os.symlink(loadgen, os.path.join(mixed, "loadgen"))
        builds[name] = mixed
    ctx = bench.Context(builds["a"], tmp, False)
    if args.idle:
        return idle_rounds(ctx, builds, args)
    if args.history:
        return history_rounds(ctx, builds, args)
    results = {"a": [], "b": []}
    bad = 0
    try:
        for r in range(args.rounds):
            for name in ("a", "b"):
                ctx.bin = builds[name]
                out = one_round(ctx, args.server, args.transport, args.subscribers, args.channels, args.rate,
                                args.duration, use_perf)
                results[name].append(out)
                bad += out["lost"] + out["duplicates"] + out["out_of_order"]
                print(f"round {r + 1} {name}: user {out['user_us']:.2f} kernel {out['kernel_us']:.2f} "
                      f"total {out['total_us']:.2f} us/msg, p50 {out['p50_ms']:.2f} p99 {out['p99_ms']:.2f} ms, "
                      f"lost {out['lost']} dup {out['duplicates']} ooo {out['out_of_order']}", flush=True)
    finally:
        ctx.redis.stop()
    mean = {name: {k: sum(x[k] for x in rs) / len(rs) for k in ("user_us", "kernel_us", "total_us", "p99_ms")}
            for name, rs in results.items()}
    split = "perf samples" if use_perf else "utime/stime"
    print(f"\n{args.server}, {args.transport}, {args.subscribers} subscribers on {args.channels} channels, "
          f"{args.rate}/s, {args.rounds} rounds; CPU per message (split by {split}), means:")
    for k, label in (("user_us", "user space us"), ("kernel_us", "kernel us"), ("total_us", "total us"),
                     ("p99_ms", "p99 ms")):
        ratio = mean["b"][k] / mean["a"][k] if mean["a"][k] else float("nan")
        print(f"  {label:14} a {mean['a'][k]:7.2f}  b {mean['b'][k]:7.2f}  b/a {ratio:.2f}")
    if bad:
        print(f"  {bad} messages lost, duplicated or out of order")
        sys.exit(1)


def alternate(ctx, builds, rounds, measure):
    """`measure(name)` for build a, then b, round after round (each on the build's own binaries); the values by build."""
    values = {"a": [], "b": []}
    try:
        for r in range(rounds):
            for name in ("a", "b"):
                ctx.bin = builds[name]
                values[name].append(measure(name))
    finally:
        ctx.redis.stop()
    return values


def spread(values, fmt):
    """Least, median and most of one build's rounds."""
    values = sorted(values)
    return f"least {fmt(values[0])}  median {fmt(bench.median(values))}  most {fmt(values[-1])}"


def idle_rounds(ctx, builds, args):
    def measure(_name):
        out = bench.idle_memory(ctx, [args.server], [args.subscribers], [args.transport])
        return next(iter(out.values()))["bytes_per_connection"] / 1024
    kib = alternate(ctx, builds, args.rounds, measure)
    print(f"\n{args.server}, {args.transport}, {args.subscribers} idle connections, {args.rounds} rounds; KiB per "
          f"connection:")
    for name in ("a", "b"):
        print(f"  {name}: {spread(kib[name], lambda v: f'{v:.2f}')}  above 4 KiB in {sum(v > 4 for v in kib[name])} "
              f"of {len(kib[name])}")


def history_rounds(ctx, builds, args):
    events_per_execution, executions = 1000, 100
    events = events_per_execution * executions
    rate, seconds = 20_000, 5  # 100,000 events exactly

    def measure(name):
        # Room for the warm-up's events too, so that none of the measured ones is dropped.
        server = Hub(ctx.bin, ctx.tmp, args=["--max-events-per-execution", str(events_per_execution),
                                             "--max-events-total", str(2 * events)])
        try:
            # A first light round: the code paths and the first allocations are there before the baseline.
            publish(ctx, server, executions, ctx.prefix(), 2000, 0.5, ctx.next_epoch())
            base = rss_bytes(server.pids)
            pub = publish(ctx, server, executions, ctx.prefix(), rate, seconds, ctx.next_epoch(),
                          connections=32, pipeline=bench.PIPELINE)
            accepted = sum(pub["per_channel"])
            assert accepted == events, f"{accepted} of {events} events accepted"
            per_event = (rss_bytes(server.pids) - base) / accepted
            print(f"{name}: {per_event:.0f} bytes of RSS per event in history", flush=True)
            return per_event
        finally:
            server.stop()
    per_event = alternate(ctx, builds, args.rounds, measure)
    print(f"\nhub, {executions} executions x {events_per_execution} events in history, {args.rounds} rounds; bytes of "
          f"RSS per event:")
    for name in ("a", "b"):
        print(f"  {name}: {spread(per_event[name], lambda v: f'{v:.0f}')}")


if __name__ == "__main__":
    main()
