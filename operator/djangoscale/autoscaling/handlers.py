"""kopf glue for RPS autoscaling: a pod index, one collecting daemon per DjangoService, and the
metrics API server's lifecycle. The work is in `collector`, `windows` and `apiserver`.

Pods come from a kopf index (a watch kept in memory), not from a list call per round, so
collection costs no API requests however often it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from djangoscale import spec

# A module reference, not names: `controller/__init__` (the kopf entry module) imports this
# module, and `collector` imports `djangoscale.controller.conditions`, so importing
# `collector` first runs this module while `collector` is still half-initialized.
from djangoscale.autoscaling import collector, options
from djangoscale.autoscaling.apiserver import (
    REQUESTHEADER_CONFIGMAP,
    MetricsStore,
    PodValue,
    build_app,
    generate_serving_cert,
    requestheader_settings,
    server_ssl_context,
    start_server,
    write_serving_cert,
)
from djangoscale.autoscaling.windows import ServiceWindows
from djangoscale.builders.labels import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
)
from djangoscale.controller import kube

RESOURCE = (spec.GROUP, spec.VERSION, spec.PLURAL)
STORE = MetricsStore()
_state: dict[str, Any] = {}


def _scraper() -> collector.Scraper:
    if "scraper" not in _state:
        opts = options.OPTIONS
        _state["scraper"] = collector.Scraper(opts.scrape_concurrency, opts.scrape_timeout)
    scraper: collector.Scraper = _state["scraper"]
    return scraper


def pod_ready(status: dict[str, Any], meta: dict[str, Any]) -> bool:
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


@kopf.index("", "v1", "pods", labels={MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: "web"})
def rps_pods(name: str, namespace: str | None, labels: kopf.Labels, status: kopf.Status,
             meta: kopf.Meta, **_: Any) -> dict[tuple[str, str], collector.PodTarget] | None:
    instance = labels.get(INSTANCE_LABEL)
    if not instance or namespace is None:
        return None
    target = collector.PodTarget(
        name=name,
        ip=status.get("podIP") or "",
        ready=pod_ready(dict(status), dict(meta)),
        labels=tuple(sorted(labels.items())),
    )
    return {(namespace, instance): target}


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def collect_rps(body: kopf.Body, namespace: str | None, name: str,
                      stopped: kopf.DaemonStopped, logger: kopf.Logger, **kwargs: Any) -> None:
    """Every few seconds: read the pods, publish per-pod values, write status if it changed."""
    rps_pods: kopf.Index[tuple[str, str], collector.PodTarget] = kwargs["rps_pods"]
    namespace = namespace or "default"
    opts = options.OPTIONS
    windows = ServiceWindows(opts.stable_window, opts.panic_window)
    STORE.window_seconds = int(opts.stable_window)
    try:
        while not stopped:
            STORE.beat()
            try:
                ds = spec.parse(dict(body))
            except spec.SpecError:
                ds = None  # the reconciler reports it; nothing to scale
            if ds is None or not ds.autoscaling.enabled:
                STORE.drop(namespace, name)
                await asyncio.sleep(opts.scrape_interval)
                continue
            pods = list(rps_pods.get((namespace, name), []))
            reading = await collector.collect(ds, pods, windows, _scraper(),
                                              panic_threshold=opts.panic_threshold)
            labels = {pod.name: pod.label_dict for pod in pods}
            STORE.put(namespace, name, [
                PodValue(pod, labels.get(pod, {}), value)
                for pod, value in reading.decision.per_pod.items()
            ])
            patch = collector.status_patch(dict(body), reading)
            if patch is not None:
                try:
                    await asyncio.to_thread(kube.patch_status, namespace, name, patch)
                except ApiException as error:
                    logger.warning("could not write RPS status: %s %s", error.status,
                                   error.reason)
            # A sleep, not `stopped.wait(...)`: that one runs its timeout in a task of its own,
            # which, still pending when the operator exits, kopf collects and re-raises: a
            # TimeoutError traceback and exit code 1 on SIGTERM. `while not stopped` ends it.
            await asyncio.sleep(opts.scrape_interval)
    finally:
        STORE.drop(namespace, name)


def read_requestheader_configmap() -> dict[str, Any]:
    from kubernetes import client

    api = kube.api_client()
    namespace, name = REQUESTHEADER_CONFIGMAP
    configmap = client.CoreV1Api(api).read_namespaced_config_map(name, namespace)
    result: dict[str, Any] = api.sanitize_for_serialization(configmap)  # type: ignore[no-untyped-call]
    return result


@kopf.on.startup()
async def start_metrics_api(logger: kopf.Logger, **_: Any) -> None:
    opts = options.OPTIONS
    if opts.port < 0:
        logger.info("custom.metrics.k8s.io server disabled")
        return
    try:
        configmap = await asyncio.to_thread(read_requestheader_configmap)
        client_ca, allowed_names = requestheader_settings(configmap)
    except (ApiException, ValueError) as error:
        # The reconciler is still useful without the metrics API: say why and go on.
        logger.error("not serving custom.metrics.k8s.io: cannot read %s/%s: %s",
                     *REQUESTHEADER_CONFIGMAP, getattr(error, "reason", error))
        return
    if opts.cert_file and opts.key_file:
        cert_file, key_file = opts.cert_file, opts.key_file
    else:
        generated = generate_serving_cert(opts.cert_dns_names)
        cert_file, key_file = write_serving_cert(generated)
        logger.info("serving with a generated certificate (APIService needs "
                    "insecureSkipTLSVerify, or give --metrics-api-cert-file/--key-file)")
    context = server_ssl_context(cert_file, key_file, client_ca)
    # Ready while collectors run; a few missed rounds (a slow API) do not flap it.
    app = build_app(STORE, allowed_names, ready_max_age=max(10.0, 5 * opts.scrape_interval))
    try:
        runner, port = await start_server(app, context, opts.bind, opts.port)
    except OSError as error:
        # Not fatal for reconciling, and kopf would retry a failed startup handler forever.
        logger.error("not serving custom.metrics.k8s.io on %s:%d: %s", opts.bind, opts.port,
                     error)
        return
    _state["runner"] = runner
    logger.info("serving custom.metrics.k8s.io/v1beta2 on https://%s:%d (clients: %s)",
                opts.bind, port, ", ".join(allowed_names) or "any front-proxy cert")


@kopf.on.cleanup()
async def stop_metrics_api(**_: Any) -> None:
    runner = _state.pop("runner", None)
    if runner is not None:
        await runner.cleanup()
    scraper = _state.pop("scraper", None)
    if scraper is not None:
        await scraper.close()
