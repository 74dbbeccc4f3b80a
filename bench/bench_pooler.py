"""The pooler tier against the sidecar at the largest replicas.max the sidecar admits.

The setup of `tests/e2e/test_pooler_mode.py`, imported rather than copied: real PostgreSQL with
max_connections=40, a DjangoService with budget 30 - 3 = 27 (cherrypy, 4-6 threads), and every
app pod that can run at replicas.max (+ 1 surge pod), each a `djangoscale serve` of the sample
project. Three runs, the same load for each:

- `sidecar`: replicas.max 12, the largest the sidecar admits here (2 x 13 pods <= 27); each
  pod has its own pgbouncer of the rendered ini (a pool of 27 // 13 - 1 = 1);
- `pooler@12`: the same 13 app pods through 2 pooler pgbouncers (27 // 3 - 1 = 8 each);
- `pooler@N`: N + 1 app pods (--pooler-max, default 19), past what the sidecar admits.

The load: `/slow/` (holds a database connection ~50 ms), spread over the pods by C concurrent
clients (a new HTTP connection per request), `--requests` requests per step, steps of
`--steps` clients. Printed per step: RPS, p50, p95, peak server connections (pg_stat_activity)
and errors; then the pods' log lines with "too many clients".

`--pods light` replaces each Django process by what the pod does to its database, so that
hundreds of pods fit on this machine (200 idle `djangoscale serve` processes alone take more
than its 2 cores): a pod is `server.maxThreads` connections opened on first use and kept
(the DATABASE_CONN_MAX_AGE=60 the operator gives the app behind a pgbouncer), with the env the
Deployment gives it, all pods in this one process on asyncio; a request takes a free thread of
its pod (waiting for one, as a request waits in the server's queue) and runs the `/slow/`
view's statement. Before the steps, every thread of every pod serves a request (the warm-up,
20 pods at a time, timed), so the steps measure pods that have run a while. No HTTP and no
Django: it measures the database tier, not the app.

With light pods, `--conn-max-age 0` makes each request open and close its connection (what the
operator gives a greenlet server, whose connections cannot be kept per thread), and
`--two-tier` adds a fourth run: the pooler's pods, each with its own pgbouncer in front of
its pooler (a pool of the pod's threads, kept), the app connecting to that one.

    nice -n -5 .venv/bin/python bench/bench_pooler.py [--pooler-max 19] [--steps 20 40 80 160]
    .venv/bin/python bench/bench_pooler.py --pods light --pooler-max 199 --steps 40 160 400
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "tools"))

from bench_pooling import Step, describe, one, percentile, step, too_many_clients  # noqa: E402

from djangoscale import spec  # noqa: E402
from tests.e2e.test_budget import PG_MAX_CONNECTIONS, SAMPLEAPP  # noqa: E402
from tests.e2e.test_pooler_mode import (  # noqa: E402
    pod_databases,
    sidecar_replicas_max,
    simulated_service,
)
from tests.fixtures import services  # noqa: E402

# The statement of the sample project's `/slow/` view.
SLOW_VIEW = "SELECT pg_sleep(0.05), pg_backend_pid()"
REFUSED = ("too many clients", "connection slots are reserved")
WARM_UP_PODS = 20


def run(label: str, mode: str, replicas_max: int, pg: services.Postgres, tmp: Path,
        steps: list[int], requests: int) -> list[Step]:
    tmp = tmp / label.replace("@", "-")
    tmp.mkdir()
    results = []
    with simulated_service(mode, replicas_max, pg, tmp) as (_, urls, bouncers):
        print(f"{label}: {len(urls)} app pods, {len(bouncers)} pgbouncers", flush=True)
        for url in urls:  # warm up each pod (the first request loads the app)
            one(url + "/slow/")
        for clients in steps:
            time.sleep(2)  # let PostgreSQL reap the previous step's backends
            results.append(step(urls, clients, max(requests, 2 * clients), pg))
            print(f"  {label:10s} {describe(results[-1])}", flush=True)
    print(f"  {label:10s} pod log lines with 'too many clients': {too_many_clients(tmp)}",
          flush=True)
    return results


class LightPod:
    """What an app pod does to its database: `threads` connections, each opened on first use
    and kept, as Django keeps a thread's connection with CONN_MAX_AGE; each request the
    `/slow/` view's statement on a free one."""

    def __init__(self, env: dict[str, str], threads: int, keep: bool = True) -> None:
        self.connect_args = {
            "host": env["DATABASE_HOST"], "port": int(env["DATABASE_PORT"]),
            "dbname": env["DATABASE_NAME"], "user": env["DATABASE_USER"],
            "password": env["DATABASE_PASSWORD"],
        }
        self.threads: asyncio.Queue[Any] = asyncio.Queue()
        self.open = 0  # client connections this pod holds
        self.keep = keep  # False: a connection per request (CONN_MAX_AGE=0)
        for _ in range(threads):
            self.threads.put_nowait(None)

    async def request(self) -> None:
        import psycopg

        conn = await self.threads.get()
        try:
            if conn is None:
                # Client-side binding, as Django's psycopg backend: no prepared statements,
                # which a pgbouncer in transaction mode could hand to another backend.
                conn = await psycopg.AsyncConnection.connect(
                    **self.connect_args, autocommit=True, prepare_threshold=None,
                    connect_timeout=10)
                self.open += 1
            await conn.execute(SLOW_VIEW)
        except BaseException:
            conn = await self.dropped(conn)  # Django drops a connection whose request failed
            raise
        else:
            if not self.keep:
                conn = await self.dropped(conn)
        finally:
            self.threads.put_nowait(conn)

    async def dropped(self, conn: Any) -> None:
        if conn is not None:
            await conn.close()
            self.open -= 1
        return None

    async def close(self) -> None:
        while not self.threads.empty():
            conn = self.threads.get_nowait()
            if conn is not None:
                await conn.close()


async def light_step(pods: list[LightPod], clients: int, requests: int,
                     pg: services.Postgres) -> tuple[Step, int]:
    """`requests` requests from `clients` concurrent clients, request n to pod n mod len(pods);
    the step and how many errors were PostgreSQL refusing a connection slot."""
    import psycopg

    sampler = services.PeakSampler(pg)
    sampler.start()
    numbers = itertools.count()
    latencies: list[float] = []
    errors: collections.Counter[str] = collections.Counter()
    refused = 0

    async def client() -> None:
        nonlocal refused
        while (n := next(numbers)) < requests:
            started = time.perf_counter()
            try:
                await pods[n % len(pods)].request()
            except (psycopg.Error, OSError) as error:
                errors[type(error).__name__] += 1
                refused += any(text in str(error) for text in REFUSED)
            else:
                latencies.append(time.perf_counter() - started)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.monotonic() - started
    peak = sampler.stop()
    return Step(clients, requests, len(latencies), errors, seconds,
                percentile(latencies, 0.50), percentile(latencies, 0.95), peak), refused


@contextlib.contextmanager
def in_front(envs: list[dict[str, str]], bouncers: list[services.PgBouncer], threads: int,
             tmp: Path) -> Iterator[list[dict[str, str]]]:
    """Two tiers: each pod's own pgbouncer (a pool of its threads) in front of the pooler it
    was given, the app's env pointing at it instead."""
    poolers = {(b.host, str(b.port)): b for b in bouncers}
    with contextlib.ExitStack() as stack:
        fronted = []
        for env in envs:
            pooler = poolers[env["DATABASE_HOST"], env["DATABASE_PORT"]]
            ini = services.pgbouncer_config_for(pooler, pool_size=threads, max_client_conn=100)
            # The app's login checked as the operator's sidecar checks it.
            ini = services.override_ini(ini, "pgbouncer", {"auth_type": "scram-sha-256"})
            sidecar = stack.enter_context(services.pgbouncer(ini, services.pgbouncer_auth_for(),
                                                             tmp))
            fronted.append({**env, **sidecar.database_env()})
        yield fronted


def run_light(label: str, mode: str, replicas_max: int, pg: services.Postgres, tmp: Path,
              steps: list[int], requests: int, keep: bool = True) -> list[Step]:
    tmp = tmp / label.replace("@", "-")
    tmp.mkdir()
    two_tier = mode == "two-tier"

    async def measure(ds: spec.DjangoService, envs: list[dict[str, str]]) -> list[Step]:
        pods = [LightPod(env, ds.server.concurrency, keep) for env in envs]
        results, refused = [], 0
        try:
            # Every thread of every pod serves once first, as in pods that have run a while;
            # WARM_UP_PODS at a time, as pods start in a rollout, not all at one instant.
            started = time.monotonic()
            for first in range(0, len(pods), WARM_UP_PODS):
                await asyncio.gather(*(pod.request() for pod in pods[first:first + WARM_UP_PODS]
                                       for _ in range(ds.server.concurrency)))
            print(f"  {label:10s} warm-up: {len(pods) * ds.server.concurrency} requests, "
                  f"{WARM_UP_PODS} pods at a time, {sum(pod.open for pod in pods)} client "
                  f"connections held after it, {time.monotonic() - started:.1f} s", flush=True)
            for clients in steps:
                await asyncio.sleep(2)
                result, step_refused = await light_step(pods, clients,
                                                        max(requests, 2 * clients), pg)
                results.append(result)
                refused += step_refused
                print(f"  {label:10s} {describe(result)}; client connections held by the "
                      f"pods {sum(pod.open for pod in pods)}", flush=True)
        finally:
            await asyncio.gather(*(pod.close() for pod in pods))
        print(f"  {label:10s} errors that were 'too many clients': {refused}", flush=True)
        return results

    with pod_databases("pooler" if two_tier else mode, replicas_max, pg, tmp) as (
        ds, envs, bouncers
    ), contextlib.ExitStack() as stack:
        if two_tier:
            envs = stack.enter_context(in_front(envs, bouncers, ds.server.concurrency, tmp))
        print(f"{label}: {len(envs)} light app pods of {ds.server.concurrency} threads"
              f"{'' if keep else ' (a connection per request)'}, {len(bouncers)} pgbouncers"
              f"{' and a pgbouncer in front of them in each pod' if two_tier else ''}",
              flush=True)
        return asyncio.run(measure(ds, envs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pooler-max", type=int, default=19)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40, 80, 160])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--pods", choices=["launcher", "light"], default="launcher",
                        help="a `djangoscale serve` process a pod, or light pods (see above)")
    parser.add_argument("--conn-max-age", type=int, choices=[0, 60], default=60,
                        help="light pods: 0 opens a connection per request")
    parser.add_argument("--two-tier", action="store_true",
                        help="light pods: a fourth run, a pgbouncer in each pod before the pooler")
    args = parser.parse_args()
    if args.pods != "light" and (args.two_tier or args.conn_max_age != 60):
        parser.error("--two-tier and --conn-max-age are for --pods light")
    sidecar_max = sidecar_replicas_max()
    print(f"1-minute load at start: {os.getloadavg()[0]:.2f}; sidecar's largest replicas.max "
          f"for this budget: {sidecar_max}", flush=True)
    runs = [("sidecar", "pgbouncer", sidecar_max), (f"pooler@{sidecar_max}", "pooler",
                                                   sidecar_max),
            (f"pooler@{args.pooler_max}", "pooler", args.pooler_max)]
    with tempfile.TemporaryDirectory(prefix="bench-pooler-") as folder, services.postgres(
        Path(folder), max_connections=PG_MAX_CONNECTIONS
    ) as pg:
        services.migrate_sample_app(
            {"DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
             "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
             "DATABASE_PASSWORD": services.APP_PASSWORD},
            SAMPLEAPP, sys.executable,
        )
        if args.two_tier:
            runs.append((f"two-tier@{args.pooler_max}", "two-tier", args.pooler_max))
        if args.pods == "light":
            table = {label: run_light(label, mode, replicas_max, pg, Path(folder), args.steps,
                                      args.requests, keep=args.conn_max_age > 0)
                     for label, mode, replicas_max in runs}
        else:
            table = {label: run(label, mode, replicas_max, pg, Path(folder), args.steps,
                                args.requests)
                     for label, mode, replicas_max in runs}
    print(f"\n1-minute load at end: {os.getloadavg()[0]:.2f}")
    print("| clients | " + " | ".join(f"{label} RPS, p95, peak conns, errors"
                                       for label in table) + " |")
    print("| ---: |" + " --- |" * len(table))
    for index, clients in enumerate(args.steps):
        cells = []
        for results in table.values():
            s = results[index]
            cells.append(f"{s.rps:.0f}, {1000 * s.p95:.0f} ms, {s.peak_connections}, "
                         f"{sum(s.errors.values())}")
        print(f"| {clients} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
