"""The budget guard end to end: real PostgreSQL, real pgbouncers, real launchers, real operator.

KWOK pods get loopback IPs. For each Running web pod a harness starts what the pod would run:
a pgbouncer with the ini the operator renders (only listen address, port and file paths
differ) and a `djangoscale serve` of the sample project bound to the pod's IP with the env the
Deployment gives it, `DJANGOSCALE_PGBOUNCER` included. The launcher reads SHOW POOLS from its
pgbouncer; the operator's collector scrapes the launcher and writes `status.database`.

The rendered ini makes the app's user one of pgbouncer's admin_users (the launcher reads
SHOW POOLS, the preStop hook shrinks the pool); the test uses the same console to change a
pool at run time, as someone editing a pod's config by hand would.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from djangoscale import spec
from djangoscale.budget import size_pool
from djangoscale.builders.deployment import serve_env
from djangoscale.builders.pgbouncer import DatabaseCredentials, render_ini, render_userlist
from djangoscale.contract import DRAINING_POOL_SIZE, PGBOUNCER_ADDRESS_ENV
from tests.e2e.helpers import API, djangoservice, start_operator
from tests.fixtures import services
from tests.fixtures.launcher import SAMPLE_WSGI, SAMPLEAPP, launcher_env
from tests.fixtures.polling import wait_for
from tests.tools.chart_install import operator_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

HTTP_PORT = random.randrange(20000, 30000)
METRICS_PORT = HTTP_PORT + 10000
# budget 9 - 3 = 6 over 2 pods + 1 surge pod, less one kept per draining pod: 1 per pod.
MAX_CONNECTIONS = 9
BUDGET = MAX_CONNECTIONS - 3
POOL = BUDGET // 3 - 1


def shop(namespace: str) -> dict[str, Any]:
    return djangoservice(
        namespace,
        wsgiApp=SAMPLE_WSGI, port=HTTP_PORT, metricsPort=METRICS_PORT,
        server={"type": "cherrypy", "threads": 8, "maxThreads": 8},
        replicas={"min": 2, "max": 2},
        autoscaling={"targetRPSPerPod": 1000},
        database={"secretName": "shop-db", "maxConnections": MAX_CONNECTIONS},
    )


def database_secret(namespace: str, pg: services.Postgres) -> dict[str, Any]:
    values = {"host": pg.host, "port": str(pg.port), "dbname": services.APP_DB,
              "user": services.APP_USER, "password": services.APP_PASSWORD}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


class BouncedPods:
    """Per Running web pod: a pgbouncer of the operator's ini and a launcher behind it."""

    def __init__(self, kube: Any, namespace: str, pg: services.Postgres, tmp: Path,
                 body: dict[str, Any] | None = None) -> None:
        self.kube, self.namespace, self.tmp = kube, namespace, tmp
        self.ds = spec.parse(body or shop(namespace))
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        self.ini = render_ini(self.ds, credentials)
        self.userlist = render_userlist(credentials)
        self.stack = contextlib.ExitStack()
        self.pods: dict[str, tuple[str, services.PgBouncer, subprocess.Popen[bytes]]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BouncedPods:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        for _, _, process in self.pods.values():
            services.stop_process(process)
        self.stack.close()

    def _running(self) -> dict[str, str]:
        selector = "app.kubernetes.io/instance=shop,app.kubernetes.io/component=web"
        items = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/pods",
                               query=[("labelSelector", selector)])
        return {pod["metadata"]["name"]: pod["status"]["podIP"] for pod in items["items"]
                if pod.get("status", {}).get("phase") == "Running"
                and pod["status"].get("podIP")}

    def _start(self, name: str, ip: str) -> None:
        bouncer = self.stack.enter_context(
            services.pgbouncer(self.ini, self.userlist, self.tmp / name))
        env = {item["name"]: item["value"] for item in serve_env(self.ds)}
        env.update(DJANGOSCALE_BIND=f"{ip}:{HTTP_PORT}",
                   DJANGOSCALE_METRICS_BIND=f"{ip}:{METRICS_PORT}",
                   PROMETHEUS_MULTIPROC_DIR=str(self.tmp / name / "metrics"))
        env[PGBOUNCER_ADDRESS_ENV] = f"{bouncer.host}:{bouncer.port}"
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen(
            [sys.executable, "-m", "djangoscale.cli", "serve", SAMPLE_WSGI], cwd=SAMPLEAPP,
            env=launcher_env(bouncer.database_env(), env), stdout=log,
            stderr=subprocess.STDOUT)
        log.close()
        self.pods[name] = (ip, bouncer, process)

    def _run(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(Exception):
                for name, ip in self._running().items():
                    if name not in self.pods:
                        (self.tmp / name).mkdir(parents=True, exist_ok=True)
                        self._start(name, ip)
            self.stopping.wait(0.5)

    def serving(self) -> list[str]:
        return [ip for ip, _, _ in list(self.pods.values()) if _answers(ip)]

    def set_pool(self, pod_ip: str, size: int) -> None:
        """What a hand edit of one pod's pgbouncer would do: a bigger (or smaller) pool."""
        (bouncer,) = [b for ip, b, _ in self.pods.values() if ip == pod_ip]
        with psycopg.connect(host=bouncer.host, port=bouncer.port, dbname="pgbouncer",
                             user=services.APP_USER, password=services.APP_PASSWORD,
                             autocommit=True, prepare_threshold=None) as admin:
            for setting in ("default_pool_size", "max_db_connections", "max_user_connections"):
                admin.execute(f"SET {setting} = {size}")


def _answers(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:{HTTP_PORT}/healthz", timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def load(ips: list[str], clients: int, seconds: float) -> int:
    """`clients` threads GET the view that holds a connection ~50 ms; the successes."""
    deadline = time.monotonic() + seconds

    def client(index: int) -> int:
        ok = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                url = f"http://{ips[index % len(ips)]}:{HTTP_PORT}/slow/"
                with urllib.request.urlopen(url, timeout=30) as response:
                    ok += response.status == 200
        return ok

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)))


@contextlib.contextmanager
def migrated_postgres(postgres_factory: Any, max_connections: int) -> Iterator[services.Postgres]:
    """A fresh PostgreSQL with the sample project's tables."""
    with postgres_factory(max_connections=max_connections) as pg:
        services.migrate_sample_app(
            {"DATABASE_HOST": pg.host, "DATABASE_PORT": str(pg.port),
             "DATABASE_NAME": services.APP_DB, "DATABASE_USER": services.APP_USER,
             "DATABASE_PASSWORD": services.APP_PASSWORD},
            SAMPLEAPP, sys.executable)
        yield pg


@pytest.fixture
def operator(kube: Any, cluster: Any, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa" / "kubeconfig")
    with start_operator(kubeconfig, tmp_path / "operator.log", "--scrape-interval", "1") as op:
        yield op


def live_status(kube: Any, namespace: str) -> dict[str, Any]:
    return dict((kube.get(API, "DjangoService", namespace, "shop") or {}).get("status") or {})


def degraded(kube: Any, namespace: str) -> dict[str, Any]:
    conditions = live_status(kube, namespace).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Degraded"), {})


def budget_events(kube: Any, namespace: str) -> list[dict[str, Any]]:
    events = kube.call("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    return [e for e in events if e.get("reason") == "BudgetExceeded"
            and e["involvedObject"].get("name") == "shop"]


def test_the_pods_pgbouncer_figures_reach_status_and_over_the_budget_degrade_it(
    kube: Any, namespace: str, operator: subprocess.Popen[bytes], postgres_factory: Any,
    tmp_path: Path,
) -> None:
    with migrated_postgres(postgres_factory, max_connections=40) as pg:
        kube.apply(database_secret(namespace, pg))
        kube.apply(shop(namespace))
        with BouncedPods(kube, namespace, pg, tmp_path) as pods:
            ips = wait_for("2 pods served", lambda: len(pods.serving()) == 2 and pods.serving(),
                           timeout=120)
            assert load(ips, clients=12, seconds=4) > 0
            # The pools stay open (server_idle_timeout 60 s): PostgreSQL's count holds still.
            in_pg = pg.server_connections()
            assert in_pg == 2 * POOL

            def reported() -> dict[str, Any] | None:
                database = live_status(kube, namespace).get("database") or {}
                return database if database.get("podsReporting") == 2 else None

            database = wait_for("both pods' figures in status", reported, timeout=60)
            print(f"\nstatus.database: {database}; PostgreSQL: {in_pg} connections")
            assert database["serverConnections"] == in_pg
            assert database["budget"] == BUDGET and database["guarded"] is True
            assert degraded(kube, namespace).get("reason") != "BudgetExceeded"
            assert budget_events(kube, namespace) == []

            # One pod's pool grows by hand past its share: the pods now hold more than the
            # budget, and the guard says so once.
            pods.set_pool(ips[0], 8)
            assert load([ips[0]], clients=12, seconds=4) > 0
            over = pg.server_connections()
            assert over > BUDGET

            def exceeded() -> dict[str, Any] | None:
                found = degraded(kube, namespace)
                return found if found.get("reason") == "BudgetExceeded" else None

            found = wait_for("Degraded=True BudgetExceeded", exceeded, timeout=60)
            print(f"over the budget: PostgreSQL {over}; Degraded: {found['message']}")
            assert found["status"] == "True"
            assert found["message"].startswith(f"{over} server connections held by the "
                                               "pgbouncers of 2 pods")
            wait_for("the Warning event", lambda: budget_events(kube, namespace), timeout=30)
            time.sleep(3)  # three more collection rounds, still over the budget
            (event,) = budget_events(kube, namespace)
            assert event["type"] == "Warning"

            # Back to its share: pgbouncer closes the extra connections, the guard clears.
            pods.set_pool(ips[0], POOL)
            wait_for("Degraded cleared", lambda: degraded(kube, namespace).get("status")
                     == "False", timeout=60)
            assert pg.server_connections() <= BUDGET


def test_a_terminating_pods_prestop_gives_its_server_connections_back(
    postgres_factory: Any, pgbouncer_factory: Any, tmp_path: Path,
) -> None:
    """`djangoscale prestop`, as the preStop hook runs it, on a pgbouncer of the operator's
    ini whose pool is full: PostgreSQL sees the pod's connections fall to DRAINING_POOL_SIZE
    while requests keep running through the one that is left."""
    body = shop("web")
    body["spec"]["database"]["maxConnections"] = 40  # (37 // 3) - 1 = 11 per pod
    ds = spec.parse(body)
    with migrated_postgres(postgres_factory, max_connections=60) as pg:
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        pool = size_pool(ds).pool_size_per_pod
        with pgbouncer_factory(render_ini(ds, credentials), render_userlist(credentials)) as b:
            def hold(_: int) -> None:
                with psycopg.connect(**connect_args(b), prepare_threshold=None) as conn:
                    conn.execute("SELECT pg_sleep(0.3)")

            with concurrent.futures.ThreadPoolExecutor(pool) as threads:
                list(threads.map(hold, range(pool)))
            assert pg.server_connections() == pool  # idle in the pool, still open

            env = launcher_env(b.database_env(),
                               {PGBOUNCER_ADDRESS_ENV: f"{b.host}:{b.port}"})
            # Requests still in flight as the hook runs: they finish on what is left.
            with concurrent.futures.ThreadPoolExecutor(pool) as threads:
                in_flight = [threads.submit(hold, i) for i in range(pool)]
                time.sleep(0.1)
                started = time.monotonic()
                hook = subprocess.run(
                    [sys.executable, "-m", "djangoscale.cli", "prestop", "--sleep", "0"],
                    env=env, capture_output=True, text=True, timeout=30)
                assert hook.returncode == 0, hook.stderr
                assert "pool shrunk to 1" in hook.stderr
                for future in in_flight:
                    future.result()
            shrunk = wait_for("the pool given back",
                              lambda: pg.server_connections() <= DRAINING_POOL_SIZE,
                              timeout=10)
            print(f"\nprestop: {pool} server connections -> {pg.server_connections()} in "
                  f"{time.monotonic() - started:.2f} s (in-flight requests finished first)")
            assert shrunk
            hold(0)  # a late request still gets through
            assert pg.server_connections() <= DRAINING_POOL_SIZE


def test_a_transaction_running_past_the_prestop_keeps_its_connection_till_it_ends(
    postgres_factory: Any, pgbouncer_factory: Any,
) -> None:
    """The limit of the shrink (docs/pooling.md): pgbouncer cannot take a server connection
    back in the middle of a transaction, so two queries still running when the hook shrinks
    the pool to DRAINING_POOL_SIZE keep two connections until they end."""
    ds = spec.parse(shop("web"))
    long_query = 4.0
    with migrated_postgres(postgres_factory, max_connections=20) as pg:
        credentials = DatabaseCredentials(pg.host, pg.port, services.APP_DB,
                                          services.APP_USER, services.APP_PASSWORD)
        assert size_pool(ds).pool_size_per_pod == 1  # this shop's pool; two are needed here
        ini = render_ini(ds, credentials)
        for key in ("default_pool_size", "max_db_connections", "max_user_connections"):
            ini = ini.replace(f"{key} = 1\n", f"{key} = 2\n")
        with pgbouncer_factory(ini, render_userlist(credentials)) as b:
            def hold(_: int) -> None:
                with psycopg.connect(**connect_args(b), prepare_threshold=None) as conn:
                    conn.execute(f"SELECT pg_sleep({long_query})")

            env = launcher_env(b.database_env(),
                               {PGBOUNCER_ADDRESS_ENV: f"{b.host}:{b.port}"})
            with concurrent.futures.ThreadPoolExecutor(2) as threads:
                running = [threads.submit(hold, i) for i in range(2)]
                wait_for("two queries running", lambda: pg.server_connections() == 2,
                         timeout=10)
                started = time.monotonic()
                hook = subprocess.run(
                    [sys.executable, "-m", "djangoscale.cli", "prestop", "--sleep", "0"],
                    env=env, capture_output=True, text=True, timeout=30)
                assert "pool shrunk to 1" in hook.stderr
                time.sleep(1)  # three of pgbouncer's maintenance ticks
                during = pg.server_connections()
                read_after = time.monotonic() - started
                for future in running:
                    future.result()
            after = wait_for("the pool given back",
                             lambda: pg.server_connections() <= DRAINING_POOL_SIZE, timeout=10)
            print(f"\nshrunk with 2 queries running: {during} server connections "
                  f"{read_after:.1f} s after the hook, {pg.server_connections()} once they "
                  "ended")
            assert read_after < long_query - 1  # read while both still ran
            assert during == 2
            assert after


def connect_args(bouncer: services.PgBouncer) -> dict[str, Any]:
    env = bouncer.database_env()
    return {"host": env["DATABASE_HOST"], "port": env["DATABASE_PORT"],
            "dbname": env["DATABASE_NAME"], "user": env["DATABASE_USER"],
            "password": env["DATABASE_PASSWORD"]}
