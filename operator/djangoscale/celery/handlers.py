"""kopf glue for queue-length autoscaling: a worker pod index and one polling daemon per
DjangoService with worker groups. The work is in `brokers` (reading) and `queues` (math).

Every few seconds the daemon reads ready + unacknowledged messages of every group's queues from
the broker named by `spec.broker` (its Secret: `url`, and `managementUrl` for RabbitMQ) and
serves each of the group's pods `total / pods` as `djangoscale_celery_queue_length` through the
operator's custom metrics API. When the broker cannot be read, the last good totals are held.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import kopf

from djangoscale import spec
from djangoscale.autoscaling.apiserver import PodValue
from djangoscale.builders.workers import (
    BROKER_MANAGEMENT_URL_KEY,
    BROKER_URL_KEY,
    worker_component,
)
from djangoscale.celery.brokers import BrokerUnavailable, QueueReader, reader_for
from djangoscale.celery.queues import HoldLast, group_total, per_pod_values
from djangoscale.context import context_of, pause
from djangoscale.contract import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    WORKER_COMPONENT_PREFIX,
)
from djangoscale.k8s import Api, ApiError

RESOURCE = (spec.GROUP, spec.VERSION, spec.PLURAL)
# The broker Secret is read again this often, so a rotated password is picked up.
SECRET_REFRESH_SECONDS: Final = 60.0
# Seconds kopf waits for a polling daemon to finish its round once asked to stop.
DAEMON_CANCELLATION_SECONDS: Final = 5.0


@dataclass(frozen=True)
class WorkerPod:
    name: str
    labels: tuple[tuple[str, str], ...]


def _is_worker(labels: kopf.Labels, **_: Any) -> bool:
    return str(labels.get(COMPONENT_LABEL, "")).startswith(WORKER_COMPONENT_PREFIX)


@kopf.index("", "v1", "pods", labels={MANAGED_BY_LABEL: MANAGED_BY},
            when=_is_worker)
def worker_pods(name: str, namespace: str, labels: kopf.Labels, status: kopf.Status,
                meta: kopf.Meta, **_: Any) -> dict[tuple[str, str, str], WorkerPod] | None:
    """Pods the HPA counts: not being deleted and not failed (it ignores those)."""
    if meta.get("deletionTimestamp") or status.get("phase") in ("Failed", "Succeeded"):
        return None
    instance = labels.get(INSTANCE_LABEL)
    if not instance:
        return None
    key = (namespace, str(instance), str(labels[COMPONENT_LABEL]))
    return {key: WorkerPod(name, tuple(sorted(labels.items())))}


def _has_workers(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("workers"))


def read_broker_secret(api: Api, namespace: str, name: str) -> tuple[str, str | None]:
    secret = api.get("v1", "Secret", namespace, name)
    if secret is None:
        raise BrokerUnavailable(f"Secret {namespace}/{name} not found")
    data = secret.get("data") or {}
    if BROKER_URL_KEY not in data:
        raise BrokerUnavailable(f"Secret {namespace}/{name} has no key {BROKER_URL_KEY}")
    url = base64.b64decode(data[BROKER_URL_KEY]).decode()
    management = data.get(BROKER_MANAGEMENT_URL_KEY)
    return url, base64.b64decode(management).decode() if management else None


@kopf.daemon(*RESOURCE, when=_has_workers, cancellation_timeout=DAEMON_CANCELLATION_SECONDS)
async def poll_queue_lengths(body: kopf.Body, namespace: str, name: str,
                             stopped: kopf.DaemonStopped, worker_pods: kopf.Index[Any, Any],
                             logger: logging.Logger, memo: object, **_: Any) -> None:
    context = context_of(memo)
    store, poll_seconds = context.queue_lengths, context.settings.queue_poll_seconds
    hold = HoldLast()
    reader: QueueReader | None = None
    reader_source: tuple[str, str, str | None] | None = None
    secret_read_at = 0.0
    served: set[str] = set()
    was_held = False
    try:
        while not stopped:
            try:
                ds = spec.parse(dict(body))
            except spec.SpecError:
                ds = None  # the reconciler reports it
            if ds is None or ds.broker is None or not ds.workers:
                await pause(stopped, poll_seconds)
                continue
            queues = sorted({queue for group in ds.workers for queue in group.queues})
            lengths = None
            try:
                if reader is None or time.monotonic() - secret_read_at > SECRET_REFRESH_SECONDS:
                    url, management = await asyncio.to_thread(
                        read_broker_secret, context.api, namespace, ds.broker.secret_name)
                    secret_read_at = time.monotonic()
                    source = (ds.broker.type, url, management)
                    if source != reader_source:
                        if reader is not None:
                            await reader.close()
                        reader, reader_source = reader_for(*source), source
                assert reader is not None
                lengths = await reader.read(queues)
            except (BrokerUnavailable, ValueError, ApiError) as error:
                if not was_held:
                    logger.warning("cannot read queue lengths (holding the last values): %s",
                                   error)
                was_held = True
            else:
                if was_held:
                    logger.info("queue lengths readable again")
                was_held = False
            hold.forget_except(group.name for group in ds.workers)
            current = set()
            for group in ds.workers:
                total = None if lengths is None else group_total(lengths, group.queues)
                reading = hold.update(group.name, total)
                key = f"{name}/{group.name}"
                if reading.total is None:
                    continue  # never read yet: serve nothing rather than a made-up zero
                pods = {pod.name: pod for pod in
                        worker_pods.get((namespace, name, worker_component(group)), [])}
                values = per_pod_values(reading.total, pods)
                store.put(namespace, key, [
                    PodValue(pod, dict(pods[pod].labels), value) for pod, value in values.items()])
                current.add(key)
            for key in served - current:
                store.drop(namespace, key)
            served = current
            await pause(stopped, poll_seconds)
    finally:
        for key in served:
            store.drop(namespace, key)
        if reader is not None:
            await reader.close()
