"""A pod's figures as the operator's collector reads them, written once for both sides.

The launcher serves them two ways on its metrics port: the Prometheus text on `METRICS_PATH`
(for Prometheus and for people), and the same figures already summed, as one small JSON
object, on `FIGURES_PATH`. The collector reads the compact form: a few hundred bytes parsed by
the json module's C code, where the Prometheus text is a few kilobytes parsed in Python, a
cost the operator pays for every pod in every round (docs/scale.md measures both).

Both forms go through `pod_scrape_from_samples`, so they cannot disagree. An older launcher
answers any path with its Prometheus text: the collector tells the two apart by the answer's
content type, so it reads pods of both kinds during an upgrade without a second request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from djangoscale.contract import (
    CPU_SECONDS_NAME,
    PGBOUNCER_CLIENTS_WAITING,
    PGBOUNCER_MAX_WAIT,
    PGBOUNCER_SERVER_CONNECTIONS,
    PGBOUNCER_SERVERS_ACTIVE,
    REQUEST_DURATION_NAME,
    REQUEST_QUEUE_NAME,
    REQUESTS_COUNTER,
)

# The launcher's compact endpoint, and the content type that marks its answer.
FIGURES_PATH: Final = "/djangoscale/figures"
FIGURES_CONTENT_TYPE: Final = "application/json"

PGBOUNCER_FIGURES: Final = (PGBOUNCER_SERVER_CONNECTIONS, PGBOUNCER_MAX_WAIT,
                            PGBOUNCER_CLIENTS_WAITING, PGBOUNCER_SERVERS_ACTIVE)


@dataclass(frozen=True)
class PodScrape:
    """What one read of a pod's metrics port gives."""

    requests_total: float
    # Server connections its pgbouncer holds; None when the pod exports no figure (no
    # sidecar, or pgbouncer did not answer the launcher).
    server_connections: int | None = None
    # Seconds requests spent in the pod so far: in the app plus waiting for a thread.
    busy_seconds: float = 0.0
    # Seconds requests spent in the app (threads busy), and the serving processes' CPU time.
    app_seconds: float = 0.0
    cpu_seconds: float = 0.0
    # The queue-time histogram: upper bounds (the last +Inf) and cumulative counts; empty
    # when the server records no waits.
    queue_bounds: tuple[float, ...] = ()
    queue_counts: tuple[float, ...] = ()
    # pgbouncer: the longest a client has waited for a server connection, and how many wait.
    max_wait_seconds: float | None = None
    clients_waiting: int | None = None
    servers_active: int | None = None


def pod_scrape_from_samples(samples: Iterable[tuple[str, Mapping[str, str], float]]
                            ) -> PodScrape:
    """`djangoscale_requests_total` summed over its label sets, the time spent in the pod,
    the queue-time buckets and the pgbouncer figures, from (name, labels, value) samples.

    A labelled counter has no sample until its first request, so a pod that answered without
    one has served nothing yet: 0, not a failed read.
    """
    total = busy = app = cpu = 0.0
    buckets: dict[float, float] = {}
    pgbouncer: dict[str, float] = {}
    duration_sum, queue_sum = f"{REQUEST_DURATION_NAME}_sum", f"{REQUEST_QUEUE_NAME}_sum"
    cpu_total, queue_bucket = f"{CPU_SECONDS_NAME}_total", f"{REQUEST_QUEUE_NAME}_bucket"
    for name, labels, value in samples:
        if name == REQUESTS_COUNTER:
            total += value
        elif name == duration_sum:
            busy += value
            app += value
        elif name == queue_sum:
            busy += value
        elif name == cpu_total:
            cpu += value
        elif name == queue_bucket:
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif name in PGBOUNCER_FIGURES:
            pgbouncer[name] = value
    bounds = tuple(sorted(buckets))

    def figure(name: str) -> int | None:
        return int(pgbouncer[name]) if name in pgbouncer else None

    return PodScrape(
        total, figure(PGBOUNCER_SERVER_CONNECTIONS), busy_seconds=busy, app_seconds=app,
        cpu_seconds=cpu, queue_bounds=bounds, queue_counts=tuple(buckets[b] for b in bounds),
        max_wait_seconds=pgbouncer.get(PGBOUNCER_MAX_WAIT),
        clients_waiting=figure(PGBOUNCER_CLIENTS_WAITING),
        servers_active=figure(PGBOUNCER_SERVERS_ACTIVE),
    )


_FIELDS: Final = tuple(f.name for f in fields(PodScrape))


def figures_dict(scrape: PodScrape) -> dict[str, Any]:
    """The PodScrape's fields by name (what `dataclasses.asdict` gives, without its deep copy:
    this runs for every pod in every round)."""
    return {name: getattr(scrape, name) for name in _FIELDS}


def encode_figures(scrape: PodScrape) -> bytes:
    """The compact form: the PodScrape's fields as a JSON object (+Inf as `Infinity`)."""
    return json.dumps(figures_dict(scrape), separators=(",", ":")).encode()


def decode_figures(payload: bytes | str) -> PodScrape:
    """The PodScrape `encode_figures` wrote; ValueError naming what is wrong otherwise."""
    return figures_from_dict(json.loads(payload))


def figures_from_dict(data: Any) -> PodScrape:
    """The PodScrape of a `figures_dict` read back from JSON; ValueError naming what is
    wrong."""
    if not isinstance(data, dict) or "requests_total" not in data:
        raise ValueError("pod figures: not an object with requests_total")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ValueError(f"pod figures: unknown fields {sorted(unknown)}")
    data = dict(data)
    try:
        data["queue_bounds"] = tuple(float(b) for b in data.get("queue_bounds") or ())
        data["queue_counts"] = tuple(float(c) for c in data.get("queue_counts") or ())
        if len(data["queue_bounds"]) != len(data["queue_counts"]):
            raise ValueError("pod figures: queue_bounds and queue_counts differ in length")
        return PodScrape(**data)
    except TypeError as error:
        raise ValueError(f"pod figures: {error}") from error
