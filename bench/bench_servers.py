"""Load benchmark of every `djangoscale serve` server type on the sample project.

Same app, same view (default `/slow/`: ~50 ms in PostgreSQL through pgbouncer), same
concurrency (200 connections), same duration, one server at a time, with wrk (Debian
package `wrk`). Prints a table of RPS, latency percentiles, errors and the peak number of
server connections PostgreSQL saw, with each RPS as a ratio of gunicorn-sync with one
worker: the setup the story behind this product started from.

    .venv/bin/python bench/bench_servers.py --duration 10 --connections 200

Not a test: figures depend on the machine. Record them in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.fixtures import services  # noqa: E402
from tests.fixtures.launcher import SAMPLEAPP, metric_sum, serve  # noqa: E402

# (label, server type, launcher flags): the story's settings where it gave them.
SETUPS: list[tuple[str, str, dict[str, object]]] = [
    ("gunicorn-sync x1", "gunicorn-sync", {"workers": 1}),
    ("gunicorn-sync x4", "gunicorn-sync", {"workers": 4}),
    ("gunicorn-gthread 1x100", "gunicorn-gthread", {"workers": 1, "threads": 100}),
    ("gunicorn-gevent 1x100", "gunicorn-gevent", {"workers": 1, "threads": 100}),
    ("cherrypy 100->150 q1000", "cherrypy", {"threads": 100, "max_threads": 150, "queue_size": 1000}),
    ("waitress 100", "waitress", {"threads": 100, "queue_size": 1000}),
    ("granian 1x100", "granian", {"workers": 1, "threads": 100, "queue_size": 1000}),
    ("bjoern x4", "bjoern", {"workers": 4, "queue_size": 1000}),
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
    rps: float
    p50: float
    p95: float
    p99: float
    mean: float
    errors: int
    counted: float
    peak_db: int


def run_wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script), url],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON"))
    return json.loads(line[4:])


def bench_one(label: str, server: str, flags: dict[str, object], bouncer: services.PgBouncer,
              pg: services.Postgres, args: argparse.Namespace, workdir: Path, script: Path) -> Result:
    flags = {"timeout": 30, **flags}
    with serve(server, bouncer.database_env(), workdir, **flags) as served:
        url = f"http://{served.host}:{served.port}{args.path}"
        run_wrk(url, min(args.connections, 20), 1, script)  # warm up: imports, connections
        before = metric_sum(served.metrics(), "djangoscale_requests_total")
        sampler = services.PeakSampler(pg, interval=0.05)
        sampler.start()
        report = run_wrk(url, args.connections, args.duration, script)
        peak = sampler.stop()
        time.sleep(0.5)
        counted = metric_sum(served.metrics(), "djangoscale_requests_total") - before
    errors = int(report["connect"] + report["read"] + report["write"] + report["status"] + report["timeout"])
    return Result(label, report["requests"] / report["seconds"], report["p50"], report["p95"],
                  report["p99"], report["mean"], errors, counted, peak)


def table(results: list[Result], baseline: str) -> str:
    base = next((r.rps for r in results if r.label == baseline), None)
    lines = [
        "| server | RPS | x baseline | p50 ms | p95 ms | p99 ms | mean ms | errors | counted by /metrics | peak DB conns |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = f"{r.rps / base:.1f}" if base else "-"
        lines.append(
            f"| {r.label} | {r.rps:.0f} | {ratio} | {r.p50:.0f} | {r.p95:.0f} | {r.p99:.0f} | "
            f"{r.mean:.0f} | {r.errors} | {r.counted:.0f} | {r.peak_db} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per server (max 60)")
    parser.add_argument("--connections", type=int, default=200, help="concurrent connections (max 1000)")
    parser.add_argument("--path", default="/slow/", help="view to load: /slow/, /hello/, /items/")
    parser.add_argument("--only", nargs="*", help="labels or server types to run")
    args = parser.parse_args()
    args.duration = max(1, min(args.duration, 60))
    args.connections = max(1, min(args.connections, 1000))
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    setups = [s for s in SETUPS if not args.only or s[0] in args.only or s[1] in args.only]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="djangoscale-bench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "report.lua"
        script.write_text(WRK_REPORT)
        with services.postgres(workdir, max_connections=300) as pg:
            config = services.pgbouncer_config_for(pg, pool_size=200, max_client_conn=2000)
            with services.pgbouncer(config, services.pgbouncer_auth_for(), workdir) as bouncer:
                services.migrate_sample_app(bouncer.database_env(), SAMPLEAPP, sys.executable)
                for label, server, flags in setups:
                    print(f"-- {label}: {args.connections} connections, {args.duration}s, {args.path}",
                          file=sys.stderr, flush=True)
                    try:
                        results.append(bench_one(label, server, flags, bouncer, pg, args, workdir, script))
                    except Exception as error:  # one server failing must not hide the others
                        print(f"   {label} failed: {error}", file=sys.stderr)
                    print(table(results, SETUPS[0][0]), file=sys.stderr, flush=True)
    print(table(results, SETUPS[0][0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
