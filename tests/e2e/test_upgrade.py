"""An operator upgrade whose builders render a different pod template (a test-only label in the
"new version", `tests/fixtures/upgraded_operator.py`) rolls the DjangoServices one at a time:
the next starts only when the previous is Available. Time stamps are printed (-s)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest

from djangoscale.conditions import rolled_out
from tests.e2e.helpers import API, djangoservice, ready, secret, start_operator
from tests.fixtures.polling import wait_for
from tests.fixtures.upgraded_operator import UPGRADE_LABEL
from tests.tools.chart_install import operator_kubeconfig

NAMES = ["shop", "blog", "api"]
# Long enough for three KWOK rollouts one after another, with the operator's start.
UPGRADE_SECONDS = 240.0


def stamp(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


def upgraded(deployment: dict[str, Any] | None) -> bool:
    labels = ((deployment or {}).get("spec", {}).get("template", {}).get("metadata", {})
              .get("labels") or {})
    return labels.get(UPGRADE_LABEL[0]) == UPGRADE_LABEL[1]


def test_operator_upgrade_rolls_one_djangoservice_at_a_time(kube, cluster, namespace,
                                                              tmp_path):
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa" / "kubeconfig")
    kube.apply(secret(namespace))
    with start_operator(kubeconfig, tmp_path / "v1.log"):
        for name in NAMES:
            kube.apply(djangoservice(namespace, name=name, autoscaling={"enabled": False},
                                     replicas={"min": 2, "max": 2}))
        for name in NAMES:
            wait_for(f"{name} Ready", lambda name=name: ready(kube, namespace, name))
    uids = {name: kube.get("apps/v1", "Deployment", namespace, name)["metadata"]["uid"]
            for name in NAMES}

    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    most_at_once = 0
    queued_seen: set[str] = set()
    with start_operator(kubeconfig, tmp_path / "v2.log",
                        module="tests.fixtures.upgraded_operator",
                        env={"DJANGOSCALE_MAX_CONCURRENT_ROLLOUTS": "1"}):
        deadline = time.monotonic() + UPGRADE_SECONDS
        while len(finished) < len(NAMES) and time.monotonic() < deadline:
            now = time.time()
            # One pass reads every Deployment: a finish is never seen after the next start.
            for name in NAMES:
                deployment = kube.get("apps/v1", "Deployment", namespace, name)
                if upgraded(deployment):
                    started.setdefault(name, now)
                    if rolled_out(deployment) and name not in finished:
                        finished[name] = now
                live = kube.get(API, "DjangoService", namespace, name) or {}
                for condition in (live.get("status") or {}).get("conditions") or []:
                    if condition["type"] == "Progressing" and \
                            condition["reason"] == "RolloutQueued":
                        queued_seen.add(name)
            most_at_once = max(most_at_once, len(set(started) - set(finished)))
            time.sleep(0.2)
        for name in NAMES:
            wait_for(f"{name} Ready after the upgrade", lambda name=name: ready(kube, namespace,
                                                                                  name))

    order = sorted(started, key=started.get)  # type: ignore[arg-type]
    for name in order:
        print(f"{name}: rollout started {stamp(started[name])}, "
              f"Available {stamp(finished[name])}")
    assert sorted(finished) == sorted(NAMES), (started, finished)
    assert most_at_once == 1
    for previous, following in zip(order, order[1:], strict=False):
        assert started[following] >= finished[previous], (previous, following)
    # The two that waited said so in their status.
    assert set(order[1:]) <= queued_seen
    # Rolled, not replaced: the same Deployments.
    assert {name: kube.get("apps/v1", "Deployment", namespace, name)["metadata"]["uid"]
            for name in NAMES} == uids


pytestmark = pytest.mark.timeout(600)
