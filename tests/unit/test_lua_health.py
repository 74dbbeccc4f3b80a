"""The Argo CD health check, run by Debian's lua5.4: on crafted statuses shaped like the
operator's (conditions.py), for the edge cases, and on statuses recorded from an e2e run
(tests/tools/lua_samples/); tests/e2e/test_install.py also runs it on live ones."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

from lua_health import HEALTH_LUA, health  # noqa: E402


def djangoservice(generation: int, observed: int | None, **conditions: tuple[str, str]) -> dict:
    status: dict[str, Any] = {"conditions": [
        {"type": type_, "status": value, "reason": reason, "message": f"{type_} says {reason}",
         "observedGeneration": observed}
        for type_, (value, reason) in conditions.items()
    ]}
    if observed is not None:
        status["observedGeneration"] = observed
    return {"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
            "metadata": {"name": "shop", "namespace": "web", "generation": generation},
            "status": status}


READY = ("True", "Available")
NOT_PROGRESSING = ("False", "RolloutComplete")
NOT_DEGRADED = ("False", "AsExpected")


@pytest.mark.parametrize(
    ("obj", "expected", "in_message"),
    [
        (djangoservice(3, 3, Ready=READY, Progressing=NOT_PROGRESSING, Degraded=NOT_DEGRADED),
         "Healthy", "Available"),
        # Ready, but for an older spec: the latest edit is not rolled out yet.
        (djangoservice(4, 3, Ready=READY, Progressing=NOT_PROGRESSING, Degraded=NOT_DEGRADED),
         "Progressing", "generation 4"),
        (djangoservice(2, 2, Ready=("False", "RollingOut"), Progressing=("True", "RollingOut"),
                       Degraded=NOT_DEGRADED), "Progressing", "RollingOut"),
        (djangoservice(1, 1, Ready=("Unknown", "Creating"), Progressing=("True", "Creating"),
                       Degraded=("Unknown", "Creating")), "Progressing", "Creating"),
        (djangoservice(1, 1, Ready=("False", "DatabaseSecretNotFound"),
                       Progressing=("False", "DatabaseSecretNotFound"),
                       Degraded=("True", "DatabaseSecretNotFound")),
         "Degraded", "DatabaseSecretNotFound"),
        # Degraded wins over a Ready that is still true (pods up, rollout stuck).
        (djangoservice(5, 5, Ready=READY, Progressing=("False", "ProgressDeadlineExceeded"),
                       Degraded=("True", "ProgressDeadlineExceeded")),
         "Degraded", "ProgressDeadlineExceeded"),
    ],
    ids=["ready", "stale-generation", "rolling-out", "creating", "failed", "degraded-wins"],
)
def test_health_from_conditions(obj, expected, in_message):
    result = health(obj)
    assert result["status"] == expected
    assert in_message in result["message"]


def test_no_status_yet_is_progressing():
    obj = djangoservice(1, None)
    del obj["status"]
    assert health(obj)["status"] == "Progressing"


def test_argocd_cm_snippet_embeds_the_same_script():
    configmap = yaml.safe_load((HEALTH_LUA.parent / "argocd-cm.yaml").read_text())
    embedded = configmap["data"]["resource.customizations.health.djangoscale.io_DjangoService"]
    assert embedded == HEALTH_LUA.read_text()


RECORDED = yaml.safe_load(
    (ROOT / "tests" / "tools" / "lua_samples" / "recorded.yaml").read_text())


@pytest.mark.parametrize("sample", RECORDED, ids=[s["expected"] for s in RECORDED])
def test_health_of_statuses_recorded_from_the_operator(sample):
    assert health(sample["object"])["status"] == sample["expected"]
