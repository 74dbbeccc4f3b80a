"""The launcher's compact figures: the same PodScrape as its Prometheus text, served over one
kept-alive connection, and refused with a clear error when malformed."""

from __future__ import annotations

import http.client
import json
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from djangoscale.autoscaling.collector import parse_pod_metrics
from djangoscale.contract import METRICS_PATH, PGBOUNCER_MAX_WAIT, PGBOUNCER_SERVER_CONNECTIONS
from djangoscale.pod_figures import (
    FIGURES_CONTENT_TYPE,
    FIGURES_PATH,
    PodScrape,
    decode_figures,
    encode_figures,
)
from djangoscale.serve.metrics import Metrics, pod_figures_of, start_metrics_server


class PgBouncerFigures:
    """Stands in for the launcher's SHOW POOLS collector (what it yields, not how it reads)."""

    def collect(self) -> Any:
        yield GaugeMetricFamily(PGBOUNCER_SERVER_CONNECTIONS, "", value=7)
        yield GaugeMetricFamily(PGBOUNCER_MAX_WAIT, "", value=0.25)


def served_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = Metrics(registry=registry)
    registry.register(PgBouncerFigures())
    for i, waited in enumerate((0.0, 0.01, 0.3, None)):
        metrics.request_started()
        metrics.request_finished("GET" if i else "POST", "200 OK" if i else "500", 0.05, waited)
    return registry


def test_the_compact_figures_are_what_the_prometheus_text_gives():
    registry = served_registry()
    compact = decode_figures(pod_figures_of(registry))
    text = parse_pod_metrics(generate_latest(registry).decode())
    # CPU seconds grow between the two reads (each flushes the process's time): all else equal.
    assert 0 < compact.cpu_seconds <= text.cpu_seconds
    assert replace(compact, cpu_seconds=0) == replace(text, cpu_seconds=0)
    assert compact.requests_total == 4
    assert compact.server_connections == 7
    assert compact.max_wait_seconds == 0.25
    assert compact.queue_bounds[-1] == float("inf")
    assert compact.queue_counts[-1] == 3
    # A few hundred bytes where the text is kilobytes: what the collector reads per pod.
    assert len(pod_figures_of(registry)) * 5 < len(generate_latest(registry))


@pytest.mark.parametrize(("payload", "says"), [
    (b"[1, 2]", "requests_total"),
    (b'{"busy_seconds": 1}', "requests_total"),
    (b'{"requests_total": 1, "rps": 3}', "unknown fields ['rps']"),
    (b'{"requests_total": 1, "queue_bounds": [1], "queue_counts": []}', "queue_bounds"),
    (b'{"requests_total": 1, "queue_bounds": "ab"}', "could not convert"),
    (b"not json", "Expecting value"),
])
def test_malformed_figures_are_refused_naming_the_field(payload, says):
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("]", r"\]")):
        decode_figures(payload)


def test_figures_round_trip_without_pgbouncer():
    scrape = PodScrape(12.0, busy_seconds=1.5, queue_bounds=(0.1, float("inf")),
                       queue_counts=(1.0, 2.0))
    assert decode_figures(encode_figures(scrape)) == scrape
    assert json.loads(encode_figures(scrape))["server_connections"] is None


def test_the_launcher_serves_both_forms_over_one_kept_alive_connection(tmp_path):
    server = start_metrics_server("127.0.0.1", 0, str(tmp_path), PgBouncerFigures())
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        connection.request("GET", FIGURES_PATH)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == FIGURES_CONTENT_TYPE
        compact = decode_figures(response.read())
        first_socket = connection.sock
        connection.request("GET", METRICS_PATH)
        response = connection.getresponse()
        assert response.getheader("Content-Type", "").startswith("text/plain")
        text = parse_pod_metrics(response.read().decode())
        assert connection.sock is first_socket  # HTTP/1.1: the same connection served both
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert compact == text
    assert compact.server_connections == 7
