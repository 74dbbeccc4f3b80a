"""The operator's own Prometheus metrics (shared by the controller and the autoscaling loops)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("djangoscale_operator_reconciles_total", "Reconciles of DjangoServices")
RECONCILE_ERRORS = Counter(
    "djangoscale_operator_reconcile_errors_total", "Reconciles that failed on an API error"
)
RECONCILE_SECONDS = Histogram(
    "djangoscale_operator_reconcile_duration_seconds", "Time to reconcile one DjangoService"
)
# Per DjangoService with pgbouncer: what the pods may hold, beside what they do hold (the
# launchers' djangoscale_pgbouncer_server_connections), for the dashboard.
DATABASE_BUDGET = Gauge(
    "djangoscale_operator_database_budget",
    "Server connections a DjangoService's pods may hold (maxConnections minus reserved)",
    ["namespace", "name"],
)
# Sharded collection (djangoscale/autoscaling/sharding.py): what each replica reads, so a user
# (and the real-node test) can see the standby take its share and give it back.
SHARD_PODS_READ = Counter(
    "djangoscale_operator_shard_pods_read_total",
    "Pods this replica read at the active replica's request (its share)",
)
SHARD_ASSIGNED_PODS = Gauge(
    "djangoscale_operator_shard_assigned_pods",
    "Pods each live replica is to read in the active replica's latest round",
    ["peer"],
)
SHARD_PODS_READ_FOR_PEER = Counter(
    "djangoscale_operator_shard_pods_read_for_peer_total",
    "Pods of a peer's share the active replica read itself, the peer not answering",
    ["peer"],
)
# How long the active replica's collection round takes: when it nears the 2 s interval, the
# replicas should share the reads (the chart's operator.shardPort; docs/scale.md).
COLLECTION_ROUND_SECONDS = Histogram(
    "djangoscale_operator_collection_round_seconds",
    "Time of one collection round over every DjangoService's pods (the active replica)",
    buckets=(0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
MANAGED_OBJECTS = Gauge(
    "djangoscale_operator_managed_objects", "DjangoServices this operator manages"
)


@contextlib.contextmanager
def reconcile_timer() -> Iterator[None]:
    RECONCILES.inc()
    with RECONCILE_SECONDS.time():
        yield


def managed(
    objects: set[tuple[str, str]], namespace: str, name: str, present: bool = True
) -> None:
    """Track one DjangoService as managed (or gone) in `objects` and update the gauge."""
    if present:
        objects.add((namespace, name))
    else:
        objects.discard((namespace, name))
    MANAGED_OBJECTS.set(len(objects))
