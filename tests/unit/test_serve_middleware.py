"""The launcher's WSGI middleware: counting, health, readiness while draining, hygiene."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from djangoscale.serve import middleware as mw
from djangoscale.serve.drain import DrainState
from djangoscale.serve.hygiene import peer_hung_up
from djangoscale.serve.metrics import Metrics, status_class


def call(app, path="/x/", method="GET"):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status

    body = app({"PATH_INFO": path, "REQUEST_METHOD": method}, start_response)
    data = b"".join(body)
    getattr(body, "close", lambda: None)()
    return seen["status"], data


def app_with_status(status: str):
    def app(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body"]

    return app


@pytest.fixture
def metrics():
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    return Metrics(registry=registry), registry


def test_counts_requests_by_method_and_status_class(metrics):
    m, registry = metrics
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), metrics=m, state=DrainState())
    for _ in range(3):
        call(app)
    call(app, method="POST")
    call(mw.DjangoscaleMiddleware(app_with_status("503 Service Unavailable"), metrics=m,
                                  state=DrainState()))
    get = registry.get_sample_value
    assert get("djangoscale_requests_total", {"method": "GET", "status_class": "2xx"}) == 3
    assert get("djangoscale_requests_total", {"method": "POST", "status_class": "2xx"}) == 1
    assert get("djangoscale_requests_total", {"method": "GET", "status_class": "5xx"}) == 1
    assert get("djangoscale_request_duration_seconds_count") == 5
    assert get("djangoscale_requests_in_flight") == 0


def test_health_endpoints_are_not_counted(metrics):
    m, registry = metrics
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), metrics=m, state=DrainState())
    assert call(app, "/healthz")[0].startswith("200")
    assert call(app, "/readyz")[0].startswith("200")
    assert registry.get_sample_value("djangoscale_request_duration_seconds_count") == 0


def test_readiness_turns_false_while_draining_liveness_stays_true():
    state = DrainState()
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), state=state)
    state.begin_drain()
    assert call(app, "/readyz")[0].startswith("503")
    assert call(app, "/healthz")[0].startswith("200")


def test_readiness_checks_the_database_when_asked(monkeypatch):
    monkeypatch.setattr(mw, "database_ready", lambda: False)
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), state=DrainState(),
                                   check_database=True)
    assert call(app, "/readyz")[0].startswith("503")


def test_in_flight_lasts_until_the_response_is_closed_and_hygiene_runs_twice(monkeypatch):
    closed = []
    monkeypatch.setattr(mw, "close_old_connections", lambda: closed.append(1))
    state = DrainState()
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), state=state)
    body = app({"PATH_INFO": "/x/"}, lambda *a: None)
    assert state.in_flight == 1 and closed == [1]
    body.close()
    assert state.in_flight == 0 and closed == [1, 1]


def test_exception_in_app_is_counted_as_5xx_and_not_left_in_flight(metrics):
    m, registry = metrics

    def broken(environ, start_response):
        raise RuntimeError("boom")

    state = DrainState()
    with pytest.raises(RuntimeError):
        mw.DjangoscaleMiddleware(broken, metrics=m, state=state)({"PATH_INFO": "/"}, None)
    assert state.in_flight == 0
    assert registry.get_sample_value(
        "djangoscale_requests_total", {"method": "GET", "status_class": "5xx"}) == 1


def test_buffered_histogram_matches_observe_including_bucket_bounds():
    from prometheus_client import CollectorRegistry, Histogram

    from djangoscale.serve.metrics import LATENCY_BUCKETS

    reference_registry = CollectorRegistry()
    reference = Histogram("ref", "ref", buckets=LATENCY_BUCKETS, registry=reference_registry)
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    values = [0.0, 0.001, *LATENCY_BUCKETS, *(b + 1e-9 for b in LATENCY_BUCKETS), 11.0, 99.0]
    for value in values:
        m.request_started()
        m.request_finished("GET", "200 OK", value)
        reference.observe(value)
    for bound in [*LATENCY_BUCKETS, float("inf")]:
        le = "+Inf" if bound == float("inf") else str(bound)
        assert registry.get_sample_value(
            "djangoscale_request_duration_seconds_bucket", {"le": le}
        ) == reference_registry.get_sample_value("ref_bucket", {"le": le}), le
    assert registry.get_sample_value("djangoscale_request_duration_seconds_sum") == \
        pytest.approx(sum(values))
    assert registry.get_sample_value("djangoscale_requests_total",
                                     {"method": "GET", "status_class": "2xx"}) == len(values)


def test_updates_are_buffered_until_a_flush_and_in_flight_is_published_then():
    from prometheus_client import CollectorRegistry

    m = Metrics(registry=CollectorRegistry())
    m.request_started()
    m.request_started()
    m.request_finished("GET", "200 OK", 0.01)
    # Not yet in the prometheus values: those are written by flush (or a registry read).
    assert m.requests.labels(method="GET", status_class="2xx")._value.get() == 0
    m.flush()
    assert m.requests.labels(method="GET", status_class="2xx")._value.get() == 1
    assert m.in_flight._value.get() == 1 and m.threads_busy._value.get() == 1
    m.flush()  # nothing new: nothing added twice
    assert m.requests.labels(method="GET", status_class="2xx")._value.get() == 1


def test_background_flush_publishes_without_a_read():
    from prometheus_client import CollectorRegistry

    m = Metrics(registry=CollectorRegistry())
    m.start_flushing(interval=0.02)
    m.request_started()
    m.request_finished("POST", "201 Created", 0.01)
    deadline = time.monotonic() + 5
    while m.requests.labels(method="POST", status_class="2xx")._value.get() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_django_handler_does_its_own_hygiene(monkeypatch):
    from django.core.handlers.wsgi import WSGIHandler

    # Django's close_old_connections receivers are connected when django.db is imported.
    assert mw.django_closes_connections(WSGIHandler.__new__(WSGIHandler))
    assert not mw.django_closes_connections(app_with_status("200 OK"))

    closed = []
    monkeypatch.setattr(mw, "close_old_connections", lambda: closed.append(1))
    monkeypatch.setattr(mw, "django_closes_connections", lambda app: True)
    state = DrainState()
    app = mw.DjangoscaleMiddleware(app_with_status("200 OK"), state=state)
    call(app)
    assert closed == [] and state.in_flight == 0

    def broken(environ, start_response):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        mw.DjangoscaleMiddleware(broken, state=state)({"PATH_INFO": "/"}, None)
    assert closed == [1]  # no response for Django to close: the middleware cleans up


def test_wait_idle_returns_when_last_request_finishes():
    state = DrainState()
    state.request_started()
    threading.Timer(0.1, state.request_finished).start()
    started = time.monotonic()
    assert state.wait_idle(5)
    assert time.monotonic() - started < 2
    state.request_started()
    assert not state.wait_idle(0.05)


@pytest.mark.parametrize("status, cls", [("200 OK", "2xx"), ("404 Not Found", "4xx"),
                                         (503, "5xx"), ("", "unknown")])
def test_status_class(status, cls):
    assert status_class(status) == cls


def test_when_drained_runs_once_after_the_last_request_or_at_once_if_idle():
    calls: list[str] = []
    busy = DrainState()
    busy.request_started()
    busy.begin_drain()
    busy.when_drained(lambda: calls.append("busy"))
    assert calls == []  # a request is still in hand
    busy.request_finished()
    busy.request_started()
    busy.request_finished()
    assert calls == ["busy"]  # once, when the last one finished
    idle = DrainState()
    idle.begin_drain()
    idle.when_drained(lambda: calls.append("idle"))
    assert calls == ["busy", "idle"]


def test_an_idle_socket_is_readable_only_once_the_other_end_hangs_up():
    ours, theirs = socket.socketpair()
    try:
        assert not peer_hung_up(ours.fileno())  # idle and open: keep the connection
        theirs.close()
        assert peer_hung_up(ours.fileno())  # hung up: close it before a request uses it
    finally:
        ours.close()
