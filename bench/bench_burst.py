"""A 10x load step on the local control plane: the first scale-up, and the time to 10x the pods,
with `behavior.preset: burst` against `default`.

Production defaults everywhere else: the HPA controller syncs every 15 s (kube-controller-
manager's default), the operator scrapes every 2 s, windows 60 s / 6 s, panic threshold 2. The
pods are KWOK's; a real `djangoscale serve` (the sample project, cherrypy) is started on each
Running pod's IP, as `tests/e2e/test_autoscaling.py` does, and an open-loop load spreads over
the pods that answer their readiness probe. Each run is a fresh DjangoService at 2 pods with
its base load (2 pods x 5 RPS, the target) for a panic window and more, then 10x that.

    .venv/bin/python bench/bench_burst.py [--runs 3] [--cluster-dir DIR]

Printed per preset: seconds from the step to the HPA's first scale-up, to desired >= 10x the
pods, and to 10x the pods serving. Not a test: figures depend on the machine. Recorded in
docs/autoscaling.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# tests/tools: the e2e harness imported below imports its neighbours as pytest sees them.
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "tests" / "tools")]

from djangoscale.spec import crd  # noqa: E402
from djangoscale_dev.cluster import LocalCluster  # noqa: E402
from djangoscale_dev.cluster.api import ApiClient, ApiError  # noqa: E402
from djangoscale_dev.registration import register_metrics_apiservice  # noqa: E402
from tests.e2e.helpers import start_operator  # noqa: E402
from tests.e2e.test_autoscaling import (  # noqa: E402
    API,
    HTTP_PORT,
    METRICS_PORT,
    PodHarness,
    hpa_desired,
    run_load,
    scaling_active,
)
from tests.fixtures.launcher import SAMPLE_WSGI  # noqa: E402
from tests.fixtures.polling import wait_for  # noqa: E402
from tests.fixtures.services import free_port  # noqa: E402

PRODUCTION_HPA_SYNC = "15s"
TARGET = 5
START_PODS = 2
STEP = 10
BASE_SECONDS = 20.0  # more than the panic window, so the step is a step for it
WATCH_SECONDS = 90.0


def service(namespace: str, preset: str) -> dict[str, Any]:
    return {
        "apiVersion": API, "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop:1", "wsgiApp": SAMPLE_WSGI,
            "port": HTTP_PORT, "metricsPort": METRICS_PORT,
            "server": {"type": "cherrypy", "threads": 8, "maxThreads": 8},
            "replicas": {"min": START_PODS, "max": START_PODS * STEP},
            "autoscaling": {"targetRPSPerPod": TARGET, "behavior": {"preset": preset}},
        },
    }


def one_run(api: ApiClient, preset: str, log_dir: Path) -> dict[str, float | None]:
    namespace = f"burst-{uuid.uuid4().hex[:6]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    try:
        with PodHarness(api, namespace, log_dir) as harness:
            api.create(f"/apis/{API}/namespaces/{namespace}/djangoservices",
                       service(namespace, preset))
            wait_for("2 pods served", lambda: len(harness.endpoints()) >= START_PODS,
                     timeout=120)
            wait_for("the HPA to read the metric", lambda: scaling_active(api, namespace),
                     timeout=120)
            base = START_PODS * TARGET
            run_load(base, BASE_SECONDS, harness.endpoints)
            stop = threading.Event()
            step = threading.Thread(target=run_load, args=(base * STEP, WATCH_SECONDS,
                                                           harness.endpoints),
                                    kwargs={"stop": stop})
            started = time.monotonic()
            step.start()
            first = desired_10x = serving_10x = None
            while time.monotonic() - started < WATCH_SECONDS and serving_10x is None:
                elapsed = time.monotonic() - started
                with contextlib.suppress(ApiError, OSError):
                    desired = hpa_desired(api, namespace)
                    if first is None and desired > START_PODS:
                        first = elapsed
                    if desired_10x is None and desired >= START_PODS * STEP:
                        desired_10x = elapsed
                if len(harness.endpoints()) >= START_PODS * STEP:
                    serving_10x = elapsed
                time.sleep(0.25)
            stop.set()
            step.join(30)
    finally:
        with contextlib.suppress(ApiError):
            api.delete(f"/apis/{API}/namespaces/{namespace}/djangoservices/shop")
        with contextlib.suppress(ApiError):
            api.delete(f"/api/v1/namespaces/{namespace}")
    return {"first scale-up": first, "desired 10x": desired_10x, "10x serving": serving_10x}


def summary(values: list[float | None]) -> str:
    seen = sorted(v for v in values if v is not None)
    missing = len(values) - len(seen)
    text = (f"median {statistics.median(seen):5.1f} s, range {seen[0]:.1f}-{seen[-1]:.1f}"
            if seen else "never")
    return text + (f" ({missing} of {len(values)} runs never within {WATCH_SECONDS:.0f} s)"
                   if missing and seen else "")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--presets", default="default,burst")
    parser.add_argument("--cluster-dir", type=Path, default=None)
    args = parser.parse_args()
    directory = args.cluster_dir or Path(tempfile.mkdtemp(prefix="djangoscale-bench-burst-"))
    cluster = LocalCluster(directory, hpa_sync_period=PRODUCTION_HPA_SYNC)
    reused = cluster.running() is not None
    kubeconfig = cluster.up(nodes=2)
    api = cluster.client()
    try:
        api.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                  f"{crd()['metadata']['name']}", crd())
        port = free_port()
        cert, key = register_metrics_apiservice(api, cluster.dir, port)
        log = directory / "bench-operator.log"
        results: dict[str, list[dict[str, float | None]]] = {}
        with start_operator(kubeconfig, log, "--metrics-api-port", str(port),
                            "--metrics-api-cert-file", str(cert),
                            "--metrics-api-key-file", str(key), "--liveness-port",
                            str(free_port())):
            for run in range(args.runs):
                for preset in args.presets.split(","):
                    result = one_run(api, preset, directory)
                    print(f"run {run + 1} {preset:8}: " + ", ".join(
                        f"{name} {value if value is None else round(value, 1)}"
                        for name, value in result.items()), flush=True)
                    results.setdefault(preset, []).append(result)
        print(f"\n10x step ({START_PODS} pods at {TARGET} RPS -> {START_PODS * TARGET * STEP}"
              f" RPS), HPA sync {PRODUCTION_HPA_SYNC}, {args.runs} runs:")
        for preset, rows in results.items():
            for name in rows[0]:
                print(f"  {preset:8} {name:15} {summary([row[name] for row in rows])}")
    finally:
        if not reused:
            cluster.down()
    os.environ.pop("KUBECONFIG", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
