"""Celery beat: exactly one scheduler pod, counted in the budget, and no second one in a worker."""

from __future__ import annotations

import copy

import pytest

from djangoscale import spec
from djangoscale.budget import size_pool
from djangoscale.builders import build_children
from djangoscale.builders.beat import SCHEDULE_FILE, build_beat_deployment
from djangoscale.builders.workers import worker_args
from tests.unit.test_workers_builders import CREDENTIALS, SHOP


def with_beat(**fields):
    body = copy.deepcopy(SHOP)
    body["spec"]["beat"] = {"app": "shop.celery", "resources": {"requests": {"cpu": "50m"}}}
    body["spec"].update(fields)
    return body


def test_one_beat_pod_recreated_never_surged_and_never_autoscaled():
    ds = spec.parse(with_beat())
    beat = build_beat_deployment(ds)
    assert beat["metadata"]["name"] == "shop-beat"
    assert beat["spec"]["replicas"] == 1 and ds.autoscaling.enabled
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    kinds = [(c["kind"], c["metadata"]["name"]) for c in build_children(ds)]
    assert ("Deployment", "shop-beat") in kinds
    assert ("HorizontalPodAutoscaler", "shop-beat") not in kinds
    assert ("PodDisruptionBudget", "shop-beat") not in kinds


def test_beat_runs_the_app_with_its_state_in_tmp_and_the_broker_and_database():
    ds = spec.parse(with_beat())
    secret = next(c for c in build_children(ds, CREDENTIALS) if c["kind"] == "Secret")
    pod = build_beat_deployment(ds, secret)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:4] == ["celery", "--app", "shop.celery", "beat"]
    assert SCHEDULE_FILE.startswith("/tmp/") and SCHEDULE_FILE in container["args"]
    assert container["securityContext"]["readOnlyRootFilesystem"]
    env = {item["name"] for item in container["env"]}
    assert {"CELERY_BROKER_URL", "DATABASE_URL", "DATABASE_PASSWORD"} <= env
    assert container["resources"] == {"requests": {"cpu": "50m"}}
    # The pod's plumbing is the web pod's: the pgbouncer sidecar and /tmp.
    assert [c["name"] for c in pod["initContainers"]] == ["pgbouncer"]
    labels = build_beat_deployment(ds)["spec"]["selector"]["matchLabels"]
    assert labels["app.kubernetes.io/component"] == "beat"


def test_the_budget_counts_the_beat_pod():
    without = spec.parse(SHOP)
    ds = spec.parse(with_beat())
    assert ds.max_pods == without.max_pods + 1
    assert size_pool(ds).max_pods == ds.max_pods


def test_a_budget_with_no_room_for_the_beat_pod_is_refused():
    def fits(body, connections):
        body = copy.deepcopy(body)
        body["spec"]["database"] = {"secretName": "shop-db", "maxConnections": connections}
        try:
            spec.parse(body)
        except spec.SpecError:
            return False
        return True

    smallest = next(n for n in range(1, 1000) if fits(SHOP, n))
    assert not fits(with_beat(), smallest)
    assert fits(with_beat(), smallest + 2)  # two: a pgbouncer pod also keeps one draining


@pytest.mark.parametrize("flag", ["-B", "--beat", "--beat=true", "-Bl"])
def test_a_worker_that_embeds_beat_is_refused_naming_its_args(flag):
    body = with_beat()
    body["spec"]["workers"][1]["args"] = ["--max-tasks-per-child", "100", flag]
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(body)
    assert raised.value.problems == [
        spec.BEAT_IN_A_WORKER.replace("[]", "[1]")
    ]
    assert raised.value.problems[0].startswith("spec.workers[1].args: -B/--beat")


def test_worker_args_without_beat_reach_the_launcher_after_a_separator():
    body = copy.deepcopy(SHOP)
    body["spec"]["workers"][0]["args"] = ["--max-tasks-per-child", "100"]
    group = spec.parse(body).workers[0]
    assert worker_args(group)[-3:] == ["--", "--max-tasks-per-child", "100"]
    assert "--" not in worker_args(spec.parse(SHOP).workers[0])


def test_beat_needs_a_broker():
    body = with_beat()
    del body["spec"]["broker"]
    del body["spec"]["workers"]
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(body)
    assert "spec.broker: required when spec.beat is set" in raised.value.problems
