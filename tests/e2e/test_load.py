"""`djangoscale load` end to end: its counts against what the server counted itself, and the
live view's sampler against a DjangoService on the local control plane.

Against a real `djangoscale serve` (cheroot, the sample project, PostgreSQL behind pgbouncer)
every request the generator reports must be one the launcher's own metrics counted, status
class by status class; against a server that answers 500 or drops the connection, every
failure must be counted as the server caused it. Each run is a few seconds of load.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from rich.console import Console

from djangoscale.contract import REQUESTS_COUNTER
from djangoscale_dev import load
from djangoscale_dev.dev_load import watch_load
from djangoscale_dev.live import (
    ClusterSampler,
    ClusterSnapshot,
    Snapshot,
    kubeconfig_reader,
    pg_connections_in_use,
    render,
)
from djangoscale_dev.load import LoadSettings, Recorder, Step, plan
from djangoscale_dev.timeline import read_csv
from tests.e2e.helpers import djangoservice, ready, start_operator
from tests.fixtures.launcher import metric_sum, serve
from tests.fixtures.polling import wait_for
from tests.fixtures.services import SERVICE_USER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

REQUESTS = REQUESTS_COUNTER


def run_load(url: str, rps: str, step_seconds: float, out: Path,
             *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    """`djangoscale load` as a user runs it; its exit code and its --json counts."""
    done = subprocess.run(
        [sys.executable, "-m", "djangoscale.cli", "load", url, "--rps", rps,
         "--step-seconds", str(step_seconds), "--json", str(out), *extra],
        capture_output=True, text=True, timeout=60)
    assert out.exists(), done.stdout + done.stderr
    return done.returncode, json.loads(out.read_text())


def test_counts_equal_what_the_launcher_counted(pgbouncer_server, tmp_path):
    with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
               workers=1, threads=16) as served:
        before = served.metrics()
        base = f"http://{served.host}:{served.port}"
        code, counts = run_load(f"{base}/items/", "20,80,40", 2, tmp_path / "items.json")
        assert code == 0, counts["total"]
        assert [step["offered"] for step in counts["steps"]] == [40, 160, 80]
        total = counts["total"]
        assert total["sent"] == total["ok"] == 280 and total["failed"] == 0
        assert sum(second["offered"] for second in counts["seconds"]) == 280
        assert 0 < total["p50"] <= total["p95"] <= total["p99"]

        missing_code, missing = run_load(f"{base}/no-such-page/", "20", 1,
                                         tmp_path / "missing.json")
        assert missing_code == 1  # every request failed with a 404
        assert missing["total"]["statuses"] == {"404": 20} and missing["total"]["ok"] == 0

        ok_key = f'{REQUESTS}{{method="GET",status_class="2xx"}}'
        missing_key = f'{REQUESTS}{{method="GET",status_class="4xx"}}'

        def counted(samples: dict[str, float]) -> bool:
            return metric_sum(samples, REQUESTS) - metric_sum(before, REQUESTS) >= 300

        after = served.metrics_until(counted)
        assert after.get(ok_key, 0) - before.get(ok_key, 0) == total["ok"]
        assert after.get(missing_key, 0) - before.get(missing_key, 0) == 20
        assert metric_sum(after, REQUESTS) - metric_sum(before, REQUESTS) == 300


class Misbehaving:
    """A loopback HTTP server that answers its requests in turn with a 500, no answer at all
    (the connection closed after the request was read), and a 200; each answer closes the
    connection, and it counts what it did."""

    ANSWERS = ("500", "close", "200")

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.done: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.turn = 0
        self.accepted = 0

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            with self.lock:
                kind = self.ANSWERS[self.turn % len(self.ANSWERS)]
                self.turn += 1
                self.done[kind] += 1
            if kind == "close":
                return
            reason = b"OK" if kind == "200" else b"Internal Server Error"
            conn.sendall(b"HTTP/1.1 " + kind.encode() + b" " + reason +
                         b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")


@pytest.fixture
def misbehaving() -> Iterator[Misbehaving]:
    server = Misbehaving()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    yield server
    server.sock.close()


def test_500s_and_dropped_connections_are_counted_as_the_server_caused_them(misbehaving,
                                                                            tmp_path):
    url = f"http://127.0.0.1:{misbehaving.port}/"
    code, counts = run_load(url, "30,60", 1, tmp_path / "counts.json")
    total = counts["total"]
    assert code == 1
    assert total["offered"] == total["sent"] == 90
    assert sum(misbehaving.done.values()) == 90  # no request resent behind our back
    assert total["statuses"] == {"500": misbehaving.done["500"]} == {"500": 30}
    assert total["errors"] == {"disconnected": misbehaving.done["close"]} == {"disconnected": 30}
    assert total["ok"] == misbehaving.done["200"] == 30
    assert total["failed"] == 60

    relaxed, _ = run_load(url, "10", 1, tmp_path / "relaxed.json", "--allow-errors")
    assert relaxed == 0


def test_the_live_view_samples_a_djangoservice_on_the_control_plane(
        cluster, kube, namespace, postgres_server, pgbouncer_server, tmp_path, capsys):
    """The operator reconciles the DjangoService on KWOK pods; the sampler reads its figures
    through the API server as `djangoscale dev` does, and counts our connections to its
    database (from the DjangoService's own Secret) in pg_stat_activity. Then the dev load
    step runs against a real launcher with that sampler, and writes its timeline."""
    database = f"view_{namespace.replace('-', '_')}"
    postgres_server.execute(f"CREATE DATABASE {database}")
    values = {"host": postgres_server.host, "port": str(postgres_server.port),
              "dbname": database, "user": SERVICE_USER, "password": "unused-trust-auth"}
    kube.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "shop-db", "namespace": namespace},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}})
    with contextlib.ExitStack() as stack:
        stack.enter_context(start_operator(cluster.kubeconfig, tmp_path / "operator.log"))
        kube.apply(djangoservice(namespace))
        wait_for("the DjangoService to be Ready", lambda: ready(kube, namespace), timeout=120)
        held = [stack.enter_context(psycopg.connect(postgres_server.dsn(database)))
                for _ in range(3)]
        read = kubeconfig_reader(str(cluster.kubeconfig))
        secret = read(f"/api/v1/namespaces/{namespace}/secrets/shop-db")
        assert secret is not None
        sampler = ClusterSampler(read, namespace, "shop", pg_connections_in_use(secret))

        seen: list[ClusterSnapshot] = []

        def hpa_desired() -> object:
            hpa = kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "shop") or {}
            return (hpa.get("status") or {}).get("desiredReplicas")

        def settled() -> bool:
            seen.append(sampler.sample())
            snap = seen[-1]
            wanted = (snap.ready, snap.running, snap.db_in_use) == (2, 2, 3)
            return wanted and snap.rps_stable is not None and snap.desired == hpa_desired()

        with contextlib.suppress(AssertionError):
            wait_for("the sampler to see 2 replicas and our 3 connections", settled, timeout=60)
        snap = seen[-1]
        assert (snap.ready, snap.running, snap.db_in_use) == (2, 2, 3), snap
        # On KWOK no pod serves metrics, so the HPA cannot compute and leaves 0 desired.
        assert snap.desired == hpa_desired(), snap

        # What `djangoscale dev` does once Ready, with a launcher on loopback standing in for
        # the Service that only a real node routes: load, live view, settle, table, PNG.
        with serve("cherrypy", pgbouncer_server.database_env(), tmp_path,
                   workers=1, threads=8) as served:
            before = served.metrics()
            settings = LoadSettings(f"http://{served.host}:{served.port}/items/",
                                    plan([20, 40], 2))
            summary = watch_load(settings, sampler, tmp_path / "view", settle_seconds=5,
                                 target_per_pod=20)
            after = served.metrics_until(
                lambda m: metric_sum(m, REQUESTS) - metric_sum(before, REQUESTS) >= 120)
        assert metric_sum(after, REQUESTS) - metric_sum(before, REQUESTS) == 120
        assert len(held) == 3
    assert (snap.min_replicas, snap.max_replicas, snap.db_budget) == (2, 5, 40)
    assert snap.target_rps_per_pod == 20 and snap.ready_condition == "True"
    assert snap.rps_stable == 0.0  # KWOK pods serve nothing: the collector reads no traffic
    # Only the custom metrics API may be missing here (no APIService in this test).
    assert snap.error is None or snap.error.startswith("metric_values"), snap.error
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(render(Snapshot(cluster=snap)))
    shown = console.file.getvalue()
    assert f"desired {snap.desired}   ready 2   running 2   (min 2, max 5)" in shown, shown
    assert "in use 3 of budget 40" in shown, shown

    printed = capsys.readouterr().out
    assert "120 offered, 120 sent, 120 ok, 0 failed" in printed, printed
    assert summary["png"] is not None and f"timeline: {summary['png']}" in printed
    assert (summary["requests"]["ok"], summary["requests"]["failed"]) == (120, 0)
    png = Path(summary["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    columns = read_csv(png.with_suffix(".csv"))
    assert len(columns["seconds"]) >= 4  # a row a second over 4 s of load, then settling
    assert max(v or 0 for v in columns["served_rps"]) >= 15
    assert set(columns["ready_replicas"]) == {2.0}


class KeepAliveCounter(Misbehaving):
    """An HTTP/1.1 server that answers 200 and keeps connections open (it counts the ones it
    accepted)."""

    def answer(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buffered += chunk
                buffered = buffered.split(b"\r\n\r\n", 1)[1]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.parametrize("keep_alive", [True, False])
def test_without_keep_alive_every_request_opens_its_own_connection(keep_alive):
    server = KeepAliveCounter()
    threading.Thread(target=server.serve, daemon=True).start()
    steps = [Step(40.0, 1.0)]
    recorder = Recorder(steps)
    settings = LoadSettings(f"http://127.0.0.1:{server.port}/", steps, keep_alive=keep_alive)
    asyncio.run(load.run(settings, recorder))
    server.sock.close()
    assert recorder.total().ok == 40
    if keep_alive:
        assert server.accepted < 40
    else:
        assert server.accepted == 40
