"""kopf glue for queue-length autoscaling: a worker pod index and one polling loop over every
DjangoService with worker groups. The work is in `brokers` (reading) and `queues` (math).

Every few seconds the loop reads ready + unacknowledged messages of every group's queues from
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

from djangoscale import background, spec
from djangoscale.autoscaling.apiserver import PodValue
from djangoscale.background import ServiceKey
from djangoscale.builders.workers import (
    BROKER_MANAGEMENT_URL_KEY,
    BROKER_URL_KEY,
    worker_component,
)
from djangoscale.celery.brokers import BrokerUnavailable, QueueReader, reader_for
from djangoscale.celery.queues import HoldLast, QueueLength, group_total, per_pod_values
from djangoscale.context import OperatorContext, context_of
from djangoscale.contract import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    WORKER_COMPONENT_PREFIX,
)
from djangoscale.k8s import Api, ApiError

logger = logging.getLogger(__name__)
# The broker Secret is read again this often, so a rotated password is picked up.
SECRET_REFRESH_SECONDS: Final = 60.0


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


class QueuePoller:
    """One DjangoService's queue polling, kept across rounds: its broker reader (rebuilt when
    the Secret changes), the last good totals, and the metric keys it serves."""

    def __init__(self, context: OperatorContext, namespace: str, name: str) -> None:
        self.context, self.namespace, self.name = context, namespace, name
        self.hold = HoldLast()
        self.reader: QueueReader | None = None
        self.reader_source: tuple[str, str, str | None] | None = None
        self.secret_read_at = 0.0
        self.served: set[str] = set()
        self.was_held = False

    async def read(self, ds: spec.DjangoService,
                   queues: list[str]) -> dict[str, QueueLength] | None:
        assert ds.broker is not None
        try:
            if (self.reader is None
                    or time.monotonic() - self.secret_read_at > SECRET_REFRESH_SECONDS):
                url, management = await asyncio.to_thread(
                    read_broker_secret, self.context.api, self.namespace, ds.broker.secret_name)
                self.secret_read_at = time.monotonic()
                source = (ds.broker.type, url, management)
                if source != self.reader_source:
                    if self.reader is not None:
                        await self.reader.close()
                    self.reader, self.reader_source = reader_for(*source), source
            assert self.reader is not None
            lengths = await self.reader.read(queues)
        except (BrokerUnavailable, ValueError, ApiError) as error:
            if not self.was_held:
                logger.warning("%s/%s: cannot read queue lengths (holding the last values): "
                               "%s", self.namespace, self.name, error)
            self.was_held = True
            return None
        if self.was_held:
            logger.info("%s/%s: queue lengths readable again", self.namespace, self.name)
        self.was_held = False
        return lengths

    async def poll(self, ds: spec.DjangoService,
                   worker_pods: kopf.Index[Any, WorkerPod]) -> None:
        store, namespace, name = self.context.queue_lengths, self.namespace, self.name
        queues = sorted({queue for group in ds.workers for queue in group.queues})
        lengths = await self.read(ds, queues)
        self.hold.forget_except(group.name for group in ds.workers)
        current = set()
        for group in ds.workers:
            total = None if lengths is None else group_total(lengths, group.queues)
            reading = self.hold.update(group.name, total)
            key = f"{name}/{group.name}"
            if reading.total is None:
                continue  # never read yet: serve nothing rather than a made-up zero
            pods = {pod.name: pod for pod in
                    worker_pods.get((namespace, name, worker_component(group)), [])}
            values = per_pod_values(reading.total, pods)
            store.put(namespace, key, [
                PodValue(pod, dict(pods[pod].labels), value) for pod, value in values.items()])
            current.add(key)
        for key in self.served - current:
            store.drop(namespace, key)
        self.served = current

    async def close(self) -> None:
        for key in self.served:
            self.context.queue_lengths.drop(self.namespace, key)
        self.served = set()
        if self.reader is not None:
            await self.reader.close()
            self.reader = None


class QueuePolling:
    """One polling round over every DjangoService with worker groups and a broker."""

    def __init__(self, context: OperatorContext,
                 services: kopf.Index[ServiceKey, dict[str, Any]],
                 worker_pods: kopf.Index[Any, WorkerPod]) -> None:
        self.context, self.services, self.worker_pods = context, services, worker_pods
        self.pollers: dict[ServiceKey, QueuePoller] = {}
        self.parsed = spec.ParsedSpecs()

    async def round(self) -> None:
        polled: dict[ServiceKey, spec.DjangoService] = {}
        services = background.latest(self.services)
        self.parsed.retain(services)
        for key, body in services.items():
            try:
                ds = self.parsed.parse(body)
            except spec.SpecError:
                continue  # the reconciler reports it
            if ds.broker is not None and ds.workers:
                polled[key] = ds
        for key in set(self.pollers) - set(polled):
            await self.pollers.pop(key).close()
        for key in polled:
            self.pollers.setdefault(key, QueuePoller(self.context, *key))
        await background.each(
            polled.items(), lambda item: self.pollers[item[0]].poll(item[1], self.worker_pods),
            logger, "queue polling")

    async def close(self) -> None:
        for poller in self.pollers.values():
            await poller.close()
        self.pollers.clear()


@kopf.on.startup()
async def start_queue_polling(memo: object, djangoservices: kopf.Index[ServiceKey, Any],
                              worker_pods: kopf.Index[Any, WorkerPod], **_: Any) -> None:
    """One polling loop for all DjangoServices, every `queue_poll_seconds` (not a daemon per
    object: that would bring kopf's finalizer, see `djangoscale.background`)."""
    context = context_of(memo)
    polling = QueuePolling(context, djangoservices, worker_pods)

    async def poll_until_cancelled() -> None:
        try:
            await background.run_every(context.settings.queue_poll_seconds, polling.round,
                                       logger, "queue polling", active=context.active)
        finally:
            await polling.close()  # the broker connections

    context.start("queue-polling", poll_until_cancelled())
