"""The Helm chart, rendered by a real helm built from Go modules (tests/tools/helm): lint, the
CRD's one source, least-privilege RBAC, the pod's hardening, the metrics API's certificates,
helm-docs comments, and the plain install in manifests/ kept up to date."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from djangoscale import __version__
from djangoscale.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

import install_manifests  # noqa: E402

CHART = install_manifests.CHART
CRD_SOURCE = ROOT / "crds" / "djangoservices.djangoscale.io.yaml"

# The verbs the operator may hold, per (apiGroup, resource): djangoscale/k8s, kopf's
# peering, events and discovery, the metrics collector. Anything else is a finding.
ALLOWED = {
    ("djangoscale.io", "djangoservices"): {"get", "list", "watch", "patch"},
    ("djangoscale.io", "djangoservices/status"): {"get", "patch", "update"},
    ("apps", "deployments"): {"get", "list", "watch", "create", "patch", "delete"},
    ("apps", "deployments/scale"): {"patch"},
    ("", "services"): {"get", "list", "create", "patch", "delete"},
    ("", "secrets"): {"get", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {
        "get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("", "configmaps"): {"get"},
    ("", "namespaces"): {"list", "watch"},  # namespaced mode only
    # The deploy lifecycle: the migration Job (deleted only to retry it), its log, the ways in.
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods/log"): {"get"},
    ("networking.k8s.io", "ingresses"): {"get", "list", "create", "patch", "delete"},
    ("gateway.networking.k8s.io", "httproutes"): {"get", "list", "create", "patch", "delete"},
}


def render(*args: str) -> list[dict[str, Any]]:
    return install_manifests.documents(install_manifests.template(*args))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def grants(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def operator_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roles and ClusterRoles bound to the operator's ServiceAccount, but the one that lets it
    label its own pods (`own_pod_role`)."""
    sa = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
        if any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in b["subjects"])
    }
    return [
        d for d in by_kind(docs, "Role") + by_kind(docs, "ClusterRole")
        if (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) in bound
        and not d["metadata"]["name"].endswith("-active-peer")
    ]


def own_pod_role(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [d for d in by_kind(docs, "Role") if d["metadata"]["name"].endswith("-active-peer")]
    (binding,) = [d for d in by_kind(docs, "RoleBinding")
                  if d["roleRef"]["name"] == role["metadata"]["name"]]
    sa = by_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa,
                                    "namespace": install_manifests.NAMESPACE}]
    return role


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_the_operator_may_patch_only_its_own_pods(replicas):
    """The active peer labels its own pod (patch) and reads its peers' IPs (get), by name, on
    the StatefulSet's pods only."""
    from djangoscale.doctor import OWN_POD_ACCESS, PEER_POD_ACCESS

    role = own_pod_role(render("--set", f"replicaCount={replicas}"))
    assert role["metadata"]["namespace"] == install_manifests.NAMESPACE
    group, resource, verb = OWN_POD_ACCESS
    assert PEER_POD_ACCESS[:2] == (group, resource)
    names = [f"{install_manifests.RELEASE}-{index}" for index in range(replicas)]
    assert role["rules"] == [{"apiGroups": [group], "resources": [resource],
                              "resourceNames": names,
                              "verbs": sorted([PEER_POD_ACCESS[2], verb])}]


def test_the_metrics_api_service_selects_the_active_peer_and_every_pod_can_be_ready():
    """Readiness is the process's health (kopf's /healthz), so a standby is Ready and
    `helm upgrade --wait` returns; the aggregator reaches only the labelled active peer."""
    from djangoscale.contract import ACTIVE_PEER_LABEL

    docs = render()
    (statefulset,) = by_kind(docs, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]
           if "valueFrom" in e}
    assert env["DJANGOSCALE_POD_NAME"] == "metadata.name"
    assert env["DJANGOSCALE_POD_NAMESPACE"] == "metadata.namespace"
    # ...the names the operator's settings read.
    from djangoscale.settings import ENV

    assert (ENV["pod_name"], ENV["pod_namespace"]) == (
        "DJANGOSCALE_POD_NAME", "DJANGOSCALE_POD_NAMESPACE")
    assert OperatorSettings.from_env({"DJANGOSCALE_POD_NAME": "djangoscale-1"}).pod_name == (
        "djangoscale-1")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    (apiservice,) = by_kind(docs, "APIService")
    selector = services[apiservice["spec"]["service"]["name"]]["spec"]["selector"]
    assert selector[ACTIVE_PEER_LABEL] == "true"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert {k: v for k, v in selector.items() if k != ACTIVE_PEER_LABEL}.items() <= (
        pod_labels.items())
    # The metrics Service (Prometheus) still reaches every pod.
    metrics = services[statefulset["spec"]["serviceName"]]
    assert ACTIVE_PEER_LABEL not in metrics["spec"]["selector"]
    # A drain may take one pod: with both Ready, the PodDisruptionBudget allows it.
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize(
    "values",
    [[], ["--set", "watch.namespaces={web,shop}"], ["--set", "metricsApi.tls.mode=certManager"],
     ["--set", "metricsApi.enabled=false", "--set", "replicaCount=1"],
     ["--set", "monitoring.dashboard.enabled=true", "--set", "monitoring.podMonitor.enabled=true",
      "--set", "monitoring.serviceMonitor.enabled=true"]],
    ids=["clusterwide", "namespaced", "cert-manager", "single-no-metrics", "monitoring"],
)
def test_helm_lint_is_clean(values):
    result = subprocess.run(
        [install_manifests.helm(), "lint", str(CHART), "--strict",
         "--kube-version", install_manifests.KUBE_VERSION, *values],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


def test_crd_is_the_one_in_crds_folder():
    """The chart's CRD is crds/'s file (a link), rendered with only Helm's labels added."""
    linked = CHART / "files" / "crds" / CRD_SOURCE.name
    assert linked.is_symlink() and linked.resolve() == CRD_SOURCE.resolve()
    source = yaml.safe_load(CRD_SOURCE.read_text())
    (rendered,) = [d for d in by_kind(render(), "CustomResourceDefinition")
                   if d["metadata"]["name"] == source["metadata"]["name"]]
    metadata = rendered.pop("metadata")
    source_metadata = source.pop("metadata")
    assert rendered == source
    assert source_metadata["labels"].items() <= metadata["labels"].items()
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert not [d for d in by_kind(render("--set", "crds.install=false"),
                                   "CustomResourceDefinition")]


def test_clusterwide_rbac_grants_only_what_the_operator_uses():
    docs = render()
    roles = operator_roles(docs)
    assert {r["kind"] for r in roles} == {"ClusterRole", "Role"}
    for role in roles:
        for key, verbs in grants(role["rules"]).items():
            assert key in ALLOWED, f"{role['metadata']['name']} grants {key}"
            assert verbs <= ALLOWED[key], f"{key}: {verbs - ALLOWED[key]}"
    (cluster_role,) = [r for r in roles if r["kind"] == "ClusterRole"]
    granted = grants(cluster_role["rules"])
    # Everything the operator needs is there...
    for key in ALLOWED.keys() - {("kopf.dev", "kopfpeerings"), ("", "configmaps"),
                                 ("", "namespaces")}:
        assert granted[key] == ALLOWED[key], key
    # ...and Secrets can be read by name only, never listed or watched; clusterwide kopf
    # does not need to list namespaces.
    assert ("", "namespaces") not in granted
    assert not granted[("", "secrets")] & {"list", "watch", "*"}
    # The one ConfigMap, in kube-system, by name.
    (configmaps,) = [r for r in roles if r["kind"] == "Role"]
    assert configmaps["metadata"]["namespace"] == "kube-system"
    assert configmaps["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                                    "resourceNames": ["extension-apiserver-authentication"],
                                    "verbs": ["get"]}]


def test_doctor_checks_exactly_the_verbs_the_chart_grants():
    """`djangoscale doctor` reviews each verb of its table: the table is the chart's RBAC."""
    from djangoscale.doctor import OPERATOR_ACCESS, REQUESTHEADER_ACCESS

    roles = operator_roles(render())
    (cluster_role,) = [r for r in roles if r["kind"] == "ClusterRole"]
    table = {(group, resource): set(verbs) for group, resource, verbs in OPERATOR_ACCESS}
    assert table == grants(cluster_role["rules"])
    (configmaps,) = [r for r in roles if r["kind"] == "Role"]
    namespace, group, resource, name, verb = REQUESTHEADER_ACCESS
    assert configmaps["metadata"]["namespace"] == namespace
    assert configmaps["rules"] == [{"apiGroups": [group], "resources": [resource],
                                    "resourceNames": [name], "verbs": [verb]}]


def test_namespaced_rbac_has_roles_per_namespace_and_nothing_namespaced_cluster_wide():
    docs = render("--set", "watch.namespaces={web,shop}")
    roles = operator_roles(docs)
    cluster = [r for r in roles if r["kind"] == "ClusterRole"]
    # Read-only discovery only: kopf watches CRDs and, namespaced, lists namespaces.
    assert [grants(r["rules"]) for r in cluster] == [
        {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
         ("", "namespaces"): {"list", "watch"}}]
    namespaces = {r["metadata"]["namespace"] for r in roles if r["kind"] == "Role"}
    assert namespaces == {"web", "shop", "kube-system"}
    assert {p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")} == {"web", "shop"}
    assert not by_kind(docs, "ClusterKopfPeering")
    (statefulset,) = by_kind(docs, "StatefulSet")
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=web" in args and "--namespace=shop" in args


def test_operator_pods_are_hardened_peers():
    (statefulset,) = by_kind(render(), "StatefulSet")
    assert statefulset["spec"]["replicas"] == 2
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith(f":{__version__}")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Each peer's priority is its own pod index: kopf pauses peers of equal priority.
    assert "--priority=$(POD_INDEX)" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']")
    assert "--peering=djangoscale" in container["args"]


def test_pdb_only_with_a_standby():
    assert by_kind(render(), "PodDisruptionBudget")[0]["spec"]["maxUnavailable"] == 1
    assert not by_kind(render("--set", "replicaCount=1"), "PodDisruptionBudget")


def test_apiservice_trusts_the_generated_serving_certificate():
    docs = render()
    (apiservice,) = by_kind(docs, "APIService")
    assert apiservice["metadata"]["name"] == "v1beta2.custom.metrics.k8s.io"
    service_ref = apiservice["spec"]["service"]
    (service,) = [s for s in by_kind(docs, "Service")
                  if s["metadata"]["name"] == service_ref["name"]]
    assert service["spec"]["ports"][0]["port"] == service_ref["port"]
    (secret,) = by_kind(docs, "Secret")
    ca = x509.load_pem_x509_certificate(base64.b64decode(apiservice["spec"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The aggregator checks <service>.<namespace>.svc.
    assert f"{service_ref['name']}.{service_ref['namespace']}.svc" in names.get_values_for_type(
        x509.DNSName)
    (statefulset,) = by_kind(docs, "StatefulSet")
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": secret["metadata"]["name"],
                                      "defaultMode": 0o440}} in volumes


def test_cert_manager_mode_injects_the_ca_and_renders_no_key():
    docs = render("--set", "metricsApi.tls.mode=certManager")
    (apiservice,) = by_kind(docs, "APIService")
    assert "caBundle" not in apiservice["spec"]
    injected = apiservice["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    namespace, name = injected.split("/")
    assert namespace == install_manifests.NAMESPACE
    assert name in {c["metadata"]["name"] for c in by_kind(docs, "Certificate")}
    assert not by_kind(docs, "Secret")


def test_values_are_documented_helm_docs_style():
    """Every leaf value has a `# --` comment above it (helm-docs), and templates use it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    templates = "".join(p.read_text() for p in (CHART / "templates").iterdir())
    undocumented, unused = [], []
    path: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        path = [(i, k) for i, k in path if i < indent] + [(indent, key)]
        following = next((text for text in lines[index + 1:] if text.strip()), "")
        is_leaf = rest != "" or len(following) - len(following.lstrip()) <= indent
        if not is_leaf:
            continue
        above = index - 1
        comment: list[str] = []
        while above >= 0 and lines[above].strip().startswith("#"):
            comment.append(lines[above].strip())
            above -= 1
        dotted = ".".join(k for _, k in path)
        # A documented map (resources, podSecurityContext) covers the keys inside it.
        documented_parent = any(
            re.match(rf"^\s{{{i}}}{k}:", text) and lines[n - 1].strip().startswith("# --")
            for n, text in enumerate(lines) for i, k in path[:-1]
        )
        if not any(c.startswith("# --") for c in comment) and not documented_parent:
            undocumented.append(dotted)
        if not documented_parent and f".Values.{dotted}" not in templates:
            unused.append(dotted)
    assert undocumented == []
    assert unused == []


def test_chart_version_follows_the_package():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


def test_plain_install_is_rendered_from_the_chart():
    for name, text in install_manifests.render_install().items():
        path = install_manifests.INSTALL / name
        assert path.read_text() == text, (
            f"{path} is stale: run `python tests/tools/install_manifests.py`")
    crds = install_manifests.documents((install_manifests.INSTALL / "crds.yaml").read_text())
    assert {d["kind"] for d in crds} == {"Namespace", "CustomResourceDefinition"}
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["install/crds.yaml", "install/djangoscale.yaml"]


def test_dockerfile_runs_the_install_script_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)[1]
    # A patch release or a digest, never a moving tag.
    assert re.search(r":3\.11\.\d+-slim|@sha256:[0-9a-f]{64}$", base), base
    assert "RUN sh docker/install.sh /opt/venv /src" in text
    final = text.rsplit("FROM ", 1)[1]
    assert "USER 10001:10001" in final
    assert 'ENTRYPOINT ["djangoscale", "run"]' in final


def test_gitops_tools_sync_the_plain_install():
    gitops = ROOT / "manifests" / "gitops"
    application = yaml.safe_load((gitops / "argocd" / "application.yaml").read_text())
    source = application["spec"]["source"]
    assert (ROOT / source["path"] / "kustomization.yaml").is_file()
    assert "ServerSideApply=true" in application["spec"]["syncPolicy"]["syncOptions"]
    flux = {d["kind"]: d for d in yaml.safe_load_all((gitops / "flux" / "djangoscale.yaml")
                                                     .read_text())}
    kustomization = flux["Kustomization"]
    assert kustomization["spec"]["sourceRef"]["name"] == flux["GitRepository"]["metadata"]["name"]
    assert (ROOT / kustomization["spec"]["path"] / "kustomization.yaml").is_file()
    assert flux["GitRepository"]["spec"]["url"] == source["repoURL"]


def test_chart_readme_is_generated_from_values():
    """charts/djangoscale/README.md is helm-docs' output for the current values.yaml."""
    build = ROOT / "tests" / "tools" / "helm-docs" / "build.sh"
    helm_docs = subprocess.run([str(build)], check=True, capture_output=True,
                               text=True).stdout.strip()
    generated = subprocess.run(
        [helm_docs, "--chart-search-root", str(CHART.parent), "--dry-run"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    ).stdout
    readme = (CHART / "README.md").read_text()
    assert generated == readme, (
        "charts/djangoscale/README.md is stale: run helm-docs --chart-search-root charts")
    assert "| metricsApi.tls.mode | string | `\"helm\"` |" in readme


MONITORING = ("--set", "monitoring.dashboard.enabled=true",
              "--set", "monitoring.dashboard.sidecarLabel=grafana_dash",
              "--set", "monitoring.podMonitor.enabled=true",
              "--set", "monitoring.podMonitor.labels.release=prom",
              "--set", "monitoring.serviceMonitor.enabled=true")


def test_monitoring_objects_only_behind_their_switches():
    plain = render()
    assert not by_kind(plain, "PodMonitor") and not by_kind(plain, "ServiceMonitor")
    assert not [c for c in by_kind(plain, "ConfigMap") if c["metadata"]["name"].endswith(
        "-dashboard")]
    docs = render(*MONITORING)
    (dashboard,) = [c for c in by_kind(docs, "ConfigMap")
                    if c["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dash"] == "1"
    shipped = (CHART / "dashboards" / "djangoscale.json").read_text()
    assert json.loads(dashboard["data"]["djangoscale.json"]) == json.loads(shipped)
    (pod_monitor,) = by_kind(docs, "PodMonitor")
    assert pod_monitor["metadata"]["labels"]["release"] == "prom"
    (service_monitor,) = by_kind(docs, "ServiceMonitor")
    # The ServiceMonitor finds the operator's Service and its metrics port by name.
    services = [s for s in by_kind(docs, "Service")
                if service_monitor["spec"]["selector"]["matchLabels"].items()
                <= s["metadata"]["labels"].items()]
    assert [p["name"] for s in services for p in s["spec"]["ports"]
            if p["name"] == service_monitor["spec"]["endpoints"][0]["port"]] == ["metrics"]


def test_the_pod_monitor_selects_the_web_pods_and_their_metrics_port():
    from djangoscale import spec
    from djangoscale.builders.deployment import build_deployment

    (pod_monitor,) = by_kind(render(*MONITORING), "PodMonitor")
    ds = spec.parse({"apiVersion": "djangoscale.io/v1alpha1", "kind": "DjangoService",
                     "metadata": {"name": "shop", "namespace": "web"},
                     "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application"}})
    template = build_deployment(ds)["spec"]["template"]
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"][
        "labels"].items()
    (app,) = [c for c in template["spec"]["containers"] if c["name"] == "app"]
    port = pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]
    assert {"name": port, "containerPort": ds.metrics_port, "protocol": "TCP"} in app["ports"]
