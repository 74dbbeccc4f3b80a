"""The launcher's WSGI middleware: counting, health, readiness while draining, hygiene."""

from __future__ import annotations

import threading
import time

import pytest

from djangoscale.serve import middleware as mw
from djangoscale.serve.drain import DrainState
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
