"""What RPS collection costs the operator: N pod metrics endpoints scraped every 5 s.

Each of the N endpoints listens on its own loopback address (127.2.x.y, every address in
127.0.0.0/8 is local on Linux) and serves the launcher's real metrics payload: a registry built
by `djangoscale.serve.metrics.Metrics` (`djangoscale_requests_total`, the latency histogram,
the in-flight/threads/queue gauges), in which a few requests are recorded before every scrape,
so the counter rises from one round to the next as a served pod's does. The endpoints run in a
child process, so the CPU measured is the collector's alone.

The collector is the operator's own code: `djangoscale.autoscaling.collector` (`PodTarget`,
`Scraper`, `collect`, which also feeds `ServiceWindows` and runs `decide`), one round every 5 s
as the operator's loop does. Each N runs in a fresh process (its peak RSS is its own):

    python bench/bench_metrics_cost.py [--pods 100 500 1000] [--rounds 12] [--interval 5]
        [--paths text figures] [--profile]

Each N is read both ways on the same simulated pods, one after the other: `text`, the read as
it was before the compact figures (an aiohttp GET of the launcher's Prometheus text, parsed by
prometheus_client, one connection per scrape as the launcher's HTTP/1.0 server gave), and
`figures`, the collector's read now (the launcher's compact JSON figures, `djangoscale.
pod_figures`, over kept-alive connections with `djangoscale.autoscaling.podhttp`). Printed per
N and path: CPU time of the collecting process over the measured rounds as a share of one
core and per pod-scrape, the mean and max wall time of a round, the process's peak RSS (and
its RSS before the first scrape), failed reads, and how many pods had a rate in the last
decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

from djangoscale.contract import METRICS_PATH
from djangoscale.pod_figures import FIGURES_CONTENT_TYPE, FIGURES_PATH

PORT = 39911
# The two ways the collector can read a pod, by the name the table prints.
PATHS = {"text": METRICS_PATH, "figures": FIGURES_PATH}


def addresses(n: int) -> list[str]:
    return [f"127.2.{i // 250}.{i % 250 + 1}" for i in range(n)]


# -- the pods (child process) -----------------------------------------------------------------


async def serve(n: int) -> None:
    """N launcher metrics endpoints; each scrape first records a few requests in that pod."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one plain registry per pod
    from aiohttp import web
    from prometheus_client import CollectorRegistry, generate_latest

    from djangoscale.serve.metrics import Metrics, pod_figures_of

    pods: dict[str, tuple[CollectorRegistry, Metrics]] = {}
    for ip in addresses(n):
        registry = CollectorRegistry()
        metrics = Metrics(registry=registry)
        metrics.set_pool(total=20, busy=3, queued=0)
        pods[ip] = (registry, metrics)

    def serve_requests(request: web.Request) -> CollectorRegistry:
        registry, metrics = pods[request.transport.get_extra_info("sockname")[0]]
        for i in range(7):  # 7 requests between scrapes: 1.4 RPS at a 5 s interval
            metrics.request_started()
            metrics.request_finished("GET" if i % 3 else "POST", "200 OK" if i else "404", 0.04,
                                     waited=0.002 * i)
        return registry

    async def text(request: web.Request) -> web.Response:
        """The old path: the launcher's Prometheus text, one connection per scrape (its
        server then was prometheus_client's HTTP/1.0 wsgiref server)."""
        response = web.Response(body=generate_latest(serve_requests(request)),
                                content_type="text/plain", charset="utf-8")
        response.force_close()
        return response

    async def figures(request: web.Request) -> web.Response:
        """The new path: the compact figures, over a kept-alive connection."""
        return web.Response(body=pod_figures_of(serve_requests(request)),
                            content_type=FIGURES_CONTENT_TYPE)

    app = web.Application()
    app.router.add_get(METRICS_PATH, text)
    app.router.add_get(FIGURES_PATH, figures)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for ip in addresses(n):
        await web.TCPSite(runner, ip, PORT, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the collector (measured process) ---------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def the_text_scraper() -> type:
    """The collector's read before the compact figures, as it was: an aiohttp GET of the
    Prometheus text, parsed by prometheus-client (the rest of the round is today's)."""
    import aiohttp

    from djangoscale.autoscaling.collector import Scraper, parse_pod_metrics
    from djangoscale.pod_figures import PodScrape

    class TextScraper(Scraper):
        async def pod_scrape(self, ip: str, port: int) -> PodScrape | None:
            async with self.semaphore:
                try:
                    async with self.session.get(f"http://{ip}:{port}{self.path}") as response:
                        if response.status != 200:
                            return None
                        text = await response.text()
                except (TimeoutError, aiohttp.ClientError, OSError):
                    return None
            try:
                return parse_pod_metrics(text)
            except ValueError:
                return None

    return TextScraper


async def measure(n: int, rounds: int, interval: float, path: str,
                  profile: bool = False) -> dict[str, float]:
    from djangoscale import spec
    from djangoscale.autoscaling.collector import PodTarget, Scraper, collect
    from djangoscale.autoscaling.windows import ServiceWindows
    from djangoscale.settings import OperatorSettings

    ds = spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 1, "max": 1000}, "metricsPort": PORT,
                 "autoscaling": {"targetRPSPerPod": 20}},
    })
    pods = [PodTarget(f"shop-{i}", ip, True, (("app.kubernetes.io/instance", "shop"),))
            for i, ip in enumerate(addresses(n))]
    opts = OperatorSettings()  # the operator's defaults: 64 scrapes at a time, 1.5 s timeout
    windows = ServiceWindows()  # collect() sets the window lengths from the spec
    scraper_class = Scraper if path == "figures" else the_text_scraper()
    scraper = scraper_class(opts.scrape_concurrency, opts.scrape_timeout, path=PATHS[path])
    rss_before = rss_mib()
    await collect(ds, pods, windows, scraper)  # first round: connections opened, not measured
    await asyncio.sleep(interval)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    usage0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    durations, failed, reading = [], 0, None
    for _ in range(rounds):
        start = time.monotonic()
        reading = await collect(ds, pods, windows, scraper)
        durations.append(time.monotonic() - start)
        failed += len(reading.failed)
        await asyncio.sleep(max(0.0, interval - durations[-1]))
    usage1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    if profiler is not None:
        import pstats

        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    await scraper.close()
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    assert reading is not None
    return {
        "pods": n, "path": path, "rounds": rounds, "interval": interval,
        "cpu_share": cpu / (t1 - t0), "cpu_per_round_ms": 1000 * cpu / rounds,
        "cpu_per_pod_ms": 1000 * cpu / rounds / n,
        "round_avg_ms": 1000 * sum(durations) / len(durations),
        "round_max_ms": 1000 * max(durations),
        "rss_before_mib": rss_before, "peak_rss_mib": usage1.ru_maxrss / 1024,
        "failed": failed, "with_rate": len(reading.decision.per_pod),
        "stable_per_pod": reading.decision.stable_per_pod,
    }


def start_pods(n: int) -> subprocess.Popen[str]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(n)],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        server.terminate()
        raise RuntimeError("the metrics endpoints did not start")
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["text", "figures"])
    parser.add_argument("--profile", action="store_true",
                        help="print the collector's top functions (cProfile) to stderr")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve))
        return
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure, args.rounds, args.interval,
                                             args.path, args.profile))))
        return

    print(f"load average at start: {os.getloadavg()[0]:.2f}; {args.rounds} measured rounds "
          f"every {args.interval:g} s per N and path, after one warm-up round", flush=True)
    results = []
    for n in args.pods:
        server = start_pods(n)
        try:
            for path in args.paths:  # the same simulated pods for both paths
                output = subprocess.run(
                    [sys.executable, __file__, "--measure", str(n), "--path", path,
                     "--rounds", str(args.rounds), "--interval", str(args.interval)]
                    + (["--profile"] if args.profile else []),
                    check=True, stdout=subprocess.PIPE, text=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
                print(f"  N={n} {path} done (load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            server.terminate()
            server.wait(10)
    print()
    print("| pods | path | CPU (share of one core) | CPU per pod-scrape | CPU per round "
          "| round avg / max | RSS before / peak | failed reads | pods with a rate |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['pods']} | {r['path']} | {100 * r['cpu_share']:.1f} % "
              f"| {r['cpu_per_pod_ms']:.3f} ms | {r['cpu_per_round_ms']:.0f} ms "
              f"| {r['round_avg_ms']:.0f} / {r['round_max_ms']:.0f} ms "
              f"| {r['rss_before_mib']:.0f} / {r['peak_rss_mib']:.0f} MiB "
              f"| {r['failed']} | {r['with_rate']} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
