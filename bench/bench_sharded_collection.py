"""Sharded RPS collection: CPU per operator replica for N simulated pods on 1 and 2 replicas,
and the HPA's value across the loss of a replica.

The pods: N launcher-like endpoints, each on its own loopback address (127.4.x.y), answering
the compact figures (`djangoscale.pod_figures`) of a pod serving a steady `--rps` requests per
second: the counter is the rate times the time since the start, so it does not depend on who
reads it or how often. They run in a child process, so the CPU measured is the replicas' own.

The replicas: the operator's own collection round (`djangoscale.autoscaling.handlers.
RpsCollection`, with its `ShardReader`) in the active replica's process, and the reading
endpoint (`sharding.build_shard_app`) in each other replica's process, every replica on its own
address (127.5.0.i) and the chart's shard port. Peering is the fixed list of replica names (a
killed replica stays in it, as it would in kopf's peering object until its record expires).
No API server: the DjangoService and the pods are given as kopf's indexes would hold them, and
the status writes go nowhere.

    python bench/bench_sharded_collection.py [--pods 1000 3000 6000] [--replicas 1 2]
        [--rounds 5] [--interval 2] [--kill-pods 1000] [--kill-after 4] [--kill-rounds 8]

Printed: per N and replica count, the CPU of each replica over the measured rounds (share of
one core), the pods each read per round, round time and failed reads; then, for
`--kill-pods` pods on 2 replicas, the HPA's value (the average of the per-pod values the
operator serves) round by round while the second replica is killed (SIGKILL) after
`--kill-after` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

POD_PORT = 39912
SHARD_PORT = 8082
NAMESPACE = "web"
# spec.replicas.max is at most 1,000: more pods are more DjangoServices.
PODS_PER_SERVICE = 1000


def pod_addresses(n: int) -> list[str]:
    return [f"127.4.{i // 250}.{i % 250 + 1}" for i in range(n)]


# The replicas sign their exchange with a digest of the metrics API's key (every replica has
# the same file in a cluster); here one file the parent writes and the children read.
KEY_FILE = Path(tempfile.gettempdir()) / "bench-sharded-collection.key"


def replica_name(index: int) -> str:
    return f"djangoscale-{index}"


def replica_address(index: int) -> str:
    return f"127.5.0.{index + 1}"


def raise_file_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the pods (child process) -----------------------------------------------------------------


async def serve_pods(n: int, rps: float) -> None:
    from aiohttp import web

    from djangoscale.pod_figures import (
        FIGURES_CONTENT_TYPE,
        FIGURES_PATH,
        PodScrape,
        encode_figures,
    )

    start = time.monotonic()

    async def figures(_: web.Request) -> web.Response:
        served = rps * (time.monotonic() - start)
        return web.Response(body=encode_figures(PodScrape(served, busy_seconds=served * 0.04,
                                                          app_seconds=served * 0.04)),
                            content_type=FIGURES_CONTENT_TYPE)

    app = web.Application()
    app.router.add_get(FIGURES_PATH, figures)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for ip in pod_addresses(n):
        await web.TCPSite(runner, ip, POD_PORT, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- a reading replica (child process) ----------------------------------------------------------


async def serve_share(index: int) -> None:
    """A standby: reads what the active replica sends it; prints its CPU on SIGTERM."""
    from aiohttp import web

    from djangoscale.autoscaling.collector import Scraper
    from djangoscale.autoscaling.sharding import build_shard_app
    from djangoscale.settings import OperatorSettings

    opts = OperatorSettings()
    scraper = Scraper(opts.scrape_concurrency, opts.scrape_timeout)
    runner = web.AppRunner(build_shard_app(scraper, KEY_FILE), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, replica_address(index), SHARD_PORT).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, lambda: marks.append(
        (time.monotonic(), cpu_seconds())))
    marks: list[tuple[float, float]] = []
    print("ready", flush=True)
    await stop.wait()
    (t0, c0), (t1, c1) = marks[0], (time.monotonic(), cpu_seconds())
    print(json.dumps({"cpu_share": (c1 - c0) / (t1 - t0)}), flush=True)
    await scraper.close()
    await runner.cleanup()


# -- the active replica (measured in this process) ----------------------------------------------


class Api:
    """Status writes go nowhere: there is no API server here."""

    def patch_status(self, *_: Any) -> None:
        return None


def the_active_replica(replicas: int) -> tuple[Any, Any]:
    from djangoscale.autoscaling.sharding import PEER_READ_INTERVALS, ShardReader
    from djangoscale.context import OperatorContext
    from djangoscale.settings import OperatorSettings

    class Context(OperatorContext):
        """Peering as a fixed list of replicas, each at its own loopback address."""

        async def live_peer_names(self) -> list[str]:
            return [replica_name(i) for i in range(replicas)]

        async def peer_ip(self, pod_name: str) -> str | None:
            return replica_address(int(pod_name.rsplit("-", 1)[1]))

    settings = OperatorSettings(shard_port=SHARD_PORT)
    context = Context.create(settings, Api())  # type: ignore[arg-type]
    reader = ShardReader(replica_name(0), context.scraper,
                         timeout=PEER_READ_INTERVALS * settings.scrape_interval,
                         key_file=KEY_FILE) if replicas > 1 else None
    return context, reader


async def measure(n: int, replicas: int, rounds: int, interval: float, kill_after: int | None,
                  children: list[int]) -> dict[str, Any]:
    from djangoscale.autoscaling.collector import PodTarget
    from djangoscale.autoscaling.handlers import RpsCollection

    pods = [PodTarget(f"shop{i // PODS_PER_SERVICE}-{i}", ip, True, uid=f"5d3c-{i:06d}")
            for i, ip in enumerate(pod_addresses(n))]
    services, pods_of = {}, {}
    for first in range(0, n, PODS_PER_SERVICE):
        key = (NAMESPACE, f"shop{first // PODS_PER_SERVICE}")
        services[key] = [{
            "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
            "metadata": {"name": key[1], "namespace": NAMESPACE, "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                     "replicas": {"min": 1, "max": PODS_PER_SERVICE}, "metricsPort": POD_PORT,
                     "autoscaling": {"targetRPSPerPod": 20}},
        }]
        pods_of[key] = pods[first:first + PODS_PER_SERVICE]
    context, reader = the_active_replica(replicas)
    collection = RpsCollection(context, services, pods_of, {}, reader)  # type: ignore[arg-type]

    def hpa_value() -> float:
        values = [value.value for value, _ in context.rps.pods(NAMESPACE)]
        return sum(values) / len(values) if values else 0.0

    await collection.round()  # connections opened, not measured
    await asyncio.sleep(interval)
    for pid in children:
        os.kill(pid, signal.SIGUSR1)  # the standbys start counting their CPU
    c0, t0 = cpu_seconds(), time.monotonic()
    timeline, durations = [], []
    for index in range(rounds):
        if kill_after is not None and index == kill_after:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
        start = time.monotonic()
        await collection.round()
        durations.append(time.monotonic() - start)
        timeline.append({
            "round": index + 1, "t": round(time.monotonic() - t0, 1),
            "hpa_value": hpa_value(),
            "read_here": sum(1 for p in pods if reader is None or reader.assignment(
                [replica_name(i) for i in range(replicas)]).owns(replica_name(0), p.shard_key)),
            "pods_with_rate": sum(len(w.rates()) for w in collection.windows.values()),
            "round_ms": 1000 * durations[-1],
        })
        await asyncio.sleep(max(0.0, interval - durations[-1]))
    c1, t1 = cpu_seconds(), time.monotonic()
    await context.scraper.close()
    return {"pods": n, "replicas": replicas, "active_cpu_share": (c1 - c0) / (t1 - t0),
            "measured_seconds": t1 - t0, "rounds": rounds,
            "round_avg_ms": 1000 * sum(durations) / len(durations),
            "round_max_ms": 1000 * max(durations), "timeline": timeline}


def start(args: list[str]) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        child.terminate()
        raise RuntimeError(f"{args} did not start")
    return child


def run(n: int, replicas: int, rounds: int, interval: float, rps: float,
        kill_after: int | None = None) -> dict[str, Any]:
    pods = start(["--serve-pods", str(n), "--rps", str(rps)])
    standbys = [start(["--serve-share", str(i)]) for i in range(1, replicas)]
    try:
        result = asyncio.run(measure(n, replicas, rounds, interval, kill_after,
                                     [s.pid for s in standbys]))
        result["standby_cpu_shares"] = []
        for standby in standbys:
            if standby.poll() is None:
                standby.terminate()
                out, _ = standby.communicate(timeout=30)
                result["standby_cpu_shares"].append(json.loads(out.strip().splitlines()[-1])
                                                    ["cpu_share"])
        return result
    finally:
        for child in [pods, *standbys]:
            if child.poll() is None:
                child.kill()
            child.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[1000, 3000, 6000])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--rps", type=float, default=10.0, help="per simulated pod")
    parser.add_argument("--kill-pods", type=int, default=1000, help="0: no kill run")
    parser.add_argument("--kill-after", type=int, default=4)
    parser.add_argument("--kill-rounds", type=int, default=10)
    parser.add_argument("--serve-pods", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-share", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_file_limit()
    if args.serve_pods:
        asyncio.run(serve_pods(args.serve_pods, args.rps))
        return
    if args.serve_share:
        asyncio.run(serve_share(args.serve_share))
        return
    KEY_FILE.write_bytes(os.urandom(32))

    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.rounds} measured rounds "
          f"every {args.interval:g} s, {args.rps:g} RPS per simulated pod", flush=True)
    results = []
    for n in args.pods:
        for replicas in args.replicas:
            results.append(run(n, replicas, args.rounds, args.interval, args.rps))
            print(f"  N={n} on {replicas} done (load {os.getloadavg()[0]:.2f})", flush=True)
    print()
    print("| pods | replicas | active replica CPU | standby CPU | pods read by the active "
          "| CPU per pod per round, all replicas | round avg / max |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        standby = ", ".join(f"{100 * s:.1f} %" for s in r["standby_cpu_shares"]) or "-"
        total = (r["active_cpu_share"] + sum(r["standby_cpu_shares"])) * r["measured_seconds"]
        print(f"| {r['pods']} | {r['replicas']} | {100 * r['active_cpu_share']:.1f} % "
              f"| {standby} | {r['timeline'][-1]['read_here']} "
              f"| {1000 * total / r['rounds'] / r['pods']:.3f} ms "
              f"| {r['round_avg_ms']:.0f} / {r['round_max_ms']:.0f} ms |")
    if args.kill_pods:
        kill = run(args.kill_pods, 2, args.kill_rounds, args.interval, args.rps,
                   kill_after=args.kill_after)
        print(f"\n{args.kill_pods} pods on 2 replicas, {replica_name(1)} killed (SIGKILL) "
              f"before round {args.kill_after + 1}; the HPA reads {args.rps:g} RPS per pod:\n")
        print("| round | s | HPA value (per-pod average) | pods with a rate | round time |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for row in kill["timeline"]:
            print(f"| {row['round']} | {row['t']} | {row['hpa_value']:.2f} "
                  f"| {row['pods_with_rate']} | {row['round_ms']:.0f} ms |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
