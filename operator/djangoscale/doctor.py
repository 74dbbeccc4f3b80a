"""`djangoscale doctor`: check a cluster for djangoscale's health, and name the fix of each finding.

What goes wrong on day two and how it shows:
- the CRD is missing, not Established, or does not serve this version;
- the `custom.metrics.k8s.io` APIService is not Available: after a crash or an uninstall that
  left it behind it points at a Service with no operator, the HPAs read no RPS, and discovery
  (`kubectl api-resources`, every GitOps tool) fails for everyone on the cluster;
- no operator is active: no live peer in the kopf peering object, or two at the top priority
  (kopf then pauses both);
- the chart's ServiceAccount lacks a verb the operator uses (SubjectAccessReview per verb).

Every request goes through the API layer (`djangoscale.k8s`); the caller needs to read those
objects and to create SubjectAccessReviews (a cluster admin). Exit 1 on any finding. It checks
the chart's cluster-wide install (the default; `watch.namespaces` installs grant per namespace).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, TextIO

from djangoscale.contract import GROUP, PLURAL, VERSION
from djangoscale.peering import live_peers

CRD_NAME: Final = f"{PLURAL}.{GROUP}"
METRICS_APISERVICE: Final = "v1beta2.custom.metrics.k8s.io"
# The chart's defaults: release namespace, ServiceAccount (the release's full name), peering.
DEFAULT_NAMESPACE: Final = "djangoscale"
DEFAULT_SERVICE_ACCOUNT: Final = "djangoscale"
DEFAULT_PEERING: Final = "djangoscale"

# Every (API group, resource, verbs) the chart grants the operator cluster-wide, and so every one
# the operator uses; tests/chart/test_chart.py holds this table to the rendered chart.
OPERATOR_ACCESS: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    (GROUP, PLURAL, ("get", "list", "watch", "patch")),
    (GROUP, f"{PLURAL}/status", ("get", "patch", "update")),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    ("apps", "deployments/scale", ("patch",)),
    ("", "services", ("get", "list", "create", "patch", "delete")),
    ("", "secrets", ("get", "create", "patch")),
    ("policy", "poddisruptionbudgets", ("get", "list", "create", "patch", "delete")),
    ("autoscaling", "horizontalpodautoscalers",
     ("get", "list", "watch", "create", "patch", "delete")),
    ("", "events", ("create", "patch")),
    ("events.k8s.io", "events", ("create", "patch")),
    ("", "pods", ("get", "list", "watch")),
    ("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    ("batch", "jobs", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "pods/log", ("get",)),
    ("networking.k8s.io", "ingresses", ("get", "list", "create", "patch", "delete")),
    ("gateway.networking.k8s.io", "httproutes", ("get", "list", "create", "patch", "delete")),
)
# The active peer labels its own pod (djangoscale/peering.py): patch on the operator's pods, by
# name, in the release namespace; reviewed for each live peer (kopf's identity is the pod name).
OWN_POD_ACCESS: Final = ("", "pods", "patch")
# The active peer reads the other peers' pod IPs, to send each its share of the pods to read
# (djangoscale/autoscaling/sharding.py): get, on the same pods.
PEER_POD_ACCESS: Final = ("", "pods", "get")
# With the metrics API: the front proxy's client CA, one ConfigMap in kube-system.
REQUESTHEADER_ACCESS: Final = ("kube-system", "", "configmaps",
                               "extension-apiserver-authentication", "get")


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, and the fix when it failed."""

    subject: str
    ok: bool
    detail: str
    fix: str = ""


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def check_crd(crd: dict[str, Any] | None) -> Check:
    subject = f"CRD {CRD_NAME}"
    apply = ("install it: helm upgrade --install with crds.install=true, or "
             "kubectl apply -f manifests/install/crds.yaml")
    if crd is None:
        return Check(subject, False, "not installed", apply)
    established = conditions_of(crd).get("Established", {}).get("status") == "True"
    versions = {v.get("name"): v for v in crd.get("spec", {}).get("versions") or []}
    served = versions.get(VERSION, {})
    if not established:
        return Check(subject, False, "not Established",
                     f"kubectl describe crd {CRD_NAME} names the problem")
    if not served.get("served") or not served.get("storage"):
        names = ", ".join(sorted(str(name) for name in versions)) or "none"
        return Check(subject, False,
                     f"does not serve and store {VERSION} (versions: {names})", apply)
    return Check(subject, True, f"Established, serves and stores {GROUP}/{VERSION}")


def check_apiservice(apiservice: dict[str, Any] | None, service_exists: bool | None) -> Check:
    subject = f"APIService {METRICS_APISERVICE}"
    if apiservice is None:
        return Check(subject, True, "not registered (metricsApi.enabled=false): HPAs on RPS "
                                    "need another custom metrics source")
    available = conditions_of(apiservice).get("Available", {})
    service = apiservice.get("spec", {}).get("service") or {}
    target = f"Service {service.get('namespace')}/{service.get('name')}" if service else "local"
    if available.get("status") == "True":
        return Check(subject, True, f"Available (served by {target})")
    missing = " (which does not exist)" if service_exists is False else ""
    detail = (f"Available={available.get('status', 'Unknown')} "
              f"({available.get('reason', 'no condition yet')}: "
              f"{available.get('message', '')}); it points at {target}{missing}. "
              "Until fixed, HPAs read no RPS and API discovery fails for every client")
    fix = (f"if djangoscale is uninstalled, remove the leftover: kubectl delete apiservice "
           f"{METRICS_APISERVICE}; otherwise start the operator pods behind {target} "
           "(kubectl get pods -n <namespace> -l app.kubernetes.io/name=djangoscale)")
    return Check(subject, False, detail, fix)


def check_peering(peering: dict[str, Any] | None, name: str,
                  now: datetime.datetime) -> Check:
    """The active operator: the live peer of highest priority (kopf's rule)."""
    subject = f"operator peering {name}"
    if peering is None:
        return Check(subject, False, "no ClusterKopfPeering of that name",
                     "helm upgrade restores it (or give --peering the name in use)")
    live = live_peers(peering.get("status"), now)
    if not live:
        return Check(subject, False, "no live operator: nothing reconciles, and the metrics "
                                     "API has no server",
                     "kubectl get pods -n <namespace> -l app.kubernetes.io/name=djangoscale; "
                     "kubectl logs on the one that is not running")
    top = [identity for priority, identity in live if priority == live[0][0]]
    if len(top) > 1:
        return Check(subject, False,
                     f"{len(top)} live operators share the top priority {live[0][0]} "
                     f"({', '.join(top)}): kopf pauses both",
                     "give each replica its own --priority (the chart uses the pod index)")
    standby = len(live) - 1
    return Check(subject, True, f"active: {live[0][1]} (priority {live[0][0]}), "
                                f"{standby} on standby")


def access_review(user: str, group: str, resource: str, verb: str, namespace: str = "",
                  name: str = "") -> dict[str, Any]:
    """A SubjectAccessReview for the ServiceAccount; without a namespace: in every one."""
    resource_name, _, subresource = resource.partition("/")
    attributes = {"group": group, "resource": resource_name, "verb": verb,
                  "subresource": subresource, "namespace": namespace, "name": name}
    attributes = {key: value for key, value in attributes.items() if value or key == "group"}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts"],
                     "resourceAttributes": attributes}}


def check_rbac(denied: list[str], account: str, checked: int) -> Check:
    subject = f"RBAC of ServiceAccount {account}"
    if not denied:
        return Check(subject, True, f"all {checked} verbs the operator uses are granted")
    return Check(subject, False, f"missing: {', '.join(denied)}",
                 "helm upgrade restores the chart's ClusterRole; or grant the missing verbs "
                 "to the ServiceAccount")


def run_checks(api: Any, namespace: str, service_account: str,
               peering: str) -> Iterator[Check]:
    yield check_crd(api.get("apiextensions.k8s.io/v1", "CustomResourceDefinition", None,
                            CRD_NAME))
    apiservice = api.get("apiregistration.k8s.io/v1", "APIService", None, METRICS_APISERVICE)
    service = (apiservice or {}).get("spec", {}).get("service")
    service_exists = None if not service else (
        api.get("v1", "Service", service.get("namespace"), service.get("name")) is not None)
    yield check_apiservice(apiservice, service_exists)
    now = datetime.datetime.now(datetime.UTC)
    peering_object = api.get("kopf.dev/v1", "ClusterKopfPeering", None, peering)
    yield check_peering(peering_object, peering, now)
    user = f"system:serviceaccount:{namespace}:{service_account}"
    wanted = [(group, resource, verb, "", "") for group, resource, verbs in OPERATOR_ACCESS
              for verb in verbs]
    if apiservice is not None:
        where, group, resource, name, verb = REQUESTHEADER_ACCESS
        wanted.append((group, resource, verb, where, name))
    peers = [pod for _, pod in live_peers((peering_object or {}).get("status"), now)]
    for group, resource, verb in (OWN_POD_ACCESS, PEER_POD_ACCESS):
        wanted += [(group, resource, verb, namespace, pod) for pod in peers]
    denied = []
    for group, resource, verb, where, name in wanted:
        review = api.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                          body=access_review(user, group, resource, verb, where, name))
        if not (review.get("status") or {}).get("allowed"):
            place = f" {name} in {where}" if where else ""
            denied.append(f"{verb} {resource}{'.' + group if group else ''}{place}")
    yield check_rbac(denied, f"{namespace}/{service_account}", len(wanted))


def report(checks: list[Check], out: TextIO) -> int:
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.subject}: {check.detail}", file=out)
        if not check.ok and check.fix:
            print(f"     fix: {check.fix}", file=out)
    findings = sum(not check.ok for check in checks)
    print(f"{findings} finding(s)" if findings else "healthy: no finding", file=out)
    return 1 if findings else 0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig to use (default: $KUBECONFIG, ~/.kube/config)")
    parser.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE,
                        help="namespace the chart is installed in")
    parser.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT,
                        help="the operator's ServiceAccount (the chart's full name)")
    parser.add_argument("--peering", default=DEFAULT_PEERING,
                        help="the kopf peering object's name (chart value peering.name)")


def main(args: argparse.Namespace) -> int:
    from djangoscale.k8s import ApiError, KubernetesApi

    try:
        api = KubernetesApi(args.kubeconfig)
    except Exception as error:  # the client's config errors have no common base class
        print(f"djangoscale doctor: cannot load the kubeconfig: {error}", file=sys.stderr)
        return 2
    try:
        checks = list(run_checks(api, args.namespace, args.service_account, args.peering))
    except ApiError as error:
        print(f"djangoscale doctor: cannot read the cluster: {error}", file=sys.stderr)
        return 2
    finally:
        api.close()
    return report(checks, sys.stdout)
