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

    nice -n -5 .venv/bin/python bench/bench_pooler.py [--pooler-max 19] [--steps 20 40 80 160]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pooling import Step, describe, one, step, too_many_clients  # noqa: E402

from tests.e2e.test_budget import PG_MAX_CONNECTIONS, SAMPLEAPP  # noqa: E402
from tests.e2e.test_pooler_mode import sidecar_replicas_max, simulated_service  # noqa: E402
from tests.fixtures import services  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pooler-max", type=int, default=19)
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40, 80, 160])
    parser.add_argument("--requests", type=int, default=600)
    args = parser.parse_args()
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
