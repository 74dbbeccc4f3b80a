"""The connection budget holds at max replicas: real PostgreSQL, real pgbouncer, real launcher.

PostgreSQL runs with max_connections=40. Each simulated pod is a pgbouncer running the ini the
operator renders for the DjangoService (only the listen address, port and file paths differ, as
in a pod they are pod-local) plus a `djangoscale serve` process of the sample project behind it.
As many pods run as can exist at once at max replicas (replicas.max + 1 surge pod), and 200
concurrent clients hit the view that holds a connection for 50 ms.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from djangoscale import spec
from djangoscale.budget import size_pool
from djangoscale.builders import build_children
from djangoscale.builders.deployment import build_deployment, serve_env
from djangoscale.builders.pgbouncer import (
    INI_KEY,
    USERLIST_KEY,
    DatabaseCredentials,
    build_database_secret,
)
from tests.fixtures import services

pytestmark = pytest.mark.e2e
SAMPLEAPP = Path(__file__).resolve().parents[1] / "sampleapp"
PG_MAX_CONNECTIONS = 40
CLIENTS = 200
REQUESTS = 2000


def djangoservice(pooling: str) -> dict[str, Any]:
    return {
        "apiVersion": "djangoscale.io/v1alpha1",
        "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web", "uid": "u1"},
        "spec": {
            "image": "shop:1",
            "wsgiApp": "sampleproject.wsgi:application",
            "server": {"type": "cherrypy", "threads": 20, "maxThreads": 30, "queueSize": 500},
            "replicas": {"min": 2, "max": 5},
            # PostgreSQL keeps 3 superuser slots; the rest, less our sampler, is the budget.
            "database": {"secretName": "shop-db", "maxConnections": 30},
            "pooling": {"mode": pooling},
        },
    }


def rendered_pgbouncer_files(ds: spec.DjangoService, credentials: DatabaseCredentials):
    (secret,) = [c for c in build_children(ds, credentials) if c["kind"] == "Secret"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    return data[INI_KEY], data[USERLIST_KEY]


@contextlib.contextmanager
def serve_pod(ds: spec.DjangoService, database_env: dict[str, str], tmp: Path):
    """One `djangoscale serve` of the sample project with the env the Deployment gives it."""
    port, metrics_port = services.free_port(), services.free_port()
    env = {item["name"]: item["value"] for item in serve_env(ds)}
    env.update(
        DJANGOSCALE_BIND=f"127.0.0.1:{port}",
        DJANGOSCALE_METRICS_BIND=f"127.0.0.1:{metrics_port}",
        PROMETHEUS_MULTIPROC_DIR=str(tmp / f"metrics-{port}"),
        PYTHONPATH=str(SAMPLEAPP),
    )
    log = tmp / f"serve-{port}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "djangoscale.cli", "serve", ds.wsgi_app],
            env={**os.environ, **env, **database_env},
            cwd=SAMPLEAPP,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        services.wait_for_port("127.0.0.1", port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        services.stop_process(process)


def drive(urls: list[str]) -> tuple[int, list[str]]:
    """REQUESTS requests from CLIENTS concurrent clients, spread over the pods."""

    def one(index: int) -> str | None:
        url = urls[index % len(urls)] + "/slow/"
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                response.read()
                return None if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as error:
            return f"HTTP {error.code}"
        except OSError as error:
            return type(error).__name__

    with concurrent.futures.ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(one, range(REQUESTS)))
    errors = [r for r in results if r is not None]
    return len(results) - len(errors), errors


POOLING_ENV = ("DATABASE_POOL_MAX_SIZE", "DATABASE_CONN_MAX_AGE")


@contextlib.contextmanager
def simulated_pods(pooling: str, pg: services.Postgres, pgbouncer_factory, tmp: Path,
                   override: dict[str, str] | None = None):
    """The pods at max replicas, each with the env the Deployment gives it (`override`
    replaces some of it, for bench/bench_pooling.py's contrasts)."""
    # `none` over this budget is refused; `external` runs the pods the same way (each thread
    # connects to the database host), which is what `none` would have done.
    ds = spec.parse(djangoservice("external" if pooling == "none" else pooling))
    credentials = DatabaseCredentials(
        pg.host, pg.port, services.APP_DB, services.APP_USER, services.APP_PASSWORD
    )
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(ds.max_pods):
            if pooling == "pgbouncer":
                ini, userlist = rendered_pgbouncer_files(ds, credentials)
                bouncer = stack.enter_context(pgbouncer_factory(ini, userlist))
                env = bouncer.database_env()
            else:
                env = {"DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
                       "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
                       "DATABASE_PASSWORD": services.APP_PASSWORD}
            # What the Deployment builder gives the app container in this mode: the
            # pool size (django) and how long a thread keeps its connection.
            secret = build_database_secret(ds, credentials)
            (app,) = build_deployment(ds, secret)["spec"]["template"]["spec"]["containers"]
            given = {item["name"]: item.get("value") for item in app["env"]}
            env.update({name: given[name] for name in POOLING_ENV if name in given})
            env.update(override or {})
            urls.append(stack.enter_context(serve_pod(ds, env, tmp)))
        yield ds, urls


@pytest.fixture
def small_postgres(postgres_factory, tmp_path):
    with postgres_factory(max_connections=PG_MAX_CONNECTIONS) as pg:
        services.migrate_sample_app(
            {"DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
             "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
             "DATABASE_PASSWORD": services.APP_PASSWORD},
            SAMPLEAPP,
            sys.executable,
        )
        yield pg


@pytest.mark.parametrize("pooling", ["pgbouncer", "django"])
def test_max_replicas_of_pooled_pods_stay_within_the_budget(
    pooling, small_postgres, pgbouncer_factory, tmp_path
):
    with simulated_pods(pooling, small_postgres, pgbouncer_factory, tmp_path) as (ds, urls):
        sizing = size_pool(ds)
        # (30 - 3) // (5 + 1) = 4; pgbouncer keeps one of them for a terminating pod.
        assert len(urls) == 6
        assert sizing.pool_size_per_pod == (3 if pooling == "pgbouncer" else 4)
        sampler = services.PeakSampler(small_postgres)
        sampler.start()
        started = time.monotonic()
        ok, errors = drive(urls)
        elapsed = time.monotonic() - started
        peak = sampler.stop()
    print(f"\n{pooling} pods: {ok} ok, {len(errors)} errors, {ok / elapsed:.0f} RPS, "
          f"peak server connections {peak} (budget {sizing.connections_at_max} of "
          f"{ds.database.max_connections}; PostgreSQL max_connections {PG_MAX_CONNECTIONS})")
    assert errors == []
    assert ok == REQUESTS
    assert sampler.samples > 10
    # More than one pod's pool in use at once (the load spreads over the pods), and never
    # above the budget.
    assert sizing.pool_size_per_pod < peak <= sizing.connections_at_max
    assert peak <= ds.database.max_connections - ds.database.reserved_connections


def test_without_pooling_the_same_pods_exhaust_the_database(
    small_postgres, pgbouncer_factory, tmp_path
):
    """The contrast: the budget is what keeps the errors away, not a light load."""
    with pytest.raises(spec.SpecError, match="spec.pooling.mode: none opens"):
        spec.parse(djangoservice("none"))
    with simulated_pods("none", small_postgres, pgbouncer_factory, tmp_path) as (ds, urls):
        sampler = services.PeakSampler(small_postgres)
        sampler.start()
        ok, errors = drive(urls)
        peak = sampler.stop()
    print(f"\nno pooling: {ok} ok, {len(errors)} errors, peak server connections {peak}")
    assert peak > ds.database.max_connections - ds.database.reserved_connections
    assert errors, "expected 'too many clients' failures once PostgreSQL ran out of slots"
