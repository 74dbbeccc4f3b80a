"""The install, proven on the real local control plane.

- The image's install step (docker/install.sh) works in a clean venv from exactly the files the
  Dockerfile copies.
- The chart, rendered by helm, passes the API server's own validation (server-side dry-run with
  strict field validation) and installs with server-side apply.
- The operator runs with the chart's ServiceAccount (a kubeconfig from a TokenRequest), makes a
  DjangoService converge without a single Forbidden, and that ServiceAccount cannot list
  Secrets or touch what it does not manage (SelfSubjectAccessReview with its own token).
- Two operators in kopf peering: killing the active one, the standby reconciles within 60 s.
- The Argo CD health check (Lua) agrees with the rule on statuses seen during the run.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

import install_manifests  # noqa: E402
from chart_install import (  # noqa: E402
    API,
    NAMESPACE,
    SERVICE_ACCOUNT,
    Api,
    install_chart,
    token_kubeconfig,
    wait_for,
)
from lua_health import health  # noqa: E402

from tests.e2e.helpers import start_operator  # noqa: E402

pytestmark = pytest.mark.e2e
PASSWORD = "e2e-install-password"


@contextmanager
def operator_process(kubeconfig: Path, log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`djangoscale run` with these credentials; its log must hold no Forbidden and no secret."""
    # Its log is checked for tracebacks and failed handlers by start_operator.
    with start_operator(kubeconfig, log, *args) as running:
        yield running.process
    text = log.read_text(errors="replace")
    assert PASSWORD not in text
    # RBAC is enough: not one request was refused. (A bare 403 would match timestamps; a
    # write into another test's namespace while it terminates is refused for that reason,
    # NamespaceTerminating, not for RBAC: kopf logs its event posts there as Forbidden.)
    refused = [line for line in text.splitlines()
               if re.search(r"[Ff]orbidden", line) and "NamespaceTerminating" not in line]
    assert not refused, "\n".join(refused[:5])


# -- the image's install step -------------------------------------------------------------


def builder_stage(dockerfile: str) -> tuple[list[tuple[list[str], str]], str, str]:
    """(COPY sources -> destination, WORKDIR, RUN command) of the Dockerfile's builder stage."""
    stage = dockerfile.split(" AS builder", 1)[1].split("\nFROM ", 1)[0]
    copies, workdir, run = [], "/", ""
    for line in stage.splitlines():
        words = shlex.split(line) if line and not line.startswith("#") else []
        if words[:1] == ["COPY"]:
            copies.append((words[1:-1], words[-1]))
        elif words[:1] == ["WORKDIR"]:
            workdir = words[1]
        elif words[:1] == ["RUN"]:
            run = line[len("RUN "):]
    return copies, workdir, run


def test_image_install_script_works_in_a_clean_venv(tmp_path):
    """Replays the builder stage: only the files it COPYs, then its RUN, in a fresh venv."""
    copies, workdir, run = builder_stage((ROOT / "Dockerfile").read_text())
    assert run.startswith("sh docker/install.sh ")
    src = tmp_path / "src"
    for sources, destination in copies:
        for source in sources:
            origin = ROOT / source
            target = src / destination / (origin.name if destination.endswith("/") and
                                          not source.endswith("/") else "")
            if origin.is_dir():
                shutil.copytree(origin, target, symlinks=True, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    venv_dir = tmp_path / "venv"
    command = run.replace("/opt/venv", str(venv_dir)).replace(" /src", f" {src}")
    assert workdir == "/src"
    # A clean environment: not this test's venv.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    result = subprocess.run(["sh", "-c", command], cwd=src, env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # A real install, not a link to the checkout: the CRD is inside the venv.
    packaged = list(venv_dir.glob("lib/python*/site-packages/djangoscale/data/crd.yaml"))
    assert packaged and not packaged[0].is_symlink()
    assert packaged[0].read_text() == (ROOT / "crds" / "djangoservices.djangoscale.io.yaml"
                                       ).read_text()
    helptext = subprocess.run([str(venv_dir / "bin" / "djangoscale"), "run", "--help"],
                              capture_output=True, text=True, check=True).stdout
    assert "--peering" in helptext
    # The operator extra only: no WSGI server in the operator image.
    freeze = subprocess.run([str(venv_dir / "bin" / "pip"), "freeze"], capture_output=True,
                            text=True, check=True).stdout.lower()
    assert "kopf==" in freeze and "gunicorn" not in freeze and "cheroot" not in freeze


# -- the chart on the cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(cluster) -> Api:
    return Api(cluster.kubeconfig)


@pytest.fixture(scope="module")
def installed(admin) -> list[dict[str, Any]]:
    return install_chart(admin)


@pytest.fixture(scope="module")
def operator_kubeconfig(admin, cluster, installed, tmp_path_factory) -> Path:
    return token_kubeconfig(admin, cluster.kubeconfig, NAMESPACE, SERVICE_ACCOUNT,
                            tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def namespace(admin) -> Iterator[str]:
    name = f"e2e-install-{uuid.uuid4().hex[:8]}"
    admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    admin.delete("Namespace", None, name)


def database_secret(namespace: str) -> dict[str, Any]:
    values = {"host": "127.0.0.1", "port": "5432", "dbname": "shop", "user": "shop",
              "password": PASSWORD}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "shop-db", "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def djangoservice(namespace: str, name: str = "shop", threads: int = 20,
                  secret: str = "shop-db") -> dict[str, Any]:
    return {
        "apiVersion": API, "kind": "DjangoService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop:1.4.2",
            "wsgiApp": "shop.wsgi:application",
            "server": {"type": "cherrypy", "threads": threads, "maxThreads": 30},
            "replicas": {"min": 2, "max": 5},
            "autoscaling": {"targetRPSPerPod": 20},
            "database": {"secretName": secret, "maxConnections": 40},
        },
    }


def expected_health(obj: dict[str, Any]) -> str:
    """The rule the Lua implements, stated independently."""
    status = obj.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if status.get("observedGeneration") != obj["metadata"]["generation"] or not conditions:
        return "Progressing"
    if conditions.get("Degraded") == "True":
        return "Degraded"
    return "Healthy" if conditions.get("Ready") == "True" else "Progressing"


def is_ready(obj: dict[str, Any] | None) -> bool:
    return obj is not None and expected_health(obj) == "Healthy"


def test_chart_objects_are_installed(admin, installed):
    assert [d for d in installed if d["kind"] == "StatefulSet"]
    # KWOK runs the pods; what matters is that each carries the index its priority comes from.
    def pods() -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={install_manifests.RELEASE}"
        return admin.call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods",
                          query=[("labelSelector", selector)])["items"]

    live = wait_for("two operator pods", lambda: found if len(found := pods()) == 2 else None)
    indexes = {p["metadata"]["labels"].get("apps.kubernetes.io/pod-index") for p in live}
    assert indexes == {"0", "1"}
    assert admin.get("ClusterKopfPeering", None, "djangoscale") is not None


def test_operator_with_the_chart_service_account_converges(
        admin, operator_kubeconfig, namespace, tmp_path):
    """RBAC is enough: Ready, children created, no Forbidden; the Lua agrees on every status."""
    admin.apply(database_secret(namespace))
    samples: list[dict[str, Any]] = []

    def observe(name: str) -> dict[str, Any] | None:
        live = admin.get("DjangoService", namespace, name)
        if live and (live.get("status") or {}).get("conditions"):
            samples.append(live)
        return live

    with operator_process(operator_kubeconfig, tmp_path / "operator.log",
                          "--peering", "djangoscale", "--priority", "1"):
        admin.apply(djangoservice(namespace))
        wait_for("Ready=True", lambda: is_ready(observe("shop")))
        for kind in ("Deployment", "Service", "PodDisruptionBudget", "Secret"):
            name = "shop-database" if kind == "Secret" else "shop"
            assert admin.get(kind, namespace, name) is not None, kind
        assert admin.call(
            "GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/shop")
        # A spec change: Progressing until the operator has seen the new generation.
        admin.apply(djangoservice(namespace, threads=25))
        wait_for("Ready for generation 2", lambda: (o := observe("shop")) and is_ready(o)
                 and o["metadata"]["generation"] == 2)
        # A failure: its database Secret does not exist.
        admin.apply(djangoservice(namespace, name="broken", secret="missing"))
        wait_for("Degraded", lambda: (o := observe("broken")) and
                 expected_health(o) == "Degraded")

    # The Argo CD health check, run by lua5.4 on statuses the operator wrote in this run.
    seen = {}
    for sample in samples:
        result = health(sample)
        assert result["status"] == expected_health(sample), (sample["status"], result)
        seen.setdefault(result["status"], sample)
    assert seen.keys() == {"Progressing", "Healthy", "Degraded"}
    (tmp_path / "health-samples.yaml").write_text(yaml.safe_dump_all(list(seen.values())))


# (verb, group, resource, subresource, namespace, name): what the ServiceAccount may not do.
FORBIDDEN = [
    ("list", "", "secrets", "", "", ""),
    ("list", "", "secrets", "", "default", ""),
    ("watch", "", "secrets", "", "default", ""),
    ("delete", "", "secrets", "", "default", "shop-db"),
    ("get", "", "configmaps", "", "default", ""),
    ("get", "", "configmaps", "", "kube-system", "kube-root-ca.crt"),
    ("list", "", "configmaps", "", "kube-system", ""),
    ("update", "apps", "deployments", "", "default", ""),
    ("update", "policy", "poddisruptionbudgets", "", "default", ""),
    ("patch", "apps", "statefulsets", "", NAMESPACE, SERVICE_ACCOUNT),
    ("create", "djangoscale.io", "djangoservices", "", "default", ""),
    ("delete", "djangoscale.io", "djangoservices", "", "default", ""),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions", "", "", ""),
    ("patch", "apiregistration.k8s.io", "apiservices", "", "", ""),
    ("create", "", "serviceaccounts", "token", NAMESPACE, SERVICE_ACCOUNT),
    ("create", "", "pods", "exec", "default", ""),
    ("create", "", "pods", "", "default", ""),
    # It labels its own pods (the active peer), and no other pod.
    ("patch", "", "pods", "", "default", "shop-7c9d5b6f4-abcde"),
    ("patch", "", "pods", "", NAMESPACE, f"{SERVICE_ACCOUNT}-2"),
    ("patch", "", "pods", "", NAMESPACE, ""),
    ("list", "", "nodes", "", "", ""),
    ("delete", "", "namespaces", "", "", "default"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "", "default", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""),
    ("impersonate", "", "serviceaccounts", "", "kube-system", ""),
    # The migration Job is created, never updated; logs are read, never streamed to a pod.
    ("update", "batch", "jobs", "", "default", ""),
    ("create", "batch", "cronjobs", "", "default", ""),
    ("create", "", "pods", "attach", "default", ""),
]
# Positive controls: the same reviews do answer yes where the chart grants it.
ALLOWED = [
    ("get", "", "secrets", "", "default", "shop-db"),
    ("patch", "apps", "deployments", "", "default", ""),
    ("patch", "apps", "deployments", "scale", "default", ""),
    ("delete", "policy", "poddisruptionbudgets", "", "default", ""),
    ("update", "djangoscale.io", "djangoservices", "status", "default", ""),
    ("get", "", "configmaps", "", "kube-system", "extension-apiserver-authentication"),
    ("patch", "kopf.dev", "clusterkopfpeerings", "", "", "djangoscale"),
    ("create", "batch", "jobs", "", "default", ""),
    ("get", "", "pods", "log", "default", ""),
    ("delete", "gateway.networking.k8s.io", "httproutes", "", "default", ""),
    ("patch", "", "pods", "", NAMESPACE, f"{SERVICE_ACCOUNT}-0"),
    ("patch", "", "pods", "", NAMESPACE, f"{SERVICE_ACCOUNT}-1"),
]


@pytest.mark.parametrize(("verb", "group", "resource", "sub", "ns", "name"), FORBIDDEN)
def test_service_account_cannot(operator_kubeconfig, verb, group, resource, sub, ns, name):
    api = Api(operator_kubeconfig)
    assert not api.can(verb, resource, ns, group, name, sub)


@pytest.mark.parametrize(("verb", "group", "resource", "sub", "ns", "name"), ALLOWED)
def test_service_account_can(operator_kubeconfig, verb, group, resource, sub, ns, name):
    assert Api(operator_kubeconfig).can(verb, resource, ns, group, name, sub)


def test_namespaced_install_works_only_in_its_namespaces(admin, cluster, installed, tmp_path):
    """watch.namespaces: the operator converges there, and can read nothing elsewhere."""
    watched, other = (f"e2e-scoped-{uuid.uuid4().hex[:6]}" for _ in range(2))
    release_ns = f"{watched}-operator"
    for name in (watched, other, release_ns):
        admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    try:
        docs = install_manifests.documents(install_manifests.template(
            "--set", f"watch.namespaces={{{watched}}}", "--set", "crds.install=false",
            "--set", "replicaCount=1", namespace=release_ns, release="scoped"))
        for obj in docs:
            if obj["kind"] not in ("StatefulSet", "APIService"):
                admin.apply(obj)
        kubeconfig = token_kubeconfig(admin, cluster.kubeconfig, release_ns,
                                      "scoped-djangoscale", tmp_path / "kubeconfig")
        api = Api(kubeconfig)
        assert api.can("patch", "deployments", watched, "apps")
        assert api.can("list", "djangoservices", watched, "djangoscale.io")
        assert not api.can("get", "deployments", other, "apps")
        assert not api.can("get", "secrets", other)
        assert not api.can("list", "djangoservices", "", "djangoscale.io")
        assert not api.can("patch", "clusterkopfpeerings", "", "kopf.dev")

        admin.apply(database_secret(watched))
        with operator_process(kubeconfig, tmp_path / "operator.log", "--namespace", watched,
                              "--peering", "djangoscale", "--priority", "1"):
            admin.apply(djangoservice(watched))
            wait_for("Ready in the watched namespace",
                     lambda: is_ready(admin.get("DjangoService", watched, "shop")))
    finally:
        for name in (watched, other, release_ns):
            admin.delete("Namespace", None, name)
        for obj in docs if "docs" in locals() else []:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
                admin.delete(obj["kind"], obj["metadata"].get("namespace"),
                             obj["metadata"]["name"])


def paused(log: Path) -> bool:
    """kopf starts paused when peering is mandatory and logs only changes of that state."""
    changes = [line for line in log.read_text().splitlines()
               if "Pausing operations" in line or "Resuming operations" in line]
    return not changes or "Pausing operations" in changes[-1]


# SIGTERM is what the kubelet sends a deleted, evicted or drained pod: kopf leaves the peering
# and the standby resumes at once. SIGKILL (OOM kill, lost node) leaves a keep-alive behind that
# the standby honours until it expires: kopf's peering lifetime, which the operator sets to 20 s
# (controller/settings.py); the bound is 60 s.
SIGKILL_BOUND = float(os.environ.get("DJANGOSCALE_E2E_SIGKILL_TAKEOVER_BOUND", "60"))


@pytest.mark.parametrize(("kill", "bound"), [(signal.SIGTERM, 60.0),
                                             (signal.SIGKILL, SIGKILL_BOUND)],
                         ids=["sigterm", "sigkill"])
def test_standby_takes_over(admin, operator_kubeconfig, namespace, tmp_path, kill, bound):
    """Two peers, distinct priorities: only the higher one acts; kill it, the other does."""
    admin.apply(database_secret(namespace))
    standby_log, active_log = tmp_path / "standby.log", tmp_path / "active.log"
    def priorities() -> list[int]:
        peering = admin.get("ClusterKopfPeering", None, "djangoscale") or {}
        return sorted(peer["priority"] for peer in (peering.get("status") or {}).values())

    # The active peer first, so the standby starts paused and never runs a handler before
    # the kill (a peer alone would, rightly, be active).
    with operator_process(operator_kubeconfig, active_log, "--peering", "djangoscale",
                          "--priority", "2") as active:
        wait_for("the active peer's keep-alive", lambda: 2 in priorities())
        with operator_process(operator_kubeconfig, standby_log, "--peering", "djangoscale",
                              "--priority", "1"):
            wait_for("both peers in the peering object", lambda: priorities() == [1, 2])
            admin.apply(djangoservice(namespace))
            wait_for("Ready", lambda: is_ready(admin.get("DjangoService", namespace, "shop")))
            # The active one reconciled it (kopf logs each handler it runs); the standby
            # handled nothing at all.
            assert "Handler 'on_change' succeeded" in active_log.read_text()
            assert "Handler" not in standby_log.read_text()
            assert paused(standby_log)

            active.send_signal(kill)
            active.wait(timeout=30)
            stopped = time.monotonic()
            admin.apply(djangoservice(namespace, threads=25))

            def threads_rolled_out() -> bool:
                deployment = admin.get("Deployment", namespace, "shop")
                (app,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]
                          if any(e["name"] == "DJANGOSCALE_THREADS" for e in c.get("env", []))]
                env = {e["name"]: e.get("value") for e in app["env"]}
                return env["DJANGOSCALE_THREADS"] == "25" and is_ready(
                    admin.get("DjangoService", namespace, "shop"))

            wait_for("the standby to reconcile the change", threads_rolled_out, timeout=bound)
            took = time.monotonic() - stopped
            print(f"after {kill.name} the standby took over and reconciled in {took:.1f}s")
            assert took < bound
            assert not paused(standby_log)
