"""Collection against real HTTP metrics endpoints, and the status it writes (only on change)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from djangoscale import spec
from djangoscale.autoscaling.collector import (
    PodTarget,
    Reading,
    Scraper,
    collect,
    metrics_condition,
    prometheus_vector,
    requests_total,
    status_patch,
)
from djangoscale.autoscaling.windows import Decision, ServiceWindows
from djangoscale.pod_figures import FIGURES_CONTENT_TYPE, FIGURES_PATH
from djangoscale.serve.metrics import pod_figures_of


def service(metrics_port: int, prometheus: dict | None = None):
    autoscaling = {"targetRPSPerPod": 20}
    if prometheus:
        autoscaling["prometheus"] = prometheus
    return spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 2, "max": 10}, "metricsPort": metrics_port,
                 "autoscaling": autoscaling},
    })


class FakePod:
    """A launcher-like metrics endpoint: a real prometheus_client counter behind HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = Counter("djangoscale_requests", "requests", ["method", "status_class"],
                               registry=self.registry)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry),
                            content_type="text/plain")

    async def figures(self, _: web.Request) -> web.Response:
        return web.Response(body=pod_figures_of(self.registry),
                            content_type=FIGURES_CONTENT_TYPE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest_asyncio.fixture(loop_scope="function")
async def pod_server() -> AsyncIterator[tuple[FakePod, int]]:
    pod = FakePod()
    app = web.Application()
    app.router.add_get("/metrics", pod.metrics)
    app.router.add_get(FIGURES_PATH, pod.figures)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    for host in ("127.0.0.1", "127.0.0.2"):  # two pod IPs, one counter
        await web.TCPSite(runner, host, port).start()
    yield pod, port
    await runner.cleanup()


def test_requests_total_sums_label_sets() -> None:
    text = (
        "# TYPE djangoscale_requests counter\n"
        'djangoscale_requests_total{method="GET",status_class="2xx"} 10\n'
        'djangoscale_requests_total{method="POST",status_class="5xx"} 2.5\n'
        'djangoscale_requests_created{method="GET",status_class="2xx"} 1.7e9\n'
    )
    assert requests_total(text) == 12.5
    # Before its first request the launcher exposes the family with no sample.
    assert requests_total("# TYPE djangoscale_requests_total counter\n") == 0


async def test_collect_reads_real_endpoints_and_holds_a_dead_pod(pod_server) -> None:
    fake, port = pod_server
    ds = service(port)
    # Two pods share the one counter on two loopback IPs, plus a pod whose port is closed
    # (127.0.0.3), plus one not ready (never scraped).
    pods = [PodTarget("shop-a", "127.0.0.1", True), PodTarget("shop-b", "127.0.0.2", True),
            PodTarget("shop-c", "127.0.0.3", True), PodTarget("shop-d", "127.0.0.4", False)]
    fake_dead = PodTarget("shop-c", "127.0.0.3", True)
    windows = ServiceWindows(stable_window=60, panic_window=6)
    scraper = Scraper(concurrency=2, timeout=1.0)
    try:
        # shop-c first answers (at 127.0.0.1), then its metrics vanish (127.0.0.3).
        fake.counter.labels("GET", "2xx").inc(100)
        reading = await collect(ds, pods[:2] + [PodTarget("shop-c", "127.0.0.1", True)],
                                windows, scraper, now=0.0)
        fake.counter.labels("GET", "2xx").inc(50)
        reading = await collect(ds, pods[:2] + [PodTarget("shop-c", "127.0.0.1", True)],
                                windows, scraper, now=1.0)
        assert reading.decision.per_pod == {"shop-a": 50, "shop-b": 50, "shop-c": 50}
        fake.counter.labels("POST", "2xx").inc(10)
        reading = await collect(ds, [pods[0], pods[1], fake_dead, pods[3]], windows, scraper,
                                now=2.0)
    finally:
        await scraper.close()
    assert reading.pods == 3
    assert reading.failed == ["shop-c"]
    assert reading.decision.per_pod["shop-a"] == pytest.approx((160 - 100) / 2)
    assert reading.decision.per_pod["shop-c"] == pytest.approx(50)  # held, not zero
    condition = metrics_condition(reading)
    assert (condition.status, condition.reason) == ("False", "ScrapeFailed")
    assert "shop-c" in condition.message


def test_prometheus_vector() -> None:
    payload = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": "a"}, "value": [1, "12.5"]},
        {"metric": {"pod": "b"}, "value": [1, "NaN"]},
        {"metric": {}, "value": [1, "3"]},
    ]}}
    assert prometheus_vector(payload) == {"a": 12.5}
    assert prometheus_vector({"status": "error"}) is None
    assert prometheus_vector({"status": "success", "data": {"resultType": "matrix"}}) is None


async def test_prometheus_source_failure_holds_values(pod_server) -> None:
    _, port = pod_server  # answers /metrics only: /api/v1/query is a 404
    ds = service(9100, {"address": f"http://127.0.0.1:{port}", "query": "q{name}"})
    windows = ServiceWindows()
    windows.observe_rate("shop-a", 33.0)
    scraper = Scraper(timeout=1.0)
    try:
        reading = await collect(ds, [PodTarget("shop-a", "127.0.0.1", True)], windows, scraper)
    finally:
        await scraper.close()
    assert reading.failed == ["prometheus"]
    assert reading.decision.per_pod == {"shop-a": 33.0}
    assert metrics_condition(reading).reason == "PrometheusUnavailable"


def _reading(stable: float, panic: float, failed: list[str] | None = None) -> Reading:
    return Reading(Decision({"a": stable}, stable, panic, False), pods=1, failed=failed or [])


def test_status_patch_only_when_the_rounded_value_or_condition_changes() -> None:
    body = {"metadata": {"generation": 3}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "Available", "message": "2/2",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}
    patch = status_patch(body, _reading(49.7, 51.2))
    assert patch is not None
    assert patch["rps"] == {"stable": "50", "panic": "51"}
    types = {c["type"]: c for c in patch["conditions"]}
    assert types["MetricsAvailable"]["status"] == "True"
    assert types["MetricsAvailable"]["observedGeneration"] == 3
    assert types["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # kept as it was
    body["status"].update(patch)
    assert status_patch(body, _reading(50.3, 50.6)) is None  # jitter: nothing to write
    changed = status_patch(body, _reading(50.3, 50.6, failed=["a"]))
    assert changed is not None
    assert {c["type"]: c for c in changed["conditions"]}["MetricsAvailable"]["status"] == "False"


async def test_prometheus_source_gives_per_pod_rates() -> None:
    seen: list[str] = []

    async def query(request: web.Request) -> web.Response:
        seen.append(request.query["query"])
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"pod": "shop-a"}, "value": [1, "42.5"]},
            {"metric": {"pod": "shop-gone"}, "value": [1, "9"]},
        ]}})

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    template = 'sum by (pod) (rate(x{namespace="{namespace}",pod=~"{name}-.*"}[1m]))'
    ds = service(9100, {"address": f"http://127.0.0.1:{port}/", "query": template})
    scraper = Scraper(timeout=1.0)
    try:
        reading = await collect(ds, [PodTarget("shop-a", "127.0.0.1", True),
                                     PodTarget("shop-b", "127.0.0.1", True)],
                                ServiceWindows(), scraper)
    finally:
        await scraper.close()
        await runner.cleanup()
    assert seen == ['sum by (pod) (rate(x{namespace="web",pod=~"shop-.*"}[1m]))']
    # Only ready pods of this service count; a pod Prometheus has not seen yet has no value.
    assert reading.decision.per_pod == {"shop-a": 42.5}
    assert reading.failed == []
    condition = metrics_condition(reading)
    assert (condition.status, condition.message) == ("True", "read from Prometheus")


def test_carried_rates_come_from_the_status_the_last_operator_wrote() -> None:
    from djangoscale.autoscaling.collector import carried_rates
    from djangoscale.autoscaling.windows import Rates

    assert carried_rates({"status": {"rps": {"stable": "120", "panic": "9.5"}}}) == Rates(
        120.0, 9.5)
    assert carried_rates({}) is None
    assert carried_rates({"status": {"rps": {"stable": "120"}}}) is None
    assert carried_rates({"status": {"rps": {"stable": "x", "panic": "1"}}}) is None


def test_pod_starting() -> None:
    from djangoscale.autoscaling.collector import pod_starting

    assert pod_starting({"phase": "Pending"}, {}, ready=False)
    assert pod_starting({"phase": "Running"}, {}, ready=False)
    assert not pod_starting({"phase": "Running"}, {}, ready=True)
    assert not pod_starting({"phase": "Running"}, {"deletionTimestamp": "x"}, ready=False)
    assert not pod_starting({"phase": "Failed"}, {}, ready=False)


async def test_collect_counts_starting_pods_and_takes_the_windows_from_the_spec(
        pod_server) -> None:
    fake, port = pod_server
    ds = service(port)
    windows = ServiceWindows(stable_window=600, panic_window=60)
    ready = PodTarget("shop-a", "127.0.0.1", True)
    scraper = Scraper(concurrency=2, timeout=1.0)
    try:
        await collect(ds, [ready], windows, scraper, now=0.0)
        fake.counter.labels("GET", "2xx").inc(100)  # 100 RPS on one pod at target 20
        burst = await collect(ds, [ready], windows, scraper, now=1.0)
        starting = [PodTarget(f"shop-{n}", "", False, starting=True) for n in range(2)]
        fake.counter.labels("GET", "2xx").inc(100)
        calm = await collect(ds, [ready, *starting], windows, scraper, now=2.0)
    finally:
        await scraper.close()
    assert (windows.stable_window, windows.panic_window) == (60, 6)  # the spec's defaults
    assert burst.decision.panic  # 100 >= 2 x (1 x 20)
    assert not calm.decision.panic  # 100 < 2 x (3 x 20): two pods are on their way
    assert calm.pods == 1


async def test_collect_starts_the_ready_pods_from_the_carried_rates(pod_server) -> None:
    from djangoscale.autoscaling.windows import Rates

    _, port = pod_server
    windows = ServiceWindows(carried=Rates(30, 35))
    scraper = Scraper(concurrency=2, timeout=1.0)
    try:
        reading = await collect(service(port), [PodTarget("shop-a", "127.0.0.1", True)],
                                windows, scraper, now=0.0)
    finally:
        await scraper.close()
    # The first round: one sample of its own, no rate yet, but the HPA reads the carried one.
    assert reading.decision.per_pod == {"shop-a": 30}


def test_the_collector_writes_status_only_onto_the_version_it_read():
    """Its patch replaces the conditions list: from a stale copy of the object it would put
    back a condition the reconciler has changed since (and that one's event would be posted
    again), so it writes onto the version it read or not at all."""
    import asyncio
    import copy

    from djangoscale.autoscaling.handlers import RpsCollection, parse_enabled
    from djangoscale.context import OperatorContext
    from djangoscale.settings import OperatorSettings
    from tests.fixtures.fake_api import FakeApi

    api = FakeApi()
    body = {"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
            "metadata": {"name": "shop", "namespace": "web", "generation": 1},
            "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                     "replicas": {"min": 1, "max": 3}}}
    stale = api.put(body)
    reconciled = copy.deepcopy(stale)
    reconciled["status"] = {"conditions": [{"type": "Degraded", "status": "True",
                                            "reason": "ImagePullBackOff", "message": "m"}]}
    api.put(reconciled)  # the reconciler wrote since the index's copy
    context = OperatorContext.create(OperatorSettings(), api)
    collection = RpsCollection(context, {}, {}, {})  # type: ignore[arg-type]
    asyncio.run(collection.collect((("web", "shop"), stale),
                                   parse_enabled(stale, collection.parsed)))
    live = api.get("djangoscale.io/v1alpha1", "DjangoService", "web", "shop")
    assert live["status"] == reconciled["status"]
    assert api.written("patch_status") == []
    # From the current version it writes (its MetricsAvailable beside the reconciler's).
    asyncio.run(collection.collect((("web", "shop"), live), parse_enabled(live, collection.parsed)))
    after = api.get("djangoscale.io/v1alpha1", "DjangoService", "web", "shop")
    types = {c["type"]: c for c in after["status"]["conditions"]}
    assert types["Degraded"]["reason"] == "ImagePullBackOff"
    assert "MetricsAvailable" in types


def pooled_service(metrics_port: int, mode: str, replicas_max: int = 10):
    return spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "replicas": {"min": 1, "max": replicas_max}, "metricsPort": metrics_port,
                 "autoscaling": {"targetRPSPerPod": 20},
                 "database": {"secretName": "db", "maxConnections": 100},
                 "pooling": {"mode": mode}},
    })


@pytest.mark.parametrize(("mode", "replicas_max", "ceiling"), [
    ("pooler", 10, True), ("pgbouncer", 1, True), ("pgbouncer", 10, False)])
async def test_a_burst_while_the_pools_wait_adds_no_pods_until_the_ceiling_holds(
        pod_server, mode: str, replicas_max: int, ceiling: bool) -> None:
    from prometheus_client import Gauge

    from djangoscale.contract import PGBOUNCER_MAX_WAIT

    fake, port = pod_server
    Gauge(PGBOUNCER_MAX_WAIT, "w", registry=fake.registry).set(0.5)
    ds = pooled_service(port, mode, replicas_max)
    pod = PodTarget("shop-a", "127.0.0.1", True)
    windows = ServiceWindows()
    scraper = Scraper(concurrency=2, timeout=1.0)
    try:
        await collect(ds, [pod], windows, scraper, now=0.0)
        fake.counter.labels("GET", "2xx").inc(100)  # 100 RPS on one pod at target 20
        burst = await collect(ds, [pod], windows, scraper, now=1.0)
        fake.counter.labels("GET", "2xx").inc(600)
        later = await collect(ds, [pod], windows, scraper, now=7.0)  # a panic window on
    finally:
        await scraper.close()
    assert burst.saturation is not None and later.saturation is not None
    if ceiling:
        # The pools wait: no burst path (nor scale-up) while the ceiling's window counts;
        # then it holds.
        assert not burst.decision.panic and burst.saturation.holding_scale_up
        assert not burst.saturation.held and later.saturation.held
    else:
        # Below replicas.max a sidecar's new pod brings its own pool: the burst path adds it.
        assert burst.decision.panic and not later.saturation.held


def test_carried_values_come_from_the_scaling_status_the_last_operator_wrote() -> None:
    from djangoscale.autoscaling.collector import carried_values, scaling_status
    from djangoscale.autoscaling.windows import Rates

    status = {"status": {"scaling": {"metric": "queueTime", "value": "120ms",
                                     "concurrency": "4.2", "queueTime": "120ms"}}}
    assert carried_values(status) == {"concurrency": Rates(4.2, 4.2),
                                      "queueTime": Rates(0.12, 0.12)}
    assert carried_values({}) == {}
    assert carried_values({"status": {"scaling": {"concurrency": "x",
                                                  "queueTime": "120"}}}) == {}
    # What one operator writes is what the next one reads.
    ds = spec.parse({
        "apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": "web"},
        "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
                 "autoscaling": {"metrics": ["concurrency", "queueTime"],
                                 "targetConcurrency": 4, "targetQueueTimeMilliseconds": 50}}})
    decisions = {"concurrency": Decision({"a": 3.0, "b": 5.0}, 8, 8, False),
                 "queueTime": Decision({"a": 0.03, "b": 0.05}, 0.08, 0.08, False)}
    written = scaling_status(ds, Reading(decisions["concurrency"], 2, decisions=decisions))
    assert carried_values({"status": {"scaling": written}}) == {
        "concurrency": Rates(4.0, 4.0), "queueTime": Rates(0.04, 0.04)}
