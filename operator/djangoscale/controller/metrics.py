"""The operator's own Prometheus metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import Counter, Histogram

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
