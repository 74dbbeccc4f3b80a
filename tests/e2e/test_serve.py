"""`djangoscale serve` end to end: every server type, the sample project, real PostgreSQL
behind real pgbouncer. Each test is bounded to seconds; none asserts a throughput."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from djangoscale.contract import QUEUE_TIME_SERVERS
from djangoscale.pod_figures import FIGURES_PATH, decode_figures
from djangoscale.serve.config import SERVER_TYPES, ServeConfig
from djangoscale.serve.metrics import FLUSH_INTERVAL
from tests.fixtures import services
from tests.fixtures.launcher import (
    REPO,
    SAMPLEAPP,
    Response,
    Served,
    accepted_connections,
    children_of,
    get,
    metric_sum,
    plain_gunicorn,
    serve,
)
from tests.fixtures.polling import wait_for
from tests.fixtures.services import PeakSampler

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

WORKERS, THREADS = 2, 4
CLIENTS = 200  # the figure: 200 concurrent clients against every server type


def concurrency_of(server: str) -> int:
    """Requests the launcher may run at once with WORKERS x THREADS."""
    return ServeConfig("x:y", server=server, workers=WORKERS, threads=THREADS,
                       max_threads=THREADS).max_concurrency


def fire(host: str, port: int, paths: list[str], clients: int,
         timeout: float = 30) -> list[Response]:
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda p: get(host, port, p, timeout), paths))


def fire_at_once(host: str, port: int, path: str, clients: int,
                 timeout: float = 30) -> tuple[list[threading.Thread], list[object]]:
    """`clients` threads, each one request, released together; results are a Response or
    the exception the request ended with. Returns the (started) threads and the results."""
    results: list[object] = [None] * clients
    barrier = threading.Barrier(clients)

    def one(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = get(host, port, path, timeout)
        except (OSError, http.client.HTTPException) as error:
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    return threads, results


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
        # 200 clients, each with one request in flight at once (most wait in the listen
        # backlog or the accepted queue: the server runs WORKERS x THREADS at a time).
        paths = ["/slow/"] * 150 + ["/items/"] * 25 + ["/hello/"] * 25
        assert len(paths) == CLIENTS
        responses = fire(served.host, served.port, paths, clients=CLIENTS)
        peak = sampler.stop()
        assert [r.status for r in responses].count(200) == len(paths)

        # Every request counted once, health probes and /metrics not at all.
        sent = 4 + len(paths)  # items, slow, hello, the 404, then the load; /readyz excluded
        samples = served.metrics_until(lambda s: (
            metric_sum(s, "djangoscale_requests_total") >= sent
            and metric_sum(s, "djangoscale_request_duration_seconds_count") >= sent
            and s.get("djangoscale_requests_in_flight") == 0))
        assert metric_sum(samples, "djangoscale_requests_total") == sent
        assert samples['djangoscale_requests_total{method="GET",status_class="4xx"}'] == 1
        assert metric_sum(samples, "djangoscale_request_duration_seconds_count") == sent
        assert samples["djangoscale_requests_in_flight"] == 0
        # What the operator reads from the same launcher: the compact figures, the same sums.
        figures = decode_figures(get(served.host, served.metrics_port, FIGURES_PATH).body)
        assert figures.requests_total == sent
        assert figures.app_seconds == pytest.approx(
            metric_sum(samples, "djangoscale_request_duration_seconds_sum"))
        time.sleep(0.5)  # gauges published by the pool supervisor every 0.1 s
        assert served.metrics().get("djangoscale_queue_depth", 0) == 0
        assert sampler.samples > 5
        ours = peak - baseline
        assert 0 < ours <= concurrency_of(server), f"peak server connections {ours}"


# The in-flight request outlasts the time a server has to refuse new ones: a request that
# is accepted into the backlog and never served takes its whole client timeout to fail, so
# three failures in a row take 3 s at least, and a loaded machine delays the signal handling.
IN_FLIGHT_SECONDS = 10  # the sample view sleeps 10 s at most
REFUSES_WITHIN_SECONDS = 7


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_sigterm_finishes_in_flight_and_refuses_new(server, pgbouncer_server, tmp_path):
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=WORKERS, threads=THREADS, timeout=IN_FLIGHT_SECONDS + 10) as served:
        result: list[Response] = []
        in_flight = threading.Thread(
            target=lambda: result.append(served.get(f"/sleep/?s={IN_FLIGHT_SECONDS}",
                                                timeout=IN_FLIGHT_SECONDS + 10)))
        in_flight.start()
        _wait_in_flight(served, 1)
        served.terminate()
        # New requests are refused while the accepted one is still running. Polled, not a
        # fixed wait: every process of the server must have run its signal handler first (an
        # idle bjoern process runs Python, and so its handler, only when a request comes).
        assert _refuses_new_requests(served.host, served.port, within=REFUSES_WITHIN_SECONDS)
        assert in_flight.is_alive()
        in_flight.join(IN_FLIGHT_SECONDS + 5)
        assert result and result[0].status == 200, served.log()[-2000:]
        assert json.loads(result[0].body) == {"slept": IN_FLIGHT_SECONDS}
        assert served.process.wait(15) == 0, served.log()[-2000:]


SLOWSTART = Path(__file__).resolve().parents[1] / "fixtures" / "slowstart"


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_sigterm_while_a_worker_still_loads_the_app_serves_nothing_new(
    server, pgbouncer_server, tmp_path
):
    """SIGTERM once the first worker answers and before the second has loaded the app: the
    late worker must not start taking requests after the signal (it would until killed at
    the timeout, a draining pod still serving)."""
    env = {"SLOW_START_MARKER": str(tmp_path / "first-worker-loaded"),
           "SLOW_START_SECONDS": "4",
           "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(SAMPLEAPP),
                                          str(SLOWSTART)])}
    with serve(server, pgbouncer_server.database_env(), tmp_path, env=env,
               app="slow_second_worker:application", workers=WORKERS, threads=THREADS,
               timeout=10) as served:
        served.terminate()
        assert _refuses_new_requests(served.host, served.port, within=4), served.log()[-2000:]
        # Until the server is gone (past the late worker's load), nothing new is served.
        while served.process.poll() is None:
            assert not _new_request_succeeds(served.host, served.port, timeout=0.5), (
                served.log()[-2000:])
            time.sleep(0.1)
        assert served.process.wait(15) == 0, served.log()[-2000:]


def _wait_in_flight(served: Served, count: int) -> None:
    """Until the launcher's in-flight gauge shows `count` requests inside the app (published
    every FLUSH_INTERVAL s): a signal sent then finds them accepted, however busy the machine."""
    samples = served.metrics_until(
        lambda s: s.get("djangoscale_requests_in_flight", 0) >= count, timeout=15)
    assert samples.get("djangoscale_requests_in_flight", 0) >= count, samples


def _refuses_new_requests(host: str, port: int, within: float) -> bool:
    """True once three requests in a row fail, polling for `within` seconds."""
    deadline, failed_in_a_row = time.monotonic() + within, 0
    while time.monotonic() < deadline:
        failed_in_a_row = 0 if _new_request_succeeds(host, port, timeout=1) else failed_in_a_row + 1
        if failed_in_a_row == 3:
            return True
        time.sleep(0.05)
    return False


def _new_request_succeeds(host: str, port: int, timeout: float = 3) -> bool:
    try:
        return get(host, port, "/hello/", timeout=timeout).status == 200
    except (OSError, http.client.HTTPException):
        return False


def _refuses_connections(host: str, port: int, within: float) -> bool:
    """True once a TCP connect is refused (the listener is closed), polling for `within` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def test_cherrypy_pool_grows_under_load_and_shrinks_back(pgbouncer_server, tmp_path):
    with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=2, max_threads=10, queue_size=50) as served:
        assert served.metrics()["djangoscale_threads_total"] == 2
        started = time.monotonic()
        responses = fire(served.host, served.port, ["/sleep/?s=1"] * 10, clients=10)
        elapsed = time.monotonic() - started
        assert all(r.status == 200 for r in responses)
        # 10 one-second requests on 2 fixed threads cannot take less than 5 s: anything less
        # means more than 2 ran at once (a slow machine only makes this harder to pass).
        assert elapsed < 5.0, f"pool did not grow: {elapsed:.1f}s"
        assert served.metrics()["djangoscale_threads_total"] > 2
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and served.metrics()["djangoscale_threads_total"] > 2:
            time.sleep(0.25)
        assert served.metrics()["djangoscale_threads_total"] == 2


def test_cherrypy_full_queue_answers_503_at_once(pgbouncer_server, tmp_path):
    with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=1, max_threads=1, queue_size=1) as served:
        busy_done: list[float] = []

        def occupy_the_only_thread() -> None:
            served.get("/sleep/?s=3")
            busy_done.append(time.monotonic())

        busy = threading.Thread(target=occupy_the_only_thread)
        busy.start()
        _wait_in_flight(served, 1)
        sent = time.monotonic()
        responses = fire(served.host, served.port, ["/hello/"] * 6, clients=6, timeout=10)
        busy.join(10)
        rejected = [r for r in responses if r.status == 503]
        assert rejected, [r.status for r in responses]
        # "At once": each 503 came back while the only thread was still busy, i.e. it did not
        # wait for a slot (a relation, not a wall-clock bound a slow machine could break).
        assert busy_done and all(sent + r.seconds < busy_done[0] for r in rejected)


# SIGTERM under load: enough slots that 100 requests are all accepted and in flight (one
# request per process for gunicorn-sync and bjoern: there most of the 100 wait in the
# kernel's listen backlog, never accepted, and are reset when the listener closes).
LOAD_CLIENTS = 100


def _load_flags(server: str) -> dict[str, object]:
    return {"workers": WORKERS, "threads": LOAD_CLIENTS // WORKERS, "queue_size": 300}


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_sigterm_under_load_loses_no_accepted_request(server, pgbouncer_server, tmp_path):
    flags = _load_flags(server)
    with serve(server, pgbouncer_server.database_env(), tmp_path, timeout=15, **flags) as served:
        capacity = ServeConfig("x:y", server=server, workers=int(flags.get("workers", 1)),
                               threads=int(flags["threads"]),
                               max_threads=int(flags["threads"])).max_concurrency
        expected = min(LOAD_CLIENTS, capacity)
        threads, results = fire_at_once(served.host, served.port, "/sleep/?s=2", LOAD_CLIENTS)
        # SIGTERM once the server has taken what it will take: all it can run, or a count
        # that has stopped rising (gunicorn-gthread lets one worker accept every connection
        # and queue the excess in its own thread pool: accepted, not yet in the app).
        # The gauge is published every FLUSH_INTERVAL s: "stopped rising" means unchanged
        # for longer than two of those.
        deadline = time.monotonic() + 10
        in_flight, seen, changed_at = 0, [], time.monotonic()
        while time.monotonic() < deadline:
            in_flight = int(served.metrics().get("djangoscale_requests_in_flight", 0))
            if not seen or seen[-1] != in_flight:
                changed_at = time.monotonic()
            seen.append(in_flight)
            steady = time.monotonic() - changed_at >= 2 * FLUSH_INTERVAL + 0.1
            if in_flight >= expected or (in_flight > 0 and steady):
                break
            time.sleep(0.05)
        assert in_flight > 0, f"nothing in flight: {seen}\n{served.log()[-2000:]}"
        served.terminate()
        assert _refuses_connections(served.host, served.port, within=3.0)
        assert not _new_request_succeeds(served.host, served.port)
        for thread in threads:
            thread.join(20)
        assert served.process.wait(20) == 0, served.log()[-2000:]

    ok = [r for r in results if isinstance(r, Response) and r.status == 200]
    other_status = [r.status for r in results if isinstance(r, Response) and r.status != 200]
    failed = [r for r in results if not isinstance(r, Response)]
    # Every request the server had accepted when SIGTERM came completes with 200 ...
    assert len(ok) >= in_flight, (len(ok), in_flight, failed[:3], served.log()[-2000:])
    assert all(json.loads(r.body) == {"slept": 2.0} for r in ok)
    # ... no request gets an error answer or hangs: the only failures are connections the
    # server never accepted (still in the listen backlog), reset when the listener closed.
    assert not other_status, other_status
    assert not [e for e in failed if isinstance(e, (socket.timeout, TimeoutError))], failed[:3]
    if capacity >= LOAD_CLIENTS:
        assert len(ok) == LOAD_CLIENTS, (len(ok), failed[:3])


@pytest.mark.parametrize("server", SERVER_TYPES)
def test_sigterm_counts_the_last_requests_before_exit(server, pgbouncer_server, tmp_path):
    """Request metrics are buffered per process and flushed periodically; a process that
    exits flushes first, so the requests it finished while draining are still counted."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    from tests.fixtures.launcher import parse_metrics

    metrics_dir = tmp_path / "metrics"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "DJANGOSCALE_METRICS_FLUSH_INTERVAL": "600"}  # no periodic flush in this test
    with serve(server, pgbouncer_server.database_env(), tmp_path, env=env,
               workers=WORKERS, threads=THREADS, timeout=10) as served:
        for _ in range(3):
            assert served.get("/hello/").status == 200
        result: list[Response] = []
        in_flight = threading.Thread(target=lambda: result.append(served.get("/sleep/?s=2")))
        in_flight.start()
        # Accepted by a worker (periodic flushes are off here, so the in-flight gauge of a
        # worker process is not published: the socket in the server's hands is the sign).
        wait_for("the request accepted by the server",
                 lambda: accepted_connections(served.process.pid, served.port) >= 1,
                 timeout=10, interval=0.02)
        served.terminate()
        in_flight.join(10)
        assert result and result[0].status == 200
        assert served.process.wait(15) == 0, served.log()[-2000:]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    samples = parse_metrics(generate_latest(registry).decode())
    assert metric_sum(samples, "djangoscale_requests_total") == 4, served.log()[-2000:]
    assert metric_sum(samples, "djangoscale_request_duration_seconds_count") == 4


# The gevent leak from the story, shown against a direct PostgreSQL connection (no pooler
# to hide it) and a database of the test's own, so only these servers' connections count.
SPAWN_REQUESTS, SPAWN_CLIENTS = 40, 10


@pytest.fixture
def leak_database(postgres_server, pgbouncer_server):
    """A fresh database for /spawn-query/ (it runs no table query, so needs no migration)."""
    name = f"leak_{int(time.time() * 1000) % 10**9}"
    postgres_server.execute(f"CREATE DATABASE {name} OWNER {services.APP_USER}")
    env = {
        "DATABASE_HOST": postgres_server.host,
        "DATABASE_PORT": str(postgres_server.port),
        "DATABASE_NAME": name,
        "DATABASE_USER": services.APP_USER,
        "DATABASE_PASSWORD": services.APP_PASSWORD,
    }
    yield name, env
    postgres_server.execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    )
    postgres_server.execute(f"DROP DATABASE IF EXISTS {name}")


def _spawn_queries(served) -> list[Response]:
    responses = fire(served.host, served.port, ["/spawn-query/"] * SPAWN_REQUESTS, SPAWN_CLIENTS)
    assert all(r.status == 200 for r in responses), [r.status for r in responses]
    # The view really ran its query in a greenlet it spawned itself.
    assert all(json.loads(r.body)["greenlet"] is True for r in responses)
    return responses


def _settled_connections(pg, dbname: str, seconds: float = 1.5) -> int:
    time.sleep(seconds)
    return pg.server_connections(dbname)


def test_gevent_naive_setup_leaks_connections_launcher_does_not(
        leak_database, postgres_server, tmp_path):
    dbname, env = leak_database

    # Naive: plain `gunicorn -k gevent`, no launcher. Each hand-spawned greenlet's
    # connection never sees request_finished and stays open after the response, until the
    # garbage collector happens to find it (a second batch once found 17 of 38 still open,
    # so how many stay is the collector's timing, not a count to assert).
    with plain_gunicorn("gevent", env, tmp_path, "--workers", "1",
                        "--worker-connections", "50") as naive:
        assert postgres_server.server_connections(dbname) == 0
        _spawn_queries(naive)
        leaked = _settled_connections(postgres_server, dbname)
        assert leaked >= SPAWN_REQUESTS // 2, f"naive gevent kept only {leaked} connections"
    time.sleep(0.5)
    assert postgres_server.server_connections(dbname) == 0  # freed only by the process exit

    # The launcher, same worker class and greenlets: every greenlet closes its connection,
    # even when the settings ask Django to keep connections (CONN_MAX_AGE=60).
    with serve("gunicorn-gevent", {**env, "DATABASE_CONN_MAX_AGE": "60"}, tmp_path,
               workers=1, threads=50) as served:
        sampler = PeakSampler(postgres_server, dbname=dbname)
        sampler.start()
        _spawn_queries(served)
        _spawn_queries(served)
        peak = sampler.stop()
        assert _settled_connections(postgres_server, dbname) == 0
        # At most one request connection plus one greenlet connection per client at a time.
        assert peak <= 2 * SPAWN_CLIENTS, peak


def _backend_pids(responses: list[Response]) -> set[int]:
    assert all(r.status == 200 for r in responses), [r.status for r in responses]
    return {json.loads(r.body)["backend_pid"] for r in responses}


@pytest.mark.parametrize("server", ["gunicorn-gthread", "granian", "waitress"])
def test_persistent_connections_stay_one_per_thread(server, leak_database, postgres_server,
                                                    tmp_path):
    """CONN_MAX_AGE=60, straight to PostgreSQL: each thread keeps and reuses one connection,
    so 200 clients never get more than workers x threads of them."""
    dbname, env = leak_database
    with serve(server, {**env, "DATABASE_CONN_MAX_AGE": "60"}, tmp_path,
               workers=WORKERS, threads=THREADS, queue_size=300) as served:
        bound = concurrency_of(server)
        sampler = PeakSampler(postgres_server, dbname=dbname)
        sampler.start()
        first = _backend_pids(fire(served.host, served.port, ["/slow/"] * CLIENTS, CLIENTS))
        second = _backend_pids(fire(served.host, served.port, ["/slow/"] * CLIENTS, CLIENTS))
        peak = sampler.stop()
        assert peak <= bound and len(first | second) <= bound, (peak, first | second)
        # Kept and reused: the second round ran on connections the first one opened.
        assert first & second
        assert 0 < _settled_connections(postgres_server, dbname, 0.5) <= bound
    time.sleep(0.5)
    assert postgres_server.server_connections(dbname) == 0


def test_cherrypy_threads_close_kept_connections_when_the_pool_shrinks(
        leak_database, postgres_server, tmp_path):
    dbname, env = leak_database
    with serve("cherrypy", {**env, "DATABASE_CONN_MAX_AGE": "60"}, tmp_path,
               workers=1, threads=2, max_threads=10, queue_size=50) as served:
        # 10 clients on 2 threads: the accepted queue backs up and the pool grows.
        responses = fire(served.host, served.port, ["/slow/"] * 100, clients=10)
        grown = len(_backend_pids(responses))
        assert served.metrics()["djangoscale_threads_total"] > 2
        assert 2 < grown <= 10
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and served.metrics()["djangoscale_threads_total"] > 2:
            time.sleep(0.25)
        assert served.metrics()["djangoscale_threads_total"] == 2
        # The threads that left closed theirs; the two that stay may keep one each.
        assert _settled_connections(postgres_server, dbname, 0.5) <= 2


def test_gevent_closes_kept_connections_while_clients_keep_alive(
        leak_database, postgres_server, tmp_path):
    """A greenlet lives as long as its client's keep-alive connection: with CONN_MAX_AGE=60
    each idle client would hold a database connection, so the launcher closes every
    request's connections under gevent."""
    dbname, env = leak_database
    with serve("gunicorn-gevent", {**env, "DATABASE_CONN_MAX_AGE": "60"}, tmp_path,
               workers=1, threads=50) as served:
        clients = [http.client.HTTPConnection(served.host, served.port, timeout=10)
                   for _ in range(10)]
        try:
            for client in clients:
                client.request("GET", "/slow/")
                response = client.getresponse()
                assert response.status == 200 and not response.will_close
                response.read()
            # Ten idle keep-alive connections, their greenlets still alive.
            assert postgres_server.server_connections(dbname) == 0
        finally:
            for client in clients:
                client.close()


def _failed_statuses(served, requests: int = 40, clients: int = 8) -> list[int]:
    responses = fire(served.host, served.port, ["/slow/"] * requests, clients)
    return [r.status for r in responses if r.status != 200]


def test_kept_connections_survive_a_pgbouncer_crash(own_pgbouncer, tmp_path):
    """The sidecar restarts: every kept client connection is dead. The launcher sees the
    hang-up before the request uses it (no CONN_HEALTH_CHECKS round trip), so no 500."""
    with serve("gunicorn-gthread", {**own_pgbouncer.database_env(),
                                    "DATABASE_CONN_MAX_AGE": "60"},
               tmp_path, workers=WORKERS, threads=THREADS) as served:
        assert _failed_statuses(served) == []
        own_pgbouncer.crash_and_restart()
        assert _failed_statuses(served) == [], served.log()[-2000:]


def test_kept_connections_survive_terminated_backends(leak_database, postgres_server,
                                                      tmp_path):
    dbname, env = leak_database
    with serve("cherrypy", {**env, "DATABASE_CONN_MAX_AGE": "60"}, tmp_path,
               threads=THREADS, max_threads=THREADS) as served:
        assert _failed_statuses(served) == []
        assert postgres_server.server_connections(dbname) > 0  # kept between requests
        postgres_server.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}'"
        )
        time.sleep(0.2)
        assert _failed_statuses(served) == [], served.log()[-2000:]


@pytest.mark.parametrize("server", ["cherrypy", "waitress"])
def test_thread_pool_servers_run_worker_processes_on_one_port(server, pgbouncer_server,
                                                              tmp_path):
    """One GIL per process: `workers` processes share the port (SO_REUSEPORT)."""
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=WORKERS, threads=THREADS) as served:
        assert len(children_of(served.process.pid)) == WORKERS
        responses = fire(served.host, served.port, ["/hello/"] * 100, clients=20)
        assert all(r.status == 200 for r in responses)
        samples = served.metrics_until(
            lambda s: metric_sum(s, "djangoscale_requests_total") >= 100)
        assert metric_sum(samples, "djangoscale_requests_total") == 100
        assert samples["djangoscale_threads_total"] == WORKERS * THREADS


@pytest.mark.parametrize("server", ["cherrypy", "bjoern"])
def test_worker_processes_drain_and_exit_when_the_parent_is_killed(server, pgbouncer_server,
                                                                    tmp_path):
    """SIGKILL (an OOM kill) of the supervising process: its children get a SIGTERM from
    the kernel, drain and exit instead of serving the port unsupervised."""
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=WORKERS, threads=THREADS) as served:
        children = children_of(served.process.pid)
        assert len(children) == WORKERS
        served.process.kill()
        served.process.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
            time.sleep(0.1)
        assert not any(Path(f"/proc/{c}").exists() for c in children)


def _prestop(served, env: dict[str, str]) -> str:
    """Run the pod's preStop hook against `served` (no wait), as the kubelet would."""
    from tests.fixtures.launcher import launcher_env

    done = subprocess.run(
        [sys.executable, "-m", "djangoscale.cli", "prestop", "--sleep", "0",
         "--bind", f"{served.host}:{served.port}"],
        env=launcher_env(env), capture_output=True, text=True, timeout=30, check=True,
    )
    return done.stderr


@pytest.mark.parametrize("workers", [1, WORKERS])
@pytest.mark.parametrize("server", ["cherrypy", "waitress", "gunicorn-gthread",
                                    "gunicorn-gevent"])
def test_prestop_closes_keep_alive_connections_after_their_next_answer(
    server, workers, pgbouncer_server, tmp_path
):
    """A keep-alive client still routed to a pod whose endpoint is being removed gets its
    next answer with `Connection: close` and then an orderly close, never a closed socket
    under a request it has just sent."""
    env = pgbouncer_server.database_env()
    clients = 8  # with workers, the kernel spreads them over the processes
    # As many slots per process as clients: gevent's worker holds only that many connections.
    with serve(server, env, tmp_path, workers=workers, threads=clients) as served:
        kept = [http.client.HTTPConnection(served.host, served.port, timeout=10)
                for _ in range(clients)]
        for connection in kept:
            connection.request("GET", "/hello/")
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            assert response.getheader("Connection", "keep-alive").lower() == "keep-alive"
        assert f"server {served.process.pid} draining" in _prestop(served, env)
        for connection in kept:
            connection.request("GET", "/hello/")
            response = connection.getresponse()
            assert response.read()
            assert (response.status, response.getheader("Connection")) == (200, "close")
            # The server closed its end after the answer: EOF, not a reset or a hang.
            assert connection.sock is None or connection.sock.recv(1) == b""
            connection.close()
        # Still serving new connections (the listener closes at SIGTERM), but not ready. With
        # two processes a new connection may reach one that has not run its handler yet (the
        # signal is passed on by the parent): every process says 503 soon, none goes back.
        assert served.get("/hello/").status == 200
        wait_for("every process to answer /readyz with 503",
                 lambda: all(served.get("/readyz").status == 503 for _ in range(3 * workers)),
                 timeout=30)
        served.terminate()
        assert served.process.wait(15) == 0, served.log()[-2000:]


@pytest.mark.parametrize("server", ["gunicorn-gthread", "gunicorn-gevent"])
def test_a_gunicorn_worker_forked_after_the_prestop_hook_drains_from_its_start(
    server, pgbouncer_server, tmp_path
):
    """gunicorn's master passes the drain signal on to the workers it has; the worker it forks
    to replace a dead one (or one still booting when told) must drain too, not answer ready
    until SIGTERM."""
    env = pgbouncer_server.database_env()
    with serve(server, env, tmp_path, workers=WORKERS, threads=4) as served:
        before = wait_for("every worker to start",
                          lambda: len(children_of(served.process.pid)) == WORKERS
                          and children_of(served.process.pid))
        _prestop(served, env)
        for worker in before:  # every answer from now on comes from a replacement
            os.kill(worker, signal.SIGKILL)
        wait_for("the master to fork the replacements",
                 lambda: len(set(children_of(served.process.pid)) - set(before)) == WORKERS)
        wait_for("every process to answer /readyz with 503",
                 lambda: all(served.get("/readyz").status == 503 for _ in range(3 * WORKERS)),
                 timeout=30)
        served.terminate()
        assert served.process.wait(15) == 0, served.log()[-2000:]


QUEUED = 4  # one-thread servers given 4 requests of SLEEP_SECONDS at once
SLEEP_SECONDS = 0.3


@pytest.mark.parametrize("server", QUEUE_TIME_SERVERS)
def test_queue_time_is_the_wait_for_a_thread(server, pgbouncer_server, tmp_path):
    """One thread, four requests at once: they wait about 0, 1, 2 and 3 sleeps for it."""
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=1, max_threads=1, queue_size=50) as served:
        responses = fire(served.host, served.port, [f"/sleep/?s={SLEEP_SECONDS}"] * QUEUED,
                         clients=QUEUED)
        assert all(r.status == 200 for r in responses)
        samples = served.metrics_until(
            lambda s: s.get("djangoscale_request_queue_seconds_count", 0) >= QUEUED)
        assert samples["djangoscale_request_queue_seconds_count"] == QUEUED
        waited = samples["djangoscale_request_queue_seconds_sum"]
        # 0 + 1 + 2 + 3 sleeps; the test's clients do not all connect at the same instant.
        assert 4 * SLEEP_SECONDS <= waited <= 8 * SLEEP_SECONDS, waited
        # The first request waited for nothing: it is in the fastest bucket.
        assert samples['djangoscale_request_queue_seconds_bucket{le="0.01"}'] >= 1


@pytest.mark.parametrize("server", [s for s in SERVER_TYPES if s not in QUEUE_TIME_SERVERS])
def test_servers_that_cannot_see_the_wait_record_only_the_ingress_stamp(
        server, pgbouncer_server, tmp_path):
    with serve(server, pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=1, max_threads=1, queue_size=50) as served:
        assert served.get("/hello/").status == 200
        conn = http.client.HTTPConnection(served.host, served.port, timeout=10)
        stamp = int((time.time() - 0.5) * 1e6)  # Heroku's format: microseconds
        conn.request("GET", "/hello/", headers={"X-Request-Start": f"t={stamp}"})
        assert conn.getresponse().status == 200
        conn.close()
        samples = served.metrics_until(
            lambda s: metric_sum(s, "djangoscale_requests_total") >= 2)
        assert metric_sum(samples, "djangoscale_requests_total") == 2
        # Only the stamped request: the plain one is not counted as a zero wait.
        assert samples["djangoscale_request_queue_seconds_count"] == 1
        assert 0.5 <= samples["djangoscale_request_queue_seconds_sum"] < 5
