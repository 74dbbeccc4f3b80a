"""The live view and the timeline: snapshots from the generator's counters and from the
objects the API server returns, their rendering, and the PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from djangoscale_dev import live, timeline
from djangoscale_dev.load import Recorder, Step

NS, NAME = "default", "shop"


def text_of(renderable: Any) -> str:
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def busy_recorder() -> Recorder:
    recorder = Recorder([Step(10, 2), Step(40, 2)])
    for k in range(10):  # second 0: 10 offered, all answered in 20..29 ms
        recorder.offer(0, k / 10, 0.0, dropped=False)
        recorder.answer(0, k / 10 + 0.02, 200, 0.02 + k / 1000)
    for k in range(10):  # second 1: 10 offered; 7 ok, 2 x 503, 1 reset
        recorder.offer(0, 1 + k / 10, 0.0, dropped=False)
    for k in range(7):
        recorder.answer(0, 1.5, 200, 0.1 + k / 100)
    recorder.answer(0, 1.6, 503, 0.3)
    recorder.answer(0, 1.6, 503, 0.3)
    recorder.fail(0, 1.7, "socket")
    recorder.offer(1, 2.0, 0.0, dropped=False)  # in flight at 2.5 s
    recorder.offer(1, 2.025, 0.0, dropped=True)
    return recorder


def test_the_load_snapshot_reads_the_last_whole_second_and_the_totals() -> None:
    snap = live.load_snapshot(busy_recorder(), 2.5, "http://127.0.0.1:8000/")
    assert (snap.step, snap.steps, snap.step_rps) == (1, 2, 40)
    assert (snap.offered_rps, snap.served_rps, snap.failed_last_second) == (10, 7, 3)
    assert snap.p50_ms == pytest.approx(140.0) and snap.p95_ms == pytest.approx(300.0)
    assert (snap.ok, snap.failed, snap.in_flight) == (17, 4, 1)
    assert snap.failures == {"503": 2, "socket": 1, "dropped": 1}
    assert not snap.finished


def test_past_the_last_step_the_view_says_the_load_finished() -> None:
    snap = live.load_snapshot(busy_recorder(), 9.2, "http://127.0.0.1:8000/")
    assert snap.finished and (snap.offered_rps, snap.served_rps) == (0, 0)
    text = text_of(live.render(live.Snapshot(load=snap)))
    assert "load finished (2 steps), 9 s elapsed: watching the scale-down" in text


SERVICE = {
    "spec": {"replicas": {"min": 2, "max": 6}, "autoscaling": {"targetRPSPerPod": 20},
             "database": {"maxConnections": 40}},
    "status": {"rps": {"stable": "14", "panic": "31"},
               "database": {"poolSizePerPod": 6, "maxConnections": 40},
               "conditions": [{"type": "Ready", "status": "True"}]},
}
SELECTOR = {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "web"}
DEPLOYMENT = {"spec": {"selector": {"matchLabels": SELECTOR}},
              "status": {"replicas": 4, "readyReplicas": 3}}
HPA = {"spec": {"metrics": [
    {"type": "Pods", "pods": {"metric": {"name": "djangoscale_requests_per_second"}}}]},
       "status": {"desiredReplicas": 5, "currentMetrics": [
    {"type": "Pods", "pods": {"metric": {"name": "djangoscale_requests_per_second"},
                              "current": {"averageValue": "31250m"}}}]}}
PODS = {"items": [
    {"metadata": {}, "status": {"phase": "Running"}},
    {"metadata": {}, "status": {"phase": "Running"}},
    {"metadata": {}, "status": {"phase": "Pending"}},
    {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}},
]}
METRIC_VALUES = {"items": [{"value": "30"}, {"value": "32500m"}]}


def test_the_cluster_snapshot_takes_each_figure_from_its_source() -> None:
    snap = live.cluster_snapshot(NS, NAME, SERVICE, DEPLOYMENT, HPA, PODS, METRIC_VALUES,
                                 db_in_use=9)
    assert (snap.rps_stable, snap.rps_panic, snap.target_rps_per_pod) == (14, 31, 20)
    assert snap.hpa_reads == 31.25
    assert (snap.metrics_api, snap.metrics_api_pods) == (31.25, 2)
    assert (snap.desired, snap.ready, snap.running) == (5, 3, 2)  # terminating pods don't run
    assert (snap.min_replicas, snap.max_replicas) == (2, 6)
    assert (snap.db_in_use, snap.db_budget, snap.db_pool_per_pod) == (9, 40, 6)
    assert snap.ready_condition == "True"


def test_nothing_known_yet_is_a_snapshot_of_dashes_not_an_error() -> None:
    snap = live.cluster_snapshot(NS, NAME, None, None, None, None, None)
    assert (snap.desired, snap.ready, snap.running, snap.hpa_reads) == (None, None, None, None)
    text = text_of(live.render(live.Snapshot(cluster=snap)))
    assert "desired -   ready -   running -" in text


@pytest.mark.parametrize(("text", "value"), [
    ("31250m", 31.25), ("3", 3.0), ("1k", 1000.0), ("500u", 0.0005), ("", None), ("x", None),
])
def test_quantities(text: str, value: float | None) -> None:
    assert live.parse_quantity(text) == value


def test_the_sampler_reads_every_source_and_reports_failed_reads() -> None:
    asked: list[str] = []
    answers = {"djangoservices": SERVICE, "deployments": DEPLOYMENT,
               "horizontalpodautoscalers": HPA, "/pods?": PODS}

    def read(path: str) -> dict[str, Any] | None:
        asked.append(path)
        if "custom.metrics.k8s.io" in path:
            raise ConnectionError("aggregator unavailable")
        return next((doc for key, doc in answers.items() if key in path), None)

    snap = live.ClusterSampler(read, NS, NAME, connections_in_use=lambda: 12).sample()
    assert (snap.desired, snap.running, snap.db_in_use, snap.metrics_api) == (5, 2, 12, None)
    assert snap.error and "metric_values: ConnectionError: aggregator unavailable" in snap.error
    assert "database" not in snap.error
    # The pods of the Deployment's selector, the metric the HPA's spec names.
    assert ("/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/"
            "djangoscale_requests_per_second?labelSelector=app.kubernetes.io/component=web,"
            "app.kubernetes.io/instance=shop") in asked
    assert ("/api/v1/namespaces/default/pods?labelSelector=app.kubernetes.io/component=web,"
            "app.kubernetes.io/instance=shop") in asked
    assert "/apis/djangoscale.io/v1alpha1/namespaces/default/djangoservices/shop" in asked


def test_without_a_deployment_or_hpa_the_sampler_asks_for_no_pods_or_metric() -> None:
    asked: list[str] = []
    only_service = {"djangoservices": SERVICE}

    def read(path: str) -> dict[str, Any] | None:
        asked.append(path)
        return next((doc for key, doc in only_service.items() if key in path), None)

    snap = live.ClusterSampler(read, NS, NAME).sample()
    assert len(asked) == 3 and snap.running is None and snap.error is None
    assert live.pods_metric_name({"spec": {"metrics": [{"type": "Resource"}]}}) is None
    assert live.hpa_reads({"status": HPA["status"]}) is None  # no metric named in the spec


def test_an_unreachable_database_is_asked_once_and_said_every_time() -> None:
    calls = []

    def refused() -> int:
        calls.append(1)
        raise OSError("connection refused")

    sampler = live.ClusterSampler(lambda path: None, NS, NAME, connections_in_use=refused)
    first, second = sampler.sample(), sampler.sample()
    assert len(calls) == 1
    for snap in (first, second):
        assert snap.db_in_use is None
        assert snap.error == "database: OSError: connection refused (not asked again)"


def test_the_view_shows_every_figure() -> None:
    snapshot = live.Snapshot(
        load=live.load_snapshot(busy_recorder(), 2.5, "http://198.19.0.10/items/"),
        cluster=live.cluster_snapshot(NS, NAME, SERVICE, DEPLOYMENT, HPA, PODS, METRIC_VALUES,
                                      db_in_use=9))
    text = text_of(live.render(snapshot))
    for expected in (
        "load: http://198.19.0.10/items/",
        "2/2 at 40 RPS, 2 s elapsed",
        "offered 10   served 7   in flight 1",
        "p50 140.0 ms   p95 300.0 ms",
        "4 (503 2, socket 1, dropped 1)   ok 17",
        "djangoservice default/shop: Ready=True",
        "stable 14.0   panic 31.0   HPA reads 31.2   (target 20)",
        "31.2 per pod over 2 pods",
        "desired 5   ready 3   running 2   (min 2, max 6)",
        "in use 9 of budget 40   (pools of the running pods allow 12)",
    ):
        assert expected in text, f"{expected!r} not in\n{text}"


def test_the_step_table_has_a_row_per_step_and_a_total() -> None:
    text = text_of(live.step_table(busy_recorder()))
    lines = [line for line in text.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines]
    assert [row[0] for row in cells] == ["1", "2", "all"]
    # offered, sent, 2xx, non-2xx, no answer, dropped
    assert cells[0][2:8] == ["20", "20", "17", "2", "1", "0"]
    assert cells[2][2:8] == ["22", "21", "17", "2", "1", "1"]


def test_timeline_rows_plot_to_a_png(tmp_path: Path) -> None:
    recorder = busy_recorder()
    cluster = live.cluster_snapshot(NS, NAME, SERVICE, DEPLOYMENT, HPA, PODS, METRIC_VALUES)
    rows = [timeline.row(live.Snapshot(load=live.load_snapshot(recorder, s, "u"),
                                       cluster=cluster), s) for s in (1.0, 2.0, 3.0)]
    rows.append(timeline.row(live.Snapshot(), 4.0))  # a moment with nothing known
    assert rows[1]["served_rps"] == 7 and rows[1]["errors"] == 3
    assert rows[1]["desired_replicas"] == 5 and rows[3]["desired_replicas"] is None
    csv_path = tmp_path / "timeline.csv"
    timeline.write_csv(rows, csv_path)
    columns = timeline.read_csv(csv_path)
    assert columns["served_rps"] == [10.0, 7.0, 0.0, None]
    png = timeline.plot_timeline(columns, tmp_path / "run.png", "a run",
                                 marks=[(0, "10 RPS"), (2, "40 RPS")], scale_up_after=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
