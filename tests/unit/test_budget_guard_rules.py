"""The budget guard: the launcher's SHOW POOLS figures, the collector's sum over every pod
(terminating ones included), the pooler pods' SHOW POOLS with pooling.mode pooler, and
`Degraded=True BudgetExceeded` with one Warning event."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from djangoscale import spec
from djangoscale.autoscaling import handlers
from djangoscale.autoscaling.collector import (
    PodScrape,
    PodTarget,
    Reading,
    Scraper,
    budget_warning,
    collect,
    parse_pod_metrics,
    status_patch,
)
from djangoscale.autoscaling.handlers import RpsCollection, database_login
from djangoscale.autoscaling.windows import Decision, ServiceWindows
from djangoscale.context import OperatorContext
from djangoscale.contract import PGBOUNCER_ADDRESS_ENV, PGBOUNCER_SERVER_CONNECTIONS
from djangoscale.controller.reconcile import current_status
from djangoscale.serve.config import Address, PgBouncerAdmin
from djangoscale.serve.pgbouncer import pool_figures
from djangoscale.settings import OperatorSettings
from tests.fixtures.fake_api import FakeApi
from tests.unit.test_autoscaling_collector import free_port

# pgbouncer 1.18's SHOW POOLS columns.
COLUMNS = ["database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
           "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
           "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode"]


def test_pool_figures_sum_every_server_state_of_every_pool_but_the_admin_console():
    rows = [
        ["shop", "shop", 8, 3, 0, 0, 4, 0, 0, 1, 1, 0, 1, 0, 0, "transaction"],
        ["shop", "report", 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, "transaction"],
        ["pgbouncer", "pgbouncer", 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, "statement"],
    ]
    figures = pool_figures(COLUMNS, rows)
    assert (figures.server_connections, figures.clients_waiting) == (8, 3)


def test_the_launcher_reads_pgbouncer_only_where_the_deployment_says_it_runs():
    assert PgBouncerAdmin.from_env({"DATABASE_USER": "shop"}) is None
    admin = PgBouncerAdmin.from_env({PGBOUNCER_ADDRESS_ENV: "127.0.0.1:6432",
                                     "DATABASE_USER": "shop", "DATABASE_PASSWORD": "pw"})
    assert admin == PgBouncerAdmin(Address("127.0.0.1", 6432), "shop", "pw")
    assert "pw" not in repr(admin)


def test_pod_metrics_carry_the_pgbouncer_figure_when_exported():
    registry = CollectorRegistry()
    Counter("djangoscale_requests", "r", ["method"], registry=registry).labels("GET").inc(7)
    assert parse_pod_metrics(generate_latest(registry).decode()).server_connections is None
    Gauge(PGBOUNCER_SERVER_CONNECTIONS, "c", registry=registry).set(5)
    scrape = parse_pod_metrics(generate_latest(registry).decode())
    assert (scrape.requests_total, scrape.server_connections) == (7, 5)


def shop(metrics_port: int = 9100) -> spec.DjangoService:
    # budget 27: (30 - 3) // (5 + 1) = 4 per pod.
    return spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 1, "max": 5}, "metricsPort": metrics_port,
                 "database": {"secretName": "db", "maxConnections": 30}},
    })


async def test_collect_counts_terminating_pods_and_skips_pods_without_figures():
    held = {"127.0.0.1": 4, "127.0.0.2": 4, "127.0.0.3": 3}  # .3 terminates; .4 no pgbouncer

    async def metrics(request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        Counter("djangoscale_requests", "r", registry=registry).inc(1)
        host = request.transport.get_extra_info("sockname")[0]  # type: ignore[union-attr]
        if host in held:
            Gauge(PGBOUNCER_SERVER_CONNECTIONS, "c", registry=registry).set(held[host])
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    # Launchers older than the compact figures answer every path with their Prometheus text.
    app.router.add_get("/{path:.*}", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"):
        await web.TCPSite(runner, host, port).start()
    pods = [PodTarget("shop-a", "127.0.0.1", True), PodTarget("shop-b", "127.0.0.2", True),
            PodTarget("shop-old", "127.0.0.3", False), PodTarget("shop-c", "127.0.0.4", True),
            PodTarget("shop-new", "", False)]
    scraper = Scraper(timeout=1.0)
    try:
        reading = await collect(shop(port), pods, ServiceWindows(), scraper, now=0.0)
    finally:
        await scraper.close()
        await runner.cleanup()
    assert reading.pods == 3  # ready pods, for the RPS
    assert (reading.budget, reading.server_connections, reading.pods_reporting) == (27, 11, 3)


def reading(connections: int, pods: int = 7) -> Reading:
    return Reading(Decision({}, 0.0, 0.0, False), pods=pods, budget=27,
                   server_connections=connections, pods_reporting=pods)


def test_over_the_budget_is_degraded_once_with_one_warning_and_clears_under_it():
    body: dict = {"metadata": {"generation": 2}, "status": {"conditions": [
        {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "ok"}]}}
    patch = status_patch(body, reading(24))
    assert patch is not None and patch["database"] == {"serverConnections": 24,
                                                       "podsReporting": 7}
    assert budget_warning(body, reading(24)) is None
    body["status"].update(patch)
    assert status_patch(body, reading(24)) is None  # settled: nothing to write

    warning = budget_warning(body, reading(28))
    assert warning is not None and warning[0] == "BudgetExceeded"
    assert warning[1].startswith("28 server connections held by the pgbouncers of 7 pods")
    patch = status_patch(body, reading(28))
    assert patch is not None
    conditions = {c["type"]: c for c in patch["conditions"]}
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
        "True", "BudgetExceeded")
    assert conditions["Stalled"]["status"] == "True"
    body["status"].update(patch)
    assert budget_warning(body, reading(29)) is None  # one event, not one per round

    patch = status_patch(body, reading(20))
    assert patch is not None
    conditions = {c["type"]: c for c in patch["conditions"]}
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == (
        "False", "AsExpected")


def test_the_guard_leaves_a_rollout_failure_alone():
    body = {"metadata": {}, "status": {"conditions": [
        {"type": "Degraded", "status": "True", "reason": "ProgressDeadlineExceeded",
         "message": "stalled"}]}}
    patch = status_patch(body, reading(20))
    assert patch is not None
    assert {c["type"]: c for c in patch["conditions"]}["Degraded"]["reason"] == (
        "ProgressDeadlineExceeded")


def test_a_pod_without_figures_is_no_reason_to_call_it_over_budget():
    assert budget_warning({"status": {}}, reading(0, pods=0)) is None


@pytest.mark.parametrize(("in_use", "reason"), [(28, "BudgetExceeded"), (27, "AsExpected")])
def test_the_reconciler_keeps_what_the_collector_measured(in_use, reason):
    ds = shop()
    body = {"metadata": {"name": "shop", "namespace": "web", "generation": 1},
            "status": {"database": {"serverConnections": in_use, "podsReporting": 6}}}
    api = FakeApi()
    api.put({"apiVersion": "apps/v1", "kind": "Deployment",
             "metadata": {"name": "shop", "namespace": "web", "generation": 1},
             "spec": {"replicas": 2},
             "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                        "readyReplicas": 2, "availableReplicas": 2}})
    status = current_status(api, body, ds)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Degraded"]["reason"] == reason
    assert conditions["Ready"]["status"] == "True"


def test_an_unreachable_pgbouncer_leaves_the_figures_out_rather_than_exporting_zero():
    from djangoscale.serve.pgbouncer import PgBouncerCollector

    admin = PgBouncerAdmin(Address("127.0.0.1", free_port()), "shop", "pw")  # nothing listens
    assert list(PgBouncerCollector(admin).collect()) == []


def test_the_launcher_reads_the_sidecar_or_else_the_poolers_figures():
    from djangoscale.contract import POOLER_STATS_ADDRESS_ENV

    user = {"DATABASE_USER": "shop", "DATABASE_PASSWORD": "pw"}
    pooler = {**user, POOLER_STATS_ADDRESS_ENV: "shop-pooler:6432"}
    # The preStop hook (from_env) shrinks a sidecar's pool only, never the shared pooler's.
    assert PgBouncerAdmin.from_env(pooler) is None
    figures = PgBouncerAdmin.figures_from_env(pooler)
    assert figures is not None and str(figures.address) == "shop-pooler:6432"
    sidecar = PgBouncerAdmin.figures_from_env({**pooler, PGBOUNCER_ADDRESS_ENV: "127.0.0.1:6432"})
    assert sidecar is not None and sidecar.address.host == "127.0.0.1"
    assert PgBouncerAdmin.figures_from_env(user) is None


def pooled_shop() -> spec.DjangoService:
    # budget 27 over 2 pooler pods + 1 surge pod.
    return spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 1, "max": 5},
                 "database": {"secretName": "db", "maxConnections": 30},
                 "pooling": {"mode": "pooler",
                             "pooler": {"replicas": {"min": 2, "max": 2}}}},
    })


class PoolerScraper(Scraper):
    """App pods that pass on the pooler's own figures (for the database ceiling; they have no
    sidecar) and pooler pods whose SHOW POOLS gives `held` (None: no answer)."""

    def __init__(self, held: dict[str, int | None]) -> None:
        super().__init__()
        self.held = held
        self.logins: list[tuple[str, tuple[str, str]]] = []

    async def pod_scrape(self, ip: str, port: int) -> PodScrape | None:
        return PodScrape(requests_total=1.0, server_connections=sum(
            held for held in self.held.values() if held is not None))

    async def pooler_server_connections(self, ip: str, login: tuple[str, str]) -> int | None:
        self.logins.append((ip, login))
        return self.held[ip]


APP_PODS = [PodTarget("shop-a", "10.0.0.1", True), PodTarget("shop-b", "10.0.0.2", True)]
POOLER_PODS = [PodTarget("shop-pooler-a", "10.0.1.1", True),
               PodTarget("shop-pooler-old", "10.0.1.2", False),  # terminating
               PodTarget("shop-pooler-c", "10.0.1.3", True),  # does not answer
               PodTarget("shop-pooler-new", "", False)]  # no address yet
HELD = {"10.0.1.1": 7, "10.0.1.2": 1, "10.0.1.3": None}


async def test_with_the_pooler_the_guard_counts_the_pooler_pods_not_the_app_pods():
    scraper = PoolerScraper(HELD)
    reading = await collect(pooled_shop(), APP_PODS, ServiceWindows(), scraper, now=0.0,
                            poolers=POOLER_PODS, pooler_login=("shop", "pw"))
    assert (reading.budget, reading.server_connections, reading.pods_reporting) == (27, 8, 2)
    assert reading.pods == 2  # the app's ready pods, for the RPS
    assert sorted(scraper.logins) == [(ip, ("shop", "pw")) for ip in sorted(HELD)]
    assert status_patch({"status": {}}, reading)["database"] == {  # type: ignore[index]
        "serverConnections": 8, "podsReporting": 2}


async def test_without_the_login_the_pooler_pods_are_not_counted_and_nothing_is_degraded():
    scraper = PoolerScraper(HELD)
    reading = await collect(pooled_shop(), APP_PODS, ServiceWindows(), scraper, now=0.0,
                            poolers=POOLER_PODS, pooler_login=None)
    assert (reading.budget, reading.pods_reporting, scraper.logins) == (27, 0, [])
    patch = status_patch({"status": {}}, reading)
    assert patch is not None
    assert "Degraded" not in {c["type"] for c in patch.get("conditions", [])}


async def test_with_sidecars_pooler_pods_are_not_read():
    scraper = PoolerScraper(HELD)
    reading = await collect(shop(), APP_PODS, ServiceWindows(), scraper, now=0.0,
                            poolers=POOLER_PODS, pooler_login=("shop", "pw"))
    # Each app pod's figure is then its own sidecar's (8 here), and no pooler pod is read.
    assert (reading.server_connections, reading.pods_reporting, scraper.logins) == (16, 2, [])


async def test_a_pooler_pod_that_does_not_answer_is_not_a_reading():
    scraper = Scraper(timeout=1.0)
    try:
        # Nothing listens there: no figure rather than an error.
        assert await scraper.pooler_server_connections("127.0.0.9", ("shop", "pw")) is None
    finally:
        await scraper.close()


def put_database_secret(api: FakeApi, password: str) -> None:
    values = {"host": "db", "port": "5432", "dbname": "shop", "user": "shop",
              "password": password}
    api.put({"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "db", "namespace": "web"},
             "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})


def test_the_login_comes_from_the_users_database_secret():
    api = FakeApi()
    assert database_login(api, pooled_shop()) is None  # no Secret: logged, not raised
    put_database_secret(api, "pw")
    assert database_login(api, pooled_shop()) == ("shop", "pw")


class CountingApi(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.secret_reads = 0

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Any:
        self.secret_reads += kind == "Secret"
        return super().get(api_version, kind, namespace, name)


async def test_the_login_is_read_once_a_minute_and_again_when_a_pooler_pod_refuses_it(
        monkeypatch: pytest.MonkeyPatch):
    """One GET a round per pooler service was 500 a second at 1,000 services."""
    api = CountingApi()
    context = OperatorContext.create(OperatorSettings(), api)
    collection = RpsCollection(context, {}, {}, {})  # type: ignore[arg-type]
    key = ("web", "shop")
    assert await collection.pooler_login(key, pooled_shop()) is None  # no Secret yet
    put_database_secret(api, "pw")
    for _ in range(3):  # a failed read is not kept: read again at once, then kept
        assert await collection.pooler_login(key, pooled_shop()) == ("shop", "pw")
    assert api.secret_reads == 2
    put_database_secret(api, "new")
    monkeypatch.setattr(handlers, "LOGIN_READ_SECONDS", 0.0)  # a minute later
    assert await collection.pooler_login(key, pooled_shop()) == ("shop", "new")
    monkeypatch.undo()
    # A pooler pod that refuses the login drops it: the round after reads the Secret again.
    context.scraper = PoolerScraper({"10.0.1.1": None})
    collection.poolers = {key: [POOLER_PODS[0]]}  # type: ignore[assignment]
    body = {"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
            "metadata": {"name": "shop", "namespace": "web"}, "spec": {}}
    reads = api.secret_reads
    await collection.collect((key, body), pooled_shop())
    assert key not in collection.logins and api.secret_reads == reads
    await collection.pooler_login(key, pooled_shop())
    assert api.secret_reads == reads + 1
