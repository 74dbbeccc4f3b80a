"""Scaling on concurrency and queue time, and the database ceiling: the spec, the HPA, the
launcher's figures, the windows, what the operator serves and the status it writes."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from djangoscale import spec
from djangoscale.autoscaling.advice import recommendations
from djangoscale.autoscaling.collector import (
    PodScrape,
    Reading,
    Saturation,
    ceiling_applies,
    database_saturation,
    parse_pod_metrics,
    saturation_condition,
    saturation_warning,
    scaling_status,
    served_values,
    status_patch,
)
from djangoscale.autoscaling.windows import (
    CEILING_OFF,
    Decision,
    PodHistogram,
    ServiceWindows,
    bucket_quantile,
    next_ceiling,
)
from djangoscale.builders.hpa import build_hpa
from djangoscale.contract import (
    CONCURRENCY_METRIC,
    PGBOUNCER_MAX_WAIT,
    QUEUE_TIME_METRIC,
    RPS_METRIC,
)
from djangoscale.serve.metrics import Metrics
from djangoscale.serve.pgbouncer import pool_figures
from djangoscale.serve.queue_time import request_start_seconds, took_request, waited_seconds


def service(server=None, database=False, **autoscaling):
    body = {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
            "replicas": {"min": 2, "max": 10}, "autoscaling": autoscaling,
            "server": server or {}}
    if database:
        body["database"] = {"secretName": "db", "maxConnections": 100}
    return spec.parse({"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
                       "metadata": {"name": "shop", "namespace": "web", "generation": 3},
                       "spec": body})


# -- the spec and the HPA -----------------------------------------------------------------------

def test_rps_stays_the_default_metric_and_one_hpa_metric():
    ds = service()
    assert ds.autoscaling.metrics == ("rps",)
    (metric,) = build_hpa(ds)["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == RPS_METRIC


def test_target_concurrency_defaults_to_70_percent_of_the_pod():
    # gthread: 2 workers x 10 threads = 20 at once; cherrypy 100 threads grow to 150.
    ds = service({"type": "gunicorn-gthread", "workers": 2, "threads": 10}, metric="concurrency")
    assert ds.autoscaling.target_concurrency == 14
    assert service(metric="concurrency").autoscaling.target_concurrency == 105


def test_several_metrics_become_several_hpa_metrics_with_their_targets():
    ds = service(metrics=["rps", "concurrency", "queueTime"], targetRPSPerPod=50,
                 targetConcurrency=30, targetQueueTimeMilliseconds=80)
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"]
               for m in build_hpa(ds)["spec"]["metrics"]}
    assert targets == {RPS_METRIC: "50", CONCURRENCY_METRIC: "30", QUEUE_TIME_METRIC: "80m"}


def test_queue_time_is_accepted_on_the_servers_that_measure_it():
    for server in ("cherrypy", "gunicorn-gthread", "waitress"):
        assert service({"type": server}, metric="queueTime").autoscaling.metrics == ("queueTime",)


# -- the launcher ---------------------------------------------------------------------------------

def test_request_start_header_formats():
    assert request_start_seconds("t=1700000000123456") == pytest.approx(1700000000.123456)
    assert request_start_seconds("t=1700000000.123") == pytest.approx(1700000000.123)
    assert request_start_seconds("1700000000123") == pytest.approx(1700000000.123)
    assert request_start_seconds("t=soon") is None


def test_wait_comes_from_the_server_stamp_or_the_ingress_header_whichever_is_earlier():
    now = time.perf_counter()
    took_request(now - 0.2)
    assert waited_seconds({}, now) == pytest.approx(0.2)
    assert waited_seconds({}, now) is None  # a stamp is for one request
    header = f"t={int((time.time() - 0.5) * 1e6)}"
    took_request(now - 0.2)
    assert waited_seconds({"HTTP_X_REQUEST_START": header}, now) == pytest.approx(0.5, abs=0.05)
    # A stamp from a clock ahead of ours is no wait; one from last week is not believed.
    future = f"t={int((time.time() + 5) * 1e6)}"
    assert waited_seconds({"HTTP_X_REQUEST_START": future}, now) == 0.0
    old = f"t={int((time.time() - 7 * 86400) * 1e6)}"
    assert waited_seconds({"HTTP_X_REQUEST_START": old}, now) is None


def test_stamps_are_per_thread():
    took_request(time.perf_counter() - 1.0)
    seen: list[float | None] = []
    thread = threading.Thread(target=lambda: seen.append(waited_seconds({}, time.perf_counter())))
    thread.start()
    thread.join()
    assert seen == [None]
    assert waited_seconds({}, time.perf_counter()) == pytest.approx(1.0, abs=0.05)


def test_launcher_metrics_carry_queue_waits_and_time_in_the_pod():
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry)
    for waited in (0.0, 0.01, 0.3, None):
        metrics.request_started()
        metrics.request_finished("GET", "200 OK", 0.05, waited)
    scrape = parse_pod_metrics(generate_latest(registry).decode())
    assert scrape.requests_total == 4
    assert scrape.busy_seconds == pytest.approx(4 * 0.05 + 0.31)
    assert scrape.queue_counts[-1] == 3  # the request nobody stamped is not a zero wait
    assert scrape.queue_bounds[-1] == float("inf")


def test_pgbouncer_figures_include_active_idle_and_the_longest_wait():
    columns = ["database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used",
               "maxwait", "maxwait_us", "pool_mode"]
    rows = [["shop", "shop", 4, 3, 2, 1, 0, 1, 250000, "transaction"],
            ["shop", "report", 1, 0, 1, 0, 0, 0, 40000, "transaction"],
            ["pgbouncer", "pgbouncer", 1, 0, 0, 0, 0, 9, 0, "statement"]]
    figures = pool_figures(columns, rows)
    assert (figures.clients_waiting, figures.servers_active, figures.servers_idle) == (3, 3, 1)
    assert figures.max_wait_seconds == pytest.approx(1.25)


# -- the windows ----------------------------------------------------------------------------------

BOUNDS = (0.05, 0.1, 0.2, float("inf"))


def test_bucket_quantile_interpolates_like_histogram_quantile():
    assert bucket_quantile(0.95, BOUNDS, [0, 0, 0, 0]) == 0.0
    assert bucket_quantile(0.5, BOUNDS, [10, 20, 20, 20]) == pytest.approx(0.05)
    assert bucket_quantile(0.95, BOUNDS, [0, 0, 100, 100]) == pytest.approx(0.195)
    assert bucket_quantile(0.95, BOUNDS, [0, 0, 0, 10]) == pytest.approx(0.2)


def test_queue_time_p95_over_each_window_survives_a_restart():
    histogram = PodHistogram()
    histogram.observe(0, BOUNDS, (100, 100, 100, 100), keep_seconds=60)
    histogram.observe(50, BOUNDS, (1000, 1000, 1000, 1000), keep_seconds=60)  # all fast
    histogram.observe(60, BOUNDS, (1000, 1000, 1020, 1020), keep_seconds=60)  # then 20 slow
    assert histogram.quantile(0.95, 10) == pytest.approx(0.195)
    assert histogram.quantile(0.95, 60) <= 0.05  # 20 slow of 920 are under the p95
    histogram.observe(70, BOUNDS, (0, 0, 50, 50), keep_seconds=60)  # the launcher restarted
    assert histogram.quantile(0.95, 10) == pytest.approx(0.195)


def test_concurrency_is_seconds_in_the_pod_per_second_and_failed_pods_hold():
    windows = ServiceWindows(stable_window=20, panic_window=4)
    for t in range(0, 21, 2):
        windows.observe_busy("a", t, 3.0 * t)  # 3 requests in the pod all along
        if t <= 10:
            windows.observe_busy("b", t, 0.5 * t)
    values = windows.concurrency()
    assert values["a"].stable == pytest.approx(3.0)
    assert values["b"].panic == pytest.approx(0.5)  # its scrapes failed since t=10: held
    windows.forget_missing(["a"])
    assert set(windows.concurrency()) == {"a"}


# -- the ceiling, what is served, the status ------------------------------------------------------

def scrape(max_wait=None, waiting=0, active=0):
    return PodScrape(0.0, max_wait_seconds=max_wait, clients_waiting=waiting,
                     servers_active=active)


def test_the_ceiling_engages_after_a_window_of_waiting_and_clears_after_one_without():
    # Engage after 6 s of waiting in every round, clear after 20 s without.
    state = CEILING_OFF
    for t in (0, 3):
        state = next_ceiling(state, True, t, 6, 20)
        assert not state.held and state.waiting_since == 0  # counting, not yet on
    state = next_ceiling(state, False, 4, 6, 20)
    # A break before the window is up starts it over; scale-up stays held a window past the
    # last wait (the averages still count it), then the state is off.
    assert state.waiting_since is None and not state.held and state.holding_scale_up
    assert next_ceiling(state, False, 9, 6, 20) == CEILING_OFF
    for t in (5, 8, 10):
        state = next_ceiling(state, True, t, 6, 20)
    assert not state.held
    state = next_ceiling(state, True, 11, 6, 20)
    assert state.held  # 6 s of waiting since t=5
    state = next_ceiling(state, False, 12, 6, 20)
    assert state.held and state.clear_since == 12
    state = next_ceiling(state, True, 20, 6, 20)  # waiting again: the clear window restarts
    assert state.held and state.clear_since is None
    for t in (21, 30, 40):
        state = next_ceiling(state, False, t, 6, 20)
        assert state.held
    assert next_ceiling(state, False, 41, 6, 20) == CEILING_OFF  # 20 s without waiting


def test_a_missed_read_while_the_window_counts_keeps_scale_up_held():
    # A loaded machine misses a round's reads (no pool reports): the averages still count the
    # requests that waited, so the HPA must not see them uncapped.
    windows = ServiceWindows()
    waits = [scrape(0.5, 4, 2), scrape(0.3, 2, 2)]
    assert database_saturation(windows, waits, 0, 6, 20).holding_scale_up
    missed = database_saturation(windows, [], 1, 6, 20)
    assert missed.holding_scale_up and not missed.held
    assert database_saturation(windows, waits, 2, 6, 20).holding_scale_up
    assert not database_saturation(windows, waits, 7, 6, 20).held  # counting again from t=2
    assert database_saturation(windows, waits, 8, 6, 20).held
    quiet = ServiceWindows()
    database_saturation(quiet, waits, 0, 6, 20)
    assert not database_saturation(quiet, [], 6, 6, 20).holding_scale_up  # a window later


def test_the_pools_wait_when_most_reporting_pods_have_a_client_waiting_a_queue():
    windows = ServiceWindows()
    one_waits = [scrape(0.5, 4, 2), scrape(0.0), scrape(0.0)]
    assert not database_saturation(windows, one_waits, 0, 6, 20).holding_scale_up
    blip = [scrape(0.05, 1, 2), scrape(0.05, 1, 2), scrape(0.0)]  # shorter than a queue
    assert not database_saturation(windows, blip, 1, 6, 20).holding_scale_up
    most_wait = [scrape(0.5, 4, 2), scrape(0.3, 2, 2), scrape(0.0, 0, 2)]
    first = database_saturation(windows, most_wait, 2, 6, 20)
    # The first round that sees the waiting holds scale-up back; the ceiling is not on yet.
    assert first.holding_scale_up and not first.held
    on = database_saturation(windows, most_wait, 8, 6, 20)
    assert on.held and (on.waiting_pods, on.clients_waiting, on.servers_active) == (2, 6, 6)
    assert on.max_wait_seconds == 0.5
    assert database_saturation(windows, [], 9, 6, 20).held  # no pod reports: clearing
    assert not database_saturation(windows, [], 29, 6, 20).held
    # Where it does not apply (a sidecar per pod below replicas.max), the pools never wait.
    windows = ServiceWindows()
    for t in (0, 10):
        elsewhere = database_saturation(windows, most_wait, t, 6, 20, applies=False)
        assert not elsewhere.held and not elsewhere.holding_scale_up
    # Pods that read one pooler see the same figures: the most any saw, not their sum.
    shared = database_saturation(ServiceWindows(), most_wait, 0, 6, 20, shared=True)
    assert (shared.clients_waiting, shared.servers_active) == (4, 2)


def pooled(mode="pgbouncer", replicas_max=10):
    body = {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
            "replicas": {"min": 2, "max": replicas_max},
            "database": {"secretName": "db", "maxConnections": 100},
            "pooling": {"mode": mode}}
    return spec.parse({"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
                       "metadata": {"name": "shop", "namespace": "web"}, "spec": body})


def test_the_ceiling_applies_behind_a_pooler_and_at_the_budgets_max_with_sidecars():
    # Behind the pooler more app pods bring no server connections, however few run.
    assert ceiling_applies(pooled("pooler"), 2)
    # With a sidecar each new pod brings its own share of the budget, until replicas.max.
    sidecar = pooled("pgbouncer", replicas_max=6)
    assert not ceiling_applies(sidecar, 2)
    assert not ceiling_applies(sidecar, 5)
    assert ceiling_applies(sidecar, 6)


def reading(per_pod, saturation=None, metric="concurrency"):
    decision = Decision(per_pod, sum(per_pod.values()), sum(per_pod.values()), False)
    return Reading(Decision({"a": 5.0, "b": 5.0}, 10, 10, False), len(per_pod),
                   decisions={metric: decision, "rps": decision}, saturation=saturation)


SATURATED = Saturation(2, 2, 0.4, 7, 4, held=True, holding_scale_up=True)
COUNTING = Saturation(2, 2, 0.4, 7, 4, held=False, holding_scale_up=True)


def test_served_values_are_capped_at_the_target_while_the_ceiling_holds():
    ds = service(database=True, metric="concurrency", targetConcurrency=10)
    free = served_values(ds, reading({"a": 25.0, "b": 5.0}))
    assert free == {CONCURRENCY_METRIC: {"a": 25.0, "b": 5.0}}
    capped = served_values(ds, reading({"a": 25.0, "b": 5.0}, SATURATED))
    assert capped == {CONCURRENCY_METRIC: {"a": 10.0, "b": 5.0}}
    # While the ceiling's window counts, scale-up is held back the same way.
    assert served_values(ds, reading({"a": 25.0, "b": 5.0}, COUNTING)) == capped


def test_status_shows_the_metric_asking_for_most_pods_and_the_condition_once():
    ds = service(database=True, metrics=["rps", "queueTime"], targetRPSPerPod=100,
                 targetQueueTimeMilliseconds=50)
    seen = reading({"a": 0.12, "b": 0.08}, SATURATED, metric="queueTime")
    assert scaling_status(ds, seen) == {"metric": "queueTime", "value": "100ms",
                                        "rps": "0.1", "queueTime": "100ms"}
    body = {"metadata": {"generation": 3}, "status": {}}
    patch = status_patch(body, seen, ds)
    condition = next(c for c in patch["conditions"] if c["type"] == "DatabaseSaturated")
    assert condition["status"] == "True" and "400 ms" in condition["message"]
    assert saturation_warning(body, seen) is not None
    body["status"] = patch
    assert saturation_warning(body, seen) is None  # one event, not one per round
    assert status_patch(body, seen, ds) is None
    cleared = saturation_condition(patch["conditions"], Saturation(0, 2, 0.0, 0, 1, False))
    assert (cleared.status, cleared.reason) == ("False", "ClientsNotWaiting")


def test_a_pod_exports_the_pgbouncer_wait_the_ceiling_reads():
    registry = CollectorRegistry()
    Gauge(PGBOUNCER_MAX_WAIT, "w", registry=registry).set(0.25)
    assert parse_pod_metrics(generate_latest(registry).decode()).max_wait_seconds == 0.25


# -- advice on threads --------------------------------------------------------

def test_full_threads_on_an_idle_cpu_ask_for_more_threads():
    server = service({"type": "gunicorn-gthread", "workers": 2, "threads": 8}).server
    assert recommendations(server, {"a": (15.0, 0.4), "b": (15.4, 0.2)}) == [
        "threads are 100 % busy while CPU is 20 % of each worker's core: raise "
        "spec.server.maxThreads (requests wait on I/O, not on CPU)"]
    sync = service({"type": "gunicorn-sync", "workers": 4}).server
    assert "raise spec.server.workers" in recommendations(sync, {"a": (3.9, 0.4)})[0]


def test_a_busy_cpu_asks_for_processes_and_a_balanced_pod_for_nothing():
    server = service({"type": "gunicorn-gthread", "workers": 2, "threads": 8}).server
    assert recommendations(server, {"a": (5.0, 1.9)}) == [
        "CPU is 100 % of each worker's core while threads are 30 % busy: more "
        "spec.server.workers and fewer threads (Python runs one thread at a time per process)"]
    assert recommendations(server, {"a": (8.0, 1.0)}) == []
    assert recommendations(server, {}) == []


def test_usage_comes_from_the_launchers_time_in_the_app_and_cpu():
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry)
    metrics.request_started()
    metrics.request_finished("GET", "200 OK", 0.25)
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn CPU the next flush counts
        pass
    scrape = parse_pod_metrics(generate_latest(registry).decode())
    assert scrape.app_seconds == pytest.approx(0.25)
    assert scrape.cpu_seconds >= 0.05
    windows = ServiceWindows(stable_window=10, panic_window=2)
    windows.observe_usage("a", 0, 0.0, 0.0)
    windows.observe_usage("a", 10, 30.0, 5.0)
    assert windows.usage() == {"a": (3.0, 0.5)}
