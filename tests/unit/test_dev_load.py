"""`djangoscale dev`'s load step: where the load goes, and that KWOK-only clusters skip it."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from djangoscale_dev import dev
from djangoscale_dev.dev_load import load_url, real_nodes, step_marks
from djangoscale_dev.load import Step, parse_rps, plan

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
