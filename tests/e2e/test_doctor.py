"""`djangoscale doctor` on the real local control plane: healthy, then with a stale APIService,
then with a verb missing from the chart's RBAC: the right finding each time, exit 1 on one."""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from djangoscale.doctor import METRICS_APISERVICE
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.api import ApiError
from djangoscale_dev.registration import (
    register_metrics_apiservice,
    unregister_metrics_apiservice,
)
from tests.e2e.helpers import start_operator
from tests.fixtures.polling import wait_for
from tests.fixtures.services import free_port
from tests.tools.chart_install import (
    NAMESPACE,
    SERVICE_ACCOUNT,
    Api,
    install_chart,
    token_kubeconfig,
)

PEERING = "djangoscale"  # the chart's default peering.name


@pytest.fixture(scope="module")
def admin(cluster: LocalCluster) -> Api:
    return Api(cluster.kubeconfig)


@pytest.fixture(scope="module")
def chart(admin: Api) -> list[dict]:
    return install_chart(admin)


def available(admin: Api) -> bool:
    live = admin.get("APIService", None, METRICS_APISERVICE) or {}
    return any(c["type"] == "Available" and c["status"] == "True"
               for c in (live.get("status") or {}).get("conditions") or [])


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, admin: Api, chart: list[dict],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The operator as the chart runs it: its ServiceAccount, in peering, serving the metrics
    API behind the APIService."""
    directory = tmp_path_factory.mktemp("doctor")
    kubeconfig = token_kubeconfig(admin, cluster.kubeconfig, NAMESPACE, SERVICE_ACCOUNT,
                                  directory / "kubeconfig")
    client = cluster.client()
    port = free_port()
    cert, key = register_metrics_apiservice(client, cluster.dir, port)
    try:
        # kopf's identity as in the chart's first pod, whose label doctor checks it may patch.
        with start_operator(kubeconfig, directory / "operator.log", "--peering", PEERING,
                            "--priority", "1", "--metrics-api-port", str(port),
                            "--metrics-api-cert-file", str(cert),
                            "--metrics-api-key-file", str(key),
                            env={"POD_ID": f"{SERVICE_ACCOUNT}-0"}):
            wait_for("the metrics APIService to be Available", lambda: available(admin))
            yield
    finally:
        with contextlib.suppress(ApiError):
            unregister_metrics_apiservice(client)


def doctor(cluster: LocalCluster) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "djangoscale.cli", "doctor", "--kubeconfig",
         str(cluster.kubeconfig), "--namespace", NAMESPACE, "--service-account",
         SERVICE_ACCOUNT, "--peering", PEERING],
        capture_output=True, text=True, check=False, timeout=120,
    )
    print(result.stdout, result.stderr)
    return result.returncode, result.stdout


def lines(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


def test_healthy_cluster(cluster, operator):
    code, output = doctor(cluster)
    assert code == 0, output
    assert lines(output, "FAIL") == []
    assert len(lines(output, "ok")) == 4
    assert f"APIService {METRICS_APISERVICE}: Available" in output
    assert "(priority 1)" in output  # the operator started above is the active one
    assert "verbs the operator uses are granted" in output


def test_stale_apiservice_is_named_with_its_fix(cluster, admin, operator):
    live = admin.get("APIService", None, METRICS_APISERVICE)
    assert live is not None
    stale = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": METRICS_APISERVICE},
             # What a crash, or an uninstall of the operator's namespace, leaves behind.
             "spec": {**copy.deepcopy(live["spec"]),
                      "service": {"namespace": NAMESPACE, "name": "gone-metrics-api",
                                  "port": 443}}}
    admin.apply(stale)
    try:
        wait_for("the APIService to report Available=False", lambda: not available(admin))
        code, output = doctor(cluster)
        assert code == 1, output
        (finding,) = lines(output, "FAIL")
        assert f"APIService {METRICS_APISERVICE}" in finding
        assert "Available=False" in finding and "does not exist" in finding
        assert f"kubectl delete apiservice {METRICS_APISERVICE}" in output
    finally:
        admin.apply({**stale, "spec": live["spec"]})
        wait_for("the APIService to be Available again", lambda: available(admin))


def test_missing_rbac_verb_is_named(cluster, admin, chart, operator):
    (role,) = [d for d in chart if d["kind"] == "ClusterRole"
               and d["metadata"]["name"] == f"{SERVICE_ACCOUNT}-operator"]
    broken = copy.deepcopy(role)
    for rule in broken["rules"]:
        if rule["resources"] == ["deployments"]:
            rule["verbs"] = [verb for verb in rule["verbs"] if verb != "delete"]
    admin.apply(broken)
    try:
        code, output = doctor(cluster)
        assert code == 1, output
        (finding,) = lines(output, "FAIL")
        assert f"RBAC of ServiceAccount {NAMESPACE}/{SERVICE_ACCOUNT}" in finding
        assert finding.endswith("missing: delete deployments.apps")
    finally:
        admin.apply(role)
    code, output = doctor(cluster)
    assert code == 0, output


def test_unreachable_cluster_exits_2(tmp_path: Path):
    """Without a reachable cluster it says so and exits 2, not 1 (that means findings)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{free_port()}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c"}))
    result = subprocess.run([sys.executable, "-m", "djangoscale.cli", "doctor",
                             "--kubeconfig", str(kubeconfig)],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 2
    assert "cannot read the cluster" in result.stderr
