"""kopf glue for RPS autoscaling: a pod index, one collecting daemon per DjangoService, and the
metrics API server's lifecycle. The work is in `collector`, `windows` and `apiserver`.

Pods come from a kopf index (a watch kept in memory), not from a list call per round, so
collection costs no API requests however often it runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from djangoscale import spec
from djangoscale.autoscaling import collector
from djangoscale.autoscaling.apiserver import (
    REQUESTHEADER_CONFIGMAP,
    PodValue,
    build_app,
    generate_serving_cert,
    requestheader_settings,
    server_ssl_context,
    start_server,
    write_serving_cert,
)
from djangoscale.autoscaling.windows import ServiceWindows
from djangoscale.context import context_of, pause
from djangoscale.contract import (
    API_VERSION,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    WEB_COMPONENT,
)
from djangoscale.k8s import Api, ApiError

RESOURCE = (spec.GROUP, spec.VERSION, spec.PLURAL)
# Seconds kopf waits for a collecting daemon to finish its round once asked to stop.
DAEMON_CANCELLATION_SECONDS = 5.0
# /readyz stays up through this many missed collection rounds (a slow API), at least
# READY_MIN_AGE_SECONDS, so one slow round does not flap the APIService's endpoints.
READY_MISSED_ROUNDS = 5
READY_MIN_AGE_SECONDS = 10.0


def pod_ready(status: dict[str, Any], meta: dict[str, Any]) -> bool:
    if meta.get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


@kopf.index("", "v1", "pods",
            labels={MANAGED_BY_LABEL: MANAGED_BY, COMPONENT_LABEL: WEB_COMPONENT})
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


@kopf.daemon(*RESOURCE, cancellation_timeout=DAEMON_CANCELLATION_SECONDS)
async def collect_rps(body: kopf.Body, namespace: str | None, name: str,
                      stopped: kopf.DaemonStopped, logger: kopf.Logger, memo: object,
                      **kwargs: Any) -> None:
    """Every few seconds: read the pods, publish per-pod values, write status if it changed."""
    rps_pods: kopf.Index[tuple[str, str], collector.PodTarget] = kwargs["rps_pods"]
    namespace = namespace or "default"
    context = context_of(memo)
    settings, store = context.settings, context.rps
    windows = ServiceWindows(settings.stable_window, settings.panic_window)
    try:
        while not stopped:
            store.beat()
            try:
                ds = spec.parse(dict(body))
            except spec.SpecError:
                ds = None  # the reconciler reports it; nothing to scale
            if ds is None or not ds.autoscaling.enabled:
                store.drop(namespace, name)
                await pause(stopped, settings.scrape_interval)
                continue
            pods = list(rps_pods.get((namespace, name), []))
            reading = await collector.collect(ds, pods, windows, context.scraper,
                                              panic_threshold=settings.panic_threshold)
            labels = {pod.name: pod.label_dict for pod in pods}
            store.put(namespace, name, [
                PodValue(pod, labels.get(pod, {}), value)
                for pod, value in reading.decision.per_pod.items()
            ])
            patch = collector.status_patch(dict(body), reading)
            if patch is not None:
                try:
                    await asyncio.to_thread(context.api.patch_status, API_VERSION, KIND,
                                            namespace, name, patch)
                except ApiError as error:
                    logger.warning("could not write RPS status: %s %s", error.status,
                                   error.reason)
            await pause(stopped, settings.scrape_interval)
    finally:
        store.drop(namespace, name)


def read_requestheader_configmap(api: Api) -> dict[str, Any]:
    namespace, name = REQUESTHEADER_CONFIGMAP
    configmap = api.get("v1", "ConfigMap", namespace, name)
    if configmap is None:
        raise ValueError("the ConfigMap does not exist")
    return configmap


@kopf.on.startup()
async def start_metrics_api(logger: kopf.Logger, memo: object, **_: Any) -> None:
    context = context_of(memo)
    settings = context.settings
    bind = settings.bind or "0.0.0.0"
    if settings.port < 0:
        logger.info("custom.metrics.k8s.io server disabled")
        return
    try:
        configmap = await asyncio.to_thread(read_requestheader_configmap, context.api)
        client_ca, allowed_names = requestheader_settings(configmap)
    except (ApiError, ValueError) as error:
        # The reconciler is still useful without the metrics API: say why and go on.
        logger.error("not serving custom.metrics.k8s.io: cannot read %s/%s: %s",
                     *REQUESTHEADER_CONFIGMAP, getattr(error, "reason", error))
        return
    if settings.cert_file and settings.key_file:
        cert_file, key_file = settings.cert_file, settings.key_file
    else:
        generated = generate_serving_cert(settings.cert_dns_names)
        cert_file, key_file = write_serving_cert(generated)
        logger.info("serving with a generated certificate (APIService needs "
                    "insecureSkipTLSVerify, or give --metrics-api-cert-file/--key-file)")
    tls = server_ssl_context(cert_file, key_file, client_ca)
    # Ready while collectors run; a few missed rounds (a slow API) do not flap it.
    ready_max_age = max(READY_MIN_AGE_SECONDS, READY_MISSED_ROUNDS * settings.scrape_interval)
    app = build_app(context.rps, allowed_names, ready_max_age=ready_max_age,
                    extra=context.extra_pod_metrics)
    try:
        runner, port = await start_server(app, tls, bind, settings.port)
    except OSError as error:
        # Not fatal for reconciling, and kopf would retry a failed startup handler forever.
        logger.error("not serving custom.metrics.k8s.io on %s:%d: %s", bind, settings.port,
                     error)
        return
    # On the operator's own memo, before kopf copies it for any object.
    context.metrics_server = runner
    logger.info("serving custom.metrics.k8s.io/v1beta2 on https://%s:%d (clients: %s)",
                bind, port, ", ".join(allowed_names) or "any front-proxy cert")
