"""Load benchmark of every `djangoscale serve` server type on the sample project, and the
issue's target ratios, measured side by side in one run.

Same app, same concurrency (200 wrk connections), same duration per run, one server at a
time, with wrk (Debian package `wrk`) on loopback. Each run gets a fresh pgbouncer (pool
sized for that setup's concurrency), so one server's pooled connections never count in the
next one's peak.

Runs, in this order:
1. every setup on `/slow/` (~50 ms in PostgreSQL): RPS, p50/p95/p99, errors, requests
   counted by the launcher's /metrics, peak server connections PostgreSQL saw;
2. the threaded setups on `/sleep/?s=0.05` (50 ms asleep in the view, no database): the
   server's own capacity, without the cost of a database connection per request;
3. the threaded setups on `/hello/` (CPU-light, no database): their own throughput ceiling;
4. the launcher's metrics cost on `/hello/`: the same server bare (DJANGOSCALE_MIDDLEWARE=off,
   --metrics-bind off: the user's app with none of the launcher's middleware) against the
   launcher, interleaved bare/launcher/bare/launcher so drift of a shared machine hits both.

Then the ratios: each threaded setup's `/slow/` (and `/sleep/`) RPS against
min(threads / view latency, its `/hello/` RPS) (target >= 90%, zero errors), metrics cost
(target <= 3%), cherrypy with pool growth against gunicorn-gthread at equal threads
(target >= 100%). `--cost-only /slow/` runs only the metrics-cost pairs, on that view.

    nice -n -5 .venv/bin/python bench/bench_servers.py --duration 7 --out /tmp/bench.json

Not a test: figures depend on the machine. Record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from djangoscale.serve.config import ServeConfig  # noqa: E402
from tests.fixtures import services  # noqa: E402
from tests.fixtures.launcher import SAMPLEAPP, metric_sum, serve  # noqa: E402

SLEEP_VIEW = "/sleep/?s=0.05"  # 50 ms without the database: the server's own capacity
QUEUE = 1000  # listen backlog / accepted queue: the story's request queue
# (label, server type, launcher flags, threaded): the story's settings where it gave them.
SETUPS: list[tuple[str, str, dict[str, object], bool]] = [
    ("gunicorn-sync 1 worker", "gunicorn-sync", {"workers": 1}, False),
    ("gunicorn-sync 4 workers", "gunicorn-sync", {"workers": 4}, False),
    ("bjoern 4 processes", "bjoern", {"workers": 4}, False),
    ("gunicorn-gthread 1x100", "gunicorn-gthread", {"workers": 1, "threads": 100}, True),
    ("gunicorn-gevent 1x100", "gunicorn-gevent", {"workers": 1, "threads": 100}, True),
    ("cherrypy 100->150", "cherrypy", {"threads": 100, "max_threads": 150}, True),
    ("waitress 100", "waitress", {"threads": 100}, True),
    ("granian 1x100", "granian", {"workers": 1, "threads": 100}, True),
    # One Python process is one GIL: on 2 cores, two processes of half the threads.
    ("gunicorn-gthread 2x50", "gunicorn-gthread", {"workers": 2, "threads": 50}, True),
    ("granian 2x50", "granian", {"workers": 2, "threads": 50}, True),
]
METRICS_COST = ["cherrypy 100->150", "gunicorn-gthread 1x100"]
GROWTH_VS = ("cherrypy 100->150", "gunicorn-gthread 1x100")

WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON{"requests":%d,"seconds":%f,"p50":%f,"p95":%f,"p99":%f,"mean":%f,"max":%f,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(95) / 1e3, latency:percentile(99) / 1e3, latency.mean / 1e3,
    latency.max / 1e3, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Result:
    label: str
    path: str
    bare: bool
    rps: float
    p50: float
    p95: float
    p99: float
    mean: float
    errors: int
    counted: float | None
    peak_db: int
    view_ms: float  # median of sequential requests before the load


def run_wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON"))
    return json.loads(line[4:])


def concurrency(server: str, flags: dict[str, object]) -> int:
    threads = int(flags.get("threads", 1))
    return ServeConfig(
        "x:y",
        server=server,
        workers=int(flags.get("workers", 1)),
        threads=threads,
        max_threads=int(flags.get("max_threads", threads)),
    ).max_concurrency


def bench_one(
    label: str,
    server: str,
    flags: dict[str, object],
    path: str,
    bare: bool,
    pg: services.Postgres,
    args: argparse.Namespace,
    workdir: Path,
    script: Path,
) -> Result:
    flags = {"timeout": 30, "queue_size": QUEUE, **flags}
    pool = concurrency(server, flags) + 5
    config = services.pgbouncer_config_for(pg, pool_size=pool, max_client_conn=2000)
    with (
        services.pgbouncer(config, services.pgbouncer_auth_for(), workdir) as bouncer,
        serve(server, bouncer.database_env(), workdir, bare=bare, **flags) as served,
    ):
        url = f"http://{served.host}:{served.port}{path}"
        view_ms = statistics.median(served.get(path).seconds for _ in range(10)) * 1e3
        run_wrk(url, min(args.connections, 20), 1, script)  # warm up: imports, connections
        before = None if bare else metric_sum(served.metrics(), "djangoscale_requests_total")
        sampler = services.PeakSampler(pg, interval=0.05)
        sampler.start()
        report = run_wrk(url, args.connections, args.duration, script)
        peak = sampler.stop()
        counted = None
        if before is not None:
            time.sleep(0.5)
            counted = metric_sum(served.metrics(), "djangoscale_requests_total") - before
    errors = int(
        report["connect"] + report["read"] + report["write"] + report["status"] + report["timeout"]
    )
    return Result(
        label,
        path,
        bare,
        report["requests"] / report["seconds"],
        report["p50"],
        report["p95"],
        report["p99"],
        report["mean"],
        errors,
        counted,
        peak,
        view_ms,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| server | view | launcher | RPS | p50 ms | p95 ms | p99 ms | mean ms | errors "
        "| counted by /metrics | peak DB conns |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        counted = "-" if r.counted is None else f"{r.counted:.0f}"
        lines.append(
            f"| {r.label} | {r.path} | {'bare' if r.bare else 'yes'} | {r.rps:.0f} | {r.p50:.0f} | "
            f"{r.p95:.0f} | {r.p99:.0f} | {r.mean:.0f} | {r.errors} | {counted} | {r.peak_db} |"
        )
    return "\n".join(lines)


def runs(values: list[float]) -> str:
    return ", ".join(f"{x:.0f}" for x in values)


def ratios(results: list[Result]) -> str:
    def find(label: str, path: str, bare: bool = False) -> list[Result]:
        return [r for r in results if r.label == label and r.path == path and r.bare == bare]

    lines = [
        "| threaded setup, view | RPS | threads / view latency | /hello/ RPS | ceiling | ratio "
        "| errors | target >= 90%, 0 errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for view in ("/slow/", SLEEP_VIEW):
        for label, server, flags, threaded in SETUPS:
            slow, hello = find(label, view), find(label, "/hello/")
            if not threaded or not slow or not hello:
                continue
            s = slow[0]
            hello_rps = statistics.mean(r.rps for r in hello)
            # cherrypy counts at its grown pool (150), a stricter ceiling than its 100 start
            theory = concurrency(server, flags) / (s.view_ms / 1e3)
            ceiling = min(theory, hello_rps)
            ratio = s.rps / ceiling
            ok = "met" if ratio >= 0.9 and s.errors == 0 else "**missed**"
            lines.append(
                f"| {label} {view} | {s.rps:.0f} | {theory:.0f} ({s.view_ms:.0f} ms) | "
                f"{hello_rps:.0f} | {ceiling:.0f} | {ratio:.0%} | {s.errors} | {ok} |"
            )
    lines += [
        "",
        "| metrics cost | bare RPS (runs) | launcher RPS (runs) | cost | target <= 3% |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for label in METRICS_COST:
        for view in sorted({r.path for r in results if r.bare}):
            bare = [r.rps for r in find(label, view, bare=True)]
            full = [r.rps for r in find(label, view)]
            if not bare or not full:
                continue
            cost = 1 - statistics.mean(full) / statistics.mean(bare)
            lines.append(
                f"| {label} {view} | {statistics.mean(bare):.0f} ({runs(bare)}) | "
                f"{statistics.mean(full):.0f} ({runs(full)}) | {cost:+.1%} | "
                f"{'met' if cost <= 0.03 else '**missed**'} |"
            )
    a, b = find(GROWTH_VS[0], "/slow/"), find(GROWTH_VS[1], "/slow/")
    if a and b:
        ratio = a[0].rps / b[0].rps
        lines += [
            "",
            f"cherrypy with pool growth vs gunicorn-gthread at equal threads (100), /slow/: "
            f"{a[0].rps:.0f} / {b[0].rps:.0f} RPS = {ratio:.0%} "
            f"(target >= 100%: {'met' if ratio >= 1 else 'missed'})",
        ]
    return "\n".join(lines)


def plan(
    only: list[str] | None, cost_only: str | None = None
) -> list[tuple[str, str, dict[str, object], str, bool]]:
    chosen = [s for s in SETUPS if not only or s[0] in only or s[1] in only]
    if cost_only:  # only the metrics-cost pairs, on this view
        return [
            (label, server, flags, cost_only, bare)
            for label, server, flags, _ in chosen
            if label in METRICS_COST
            for bare in (True, False, True, False)
        ]
    runs = [(label, server, flags, "/slow/", False) for label, server, flags, _ in chosen]
    for label, server, flags, threaded in chosen:
        if threaded:
            runs.append((label, server, flags, SLEEP_VIEW, False))
    for label, server, flags, threaded in chosen:
        if threaded and label not in METRICS_COST:
            runs.append((label, server, flags, "/hello/", False))
    for label, server, flags, _ in chosen:
        if label in METRICS_COST:
            for bare in (True, False, True, False):
                runs.append((label, server, flags, "/hello/", bare))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (max 60)")
    parser.add_argument(
        "--connections", type=int, default=200, help="concurrent connections (max 1000)"
    )
    parser.add_argument("--only", nargs="*", help="labels or server types to run")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument(
        "--cost-only",
        metavar="VIEW",
        help="run only the metrics-cost pairs (bare/launcher x2), on VIEW",
    )
    args = parser.parse_args()
    args.duration = max(1, min(args.duration, 60))
    args.connections = max(1, min(args.connections, 1000))
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="djangoscale-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        with services.postgres(workdir, max_connections=300) as pg:
            config = services.pgbouncer_config_for(pg, pool_size=5)
            with services.pgbouncer(config, services.pgbouncer_auth_for(), workdir) as bouncer:
                services.migrate_sample_app(bouncer.database_env(), SAMPLEAPP, sys.executable)
            for label, server, flags, path, bare in plan(args.only, args.cost_only):
                print(
                    f"-- {label} {path} {'bare' if bare else 'launcher'}: {args.connections} "
                    f"connections, {args.duration}s",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    results.append(
                        bench_one(label, server, flags, path, bare, pg, args, workdir, script)
                    )
                    r = results[-1]
                    print(
                        f"   {r.rps:.0f} RPS p95 {r.p95:.0f} ms errors {r.errors} "
                        f"peak db {r.peak_db}",
                        file=sys.stderr,
                        flush=True,
                    )
                except Exception as error:  # one server failing must not hide the others
                    print(f"   {label} failed: {error}", file=sys.stderr, flush=True)
                if args.out:
                    Path(args.out).write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"{len(results)} runs in {time.monotonic() - started:.0f} s\n")
    print(table(results))
    print()
    print(ratios(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
