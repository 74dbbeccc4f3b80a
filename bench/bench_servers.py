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

from djangoscale.builders.deployment import PERSISTENT_CONN_MAX_AGE  # noqa: E402
from djangoscale.serve.config import ServeConfig  # noqa: E402
from tests.fixtures import services  # noqa: E402
from tests.fixtures.launcher import (  # noqa: E402
    SAMPLEAPP,
    metric_sum,
    serve,
    tree_cpu_seconds,
)

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
    ("cherrypy 2x50->75", "cherrypy", {"workers": 2, "threads": 50, "max_threads": 75}, True),
    ("waitress 2x50", "waitress", {"workers": 2, "threads": 50}, True),
]
METRICS_COST = ["cherrypy 100->150", "gunicorn-gthread 1x100"]
# cherrypy with pool growth against gunicorn-gthread at equal (starting) threads
GROWTH_VS = [
    ("cherrypy 100->150", "gunicorn-gthread 1x100"),
    ("cherrypy 2x50->75", "gunicorn-gthread 2x50"),
]

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
    cpu_us: float  # CPU (user + system) of the server's processes per completed request


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


def conn_max_age(server: str, persistent: int) -> int:
    """What the operator gives the app behind its pgbouncer sidecar (0 under gevent)."""
    return 0 if server == "gunicorn-gevent" else persistent


def configured_threads(flags: dict[str, object]) -> int:
    return int(flags.get("workers", 1)) * int(flags.get("threads", 1))


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
    # Twice the setup's concurrency: a server that held more transactions at once than it has
    # slots would show it in the peak (a pool of concurrency + 5 would cap it at + 5).
    pool = 2 * concurrency(server, flags)
    config = services.pgbouncer_config_for(pg, pool_size=pool, max_client_conn=2000)
    with (
        services.pgbouncer(config, services.pgbouncer_auth_for(), workdir) as bouncer,
        serve(
            server,
            bouncer.database_env(),
            workdir,
            env={"DATABASE_CONN_MAX_AGE": str(conn_max_age(server, args.conn_max_age)),
                 "DATABASE_CONN_HEALTH_CHECKS": "1" if args.conn_health_checks else "0"},
            bare=bare,
            **flags,
        ) as served,
    ):
        url = f"http://{served.host}:{served.port}{path}"
        view_ms = statistics.median(served.get(path).seconds for _ in range(10)) * 1e3
        run_wrk(url, min(args.connections, 20), 1, script)  # warm up: imports, connections
        before = None if bare else metric_sum(served.metrics(), "djangoscale_requests_total")
        # Every 10 ms: each /slow/ transaction holds its server connection for ~50 ms.
        sampler = services.PeakSampler(pg, interval=0.01)
        sampler.start()
        cpu_before = tree_cpu_seconds(served.process.pid)
        report = run_wrk(url, args.connections, args.duration, script)
        cpu = tree_cpu_seconds(served.process.pid) - cpu_before
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
        cpu / max(report["requests"], 1) * 1e6,
    )


Key = tuple[str, str, bool]  # label, view, bare


def grouped(results: list[Result]) -> dict[Key, list[Result]]:
    """Runs of the same setup, view and mode, in the order they first ran."""
    groups: dict[Key, list[Result]] = {}
    for r in results:
        groups.setdefault((r.label, r.path, r.bare), []).append(r)
    return groups


def median_run(runs: list[Result]) -> Result:
    """The run with the median RPS (the lower of the two middle ones for an even count,
    as statistics.median_low everywhere here: every figure is one a run measured)."""
    return sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]


def runs_text(values: list[float]) -> str:
    return ", ".join(f"{x:.0f}" for x in values)


def table(results: list[Result]) -> str:
    lines = [
        "| server | view | launcher | RPS (median) | runs | p50 ms | p95 ms | p99 ms | errors "
        "| counted by /metrics | peak DB conns | CPU us/request |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (label, path, bare), runs in grouped(results).items():
        r = median_run(runs)
        counted = "-" if r.counted is None else f"{r.counted:.0f}"
        lines.append(
            f"| {label} | {path} | {'bare' if bare else 'yes'} | {r.rps:.0f} | "
            f"{runs_text([x.rps for x in runs])} | {r.p50:.0f} | {r.p95:.0f} | {r.p99:.0f} | "
            f"{sum(x.errors for x in runs)} | {counted} | {max(x.peak_db for x in runs)} | "
            f"{statistics.median_low(x.cpu_us for x in runs):.0f} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    groups = grouped(results)

    def median_rps(label: str, path: str, bare: bool = False) -> float | None:
        runs = groups.get((label, path, bare))
        return statistics.median_low(r.rps for r in runs) if runs else None

    lines = [
        "| threaded setup, view | RPS | threads / view latency | /hello/ RPS | ceiling | ratio "
        "| errors | target >= 90%, 0 errors | ratio at the grown pool |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for view in ("/slow/", SLEEP_VIEW):
        for label, server, flags, threaded in SETUPS:
            runs, hello = groups.get((label, view, False)), median_rps(label, "/hello/")
            if not threaded or not runs or hello is None:
                continue
            rps = statistics.median_low(r.rps for r in runs)
            view_ms = statistics.median_low(r.view_ms for r in runs)
            errors = sum(r.errors for r in runs)
            # The configured threads; cherrypy's grown pool (maxThreads) in the last column.
            theory = configured_threads(flags) / (view_ms / 1e3)
            ceiling = min(theory, hello)
            ratio = rps / ceiling
            ok = "met" if ratio >= 0.9 and errors == 0 else "**missed**"
            grown = concurrency(server, flags)
            at_grown = (
                f"{rps / min(grown / (view_ms / 1e3), hello):.0%} at {grown}"
                if grown != configured_threads(flags)
                else "-"
            )
            lines.append(
                f"| {label} {view} | {rps:.0f} | {theory:.0f} ({view_ms:.0f} ms) | "
                f"{hello:.0f} | {ceiling:.0f} | {ratio:.0%} | {errors} | {ok} | {at_grown} |"
            )
    lines += [
        "",
        "| metrics cost | bare RPS median (runs) | launcher RPS median (runs) | cost "
        "| target <= 3% | CPU us/request bare -> launcher |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for label in METRICS_COST:
        for view in sorted({r.path for r in results if r.bare}):
            bare, full = groups.get((label, view, True)), groups.get((label, view, False))
            if not bare or not full:
                continue
            bare_rps = statistics.median_low(r.rps for r in bare)
            full_rps = statistics.median_low(r.rps for r in full)
            cost = 1 - full_rps / bare_rps
            # CPU per request moves far less with a busy machine than RPS does.
            bare_cpu = statistics.median_low(r.cpu_us for r in bare)
            full_cpu = statistics.median_low(r.cpu_us for r in full)
            lines.append(
                f"| {label} {view} | {bare_rps:.0f} ({runs_text([r.rps for r in bare])}) | "
                f"{full_rps:.0f} ({runs_text([r.rps for r in full])}) | {cost:+.1%} | "
                f"{'met' if cost <= 0.03 else '**missed**'} | {bare_cpu:.0f} -> "
                f"{full_cpu:.0f} ({full_cpu / bare_cpu - 1:+.1%}) |"
            )
    for growing, fixed in GROWTH_VS:
        for view in ("/slow/", SLEEP_VIEW):
            a, b = median_rps(growing, view), median_rps(fixed, view)
            if a and b:
                lines.append(
                    f"\n{growing} vs {fixed}, {view}: {a:.0f} / {b:.0f} RPS = {a / b:.0%} "
                    f"(target >= 100%: {'met' if a >= b else 'missed'})"
                )
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
    parser.add_argument("--views", nargs="*", help="only these views (e.g. /slow/)")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument(
        "--cost-only",
        metavar="VIEW",
        help="run only the metrics-cost pairs (bare/launcher x2), on VIEW",
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=PERSISTENT_CONN_MAX_AGE,
        help="DATABASE_CONN_MAX_AGE of threaded servers (0: a new connection per request); "
        "gevent always gets 0, as from the operator",
    )
    parser.add_argument(
        "--conn-health-checks",
        action="store_true",
        help="Django's CONN_HEALTH_CHECKS on (a SELECT 1 before a request reuses a connection)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every run this many times (max 9)"
    )
    args = parser.parse_args()
    args.duration = max(1, min(args.duration, 60))
    args.connections = max(1, min(args.connections, 1000))
    args.rounds = max(1, min(args.rounds, 9))
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="djangoscale-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        # Room for the largest pool (2 x 150 for cherrypy 2 x 75) and the sampler.
        with services.postgres(workdir, max_connections=400) as pg:
            config = services.pgbouncer_config_for(pg, pool_size=5)
            with services.pgbouncer(config, services.pgbouncer_auth_for(), workdir) as bouncer:
                services.migrate_sample_app(bouncer.database_env(), SAMPLEAPP, sys.executable)
            runs = [run for run in plan(args.only, args.cost_only)
                    if not args.views or run[3] in args.views]
            for label, server, flags, path, bare in runs * args.rounds:
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
    print(f"{len(results)} runs in {time.monotonic() - started:.0f} s; DATABASE_CONN_MAX_AGE "
          f"{args.conn_max_age} (gevent 0), CONN_HEALTH_CHECKS "
          f"{'on' if args.conn_health_checks else 'off'}, pgbouncer pool 2 x concurrency\n")
    print(table(results))
    print()
    print(ratios(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
