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

Then the budget guard with the pooler, on the local control plane: KWOK pooler pods, a real
pgbouncer on each one's address, and the operator's status.database counting their SHOW POOLS.
"""

from __future__ import annotations

import concurrent.futures
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
from djangoscale.builders.pgbouncer import DRAIN_INI, LISTEN_PORT, DatabaseCredentials
from djangoscale.builders.pooler import build_pooler_container
from tests.e2e.helpers import djangoservice as e2e_djangoservice
from tests.e2e.test_budget import (
    POOLING_ENV,
    REQUESTS,
    drive,
    rendered_pgbouncer_files,
    serve_pod,
    small_postgres,  # noqa: F401 (a fixture)
)
from tests.e2e.test_budget_guard import (
    database_secret,
    live_status,
    operator,  # noqa: F401 (a fixture)
)
from tests.fixtures import services
from tests.fixtures.polling import wait_for

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
def pod_databases(mode: str, replicas_max: int, pg: services.Postgres, tmp: Path
                  ) -> Iterator[tuple[spec.DjangoService, list[dict[str, str]],
                                      list[services.PgBouncer]]]:
    """The database env of every app pod that can run at replicas.max (and its surge pod), in
    `mode`: each pod with its own pgbouncer (pgbouncer) or connected to one of POOLER_REPLICAS
    poolers (pooler), pod i to pooler i mod POOLER_REPLICAS."""
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
        envs = []
        for index in range(ds.max_pods if mode == "pgbouncer" else replicas_max + 1):
            if mode == "pgbouncer":
                bouncer = stack.enter_context(services.pgbouncer(ini, userlist, tmp))
                bouncers.append(bouncer)
            else:
                bouncer = bouncers[index % len(bouncers)]
            env = bouncer.database_env()
            env.update({name: given[name] for name in POOLING_ENV if name in given})
            envs.append(env)
        yield ds, envs, bouncers


@contextlib.contextmanager
def simulated_service(mode: str, replicas_max: int, pg: services.Postgres, tmp: Path
                      ) -> Iterator[tuple[spec.DjangoService, list[str], list[services.PgBouncer]]]:
    """`pod_databases`, each pod a `djangoscale serve` of the sample project with its env."""
    with pod_databases(mode, replicas_max, pg, tmp) as (ds, envs, bouncers), \
            contextlib.ExitStack() as stack:
        yield ds, [stack.enter_context(serve_pod(ds, env, tmp)) for env in envs], bouncers


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


def pooler_pod_addresses(kube: Any, namespace: str) -> dict[str, str]:
    """The Running pooler pods' names and addresses (KWOK gives them loopback ones)."""
    selector = "app.kubernetes.io/instance=shop,app.kubernetes.io/component=pooler"
    items = kube.call("GET", f"/api/v1/namespaces/{namespace}/pods",
                      query=[("labelSelector", selector)])["items"]
    return {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in items
            if pod.get("status", {}).get("phase") == "Running" and pod["status"].get("podIP")}


def fill_pool(bouncer: services.PgBouncer, clients: int, seconds: float) -> None:
    """`clients` sessions at once through one pooler, each in pg_sleep: its pool fills."""
    import psycopg

    def client() -> None:
        with psycopg.connect(host=bouncer.host, port=bouncer.port, dbname=services.APP_DB,
                             user=services.APP_USER, password=services.APP_PASSWORD,
                             autocommit=True, prepare_threshold=None) as conn:
            conn.execute(f"SELECT pg_sleep({seconds})")

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: client(), range(clients)))


def test_status_database_counts_the_pooler_pods_server_connections(
    kube: Any, namespace: str, operator: Any, postgres_factory: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The app pods hold no server connection with the pooler: the guard reads the pooler
    pods' pgbouncers (a real one per KWOK pooler pod, on the pod's address and the port the
    operator asks) and status.database says what PostgreSQL counts."""
    with postgres_factory(max_connections=40) as pg:
        kube.apply(database_secret(namespace, pg))
        body = e2e_djangoservice(
            namespace, replicas={"min": 2, "max": 4}, autoscaling={"targetRPSPerPod": 1000},
            database={"secretName": "shop-db", "maxConnections": MAX_CONNECTIONS},
            pooling={"mode": "pooler",
                     "pooler": {"replicas": {"min": POOLER_REPLICAS, "max": POOLER_REPLICAS}}})
        kube.apply(body)
        ds = spec.parse(body)
        pool = size_pool(ds).pool_size_per_pod
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        ini, userlist = rendered_pgbouncer_files(ds, credentials)
        addresses = wait_for(f"{POOLER_REPLICAS} pooler pods running", lambda: (
            pooler_pod_addresses(kube, namespace)
            if len(pooler_pod_addresses(kube, namespace)) == POOLER_REPLICAS else None),
            timeout=120)
        with contextlib.ExitStack() as stack:
            bouncers = [stack.enter_context(services.pgbouncer(
                pooler_ini(ini, stack.enter_context(drain_file())), userlist, tmp_path,
                listen=(ip, LISTEN_PORT))) for ip in addresses.values()]
            for bouncer in bouncers:  # more clients than the pool: it fills, no more
                fill_pool(bouncer, pool + 2, 1)
            # The pools stay open (server_idle_timeout 60 s): PostgreSQL's count holds still.
            in_pg = server_connections(pg)
            assert in_pg == POOLER_REPLICAS * pool

            def reported() -> dict[str, Any] | None:
                database = live_status(kube, namespace).get("database") or {}
                return (database if database.get("podsReporting") == POOLER_REPLICAS
                        and database.get("serverConnections") == in_pg else None)

            database = wait_for("the pooler pods' figures in status", reported, timeout=60)
            print(f"\nstatus.database with the pooler: {database}; PostgreSQL: {in_pg}")
            assert database["poolingMode"] == "pooler"
            assert database["budget"] == MAX_CONNECTIONS - 3
