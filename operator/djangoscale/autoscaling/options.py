"""Settings of metrics collection and of the metrics API server, in one place.

Defaults come from the environment (so `kopf run -m djangoscale.controller` works, and the
chart can set them), and `djangoscale run` overrides them from its flags before kopf starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class AutoscalingOptions:
    # The custom.metrics.k8s.io server. Port 0 picks a free port (tests); -1 disables it.
    port: int = 6443
    bind: str = "0.0.0.0"
    cert_file: Path | None = None  # with key_file: the chart's Secret; else generated at start
    key_file: Path | None = None
    # DNS names of the generated serving cert: the APIService's Service, as the aggregator
    # verifies `<service>.<namespace>.svc`.
    cert_dns_names: tuple[str, ...] = ("localhost",)
    scrape_interval: float = 2.0
    scrape_timeout: float = 1.5
    scrape_concurrency: int = 64
    stable_window: float = 60.0
    panic_window: float = 6.0
    # Knative's 2x: below it a moderate step waits for the stable window (see
    # bench/bench_metrics_latency.py); lower reacts faster, and to noise too.
    panic_threshold: float = 2.0

    @classmethod
    def from_env(cls) -> AutoscalingOptions:
        defaults = cls()
        cert = os.environ.get("DJANGOSCALE_METRICS_API_CERT_FILE")
        key = os.environ.get("DJANGOSCALE_METRICS_API_KEY_FILE")
        names = os.environ.get("DJANGOSCALE_METRICS_API_DNS_NAMES")
        return cls(
            port=int(os.environ.get("DJANGOSCALE_METRICS_API_PORT", defaults.port)),
            bind=os.environ.get("DJANGOSCALE_METRICS_API_BIND", defaults.bind),
            cert_file=Path(cert) if cert else None,
            key_file=Path(key) if key else None,
            cert_dns_names=tuple(names.split(",")) if names else defaults.cert_dns_names,
            scrape_interval=_env_float("DJANGOSCALE_SCRAPE_INTERVAL", defaults.scrape_interval),
            scrape_timeout=_env_float("DJANGOSCALE_SCRAPE_TIMEOUT", defaults.scrape_timeout),
            scrape_concurrency=int(
                os.environ.get("DJANGOSCALE_SCRAPE_CONCURRENCY", defaults.scrape_concurrency)),
            stable_window=_env_float("DJANGOSCALE_STABLE_WINDOW", defaults.stable_window),
            panic_window=_env_float("DJANGOSCALE_PANIC_WINDOW", defaults.panic_window),
            panic_threshold=_env_float("DJANGOSCALE_PANIC_THRESHOLD", defaults.panic_threshold),
        )

    def with_overrides(self, **changes: object) -> AutoscalingOptions:
        """Only the values actually given (None means: keep)."""
        given: dict[str, Any] = {k: v for k, v in changes.items() if v is not None}
        return replace(self, **given)


# Read at import; `djangoscale run` may replace it (see controller/cli.py) before kopf starts.
OPTIONS = AutoscalingOptions.from_env()


def configure(**changes: object) -> AutoscalingOptions:
    global OPTIONS
    OPTIONS = OPTIONS.with_overrides(**changes)
    return OPTIONS
