"""pooling.mode pooler on real PostgreSQL: more app pods than the sidecar mode admits, through
real pgbouncer pooler processes, within the budget.

PostgreSQL runs with max_connections=40 and the DjangoService's budget is 30 - 3 = 27. With a
pgbouncer sidecar each pod needs a connection while it runs and one while it terminates, so
replicas.max can be at most 27 // 2 - 1 = 12. With the pooler the budget is divided over its pods
(2 pooler pods + 1 surge pod: 27 // 3 - 1 = 8 each) and the app may run many more pods. Each
simulated pooler pod is a pgbouncer running the ini the operator renders (only listen address,
port, file paths and the drain file's path differ); each simulated app pod is a `djangoscale
serve` of the sample project with the env the Deployment gives it, connected to one of the
poolers (the pooler Service spreads connections; here app pod i goes to pooler i mod 2).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from djangoscale import spec
from djangoscale.budget import pgbouncer_budget_at_least, size_pool
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import DRAIN_INI, DatabaseCredentials
from djangoscale.builders.pooler import build_pooler_container
from tests.e2e.test_budget import (
    POOLING_ENV,
    REQUESTS,
    drive,
    rendered_pgbouncer_files,
    serve_pod,
    small_postgres,  # noqa: F401 (a fixture)
)
from tests.fixtures import services

pytestmark = pytest.mark.e2e
MAX_CONNECTIONS = 30
# The pods this test runs in each mode: the pooler's app pods are past what the sidecar admits.
POOLER_APP_REPLICAS_MAX = 19
POOLER_REPLICAS = 2


def djangoservice(mode: str, replicas_max: int) -> dict[str, Any]:
    pooling: dict[str, Any] = {"mode": mode}
    if mode == "pooler":
        pooling["pooler"] = {"replicas": {"min": POOLER_REPLICAS, "max": POOLER_REPLICAS}}
    return {
        "apiVersion": "djangoscale.io/v1alpha1",
        "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web", "uid": "u1"},
        "spec": {
            "image": "shop:1",
            "wsgiApp": "sampleproject.wsgi:application",
            "server": {"type": "cherrypy", "threads": 4, "maxThreads": 6, "queueSize": 500},
            "replicas": {"min": 2, "max": replicas_max},
            "database": {"secretName": "shop-db", "maxConnections": MAX_CONNECTIONS},
            "pooling": pooling,
        },
    }


def sidecar_replicas_max() -> int:
    """The largest replicas.max the sidecar mode admits for this budget."""
    budget = MAX_CONNECTIONS - 3
    largest = max(m for m in range(1, budget) if pgbouncer_budget_at_least(m + 1) <= budget)
    spec.parse(djangoservice("pgbouncer", largest))
    with pytest.raises(spec.SpecError, match="use pooling.mode: pooler"):
        spec.parse(djangoservice("pgbouncer", largest + 1))
    return largest


def pooler_ini(ini: str, drain_file: Path) -> str:
    """The rendered ini with the drain file where this machine has it."""
    assert f"%include {DRAIN_INI}" in ini
    return ini.replace(DRAIN_INI, str(drain_file))


@contextlib.contextmanager
def drain_file() -> Iterator[Path]:
    """An empty drain file the pgbouncer service user can read (as the pod's `: >` makes it)."""
    folder = Path(tempfile.mkdtemp(prefix="djangoscale-drain-"))
    os.chmod(folder, 0o755)
    path = folder / "drain.ini"
    path.write_text("")
    os.chmod(path, 0o666)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()


@contextlib.contextmanager
def simulated_service(mode: str, replicas_max: int, pg: services.Postgres, tmp: Path
                      ) -> Iterator[tuple[spec.DjangoService, list[str], list[services.PgBouncer]]]:
    """Every app pod that can run at replicas.max (and its surge pod), in `mode`: each with
    its own pgbouncer (pgbouncer) or connected to one of POOLER_REPLICAS poolers (pooler)."""
    ds = spec.parse(djangoservice(mode, replicas_max))
    credentials = DatabaseCredentials(
        pg.host, pg.port, services.APP_DB, services.APP_USER, services.APP_PASSWORD
    )
    children = {f"{c['kind']}/{c['metadata']['name']}": c for c in build_children(ds, credentials)}
    (app,) = children["Deployment/shop"]["spec"]["template"]["spec"]["containers"]
    given = {item["name"]: item.get("value") for item in app["env"]}
    ini, userlist = rendered_pgbouncer_files(ds, credentials)
    with contextlib.ExitStack() as stack:
        bouncers = []
        if mode == "pooler":
            for _ in range(POOLER_REPLICAS):
                drain = stack.enter_context(drain_file())
                bouncers.append(stack.enter_context(
                    services.pgbouncer(pooler_ini(ini, drain), userlist, tmp)))
        urls = []
        for index in range(ds.max_pods if mode == "pgbouncer" else replicas_max + 1):
            if mode == "pgbouncer":
                bouncer = stack.enter_context(services.pgbouncer(ini, userlist, tmp))
                bouncers.append(bouncer)
            else:
                bouncer = bouncers[index % len(bouncers)]
            env = bouncer.database_env()
            env.update({name: given[name] for name in POOLING_ENV if name in given})
            urls.append(stack.enter_context(serve_pod(ds, env, tmp)))
        yield ds, urls, bouncers


def server_connections(pg: services.Postgres) -> int:
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND datname = %s", (services.APP_DB,)).fetchone()
    assert row is not None
    return int(row[0])


def test_pooler_serves_more_pods_than_the_sidecar_admits_within_the_budget(
    small_postgres, tmp_path  # noqa: F811
):
    assert sidecar_replicas_max() < POOLER_APP_REPLICAS_MAX
    with simulated_service("pooler", POOLER_APP_REPLICAS_MAX, small_postgres, tmp_path) as (
        ds, urls, bouncers
    ):
        sizing = size_pool(ds)
        assert (sizing.pool_size_per_pod, sizing.max_pods) == (27 // 3 - 1, 3)
        assert len(urls) == POOLER_APP_REPLICAS_MAX + 1 and len(bouncers) == POOLER_REPLICAS
        sampler = services.PeakSampler(small_postgres)
        sampler.start()
        started = time.monotonic()
        ok, errors = drive(urls)
        elapsed = time.monotonic() - started
        peak = sampler.stop()
    refused = [line for log in tmp_path.glob("serve-*.log")
               for line in log.read_text(errors="replace").splitlines()
               if "too many clients" in line or "connection slots are reserved" in line]
    print(f"\npooler: {len(urls)} app pods through {len(bouncers)} poolers: {ok} ok, "
          f"{len(errors)} errors, {ok / elapsed:.0f} RPS, peak server connections {peak} "
          f"(pool {sizing.pool_size_per_pod} x {len(bouncers)} poolers; budget "
          f"{ds.database.pool_budget})")
    assert errors == [] and ok == REQUESTS
    assert refused == []
    assert sampler.samples > 10
    # Both poolers' pools in use at once, and never above the budget.
    assert sizing.pool_size_per_pod < peak <= sizing.pool_size_per_pod * len(bouncers)
    assert peak <= ds.database.pool_budget


def test_a_terminating_pooler_shrinks_its_pool_with_its_pre_stop_hook(
    small_postgres, tmp_path  # noqa: F811
):
    """The hook the pooler container runs, as rendered, against a real pgbouncer with a full
    pool (only the drain file's path and the pid differ: in the pod pgbouncer is pid 1)."""
    ds = spec.parse(djangoservice("pooler", POOLER_APP_REPLICAS_MAX))
    credentials = DatabaseCredentials(small_postgres.host, small_postgres.port,
                                      services.APP_DB, services.APP_USER, services.APP_PASSWORD)
    ini, userlist = rendered_pgbouncer_files(ds, credentials)
    pool = size_pool(ds).pool_size_per_pod
    hook = build_pooler_container(ds)["lifecycle"]["preStop"]["exec"]["command"]
    import psycopg

    with drain_file() as drain, services.pgbouncer(pooler_ini(ini, drain), userlist,
                                                   tmp_path) as bouncer:
        dsn = (f"host={bouncer.host} port={bouncer.port} dbname={services.APP_DB} "
               f"user={services.APP_USER} password={services.APP_PASSWORD}")
        # Fill the pool: `pool` clients each in a transaction at once.
        held = [psycopg.connect(dsn, prepare_threshold=None) for _ in range(pool)]
        for conn in held:
            conn.execute("SELECT 1")  # opens a transaction: holds a server connection
        assert server_connections(small_postgres) == pool
        script = hook[-1].replace(DRAIN_INI, str(drain)).replace(
            "kill -HUP 1", f"kill -HUP {bouncer.process.pid}").replace("sleep 5", "sleep 0")
        subprocess.run([*hook[:-1], script], check=True, timeout=10)
        for conn in held:
            conn.commit()  # the transactions end: pgbouncer may close what is over the pool
        deadline = time.monotonic() + 10
        while server_connections(small_postgres) > 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server_connections(small_postgres) == 1
        # Still serving, on the one connection left.
        assert held[0].execute("SELECT 2").fetchone() == (2,)
        for conn in held:
            conn.close()
