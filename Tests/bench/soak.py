#!/usr/bin/env python3
"""Soak: many connections to one hub, held for minutes at production heartbeat intervals while events flow.

One hub process (pinned to CPU 0, one event loop) holds WebSocket watchers with and without permessage-deflate and
SSE streams, mixed on the same executions, opened by `loadgen subscribe` processes (at most 15,000 connections each,
from 127.0.0.2-9, pinned to CPU 1). An open-loop publisher posts signed `node.log` events at a steady rate the whole
time. Before anyone connects, the history is filled to its cap (`--max-events-total`), so the memory measured is that
of a hub in its steady state and not of a history still growing.

Criteria (exit status 1 if any fails):
  * every connection opened and is still open at the end (none closed by the hub);
  * hub RSS at the end is within --rss-tolerance (5%) of its RSS after the warm-up;
  * every accepted event reached every subscriber of its execution exactly once and in order (delivered == expected,
    no duplicate, none out of order, no event of another epoch, no replay.truncated), and the engine got 202 for all;
  * heartbeats happened: every subscriber received at least floor(time / --heartbeat) - 1 of them (WebSocket pings,
    each answered, and heartbeat messages; SSE heartbeat comments).

    python3 Tests/bench/soak.py                                   # 19,000 connections for 10 minutes (about 13 min)
    python3 Tests/bench/soak.py --connections 2000 --executions 100 --rate 50 --warmup 20 --duration 60 \
        --heartbeat 2 --history 20000                             # the CI version (about 2 minutes)

Needs release builds of `hub` and `loadgen` (the script builds them unless --bin is given) and `taskset`.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import types

from harness import (ROOT, Hub, Publisher, Subscribers, build_release, cpu_seconds, load_average, merge_reports, mib,
                     parse_mix, percentile, publish, split, wait_delivered)

HUB_DEFAULT_HEARTBEAT = 15.0
HUB_DEFAULT_HISTORY = 100_000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", help="folder with release builds of hub and loadgen (default: build them)")
    parser.add_argument("--connections", type=int, default=19000)
    parser.add_argument("--mix", default="ws=0.4,ws-deflate=0.3,sse=0.3", help="share of each transport")
    parser.add_argument("--executions", type=int, default=1000, help="executions watched (channels)")
    parser.add_argument("--rate", type=float, default=200, help="events per second posted (deliveries: rate x "
                        "connections / executions)")
    parser.add_argument("--size", type=int, default=256, help="approximate bytes of each event's message")
    parser.add_argument("--warmup", type=float, default=60, help="seconds of traffic before the first RSS reading")
    parser.add_argument("--duration", type=float, default=600, help="seconds from the first RSS reading to the last")
    parser.add_argument("--heartbeat", type=float, help="the hub's --heartbeat (default: the hub's own, 15 s)")
    parser.add_argument("--history", type=int, help="the hub's --max-events-total (default: the hub's own, 100,000); "
                        "the history is filled to it before the warm-up")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--out", default=os.path.join(ROOT, ".build", "bench", "soak.json"))
    args = parser.parse_args()

    bin_dir = args.bin or build_release()
    tmp = tempfile.mkdtemp(prefix="hub-soak-")
    ctx = types.SimpleNamespace(bin=bin_dir, tmp=tmp)
    counts = split(args.connections, parse_mix(args.mix))
    heartbeat = args.heartbeat or HUB_DEFAULT_HEARTBEAT
    history = args.history or HUB_DEFAULT_HISTORY
    # Only the limits this workload needs are raised: every SSE stream is in one workspace (default cap 5).
    hub_args = ["--max-sse-per-workspace", str(max(counts.get("sse", 0), 5))]
    if args.heartbeat:
        hub_args += ["--heartbeat", str(args.heartbeat)]
    if args.history:
        hub_args += ["--max-events-total", str(args.history)]
    prefix = "soak"
    results = {"settings": vars(args) | {"transports": counts, "hub_args": hub_args}, "load": {}}
    print(f"soak: {args.connections} connections {counts} on {args.executions} executions, {args.rate:.0f} events/s "
          f"({args.rate * args.connections / args.executions:,.0f} deliveries/s), warm-up {args.warmup:.0f} s, "
          f"soak {args.duration:.0f} s, heartbeat {heartbeat:g} s; hub {' '.join(hub_args)}", flush=True)
    results["load"]["start"] = load_average()
    hub = Hub(bin_dir, tmp, args=hub_args)
    groups = []
    failures = []
    try:
        # The history at its cap first (same executions, same event size), so that the soak measures a hub in
        # its steady state. In that state every stored event has reached a permessage-deflate watcher and holds its
        # compressed frame (made on first use), so one such watcher per execution receives the fill.
        t0 = time.monotonic()
        fillers = None
        if counts.get("ws-deflate"):
            fillers = Subscribers(ctx, hub, "ws-deflate", args.executions, args.executions, prefix)
            fillers.reset(1)
        fill = publish(ctx, hub, args.executions, prefix, min(5000, history), history / min(5000, history), 1,
                       args.size)
        if fillers:
            rep, expected = wait_delivered(fillers, fill, timeout=30)
            fillers.stop()
            if sum(rep["distinct"]) != expected:
                failures.append(f"history fill: {sum(rep['distinct'])} of {expected} events reached the deflate "
                                f"watchers")
        print(f"history filled: {sum(fill['per_channel'])} events in {time.monotonic() - t0:.1f} s "
              f"(RSS {mib(hub.rss()):.1f} MiB)", flush=True)
        if sum(fill["per_channel"]) != int(history):
            failures.append(f"history fill: {sum(fill['per_channel'])} of {history} events accepted")

        t0 = time.monotonic()
        for transport, n in counts.items():
            if n:
                groups.append(Subscribers(ctx, hub, transport, n, args.executions, prefix, wait=False))
        for g in groups:
            g.wait_ready()
        connected = sum(g.ok for g in groups)
        print(f"connected: {connected} of {args.connections} in {time.monotonic() - t0:.1f} s "
              f"(RSS {mib(hub.rss()):.1f} MiB)", flush=True)
        for g in groups:
            g.reset(2)

        total = args.warmup + args.duration
        publisher = Publisher(ctx, hub, args.executions, prefix, args.rate, total + 2 * args.sample, 2, args.size)
        started = time.monotonic()
        cpu0 = cpu_seconds(hub.pids)
        samples = []
        warm = end = None
        next_sample = 0.0
        while True:
            now = time.monotonic() - started
            if now >= next_sample or (warm is None and now >= args.warmup) or now >= total:
                rss = hub.rss()
                samples.append((round(now, 1), rss))
                if warm is None and now >= args.warmup:
                    warm = rss
                    results["load"]["warmup"] = load_average()
                    print(f"  t={now:6.1f} s  warm-up RSS {mib(rss):.1f} MiB", flush=True)
                elif now >= total:
                    end = rss
                    print(f"  t={now:6.1f} s  end RSS {mib(rss):.1f} MiB", flush=True)
                    break
                else:
                    print(f"  t={now:6.1f} s  RSS {mib(rss):.1f} MiB  load {load_average()[0]:.2f}", flush=True)
                next_sample = now + args.sample
            wake = min(next_sample, args.warmup if warm is None else total)
            time.sleep(max(0.0, min(wake - (time.monotonic() - started), 1.0)))
        # Still under traffic: what the hub itself reports at the end.
        metrics_end = hub.metrics()
        reports_end = [g.report() for g in groups]
        results["load"]["end"] = load_average()
        pub = publisher.result()
        cpu = cpu_seconds(hub.pids) - cpu0
        rep, expected = wait_delivered(groups, pub, timeout=60)
        lasted = time.monotonic() - started
        per_transport = {t: g.report() for t, g in zip([t for t, n in counts.items() if n], groups)}
    finally:
        for g in groups:
            g.stop()
        hub.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    end_open = merge_reports(reports_end)
    delivered = sum(rep["distinct"])
    published = sum(pub["per_channel"])
    hist = rep["histogram_us"]
    growth = (end - warm) / warm
    min_heartbeats = math.floor(lasted / heartbeat) - 1
    open_hub = metrics_end.get("hub_open_connections{transport=websocket}", 0) + \
        metrics_end.get("hub_open_connections{transport=sse}", 0)
    results.update({
        "connections": args.connections, "opened": rep["opened"], "open_at_end": end_open["open"],
        "hub_open_connections_at_end": open_hub, "closed_by_server": rep["closed_by_server"],
        "close_codes": rep["close_codes"], "rss_warmup": warm, "rss_end": end, "rss_growth": growth,
        "rss_samples": samples, "rss_max": max(r for _, r in samples), "hub_cpu_s": cpu,
        "published": published, "publish_statuses": pub["statuses"], "publisher_max_queue": pub["max_queue"],
        "expected": expected, "delivered": delivered, "duplicates": rep["duplicates"],
        "out_of_order": rep["out_of_order"], "other_epoch": rep["other_epoch"], "truncated": rep["truncated"],
        "deliveries_per_s": delivered / pub["elapsed"],
        "p50_ms": percentile(hist, 50) / 1000, "p99_ms": percentile(hist, 99) / 1000,
        "p999_ms": percentile(hist, 99.9) / 1000, "max_ms": max(hist) / 1000 if hist else 0,
        "pings": rep["pings"], "pongs": rep["pongs"], "heartbeat_messages": rep["heartbeat_messages"],
        "heartbeat_comments": rep["heartbeat_comments"], "fewest_heartbeats": rep["fewest_heartbeats"],
        "heartbeats_required": min_heartbeats,
        "slow_consumer_disconnects": sum(v for k, v in metrics_end.items()
                                         if k.startswith("hub_slow_consumer_disconnects_total")),
        "per_transport": {t: {k: r[k] for k in ("opened", "open", "closed_by_server", "received", "pings",
                                                 "heartbeat_messages", "heartbeat_comments", "fewest_heartbeats")}
                          for t, r in per_transport.items()},
    })

    if rep["opened"] != args.connections:
        failures.append(f"opened {rep['opened']} of {args.connections}")
    if end_open["open"] != args.connections or open_hub != args.connections:
        failures.append(f"open at the end: {end_open['open']} (hub counts {open_hub:.0f}) of {args.connections}")
    if rep["closed_by_server"]:
        failures.append(f"{rep['closed_by_server']} connections closed by the hub: {rep['close_codes']}")
    if abs(growth) > args.rss_tolerance:
        failures.append(f"RSS moved {growth:+.1%} from the warm-up (tolerance {args.rss_tolerance:.0%})")
    if published != pub["sent"] or set(pub["statuses"]) != {"202"}:
        failures.append(f"publisher: {pub['sent']} sent, {published} accepted, statuses {pub['statuses']}")
    if delivered != expected:
        failures.append(f"delivered {delivered} of {expected} expected")
    for key in ("duplicates", "out_of_order", "other_epoch", "truncated"):
        if rep[key]:
            failures.append(f"{key}: {rep[key]}")
    if rep["fewest_heartbeats"] < min_heartbeats:
        failures.append(f"a subscriber received only {rep['fewest_heartbeats']} heartbeats (at least {min_heartbeats} due)")

    print()
    print(f"connections: {args.connections} ({counts}); opened {rep['opened']}, open at the end {end_open['open']} "
          f"(hub: {open_hub:.0f}), closed by the hub {rep['closed_by_server']}")
    print(f"hub RSS: warm-up {mib(warm):.1f} MiB, end {mib(end):.1f} MiB ({growth:+.2%}), max {mib(results['rss_max']):.1f}"
          f" MiB; hub CPU {cpu:.1f} s over {pub['elapsed']:.0f} s")
    print(f"events: published {published} ({pub['statuses']}), deliveries expected {expected}, delivered {delivered} "
          f"({results['deliveries_per_s']:,.0f}/s); duplicates {rep['duplicates']}, out of order {rep['out_of_order']}, "
          f"other epoch {rep['other_epoch']}, truncated {rep['truncated']}")
    print(f"latency: p50 {results['p50_ms']:.2f} ms, p99 {results['p99_ms']:.2f} ms, p99.9 {results['p999_ms']:.2f} ms, "
          f"max {results['max_ms']:.2f} ms")
    print(f"heartbeats: {rep['pings']} pings received and {rep['pongs']} answered, {rep['heartbeat_messages']} heartbeat "
          f"messages, {rep['heartbeat_comments']} SSE heartbeat comments; fewest per subscriber {rep['fewest_heartbeats']} "
          f"(at least {min_heartbeats} due)")
    print(f"load average: start {results['load']['start']}, warm-up {results['load'].get('warmup')}, "
          f"end {results['load']['end']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results | {"failures": failures}, f, indent=1)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nsoak passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
