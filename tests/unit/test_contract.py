"""The names in `djangoscale.contract` are the ones both sides of each boundary use."""

from __future__ import annotations

import argparse
import copy

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from djangoscale import contract, spec
from djangoscale.autoscaling.collector import requests_total
from djangoscale.builders import build_children
from djangoscale.builders.deployment import build_deployment
from djangoscale.builders.workers import build_worker_container, worker_component
from djangoscale.celery import worker
from djangoscale.serve import servers
from djangoscale.serve.config import ENV_VARS, resolve
from djangoscale.serve.metrics import Metrics

SHOP = {
    "apiVersion": contract.API_VERSION,
    "kind": contract.KIND,
    "metadata": {"name": "shop", "namespace": "web", "uid": "1234", "generation": 1},
    "spec": {
        "image": "shop:1",
        "wsgiApp": "shop.wsgi:application",
        "port": 8123,
        "metricsPort": 9123,
        "server": {"type": "cherrypy", "workers": 3, "threads": 20, "maxThreads": 40,
                   "queueSize": 250, "timeoutSeconds": 45},
        "workers": [{"name": "mail", "app": "shop.celery", "queues": ["mail"]}],
        "broker": {"type": "redis", "secretName": "broker"},
    },
}


def crd_version() -> dict:
    return next(v for v in spec.crd()["spec"]["versions"] if v["name"] == contract.VERSION)


def test_the_crd_is_the_contract_s_resource():
    crd = spec.crd()
    assert crd["spec"]["group"] == contract.GROUP
    assert crd["spec"]["names"]["kind"] == contract.KIND
    assert crd["spec"]["names"]["plural"] == contract.PLURAL
    assert crd["metadata"]["name"] == f"{contract.PLURAL}.{contract.GROUP}"


def test_server_types_are_the_crd_enum_the_launcher_choices_and_the_adapters():
    enum = spec.spec_schema()["properties"]["server"]["properties"]["type"]["enum"]
    assert tuple(enum) == contract.SERVER_TYPES
    assert set(servers.ADAPTERS) == set(contract.SERVER_TYPES)
    assert set(servers.EXTRAS) == set(contract.SERVER_TYPES)
    assert set(contract.DEFAULT_THREADS) == set(contract.SERVER_TYPES)
    assert set(contract.SINGLE_THREADED_SERVERS) <= set(contract.SERVER_TYPES)
    assert {contract.GROWING_SERVER, contract.GREENLET_SERVER} <= set(contract.SERVER_TYPES)


@pytest.mark.parametrize("server_type", contract.SERVER_TYPES)
def test_a_server_type_s_default_threads_reach_the_launcher(server_type):
    body = copy.deepcopy(SHOP)
    body["spec"]["server"] = {"type": server_type}
    ds = spec.parse(body)
    assert ds.server.threads == contract.DEFAULT_THREADS[server_type]
    env = {item["name"]: item["value"] for item in build_deployment(ds)["spec"]["template"]
           ["spec"]["containers"][0]["env"]}
    config = resolve({"wsgi_app": ds.wsgi_app}, env)
    assert (config.server, config.threads) == (server_type, contract.DEFAULT_THREADS[server_type])


def test_the_deployment_s_env_is_what_the_launcher_reads():
    """Every setting the Deployment writes comes back out of the launcher's own parsing."""
    assert ENV_VARS == contract.SERVE_ENV
    ds = spec.parse(SHOP)
    container = build_deployment(ds)["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert set(contract.SERVE_ENV.values()) <= set(env)
    assert env[contract.MULTIPROC_DIR_ENV] == contract.MULTIPROC_DIR_IN_POD
    config = resolve({"wsgi_app": ds.wsgi_app}, env)
    assert (config.server, config.workers, config.threads, config.max_threads) == (
        "cherrypy", 3, 20, 40)
    assert (config.queue_size, config.timeout) == (250, 45.0)
    assert config.bind.port == ds.port == 8123
    assert config.metrics_bind is not None and config.metrics_bind.port == 9123
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8123, "metrics": 9123}


def test_the_worker_container_s_health_bind_is_what_djangoscale_worker_reads(monkeypatch):
    ds = spec.parse(SHOP)
    container = build_worker_container(ds, ds.workers[0], None)
    env = {item["name"]: item.get("value") for item in container["env"]}
    monkeypatch.setenv(contract.WORKER_HEALTH_BIND_ENV, env[contract.WORKER_HEALTH_BIND_ENV])
    parser = argparse.ArgumentParser()
    worker.configure(parser)
    assert parser.parse_args(["--app", "shop.celery"]).health_bind == "0.0.0.0:9123"
    assert contract.CELERY_BROKER_URL_ENV in env


def test_the_launcher_s_counter_is_what_the_collector_sums():
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry)
    metrics.requests.labels(method="GET", status_class="2xx").inc(3)
    metrics.requests.labels(method="POST", status_class="5xx").inc(2)
    text = generate_latest(registry).decode()
    assert contract.REQUESTS_COUNTER in text
    assert requests_total(text) == 5


def test_the_hpas_name_the_metrics_the_operator_serves():
    from djangoscale.autoscaling.apiserver import resource_list

    hpas = [c for c in build_children(spec.parse(SHOP)) if c["kind"] == "HorizontalPodAutoscaler"]
    metrics = {hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] for hpa in hpas}
    assert metrics == {contract.RPS_METRIC, contract.QUEUE_LENGTH_METRIC}
    served = {r["name"] for r in resource_list([contract.QUEUE_LENGTH_METRIC])["resources"]}
    assert served == {f"pods/{m}" for m in metrics}


def test_pods_carry_the_labels_the_operator_s_pod_indexes_select():
    ds = spec.parse(SHOP)
    web, worker_deployment = (c for c in build_children(ds) if c["kind"] == "Deployment")
    web_labels = web["spec"]["template"]["metadata"]["labels"]
    assert web_labels[contract.MANAGED_BY_LABEL] == contract.MANAGED_BY
    assert web_labels[contract.COMPONENT_LABEL] == contract.WEB_COMPONENT
    assert web_labels[contract.INSTANCE_LABEL] == "shop"
    worker_labels = worker_deployment["spec"]["template"]["metadata"]["labels"]
    assert worker_labels[contract.COMPONENT_LABEL] == worker_component(ds.workers[0])
    assert worker_labels[contract.COMPONENT_LABEL].startswith(contract.WORKER_COMPONENT_PREFIX)
    owner = web["metadata"]["ownerReferences"][0]
    assert (owner["apiVersion"], owner["kind"]) == (contract.API_VERSION, contract.KIND)
