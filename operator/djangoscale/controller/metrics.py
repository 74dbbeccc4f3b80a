"""The operator's own Prometheus metrics."""

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


@contextlib.contextmanager
def reconcile_timer() -> Iterator[None]:
    RECONCILES.inc()
    with RECONCILE_SECONDS.time():
        yield

MANAGED_OBJECTS = Gauge(
    "djangoscale_operator_managed_objects", "DjangoServices this operator manages"
)
_managed: set[tuple[str, str]] = set()


def managed(namespace: str, name: str, present: bool = True) -> None:
    """Track one DjangoService as managed (or gone) and update the gauge."""
    if present:
        _managed.add((namespace, name))
    else:
        _managed.discard((namespace, name))
    MANAGED_OBJECTS.set(len(_managed))
