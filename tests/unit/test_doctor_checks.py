"""`djangoscale doctor`'s judgements, on objects as the API server returns them."""

from __future__ import annotations

import datetime
import io
from typing import Any

from djangoscale.doctor import (
    CRD_NAME,
    METRICS_APISERVICE,
    Check,
    access_review,
    check_apiservice,
    check_crd,
    check_peering,
    report,
)

NOW = datetime.datetime(2026, 11, 30, 9, 0, tzinfo=datetime.UTC)


def crd(established: str = "True", versions: tuple[str, ...] = ("v1alpha1",)) -> dict[str, Any]:
    return {"metadata": {"name": CRD_NAME},
            "spec": {"versions": [{"name": v, "served": True, "storage": True}
                                  for v in versions]},
            "status": {"conditions": [{"type": "Established", "status": established}]}}


def apiservice(status: str, reason: str = "Passed", message: str = "") -> dict[str, Any]:
    return {"metadata": {"name": METRICS_APISERVICE},
            "spec": {"service": {"namespace": "djangoscale", "name": "djangoscale-metrics-api"}},
            "status": {"conditions": [{"type": "Available", "status": status, "reason": reason,
                                       "message": message}]}}


def peer(priority: int, seconds_ago: float, lifetime: int = 20) -> dict[str, Any]:
    seen = (NOW - datetime.timedelta(seconds=seconds_ago)).replace(tzinfo=None)
    # kopf writes naive UTC times.
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def test_crd_findings_name_what_is_wrong():
    assert check_crd(crd()).ok
    assert check_crd(None).detail == "not installed"
    assert "not Established" in check_crd(crd(established="False")).detail
    old = check_crd(crd(versions=("v1alpha0",)))
    assert not old.ok and "v1alpha1" in old.detail and "v1alpha0" in old.detail


def test_a_stale_apiservice_is_named_with_its_fix():
    found = check_apiservice(apiservice("False", "ServiceNotFound",
                                        'service/djangoscale-metrics-api not found'),
                             service_exists=False)
    assert not found.ok
    assert METRICS_APISERVICE in found.subject
    assert "ServiceNotFound" in found.detail and "does not exist" in found.detail
    assert f"kubectl delete apiservice {METRICS_APISERVICE}" in found.fix
    assert check_apiservice(apiservice("True"), service_exists=True).ok
    # Not registered is a configuration (metricsApi.enabled=false), not a failure.
    assert check_apiservice(None, None).ok


def test_peering_names_the_active_operator():
    peering = {"status": {"pod-1": peer(1, 5), "pod-0": peer(0, 3)}}
    found = check_peering(peering, "djangoscale", NOW)
    assert found.ok and "active: pod-1 (priority 1), 1 on standby" in found.detail


def test_peering_without_a_live_operator_or_with_a_tie_is_a_finding():
    dead = check_peering({"status": {"pod-0": peer(0, 30)}}, "djangoscale", NOW)
    assert not dead.ok and "no live operator" in dead.detail
    tie = check_peering({"status": {"a": peer(1, 1), "b": peer(1, 2)}}, "djangoscale", NOW)
    assert not tie.ok and "share the top priority" in tie.detail
    assert not check_peering(None, "djangoscale", NOW).ok


def test_access_review_splits_subresources_and_scopes_by_namespace():
    review = access_review("system:serviceaccount:djangoscale:djangoscale", "apps",
                           "deployments/scale", "patch")
    assert review["spec"]["resourceAttributes"] == {
        "group": "apps", "resource": "deployments", "subresource": "scale", "verb": "patch"}
    core = access_review("u", "", "configmaps", "get", "kube-system", "cm")
    assert core["spec"]["resourceAttributes"] == {
        "group": "", "resource": "configmaps", "verb": "get", "namespace": "kube-system",
        "name": "cm"}


def test_exit_code_is_non_zero_on_a_finding():
    out = io.StringIO()
    assert report([Check("a", True, "fine")], out) == 0
    assert "healthy" in out.getvalue()
    out = io.StringIO()
    assert report([Check("a", True, "fine"), Check("b", False, "broken", "do x")], out) == 1
    assert "FAIL b: broken" in out.getvalue() and "fix: do x" in out.getvalue()
