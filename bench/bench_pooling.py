"""Pooling against direct connections: RPS, p95 and the most concurrent clients with no error.

The setup of `tests/e2e/test_budget.py`, imported rather than copied: real PostgreSQL with
max_connections=40, the DjangoService of that test (cherrypy, 20-30 threads, replicas.max 5,
database budget 30), and as many simulated pods as can run at max replicas (5 + 1 surge pod),
each a `djangoscale serve` of the sample project and, in mode `pgbouncer`, the pgbouncer the
operator renders for it. Every mode gets the same pods; only `spec.pooling.mode` differs:

- `pgbouncer`: each pod's app talks to its own pgbouncer (transaction pooling, the pool the
  budget gives a pod);
- `none`: each request opens its own connection to PostgreSQL (`CONN_MAX_AGE=0`);
- `django`: Django's psycopg pool in the worker, sized from the same budget.

The load: `/slow/` (holds a database connection for ~50 ms), spread over the pods by
C concurrent clients (threads, a new HTTP connection per request), a fixed number of
requests per step. Part 1: RPS and p95 at 10 and 20 clients. Part 2: clients 10, 20, 40,
80, 160, 200 until a step has an error; the largest step without one is the mode's maximum.
The peak number of server connections in `pg_stat_activity` is sampled during each step.

    python bench/bench_pooling.py [--modes pgbouncer none django] [--requests 600]
        [--conn-max-age N]

`--conn-max-age N` gives every pod DATABASE_CONN_MAX_AGE=N instead of what the operator
sets (60 behind pgbouncer, 0 direct): `--conn-max-age 0` is the app opening a connection per
request, as before the operator kept them.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.test_budget import PG_MAX_CONNECTIONS, SAMPLEAPP, simulated_pods  # noqa: E402
from tests.fixtures import services  # noqa: E402

COMPARE = (10, 20)
STEPS = (10, 20, 40, 80, 160, 200)


@dataclass
class Step:
    clients: int
    requests: int
    ok: int
    errors: collections.Counter[str]
    seconds: float
    p50: float
    p95: float
    peak_connections: int

    @property
    def rps(self) -> float:
        return self.ok / self.seconds


def one(url: str) -> tuple[str | None, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
            error = None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as http_error:
        error = f"HTTP {http_error.code}"
    except OSError as os_error:
        error = type(os_error).__name__
    return error, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def step(urls: list[str], clients: int, requests: int, pg: services.Postgres) -> Step:
    targets = [urls[i % len(urls)] + "/slow/" for i in range(requests)]
    sampler = services.PeakSampler(pg)
    sampler.start()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(one, targets))
    seconds = time.monotonic() - started
    peak = sampler.stop()
    errors = collections.Counter(error for error, _ in results if error is not None)
    latencies = [latency for error, latency in results if error is None]
    return Step(clients, requests, len(latencies), errors, seconds,
                percentile(latencies, 0.50), percentile(latencies, 0.95), peak)


def describe(s: Step) -> str:
    errors = ", ".join(f"{n} {kind}" for kind, n in s.errors.most_common()) or "0"
    return (f"{s.clients:3d} clients: {s.ok}/{s.requests} ok, {s.rps:5.0f} RPS, "
            f"p50 {1000 * s.p50:5.0f} ms, p95 {1000 * s.p95:5.0f} ms, "
            f"peak server connections {s.peak_connections}, errors {errors}")


def too_many_clients(tmp: Path) -> int:
    """Lines of the pods' logs with PostgreSQL's refusals for want of connection slots."""
    count = 0
    for log in tmp.glob("serve-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "too many clients" in line or "connection slots are reserved" in line:
                count += 1
    return count


def run_mode(mode: str, pg: services.Postgres, tmp: Path, requests: int,
             compare_requests: int, override: dict[str, str],
             steps: list[int]) -> tuple[list[Step], list[Step]]:
    tmp = tmp / mode
    tmp.mkdir()

    def pgbouncer_factory(ini: str, auth: str):  # type: ignore[no-untyped-def]
        return services.pgbouncer(ini, auth, tmp)

    with simulated_pods(mode, pg, pgbouncer_factory, tmp, override) as (_, urls):
        for url in urls:  # warm up each pod (first request loads the app)
            one(url + "/slow/")
        compared = []
        for clients in COMPARE:
            compared.append(step(urls, clients, compare_requests, pg))
            print(f"  {mode:9s} {describe(compared[-1])}", flush=True)
        stepped = []
        for clients in steps:
            time.sleep(2)  # let PostgreSQL reap the previous step's backends
            stepped.append(step(urls, clients, max(requests, 2 * clients), pg))
            print(f"  {mode:9s} step {describe(stepped[-1])}", flush=True)
            if stepped[-1].errors:
                break
    refusals = too_many_clients(tmp)
    print(f"  {mode:9s} pod log lines with 'too many clients' / 'connection slots are "
          f"reserved': {refusals}", flush=True)
    return compared, stepped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["pgbouncer", "none", "django"])
    parser.add_argument("--requests", type=int, default=600,
                        help="requests per step of the maximum-load search")
    parser.add_argument("--compare-requests", type=int, default=400,
                        help="requests per run at 10 and 20 clients")
    parser.add_argument("--conn-max-age", type=int, default=None,
                        help="DATABASE_CONN_MAX_AGE for every pod (default: the operator's)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS),
                        help="client counts of the maximum-load search")
    args = parser.parse_args()
    override = ({} if args.conn_max_age is None
                else {"DATABASE_CONN_MAX_AGE": str(args.conn_max_age)})

    print(f"load average at start: {os.getloadavg()[0]:.2f}; DATABASE_CONN_MAX_AGE "
          f"{args.conn_max_age if override else 'as the operator sets it'}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pooling-") as directory:
        tmp = Path(directory)
        with services.postgres(tmp, max_connections=PG_MAX_CONNECTIONS) as pg:
            services.migrate_sample_app(
                {"DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
                 "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
                 "DATABASE_PASSWORD": services.APP_PASSWORD},
                SAMPLEAPP, sys.executable)
            for mode in args.modes:
                results[mode] = run_mode(mode, pg, tmp, args.requests, args.compare_requests,
                                         override, args.steps)
    print(f"load average at end: {os.getloadavg()[0]:.2f}\n")

    header = "| mode |" + "".join(f" RPS @{c} | p95 @{c} |" for c in COMPARE)
    print(header + " max clients with 0 errors | first failing step | peak server conns |")
    print("| --- |" + " ---: | ---: |" * len(COMPARE) + " ---: | --- | ---: |")
    for mode, (compared, stepped) in results.items():
        cells = "".join(f" {s.rps:.0f} | {1000 * s.p95:.0f} ms |" for s in compared)
        passing = [s for s in stepped if not s.errors]
        best = f"{passing[-1].clients}" if passing else "< 10"
        if stepped[-1].errors:
            failed = stepped[-1]
            kinds = ", ".join(f"{n} {kind}" for kind, n in failed.errors.most_common(2))
            first = f"{failed.clients} ({sum(failed.errors.values())}/{failed.requests}: {kinds})"
        else:
            first = f"none up to {stepped[-1].clients}"
            best = f">= {best}"
        peak = max(s.peak_connections for s in compared + stepped)
        print(f"| {mode} |{cells} {best} | {first} | {peak} |")


if __name__ == "__main__":
    main()
