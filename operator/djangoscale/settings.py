"""The operator's settings: one typed object, read once from the environment and the flags.

Each setting keeps its environment variable beside its default (`ENV`), so the chart, the
tests and `djangoscale run --help` agree on one name. `djangoscale run` builds the object at
startup (`from_env`, then the flags given on its command line) and hands it to every handler
through kopf's memo (`djangoscale.context`); nothing reads the environment after that.

The launcher in the user's pod has its own settings (`djangoscale.serve.config`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final


@dataclass(frozen=True)
class OperatorSettings:
    # How often every DjangoService is reconciled again: repairs drift and picks up a rotated
    # database Secret (the operator may not watch Secrets: RBAC gives it `get`, never `list`).
    resync_seconds: float = 30.0
    # How often worker groups' queue lengths are read: RabbitMQ's management API refreshes
    # queue figures every 5 s by default.
    queue_poll_seconds: float = 5.0
    # The kubeconfig outside a pod (None: $KUBECONFIG's default, ~/.kube/config).
    kubeconfig: str | None = None
    # The custom.metrics.k8s.io server. Port 0 picks a free port (tests); -1 disables it.
    port: int = 6443
    bind: str | None = None  # None: the address of the operator's other endpoints (--bind)
    cert_file: Path | None = None  # with key_file: the chart's Secret; else generated at start
    key_file: Path | None = None
    # DNS names of the generated serving cert: the APIService's Service, as the aggregator
    # verifies `<service>.<namespace>.svc`.
    cert_dns_names: tuple[str, ...] = ("localhost",)
    scrape_interval: float = 2.0
    # Below the scrape interval, so one hung pod never delays the next round.
    scrape_timeout: float = 1.5
    # Sockets open at once while scraping (a thousand pods do not open a thousand sockets).
    scrape_concurrency: int = 64
    # The RPS windows and the burst rule are per DjangoService: `spec.autoscaling`.
    # DjangoServices that roll a pod template change they did not ask for (an operator
    # upgrade, a rotated database Secret) at a time; 0: all at once. `djangoscale.rollouts`.
    max_concurrent_rollouts: int = 1
    # The operator's own pod (the chart sets both from the downward API): the active peer
    # labels it so that the metrics API Service selects it. None outside a pod.
    pod_name: str | None = None
    pod_namespace: str | None = None
    # Where every replica reads the share of the pods the active peer sends it (plain HTTP,
    # `djangoscale.autoscaling.sharding`); -1, the default: the active peer reads every pod
    # itself (no cluster run covers sharding yet). Needs `key_file`: the exchange is signed.
    shard_port: int = -1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Defaults, replaced by the variables of `ENV` that are set."""
        env = os.environ if environ is None else environ
        given: dict[str, Any] = {}
        types = {item.name: item.type for item in fields(cls)}
        for name, variable in ENV.items():
            text = env.get(variable)
            if text:
                given[name] = _parse(types[name], text)
        return cls(**given)

    def with_overrides(self, **changes: object) -> OperatorSettings:
        """Only the values actually given (None means: keep)."""
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)


def _parse(annotation: object, text: str) -> object:
    kind = str(annotation)
    if kind == "float":
        return float(text)
    if kind == "int":
        return int(text)
    if kind.startswith("Path"):
        return Path(text)
    if kind.startswith("tuple"):
        return tuple(part for part in text.split(",") if part)
    return text


# setting -> environment variable
ENV: Final[dict[str, str]] = {
    "resync_seconds": "DJANGOSCALE_RESYNC_SECONDS",
    "queue_poll_seconds": "DJANGOSCALE_QUEUE_POLL_INTERVAL",
    "kubeconfig": "KUBECONFIG",
    "port": "DJANGOSCALE_METRICS_API_PORT",
    "bind": "DJANGOSCALE_METRICS_API_BIND",
    "cert_file": "DJANGOSCALE_METRICS_API_CERT_FILE",
    "key_file": "DJANGOSCALE_METRICS_API_KEY_FILE",
    "cert_dns_names": "DJANGOSCALE_METRICS_API_DNS_NAMES",
    "scrape_interval": "DJANGOSCALE_SCRAPE_INTERVAL",
    "scrape_timeout": "DJANGOSCALE_SCRAPE_TIMEOUT",
    "scrape_concurrency": "DJANGOSCALE_SCRAPE_CONCURRENCY",
    "max_concurrent_rollouts": "DJANGOSCALE_MAX_CONCURRENT_ROLLOUTS",
    "pod_name": "DJANGOSCALE_POD_NAME",
    "pod_namespace": "DJANGOSCALE_POD_NAMESPACE",
    "shard_port": "DJANGOSCALE_SHARD_PORT",
}
