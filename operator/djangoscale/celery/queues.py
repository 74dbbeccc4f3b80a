"""Queue-length bookkeeping for the worker HPA, all pure: broker keys, per-pod values, hold-last.

The HPA scales a worker group on a Pods metric whose target is an average per pod. Serving each
of the group's pods `total / pods` (total = ready + unacknowledged messages of the group's
queues) makes that average the group's backlog per worker, so the HPA asks for
`ceil(total / targetQueueLengthPerWorker)` pods, whatever the current count.

Unacknowledged messages count: with acks late a message stays unacked while its task runs, so
ready alone would read a fully busy group with an empty queue as idle and scale it down.

A broker that cannot be read must not read as an empty queue (that would scale every group to
its minimum during a broker blip): the last good total is held, as the RPS collector holds its
last rates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

# kombu's Redis transport: a queue is a list per priority step, named queue + sep + step (the
# step 0 list is the bare queue name); messages being worked on sit in the `unacked` hash as
# JSON [message, exchange, routing_key].
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_UNACKED_KEY = "unacked"


@dataclass(frozen=True)
class QueueLength:
    ready: int
    unacked: int

    @property
    def total(self) -> int:
        return self.ready + self.unacked


def redis_queue_keys(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEP}{step}"
            for step in REDIS_PRIORITY_STEPS]


def redis_unacked_by_queue(values: Iterable[bytes | str], queues: Iterable[str]) -> dict[str, int]:
    """Count kombu's unacked entries per queue, by routing key (Celery routes a task to the
    queue of the same name unless told otherwise). Entries that do not parse are skipped."""
    counts = dict.fromkeys(queues, 0)
    for raw in values:
        try:
            entry = json.loads(raw)
            routing_key = entry[2]
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        if routing_key in counts:
            counts[routing_key] += 1
    return counts


def rabbitmq_vhost(broker_url: str) -> str:
    """The vhost of an AMQP URL as kombu reads it: `amqp://h//` and `amqp://h` are `/`."""
    path = urlsplit(broker_url).path
    vhost = unquote(path[1:]) if path.startswith("/") else unquote(path)
    return vhost or "/"


@dataclass(frozen=True)
class GroupReading:
    """One worker group's backlog this round; `held` when the broker could not be read."""

    total: int | None
    held: bool = False


def group_total(lengths: Mapping[str, QueueLength], queues: Iterable[str]) -> int:
    return sum(lengths[q].total for q in queues if q in lengths)


def per_pod_values(total: int, pods: Iterable[str]) -> dict[str, float]:
    """Each pod's share of the group's backlog: their average is total / pods."""
    names = sorted(set(pods))
    if not names:
        return {}
    share = total / len(names)
    return dict.fromkeys(names, share)


@dataclass
class HoldLast:
    """The last good total of each worker group, served while the broker cannot be read."""

    last: dict[str, int] = field(default_factory=dict)

    def update(self, group: str, total: int | None) -> GroupReading:
        if total is None:
            return GroupReading(self.last.get(group), held=True)
        self.last[group] = total
        return GroupReading(total)

    def forget_except(self, groups: Iterable[str]) -> None:
        keep = set(groups)
        for group in [g for g in self.last if g not in keep]:
            del self.last[group]
