"""`djangoscale serve` end to end: every server type, the sample project, real PostgreSQL
behind real pgbouncer. Each test is bounded to seconds; none asserts a throughput."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from djangoscale.serve.config import SERVER_TYPES, ServeConfig
from tests.fixtures.launcher import Response, get, metric_sum, serve
from tests.fixtures import services
from tests.fixtures.services import PeakSampler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKERS, THREADS = 2, 4
CLIENTS = 50


def concurrency_of(server: str) -> int:
    """Requests the launcher may run at once with WORKERS x THREADS."""
    return ServeConfig("x:y", server=server, workers=WORKERS, threads=THREADS,
                       max_threads=THREADS).max_concurrency


def fire(host: str, port: int, paths: list[str], clients: int, timeout: float = 30) -> list[Response]:
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda p: get(host, port, p, timeout), paths))


@pytest.fixture
def own_pgbouncer(postgres_server, pgbouncer_server, pgbouncer_factory):
    """A pgbouncer of this test's own, so no earlier test's pooled connections are counted.

    (`pgbouncer_server` is asked for only so the sample project is migrated.)
    """
    config = services.pgbouncer_config_for(postgres_server, pool_size=40)
    with pgbouncer_factory(config, services.pgbouncer_auth_for()) as bouncer:
        yield bouncer


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_views_metrics_and_bounded_connections(server, own_pgbouncer, postgres_server, tmp_path):
    with serve(server, own_pgbouncer.database_env(), tmp_path,
               workers=WORKERS, threads=THREADS, queue_size=300) as served:
        items = json.loads(served.get("/items/").body)
        assert items["count"] == 10 and items["items"][0]["name"] == "item-1"
        slow = served.get("/slow/")
        assert slow.status == 200 and slow.seconds >= 0.05
        assert json.loads(served.get("/hello/").body) == {"hello": "world"}
        assert served.get("/readyz").status == 200
        assert served.get("/no-such-page/").status == 404

        # The session's shared pgbouncer keeps idle server connections: count only ours.
        baseline = postgres_server.server_connections()
        sampler = PeakSampler(postgres_server)
        sampler.start()
        paths = ["/slow/"] * 150 + ["/items/"] * 25 + ["/hello/"] * 25
        # 50 clients: at 200 (the figure) several servers time out on this 2-core
        # machine (see docs/benchmarks.md, open problem) and the test would only show that.
        responses = fire(served.host, served.port, paths, clients=CLIENTS)
        peak = sampler.stop()
        assert [r.status for r in responses].count(200) == len(paths)

        # Every request counted once, health probes and /metrics not at all.
        sent = 4 + len(paths)  # items, slow, hello, the 404, then the load; /readyz excluded
        samples = served.metrics()
        assert metric_sum(samples, "djangoscale_requests_total") == sent
        assert samples['djangoscale_requests_total{method="GET",status_class="4xx"}'] == 1
        assert metric_sum(samples, "djangoscale_request_duration_seconds_count") == sent
        assert samples["djangoscale_requests_in_flight"] == 0
        time.sleep(0.5)  # gauges published by the pool supervisor every 0.1 s
        assert served.metrics().get("djangoscale_queue_depth", 0) == 0
        assert sampler.samples > 5
        ours = peak - baseline
        assert 0 < ours <= concurrency_of(server), f"peak server connections {ours}"


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_sigterm_finishes_in_flight_and_refuses_new(server, pgbouncer_server, tmp_path):
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=WORKERS, threads=THREADS, timeout=10) as served:
        result: list[Response] = []
        in_flight = threading.Thread(target=lambda: result.append(served.get("/sleep/?s=1.5")))
        in_flight.start()
        time.sleep(0.4)
        served.terminate()
        time.sleep(0.3)
        assert not _new_request_succeeds(served.host, served.port)
        in_flight.join(10)
        assert result and result[0].status == 200, served.log()[-2000:]
        assert json.loads(result[0].body) == {"slept": 1.5}
        assert served.process.wait(15) == 0, served.log()[-2000:]


def _new_request_succeeds(host: str, port: int) -> bool:
    try:
        return get(host, port, "/hello/", timeout=3).status == 200
    except (OSError, http.client.HTTPException):
        return False


def test_cherrypy_pool_grows_under_load_and_shrinks_back(pgbouncer_server, tmp_path):
    with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=2, max_threads=10, queue_size=50) as served:
        assert served.metrics()["djangoscale_threads_total"] == 2
        started = time.monotonic()
        responses = fire(served.host, served.port, ["/sleep/?s=1"] * 10, clients=10)
        elapsed = time.monotonic() - started
        assert all(r.status == 200 for r in responses)
        # 10 one-second requests on 2 fixed threads would take 5 s.
        assert elapsed < 3.5, f"pool did not grow: {elapsed:.1f}s"
        assert served.metrics()["djangoscale_threads_total"] > 2
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and served.metrics()["djangoscale_threads_total"] > 2:
            time.sleep(0.25)
        assert served.metrics()["djangoscale_threads_total"] == 2


def test_cherrypy_full_queue_answers_503_at_once(pgbouncer_server, tmp_path):
    with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=1, max_threads=1, queue_size=1) as served:
        busy = threading.Thread(target=lambda: served.get("/sleep/?s=2"))
        busy.start()
        time.sleep(0.3)
        responses = fire(served.host, served.port, ["/hello/"] * 6, clients=6, timeout=10)
        busy.join(10)
        rejected = [r for r in responses if r.status == 503]
        assert rejected, [r.status for r in responses]
        assert max(r.seconds for r in rejected) < 1.0
