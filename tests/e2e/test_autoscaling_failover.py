"""Operator failover under steady load: the HPA's desired replicas never drop.

Two `djangoscale run` processes in kopf peering on the local control plane, each serving the
metrics API on a port of its own; in front of them, as the chart's Service does, a TCP proxy
that sends each connection to the replica whose `/readyz` says 200 (only the active peer runs
collectors). Real launchers serve the KWOK pods (the harness of `test_autoscaling`); an open
loop load runs at a steady rate. The active operator is SIGKILLed; the standby takes over once
the peering's keep-alive expires, starting its windows from the rates `status.rps` holds.

The HPA's scale-down stabilization is 0 here, so a dip in what the HPA reads would show at once
in its desired replicas. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from djangoscale.contract import CONCURRENCY_METRIC
from djangoscale_dev.cluster import LocalCluster
from djangoscale_dev.cluster.api import ApiClient, ApiError
from tests.e2e.helpers import start_operator
from tests.e2e.test_autoscaling import (
    API,
    SCRAPE_INTERVAL,
    STABLE_WINDOW,
    TARGET_RPS,
    PodHarness,
    api,  # noqa: F401 - the CRD, established (a fixture)
    djangoservice,
    hpa_desired,
    metrics_api,  # noqa: F401 - the APIService (a fixture)
    namespace,  # noqa: F401 - a fresh namespace, the DjangoService deleted first (a fixture)
    pod_values,
    run_load,
    scaling_active,
)
from tests.fixtures.polling import wait_for
from tests.fixtures.services import free_port
from tests.tools.chart_install import operator_kubeconfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# 3 pods take it at 16.7 RPS each: 2 pods would be 25 each, far past the HPA's 10 % tolerance,
# so the desired count is 3 with room on both sides for the load's noise.
STEADY_RPS = 2.5 * TARGET_RPS
STEADY_REPLICAS = 3
# Watched after the standby serves again: a whole stable window, so the carried rates have
# faded out and only the new operator's own samples count.
WATCH_AFTER_TAKEOVER = STABLE_WINDOW + 10
# kopf's peering keep-alive the operator sets (20 s), and slack for a loaded machine.
TAKEOVER_BOUND = 60.0


class ReadyProxy:
    """The Service in front of the operators' metrics API: each connection goes to a replica
    whose /readyz answers 200, as a Service routes only to ready endpoints."""

    def __init__(self, port: int, backends: list[int]) -> None:
        self.port, self.backends = port, backends
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ready: int | None = None
        self.checked = 0.0

    def __enter__(self) -> ReadyProxy:  # noqa: PYI034
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _close(self) -> None:
        """Stop listening and end the connections still open, so no task is left pending."""
        self.server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _backend(self) -> int | None:
        if time.monotonic() - self.checked > 0.5:
            self.checked = time.monotonic()
            self.ready = None
            for port in self.backends:
                if await readyz(port) == 200:
                    self.ready = port
                    break
        return self.ready

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = await self._backend()
        if port is None:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def readyz(port: int) -> int:
    """The metrics API's readiness, asked as the kubelet asks: HTTPS, no client cert."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
                    session.get(f"https://127.0.0.1:{port}/readyz", ssl=context) as response):
            return response.status
    except (TimeoutError, aiohttp.ClientError, OSError):
        return 0


def steady_service(name: str) -> dict[str, Any]:
    body = copy.deepcopy(djangoservice(name))
    body["spec"]["autoscaling"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] = 0
    # Concurrency served too, at a target the quick view never nears (RPS sets the replicas):
    # the takeover must serve it at once as well, from status.scaling.
    body["spec"]["autoscaling"].update({"metrics": ["rps", "concurrency"],
                                        "targetConcurrency": 8})
    return body


def peering(kubeconfig: Path, log: Path, metrics_api_port: int, priority: int,
            cert: Path, key: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    return start_operator(
        kubeconfig, log, "--liveness-port", str(free_port()),
        "--metrics-api-port", str(metrics_api_port), "--metrics-api-cert-file", str(cert),
        "--metrics-api-key-file", str(key), "--scrape-interval", str(SCRAPE_INTERVAL),
        "--peering", "djangoscale", "--priority", str(priority), resync_seconds=5,
    )


def test_sigkill_of_the_active_operator_under_load_never_drops_desired_replicas(
    cluster: LocalCluster, api: ApiClient, metrics_api: tuple[int, Path, Path],  # noqa: F811
    namespace: str, tmp_path: Path,  # noqa: F811
) -> None:
    port, cert, key = metrics_api
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa" / "kubeconfig")
    active_port, standby_port = free_port(), free_port()
    active_log, standby_log = tmp_path / "active.log", tmp_path / "standby.log"
    rows: list[tuple[float, int, dict[str, float] | None, dict[str, float] | None]] = []
    with (ReadyProxy(port, [active_port, standby_port]),
          peering(kubeconfig, active_log, active_port, 2, cert, key) as active):
        wait_for("the active operator's metrics API", lambda: active_log.exists() and
                 "serving custom.metrics.k8s.io" in active_log.read_text(), timeout=60)
        with (peering(kubeconfig, standby_log, standby_port, 1, cert, key),
              PodHarness(api, namespace, tmp_path) as harness):
            api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices",
                       steady_service(namespace))
            wait_for("2 pods served", lambda: len(harness.endpoints()) >= 2, timeout=120)
            wait_for("the HPA to read the metric", lambda: scaling_active(api, namespace),
                     timeout=60)
            stop_load = threading.Event()
            loads: list[Any] = []
            load = threading.Thread(target=lambda: loads.append(run_load(
                STEADY_RPS, 600, harness.endpoints, stop=stop_load)))
            load.start()
            try:
                wait_for(f"{STEADY_REPLICAS} pods served under load",
                         lambda: hpa_desired(api, namespace) == STEADY_REPLICAS
                         and len(harness.endpoints()) == STEADY_REPLICAS, timeout=120)
                # A whole stable window at the steady rate, so both windows hold it.
                time.sleep(STABLE_WINDOW)

                def sample() -> None:
                    values: dict[str, float] | None
                    concurrency: dict[str, float] | None
                    try:
                        values = pod_values(api, namespace)
                        concurrency = pod_values(api, namespace, CONCURRENCY_METRIC)
                    except (ApiError, OSError):
                        values = concurrency = None
                    rows.append((time.monotonic(), hpa_desired(api, namespace), values,
                                 concurrency))

                for _ in range(10):
                    sample()
                    time.sleep(0.5)
                assert "Handler" not in standby_log.read_text()  # the standby was paused
                killed = time.monotonic()
                active.process.send_signal(signal.SIGKILL)
                active.process.wait(10)
                resumed: float | None = None
                deadline = killed + TAKEOVER_BOUND
                while resumed is None or time.monotonic() < resumed + WATCH_AFTER_TAKEOVER:
                    assert time.monotonic() < deadline or resumed is not None, (
                        "the standby did not take over", standby_log.read_text()[-3000:])
                    sample()
                    if resumed is None and asyncio.run(readyz(standby_port)) == 200:
                        resumed = time.monotonic()
                    time.sleep(0.5)
            finally:
                stop_load.set()
                load.join(30)
    (result,) = loads
    assert resumed is not None
    before = [row for row in rows if row[0] < killed]
    after = [row for row in rows if row[0] >= killed]
    served_again = next((row for row in after if row[2]), None)
    assert served_again is not None, "the standby never served a value"
    gap = served_again[0] - killed
    per_pod_before = [v for row in before if row[2] for v in row[2].values()]
    first_after = list(served_again[2].values()) if served_again[2] else []
    lowest = min(row[1] for row in rows)
    print(f"\nfailover: desired {STEADY_REPLICAS} before, lowest {lowest} during, "
          f"{rows[-1][1]} after; standby ready {resumed - killed:.1f} s after the SIGKILL, "
          f"values served again after {gap:.1f} s; per-pod value before "
          f"{min(per_pod_before):.1f}-{max(per_pod_before):.1f}, first after "
          f"{min(first_after):.1f}-{max(first_after):.1f} (target {TARGET_RPS}), "
          f"concurrency with it for {len(served_again[3] or {})} of {len(first_after)} pods; "
          f"load {result}")
    assert all(row[1] == STEADY_REPLICAS for row in before), before
    assert lowest == STEADY_REPLICAS, [(round(t - killed, 1), d) for t, d, _, _ in rows]
    # No cold start: the first values the new operator serves are the level the old one served
    # (carried over), not a rate from one scrape interval of its own.
    level = sum(per_pod_before) / len(per_pod_before)
    assert all(abs(v - level) <= 0.25 * level for v in first_after), (level, first_after)
    # Concurrency too is served from the new operator's first values on, for every pod (its
    # own first scrape is one sample, no rate: without the status it would serve nothing).
    assert served_again[3] is not None and set(served_again[3]) == set(served_again[2]), (
        served_again)
    # The launchers never stopped: the failover lost no request.
    assert result.failed == 0, result
