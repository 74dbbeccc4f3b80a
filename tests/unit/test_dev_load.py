"""`djangoscale dev`: the node it runs on, the example it applies there, where the load goes
(KWOK-only clusters skip it) and the scale events it reads from the timeline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from djangoscale.spec import parse
from djangoscale_dev import dev
from djangoscale_dev.cluster import nodeconfig
from djangoscale_dev.dev_load import load_url, real_nodes, step_marks
from djangoscale_dev.dev_real import real_node_documents
from djangoscale_dev.images.project import PGBOUNCER, SAMPLE_APP
from djangoscale_dev.load import Step, parse_rps, plan
from djangoscale_dev.postgres import APP_DB, APP_PASSWORD, APP_USER, Postgres
from djangoscale_dev.timeline import scale_events

KWOK = {"metadata": {"name": "kwok-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
REAL = {"metadata": {"name": "node-0"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
NOT_READY = {"metadata": {"name": "node-1"},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
SERVICE = {"spec": {"clusterIP": "198.19.0.12",
                    "ports": [{"name": "metrics", "port": 9100}, {"name": "http", "port": 80}]}}


def reader(nodes: list[dict[str, Any]], service: dict[str, Any] | None = SERVICE):
    def read(path: str) -> dict[str, Any] | None:
        if path == "/api/v1/nodes":
            return {"items": nodes}
        if path == "/api/v1/namespaces/default/services/shop":
            return service
        raise AssertionError(f"unexpected read of {path}")
    return read


def test_kwok_only_clusters_skip_the_load_and_say_why() -> None:
    read = reader([KWOK, NOT_READY])
    assert real_nodes(read) == []
    url, why = load_url(read, "default", "shop", "/items/")
    assert url is None and why.startswith("load skipped: it needs the real node")


def test_with_a_real_node_the_load_goes_to_the_service_cluster_ip_http_port() -> None:
    read = reader([KWOK, REAL])
    assert real_nodes(read) == ["node-0"]
    assert load_url(read, "default", "shop", "/items/") == ("http://198.19.0.12:80/items/", "")


@pytest.mark.parametrize(("service", "why"), [
    (None, "no Service default/shop"),
    ({"spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}}, "no ClusterIP"),
    ({"spec": {"clusterIP": "198.19.0.12", "ports": []}}, "no ClusterIP and http port"),
])
def test_a_service_without_an_address_skips_the_load(service: dict[str, Any] | None,
                                                     why: str) -> None:
    url, message = load_url(reader([REAL], service), "default", "shop", "/")
    assert url is None and why in message


def test_step_marks_measure_scale_up_from_the_first_rise_and_down_from_the_last_drop() -> None:
    marks, up, down = step_marks(plan(parse_rps("50,200,400,50"), 60))
    assert marks == [(0.0, "50 RPS"), (60.0, "200 RPS"), (120.0, "400 RPS"), (180.0, "50 RPS")]
    assert (up, down) == (60.0, 180.0)
    assert step_marks([Step(100, 10)])[1:] == (None, None)


def test_dev_takes_the_load_options() -> None:
    parser = argparse.ArgumentParser()
    dev.configure(parser)
    args = parser.parse_args([])
    assert (args.no_load, args.rps, args.step_seconds, args.load_path, args.settle_seconds) == (
        False, "50,200,400,50", 60.0, "/items/", 120.0)
    assert parser.parse_args(["--no-load"]).no_load


def test_dev_runs_on_the_real_node_unless_told_otherwise() -> None:
    parser = argparse.ArgumentParser()
    dev.configure(parser)
    args = parser.parse_args(["--kubeconfig", ""])
    assert (args.node, args.once) == ("real", False)
    assert parser.parse_args(["--node", "kwok"]).node == "kwok"
    with pytest.raises(SystemExit):
        parser.parse_args(["--node", "docker"])


def test_the_example_runs_on_the_real_node_with_the_images_and_database_started_here(
        tmp_path: Path) -> None:
    database = Postgres("127.0.0.1", 54321, tmp_path, 100, process=None)  # type: ignore[arg-type]
    documents = real_node_documents(dev.EXAMPLE, database)
    (secret,) = [d for d in documents if d["kind"] == "Secret"]
    assert secret["stringData"] == {"host": nodeconfig.GATEWAY, "port": "54321",
                                    "dbname": APP_DB, "user": APP_USER, "password": APP_PASSWORD}
    (service,) = [d for d in documents if d["kind"] == "DjangoService"]
    assert service["spec"]["image"] == SAMPLE_APP
    assert service["spec"]["pgbouncer"]["image"] == PGBOUNCER
    model = parse(service)  # SpecError if the schema or a cross-field rule refused it
    assert (model.min_replicas, model.max_replicas) == (2, 6)
    assert model.autoscaling.scale_up.max_percent_per_period == 900  # the burst preset
    assert model.autoscaling.scale_down.stabilization_window_seconds == 20


def test_scale_events_read_the_hpa_desired_replicas_of_a_timeline() -> None:
    seconds = [float(s) for s in range(12)]
    desired = [0, 2, 2, 3, 5, 5, 5, 4, 3, 2, 2, 2]  # 0: the HPA before its first sync
    events = scale_events({"seconds": seconds, "desired_replicas": desired}, up_after=2.0,
                          load_end=6.0)
    assert events == {"first_scale_up": 3.0, "scale_up_delay": 1.0, "peak_desired": 5,
                      "first_scale_down": 7.0, "back_to_start": 9.0, "scale_down_delay": 3.0}
    flat = scale_events({"seconds": seconds, "desired_replicas": [2] * 12}, up_after=2.0,
                        load_end=6.0)
    assert (flat["first_scale_up"], flat["first_scale_down"], flat["peak_desired"]) == (
        None, None, 2)
    assert scale_events({"seconds": seconds}, up_after=None, load_end=6.0)["peak_desired"] is None
