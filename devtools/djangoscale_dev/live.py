"""The live terminal view of a load run: what is offered and served, what the autoscaler sees,
what the Deployment does, and what the database holds.

Three parts, so the view is tested without a terminal or a cluster:
- snapshots: plain frozen dataclasses, one moment of the load generator (`LoadSnapshot`, built
  from its `Recorder`) and of the cluster (`ClusterSnapshot`, built by `ClusterSampler` from
  the objects the operator and Kubernetes publish);
- `render(snapshot)`: a pure function from a snapshot to a rich renderable;
- `LiveView`: rich's `Live`, which redraws that renderable in place.

Where each cluster figure comes from (read-only, through the API server):
- per-pod RPS, stable and short (panic) window: the DjangoService's `status.rps`, which the
  operator's collector writes (`djangoscale.autoscaling.collector.rps_status`);
- the value the HPA reads: the HPA's `status.currentMetrics` for the Pods metric its spec
  names (the operator's requests-per-second metric), and the same metric asked of the custom
  metrics API (`/apis/custom.metrics.k8s.io/v1beta2/...`) for the Deployment's pods, averaged
  as the HPA averages it;
- replicas: desired from the HPA's status, ready from the Deployment's, running from the pods
  its selector matches;
- the connection budget: the DjangoService's `status.database` (`maxConnections`, and the pool
  per pod that bounds what the running pods may open); connections in use from PostgreSQL's
  `pg_stat_activity` when the sampler is given a way to ask.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from djangoscale.autoscaling.apiserver import GROUP_VERSION as CUSTOM_METRICS_VERSION
from djangoscale.spec import GROUP, PLURAL, VERSION

if TYPE_CHECKING:
    from rich.console import RenderableType

    from djangoscale_dev.load import Recorder

CUSTOM_METRICS = f"/apis/{CUSTOM_METRICS_VERSION}"


@dataclass(frozen=True)
class LoadSnapshot:
    """The load generator at one moment; rates are over the last whole second."""

    url: str
    elapsed: float
    step: int  # 0-based
    steps: int
    step_rps: float  # the rate the current step offers
    offered_rps: float
    served_rps: float  # 2xx answers completed in that second
    p50_ms: float | None
    p95_ms: float | None
    in_flight: int
    ok: int  # since the start
    failed: int  # since the start: non-2xx, no answer, dropped
    failed_last_second: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # "503", "timeout", "dropped"...
    finished: bool = False  # past the last step: the view watches the scale-down


@dataclass(frozen=True)
class ClusterSnapshot:
    """One DjangoService and its children at one moment; None where a value is not known."""

    namespace: str
    name: str
    target_rps_per_pod: float | None = None
    rps_stable: float | None = None  # per pod, status.rps.stable
    rps_panic: float | None = None  # per pod, status.rps.panic
    hpa_reads: float | None = None  # per pod, the HPA's status.currentMetrics
    metrics_api: float | None = None  # per pod, the custom metrics API now (average)
    metrics_api_pods: int = 0  # pods the custom metrics API has a value for
    desired: int | None = None
    ready: int | None = None
    running: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    db_in_use: int | None = None  # server connections in pg_stat_activity
    db_budget: int | None = None  # spec.database.maxConnections
    db_pool_per_pod: int | None = None
    ready_condition: str = "?"
    error: str | None = None  # why a read failed, shown rather than hidden


@dataclass(frozen=True)
class Snapshot:
    load: LoadSnapshot | None = None
    cluster: ClusterSnapshot | None = None
    notice: str | None = None


# -- snapshots from the load generator ------------------------------------------------------------

def load_snapshot(recorder: Recorder, elapsed: float, url: str) -> LoadSnapshot:
    """The last whole second's rates and the totals so far."""
    last = recorder.by_second.get(int(elapsed) - 1)
    offered = served = 0.0
    p50 = p95 = None
    failed_last_second = 0
    if last is not None:
        offered, served = float(last.offered), float(last.ok)
        failed_last_second = last.failed
        p = last.percentiles()
        p50 = None if p["p50"] is None else p["p50"] * 1000
        p95 = None if p["p95"] is None else p["p95"] * 1000
    total = recorder.total()
    failures: dict[str, int] = {str(code): n for code, n in sorted(total.statuses.items())}
    failures.update(sorted(total.errors.items()))
    if total.dropped:
        failures["dropped"] = total.dropped
    step = recorder.step_at(elapsed)
    return LoadSnapshot(
        url=url, elapsed=elapsed, step=step, steps=len(recorder.steps),
        step_rps=recorder.steps[step].rps, offered_rps=offered, served_rps=served,
        p50_ms=p50, p95_ms=p95, in_flight=recorder.in_flight, ok=total.ok,
        failed=total.failed, failed_last_second=failed_last_second, failures=failures,
        finished=elapsed >= sum(step.seconds for step in recorder.steps),
    )


# -- snapshots from the cluster -------------------------------------------------------------------

_QUANTITY = re.compile(r"^([0-9.]+)([munkMG]?)$")
_SCALE = {"": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "k": 1e3, "M": 1e6, "G": 1e9}


def parse_quantity(text: Any) -> float | None:
    """A Kubernetes quantity as the metrics API writes it ("12500m", "3", "1k") -> float."""
    found = _QUANTITY.match(str(text or "").strip())
    return float(found.group(1)) * _SCALE[found.group(2)] if found else None


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pods_metric_name(hpa: dict[str, Any] | None) -> str | None:
    """The Pods metric the HPA scales on (its spec's first), so the view asks for the very
    value the HPA reads, whatever the operator names it."""
    for metric in ((hpa or {}).get("spec") or {}).get("metrics") or []:
        name = ((metric.get("pods") or {}).get("metric") or {}).get("name")
        if metric.get("type") == "Pods" and name:
            return str(name)
    return None


def label_selector(deployment: dict[str, Any] | None) -> str | None:
    """The Deployment's `matchLabels` as a label selector string (its pods, as the HPA sees)."""
    labels = (((deployment or {}).get("spec") or {}).get("selector") or {}).get("matchLabels")
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items())) if labels else None


def hpa_reads(hpa: dict[str, Any]) -> float | None:
    """The per-pod value the HPA last read (`status.currentMetrics`, its Pods metric)."""
    name = pods_metric_name(hpa)
    for metric in (hpa.get("status") or {}).get("currentMetrics") or []:
        pods = metric.get("pods") or {}
        if name is not None and (pods.get("metric") or {}).get("name") == name:
            return parse_quantity((pods.get("current") or {}).get("averageValue"))
    return None


def metrics_api_average(values: dict[str, Any]) -> tuple[float | None, int]:
    """The average the HPA computes from a MetricValueList, and how many pods it covers."""
    numbers = [parse_quantity(item.get("value")) for item in values.get("items") or []]
    known = [n for n in numbers if n is not None]
    return (sum(known) / len(known) if known else None), len(known)


def cluster_snapshot(namespace: str, name: str, service: dict[str, Any] | None,
                     deployment: dict[str, Any] | None, hpa: dict[str, Any] | None,
                     pods: dict[str, Any] | None, metric_values: dict[str, Any] | None,
                     db_in_use: int | None = None, error: str | None = None) -> ClusterSnapshot:
    """A snapshot from the objects as the API server returns them (pure)."""
    spec = (service or {}).get("spec") or {}
    status = (service or {}).get("status") or {}
    rps = status.get("rps") or {}
    database = status.get("database") or {}
    ready: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    running = None
    if pods is not None:
        running = sum(1 for pod in pods.get("items") or []
                      if (pod.get("status") or {}).get("phase") == "Running"
                      and not (pod.get("metadata") or {}).get("deletionTimestamp"))
    average, covered = metrics_api_average(metric_values or {})
    return ClusterSnapshot(
        namespace=namespace, name=name,
        target_rps_per_pod=_number((spec.get("autoscaling") or {}).get("targetRPSPerPod")),
        rps_stable=_number(rps.get("stable")), rps_panic=_number(rps.get("panic")),
        hpa_reads=hpa_reads(hpa) if hpa else None,
        metrics_api=average, metrics_api_pods=covered,
        desired=((hpa or {}).get("status") or {}).get("desiredReplicas"),
        ready=((deployment or {}).get("status") or {}).get("readyReplicas", 0)
        if deployment else None,
        running=running,
        min_replicas=(spec.get("replicas") or {}).get("min"),
        max_replicas=(spec.get("replicas") or {}).get("max"),
        db_in_use=db_in_use,
        db_budget=database.get("maxConnections", (spec.get("database") or {}).get(
            "maxConnections")),
        db_pool_per_pod=database.get("poolSizePerPod"),
        ready_condition=str(ready.get("status", "?")),
        error=error,
    )


Reader = Callable[[str], dict[str, Any] | None]  # GET path -> JSON, None when 404


class ClusterSampler:
    """Reads one DjangoService's figures through the API server (`read`: GET path -> JSON)."""

    def __init__(self, read: Reader, namespace: str, name: str,
                 connections_in_use: Callable[[], int | None] | None = None) -> None:
        self.read, self.namespace, self.name = read, namespace, name
        self.connections_in_use = connections_in_use
        self.database_error: str | None = None

    def paths(self) -> dict[str, str]:
        """The objects read first; the pods and metric values follow from them."""
        ns, name = self.namespace, self.name
        return {
            "service": f"/apis/{GROUP}/{VERSION}/namespaces/{ns}/{PLURAL}/{name}",
            "deployment": f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
            "hpa": f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers/{name}",
        }

    @staticmethod
    def derived_paths(namespace: str, deployment: dict[str, Any] | None,
                      hpa: dict[str, Any] | None) -> dict[str, str]:
        selector = label_selector(deployment)
        if selector is None:
            return {}
        paths = {"pods": f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}"}
        metric = pods_metric_name(hpa)
        if metric is not None:
            paths["metric_values"] = (f"{CUSTOM_METRICS}/namespaces/{namespace}/pods/*/{metric}"
                                      f"?labelSelector={selector}")
        return paths

    def sample(self) -> ClusterSnapshot:
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(
            ("service", "deployment", "hpa", "pods", "metric_values"))
        errors: list[str] = []
        for key, path in self.paths().items():
            found[key] = self._read(key, path, errors)
        for key, path in self.derived_paths(self.namespace, found["deployment"],
                                            found["hpa"]).items():
            found[key] = self._read(key, path, errors)
        in_use = None
        if self.connections_in_use is not None:
            try:
                in_use = self.connections_in_use()
            except Exception as error:
                # Not asked again: an unreachable database would cost its connect timeout
                # every second and slow the whole view.
                self.connections_in_use = None
                self.database_error = f"database: {type(error).__name__}: {str(error)[:80]}"
        if self.database_error:
            errors.append(f"{self.database_error} (not asked again)")
        return cluster_snapshot(self.namespace, self.name, db_in_use=in_use,
                                error="; ".join(errors) or None, **found)

    def _read(self, key: str, path: str, errors: list[str]) -> dict[str, Any] | None:
        try:
            return self.read(path)
        except Exception as error:  # a figure missing for a moment is shown as "-"
            errors.append(f"{key}: {type(error).__name__}: {str(error)[:80]}")
            return None


def kubeconfig_reader(kubeconfig: str | None) -> Reader:
    """A `Reader` with the credentials of `kubeconfig` (None: $KUBECONFIG or ~/.kube/config)."""
    from kubernetes.config import new_client_from_config

    return api_reader(new_client_from_config(config_file=kubeconfig))  # type: ignore[no-untyped-call]


def api_reader(api_client: Any) -> Reader:
    """A `Reader` over a kubernetes `ApiClient` (its credentials and TLS)."""
    import json
    from urllib.parse import parse_qsl

    from kubernetes.client.exceptions import ApiException

    def read(path: str) -> dict[str, Any] | None:
        resource_path, _, query = path.partition("?")
        try:
            response = api_client.call_api(
                *api_client.param_serialize(method="GET", resource_path=resource_path,
                                            query_params=parse_qsl(query),
                                            header_params={"Accept": "application/json"},
                                            auth_settings=["BearerToken"])[:4],
                _request_timeout=5)
            response.read()
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        if response.status == 404:
            return None
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        result: dict[str, Any] = json.loads(response.data)
        return result

    return read


def pg_connections_in_use(secret: dict[str, Any]) -> Callable[[], int | None]:
    """Counts the database's client connections (other than this one) in pg_stat_activity,
    connecting with the DjangoService's database Secret (host, port, dbname, user, password)."""
    import base64

    data = {key: base64.b64decode(value).decode()
            for key, value in (secret.get("data") or {}).items()}

    def count() -> int | None:
        import psycopg

        with psycopg.connect(host=data.get("host"), port=data.get("port", "5432"),
                             dbname=data.get("dbname"), user=data.get("user"),
                             password=data.get("password"), connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()
        return int(row[0]) if row else None

    return count


# -- rendering -----------------------------------------------------------------------------------

def _f(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _i(value: int | None) -> str:
    return "-" if value is None else str(value)


def _load_panel(load: LoadSnapshot) -> RenderableType:
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if load.finished:
        grid.add_row("step", f"load finished ({load.steps} steps), {load.elapsed:.0f} s "
                             "elapsed: watching the scale-down")
    else:
        grid.add_row("step", f"{load.step + 1}/{load.steps} at {load.step_rps:g} RPS, "
                             f"{load.elapsed:.0f} s elapsed")
    grid.add_row("RPS", f"offered {load.offered_rps:.0f}   served {load.served_rps:.0f}   "
                        f"in flight {load.in_flight}")
    grid.add_row("latency",
                 f"p50 {_f(load.p50_ms, unit=' ms')}   p95 {_f(load.p95_ms, unit=' ms')}")
    detail = ", ".join(f"{kind} {n}" for kind, n in load.failures.items())
    style = "red" if load.failed else "green"
    grid.add_row("errors", f"[{style}]{load.failed}[/]" + (f" ({detail})" if detail else "")
                 + f"   ok {load.ok}")
    return Panel(grid, title=f"load: {load.url}", title_align="left")


def _cluster_panel(cluster: ClusterSnapshot) -> RenderableType:
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    target = _f(cluster.target_rps_per_pod, 0)
    grid.add_row("RPS per pod", f"stable {_f(cluster.rps_stable)}   panic {_f(cluster.rps_panic)}"
                                f"   HPA reads {_f(cluster.hpa_reads)}   (target {target})")
    grid.add_row("metrics API", f"{_f(cluster.metrics_api)} per pod over "
                                f"{cluster.metrics_api_pods} pods")
    bounds = f"min {_i(cluster.min_replicas)}, max {_i(cluster.max_replicas)}"
    grid.add_row("replicas", f"desired {_i(cluster.desired)}   ready {_i(cluster.ready)}   "
                             f"running {_i(cluster.running)}   ({bounds})")
    budget = _i(cluster.db_budget)
    cap = None
    if cluster.db_pool_per_pod is not None and cluster.running is not None:
        cap = cluster.db_pool_per_pod * cluster.running
    grid.add_row("DB connections", f"in use {_i(cluster.db_in_use)} of budget {budget}   "
                                   f"(pools of the running pods allow {_i(cap)})")
    if cluster.error:
        grid.add_row("[yellow]read errors[/]", f"[yellow]{cluster.error}[/]")
    title = f"djangoservice {cluster.namespace}/{cluster.name}: Ready={cluster.ready_condition}"
    return Panel(grid, title=title, title_align="left")


def render(snapshot: Snapshot) -> RenderableType:
    """The view of one snapshot (pure: no clock, no I/O)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = []
    if snapshot.load is not None:
        parts.append(_load_panel(snapshot.load))
    if snapshot.cluster is not None:
        parts.append(_cluster_panel(snapshot.cluster))
    if snapshot.notice:
        parts.append(Text(snapshot.notice, style="yellow"))
    return Group(*parts)


def step_table(recorder: Recorder) -> RenderableType:
    """The per-step summary `djangoscale load` prints at the end."""
    from rich.table import Table

    table = Table(title="requests per step", title_justify="left")
    for column in ("step", "RPS", "offered", "sent", "2xx", "non-2xx", "no answer", "dropped",
                   "late", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right")
    rows = [(str(i + 1), f"{step.rps:g}", tally)
            for i, (step, tally) in enumerate(zip(recorder.steps, recorder.by_step, strict=True))]
    rows.append(("all", "", recorder.total()))
    for label, rps, tally in rows:
        p = tally.percentiles()
        table.add_row(label, rps, str(tally.offered), str(tally.sent), str(tally.ok),
                      str(sum(tally.statuses.values())), str(sum(tally.errors.values())),
                      str(tally.dropped), str(tally.late),
                      *(_f(None if v is None else v * 1000) for v in p.values()))
    return table


class LiveView:
    """rich's Live: the latest snapshot, redrawn in place (not a scrolling log)."""

    def __init__(self) -> None:
        from rich.live import Live

        self.live = Live(auto_refresh=False, transient=False)

    def show(self, snapshot: Snapshot | LoadSnapshot) -> None:
        if isinstance(snapshot, LoadSnapshot):
            snapshot = Snapshot(load=snapshot)
        self.live.update(render(snapshot), refresh=True)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        with contextlib.suppress(Exception):
            self.live.__exit__(kind, error, trace)
