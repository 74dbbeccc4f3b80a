"""The pod reads' HTTP client against real servers: the launcher's (kept alive), an HTTP/1.0
one as older launchers ran, a server that closes idle connections, and heads it refuses."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, start_http_server

from djangoscale.autoscaling.collector import parse_pod_metrics
from djangoscale.autoscaling.podhttp import PodConnections, PodHttpError, parse_head
from djangoscale.contract import METRICS_PATH
from djangoscale.pod_figures import FIGURES_CONTENT_TYPE, FIGURES_PATH, decode_figures
from djangoscale.serve.metrics import start_metrics_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_launcher_is_read_twice_over_one_kept_connection(tmp_path):
    server = start_metrics_server("127.0.0.1", 0, str(tmp_path))
    port = server.server_address[1]
    connections = PodConnections()
    try:
        first = await connections.get("127.0.0.1", port, FIGURES_PATH)
        kept = list(connections._idle[("127.0.0.1", port)])
        second = await connections.get("127.0.0.1", port, FIGURES_PATH)
        assert connections._idle[("127.0.0.1", port)] == kept  # the same stream, back again
    finally:
        await connections.close()
        server.shutdown()
        server.server_close()
    assert (first.status, first.content_type) == (200, FIGURES_CONTENT_TYPE)
    assert decode_figures(second.body).requests_total == 0


async def test_an_http_1_0_launcher_is_read_to_the_end_and_not_kept():
    registry = CollectorRegistry()
    Counter("djangoscale_requests", "r", registry=registry).inc(5)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    connections = PodConnections()
    try:
        response = await connections.get("127.0.0.1", port, FIGURES_PATH)
    finally:
        await connections.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert response.content_type == "text/plain"  # any path: its Prometheus text
    assert parse_pod_metrics(response.body.decode()).requests_total == 5
    assert not connections._idle.get(("127.0.0.1", port))


async def test_a_connection_the_pod_closed_while_idle_is_opened_again():
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="djangoscale_requests_total 3\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics)
    runner = web.AppRunner(app, keepalive_timeout=0.05)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    connections = PodConnections()
    try:
        await connections.get("127.0.0.1", port, METRICS_PATH)
        assert connections._idle[("127.0.0.1", port)]
        await asyncio.sleep(0.3)  # the server has closed the idle connection
        again = await connections.get("127.0.0.1", port, METRICS_PATH)
    finally:
        await connections.close()
        await runner.cleanup()
    assert again.status == 200
    assert again.body == b"djangoscale_requests_total 3\n"


@pytest.mark.parametrize(("head", "says"), [
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "chunked"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n", "bad Content-Length '-4'"),
])
def test_heads_no_launcher_sends_are_refused(head, says):
    with pytest.raises(PodHttpError, match=says):
        parse_head(head)


def test_a_head_says_what_to_read_and_whether_to_keep_the_connection():
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                      b"Content-Length: 12\r\n\r\n") == ((200, "application/json"), 12, True)
    assert parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close"
                      b"\r\n\r\n") == ((404, ""), 0, False)
    assert parse_head(b"HTTP/1.0 200 OK\r\n\r\n") == ((200, ""), None, False)
