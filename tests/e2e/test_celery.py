"""Celery workers for real: RabbitMQ and Redis from Debian, `djangoscale worker` processes running
the sample project's tasks, and the operator's queue-length reading against both brokers.

- Fair spread: with threads and prefetch 1, 1000 tasks of uneven length spread over 4 workers
  and no worker ever holds more than its concurrency plus one message; with prefetch 4 (Celery's
  default) the same run shows workers hoarding messages.
- Acks late: SIGTERM mid-task lets the task finish (warm shutdown); a worker killed outright has
  its task redelivered to another. None is lost.

Each worker appends `received/started/done` lines to a trace (see sampleproject/tasks.py), so
"held" (received, not yet done) is exact, not sampled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import start_operator
from tests.fixtures import brokers, services
from tests.fixtures.polling import wait_for
from tests.fixtures.services import free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SAMPLEAPP = REPO / "tests" / "sampleapp"
TASKS = 1000
WORKERS = 4
CONCURRENCY = 4




@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[brokers.RabbitMQ]:
    services.require(brokers.rabbitmq_available())
    with brokers.rabbitmq() as broker:
        yield broker


@pytest.fixture(scope="module")
def redis_broker() -> Iterator[brokers.Redis]:
    services.require(brokers.redis_available())
    with brokers.redis() as broker:
        yield broker


def sample_env(broker_url: str, trace: Path | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(SAMPLEAPP), str(REPO / "operator"),
                            os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "CELERY_BROKER_URL": broker_url,
           "DJANGO_SETTINGS_MODULE": "sampleproject.settings"}
    if trace is not None:
        env["SAMPLEPROJECT_TASK_TRACE"] = str(trace)
    return env


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    health_port: int
    log: Path

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
        return False


@contextlib.contextmanager
def workers(broker_url: str, queue: str, trace: Path, count: int, concurrency: int,
            prefetch: int, logs: Path) -> Iterator[list[Worker]]:
    """Start `count` `djangoscale worker` processes; wait until each consumer loop runs."""
    started: list[Worker] = []
    try:
        for index in range(count):
            name = f"w{index}-{queue}@test"
            port = free_port()
            log = logs / f"{name}.log"
            with open(log, "wb") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "djangoscale.cli", "worker",
                     "-A", "sampleproject.celery", "--pool", "threads",
                     "--concurrency", str(concurrency), "--prefetch-multiplier", str(prefetch),
                     "--queues", queue, "--hostname", name, "--loglevel", "WARNING",
                     "--health-bind", f"127.0.0.1:{port}"],
                    env=sample_env(broker_url, trace), cwd=SAMPLEAPP,
                    stdout=output, stderr=subprocess.STDOUT,
                )
            started.append(Worker(name, process, port, log))
        for worker in started:
            wait_for(f"{worker.name} to be healthy",
                     lambda w=worker: w.healthy() or w.process.poll() is not None)
            assert worker.process.poll() is None, worker.log.read_text()[-3000:]
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in started:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def publish(broker_url: str, queue: str, durations_ms: list[int]) -> list[str]:
    """Send `sampleproject.tasks.work` by name, as a web pod would, from an app of its own
    (one per broker: Celery caches its connection pool per app)."""
    from celery import Celery

    app = Celery("publisher", broker=broker_url, set_as_current=False)
    try:
        with app.producer_or_acquire() as producer:
            return [
                app.send_task("sampleproject.tasks.work", args=[ms], queue=queue,
                              producer=producer).id
                for ms in durations_ms
            ]
    finally:
        app.close()


@dataclass
class Trace:
    events: list[tuple[str, str, str, float]]  # (event, task id, hostname, time)

    @classmethod
    def read(cls, directory: Path) -> Trace:
        events = []
        for path in directory.glob("*.trace"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4:
                    events.append((parts[0], parts[1], parts[2], float(parts[3])))
        return cls(sorted(events, key=lambda e: e[3]))

    def done(self) -> list[str]:
        return [task for event, task, _, _ in self.events if event == "done"]

    def per_worker(self, event: str) -> collections.Counter[str]:
        return collections.Counter(host for e, _, host, _ in self.events if e == event)

    def waits_at_worker_ms(self) -> list[float]:
        """Per task, how long it sat reserved at a worker (received to started): time it could
        have run on another worker with a free thread."""
        received = {task: t for event, task, _, t in self.events if event == "received"}
        return sorted((t - received[task]) * 1000 for event, task, _, t in self.events
                      if event == "started" and task in received)

    def max_held(self) -> dict[str, int]:
        """The most messages each worker held at once: received and not yet done."""
        held: collections.Counter[str] = collections.Counter()
        peak: dict[str, int] = {}
        for event, _, host, _ in self.events:
            if event == "received":
                held[host] += 1
            elif event == "done":
                held[host] -= 1
            peak[host] = max(peak.get(host, 0), held[host])
        return peak


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return (at(0.5), at(0.95), round(values[-1], 1)) if values else (0.0, 0.0, 0.0)


def uneven_durations(count: int, seed: int = 8) -> list[int]:
    """1-20 ms, mostly short with a long tail, as real task mixes are."""
    rng = random.Random(seed)
    return [min(20, 1 + int(rng.expovariate(1 / 5))) for _ in range(count)]


def run_spread(broker: brokers.RabbitMQ, prefetch: int, tmp_path: Path,
               backlog: bool = False) -> dict[str, Any]:
    """Run TASKS uneven tasks on WORKERS workers. With `backlog` every task is queued before
    the workers start, so what a worker reserves is bounded by its prefetch alone and not by
    how fast this process publishes (a 2-core machine publishes slower than 16 threads eat)."""
    queue = f"spread-{prefetch}-{uuid.uuid4().hex[:6]}"
    trace = tmp_path / "trace"
    trace.mkdir(mode=0o777)
    durations = uneven_durations(TASKS)
    began = time.monotonic()
    ids = publish(broker.url, queue, durations) if backlog else []
    with workers(broker.url, queue, trace, WORKERS, CONCURRENCY, prefetch, tmp_path):
        if not backlog:
            began = time.monotonic()
            ids = publish(broker.url, queue, durations)
        wait_for(f"{TASKS} tasks done", lambda: len(Trace.read(trace).done()) >= TASKS,
                 timeout=180, interval=0.5)
        elapsed = time.monotonic() - began
    result = Trace.read(trace)
    figures = {
        "prefetch": prefetch,
        "tasks_per_worker": dict(sorted(result.per_worker("done").items())),
        "max_held": dict(sorted(result.max_held().items())),
        "wait_at_worker_ms_p50_p95_max": _percentiles(result.waits_at_worker_ms()),
        "seconds": round(elapsed, 2),
        "sum_ms": sum(durations),
    }
    print(f"\nspread {figures}")
    assert sorted(result.done()) == sorted(ids), "every task ran exactly once"
    return figures


def test_prefetch_one_spreads_1000_uneven_tasks_fairly(rabbitmq, tmp_path):
    figures = run_spread(rabbitmq, 1, tmp_path)
    counts = figures["tasks_per_worker"]
    assert len(counts) == WORKERS
    # Never more than its threads plus one reserved message.
    assert max(figures["max_held"].values()) <= CONCURRENCY + 1, figures
    # Every worker took a fair share: none below half, none above twice the mean.
    mean = TASKS / WORKERS
    assert all(mean / 2 <= n <= mean * 2 for n in counts.values()), figures


def test_default_prefetch_four_hoards_messages(rabbitmq, tmp_path):
    """The contrast: Celery's default multiplier reserves 4 messages per thread whenever the
    queue has them (prefetch 1 never holds more than CONCURRENCY + 1)."""
    figures = run_spread(rabbitmq, 4, tmp_path, backlog=True)
    assert max(figures["max_held"].values()) > 2 * CONCURRENCY, figures


def run_burst(broker: brokers.RabbitMQ, prefetch: int, tmp_path: Path) -> dict[str, Any]:
    """32 tasks, every 4th one long (1 s), the rest 10 ms, published at once to 4 workers."""
    queue = f"burst-{prefetch}-{uuid.uuid4().hex[:6]}"
    trace = tmp_path / f"trace-{prefetch}"
    trace.mkdir(mode=0o777)
    durations = [1000 if i % 4 == 0 else 10 for i in range(32)]
    with workers(broker.url, queue, trace, WORKERS, CONCURRENCY, prefetch, tmp_path):
        began = time.time()
        ids = publish(broker.url, queue, durations)
        wait_for("the burst done", lambda: len(Trace.read(trace).done()) >= len(ids), timeout=60)
    result = Trace.read(trace)
    length = dict(zip(ids, durations, strict=True))
    busy: collections.Counter[str] = collections.Counter()
    for event, task, host, _ in result.events:
        if event == "done":
            busy[host] += length[task] / 1000
    finished = max(t for event, _, _, t in result.events if event == "done")
    figures = {"prefetch": prefetch, "seconds": round(finished - began, 2),
               "task_seconds_per_worker": sorted(round(b, 2) for b in busy.values())}
    print(f"\nburst {figures}")
    return figures


def test_long_tasks_pile_up_on_one_worker_with_prefetch_four(rabbitmq, tmp_path):
    """The story's skew: RabbitMQ deals messages round robin to whoever has credit. With 16
    credits per worker, every 4th message (the long ones) lands on the same worker, which then
    runs them 4 at a time while the other three sit idle; with 4 credits, the idle workers take
    the long tasks as they come."""
    fair = run_burst(rabbitmq, 1, tmp_path)
    hoarded = run_burst(rabbitmq, 4, tmp_path)
    assert hoarded["task_seconds_per_worker"][-1] >= 6, hoarded  # one worker: >= 6 of 8 s
    assert fair["task_seconds_per_worker"][-1] <= 4.1, fair  # at most its 4 threads' worth
    assert hoarded["seconds"] > 1.4 * fair["seconds"], (fair, hoarded)


# -- acks late: SIGTERM and a killed worker ---------------------------------------------------


def test_sigterm_mid_task_finishes_it_and_leaves_the_rest_queued(rabbitmq, tmp_path):
    queue = f"term-{uuid.uuid4().hex[:6]}"
    trace = tmp_path / "trace"
    trace.mkdir(mode=0o777)
    with workers(rabbitmq.url, queue, trace, 1, 1, 1, tmp_path) as (first,):
        ids = publish(rabbitmq.url, queue, [3000, 3000, 3000])
        wait_for("the first task to start", lambda: [
            e for e in Trace.read(trace).events if e[0] == "started"])
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)  # warm shutdown: the running task finishes first
        after_term = Trace.read(trace)
        assert len(after_term.done()) == 1, after_term.events
        assert after_term.done()[0] == ids[0]
    # The other two were never lost: a new worker runs them.
    with workers(rabbitmq.url, queue, trace, 1, 2, 1, tmp_path):
        wait_for("all three done", lambda: len(Trace.read(trace).done()) >= 3, timeout=60)
    assert sorted(Trace.read(trace).done()) == sorted(ids)


def test_killed_worker_task_is_redelivered(rabbitmq, tmp_path):
    """Past the grace period the kubelet SIGKILLs: with acks late the broker redelivers."""
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    trace = tmp_path / "trace"
    trace.mkdir(mode=0o777)
    with workers(rabbitmq.url, queue, trace, 1, 1, 1, tmp_path) as (first,):
        (task_id,) = publish(rabbitmq.url, queue, [4000])
        wait_for("the task to start", lambda: [
            e for e in Trace.read(trace).events if e[0] == "started"])
        first.process.kill()
        first.process.wait(timeout=10)
    assert Trace.read(trace).done() == []
    with workers(rabbitmq.url, queue, trace, 1, 1, 1, tmp_path) as (second,):
        wait_for("the redelivered task to finish", lambda: Trace.read(trace).done(), timeout=60)
        hosts = [host for event, _, host, _ in Trace.read(trace).events if event == "done"]
        assert hosts == [second.name]
    assert Trace.read(trace).done() == [task_id]


# -- queue length from the brokers ------------------------------------------------------------


def test_rabbitmq_queue_length_ready_and_unacked(rabbitmq, tmp_path):
    from djangoscale.celery.brokers import RabbitMQReader

    queue = f"len-{uuid.uuid4().hex[:6]}"
    reader = RabbitMQReader(rabbitmq.management_url, rabbitmq.url)

    def read() -> Any:
        return asyncio.run(_read_once(reader, [queue, "never-declared"]))

    assert read()["never-declared"].total == 0
    publish(rabbitmq.url, queue, [5000] * 10)
    lengths = wait_for("10 ready", lambda: (r := read())[queue].ready == 10 and r)
    assert lengths[queue].unacked == 0
    trace = tmp_path / "trace"
    trace.mkdir(mode=0o777)
    with workers(rabbitmq.url, queue, trace, 1, 2, 1, tmp_path):
        # Two running (unacked until done, acks late), eight ready: the total stays 10.
        lengths = wait_for("2 unacked", lambda: (r := read())[queue].unacked == 2 and r)
        assert lengths[queue].ready == 8 and lengths[queue].total == 10
        with urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{rabbitmq.management_port}/api/queues/%2F/{queue}/contents",
                method="DELETE",
                headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="}), timeout=10):
            pass  # purge the rest


def test_redis_queue_length_ready_and_unacked(redis_broker, tmp_path):
    from djangoscale.celery.brokers import RedisReader

    queue = f"len-{uuid.uuid4().hex[:6]}"
    reader = RedisReader(redis_broker.url)

    def read() -> Any:
        return asyncio.run(_read_once(reader, [queue]))

    assert read()[queue].total == 0
    publish(redis_broker.url, queue, [4000] * 10)
    assert read()[queue].ready == 10 and read()[queue].unacked == 0
    trace = tmp_path / "trace"
    trace.mkdir(mode=0o777)
    with workers(redis_broker.url, queue, trace, 1, 2, 1, tmp_path):
        lengths = wait_for("2 unacked", lambda: (r := read())[queue].unacked >= 2 and r)
        assert lengths[queue].unacked == 2 and lengths[queue].ready == 8, lengths


def test_unreadable_broker_raises_for_hold_last():
    from djangoscale.celery.brokers import BrokerUnavailable, RabbitMQReader, RedisReader

    port = free_port()
    for reader in (RabbitMQReader(f"http://guest:guest@127.0.0.1:{port}/", "amqp://x//"),
                   RedisReader(f"redis://127.0.0.1:{port}/0")):
        with pytest.raises(BrokerUnavailable):
            asyncio.run(_read_once(reader, ["celery"]))


async def _read_once(reader: Any, queues: list[str]) -> Any:
    try:
        return await reader.read(queues)
    finally:
        await reader.close()


# -- the worker HPA on the local control plane ------------------------------------------------
#
# The real HPA controller reads `djangoscale_celery_queue_length` from the operator's metrics API
# through the aggregation layer. The worker pods are KWOK pods (no process runs in them), so
# nothing consumes: the test sets the queue length itself, in the real RabbitMQ the operator
# reads, by publishing (a burst) and purging (drained).

TARGET_PER_WORKER = 10
SCALE_DOWN_STABILIZATION = 10


@pytest.fixture(scope="module")
def operator(cluster: Any, rabbitmq: brokers.RabbitMQ,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """CRD, APIService and the operator (queue poll every second), as test_autoscaling does."""
    from djangoscale.spec import crd
    from djangoscale_dev.cluster.api import ApiError
    from djangoscale_dev.registration import (
        register_metrics_apiservice,
        unregister_metrics_apiservice,
    )

    api = cluster.client()
    crd_path = ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                f"{crd()['metadata']['name']}")
    api.apply(crd_path, crd())
    wait_for("the CRD to be established", lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (api.get(crd_path).get("status") or {}).get("conditions") or []))
    port = free_port()
    cert, key = register_metrics_apiservice(api, cluster.dir, port)
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    try:
        with start_operator(
            cluster.kubeconfig, log, "--metrics-api-port", str(port),
            "--metrics-api-cert-file", str(cert), "--metrics-api-key-file", str(key),
            resync_seconds=5, env={"DJANGOSCALE_QUEUE_POLL_INTERVAL": "1"},
        ) as running:
            def available() -> bool:
                assert running.process.poll() is None, log.read_text()[-3000:]
                live = api.get("/apis/apiregistration.k8s.io/v1/apiservices/"
                               "v1beta2.custom.metrics.k8s.io")
                return any(c["type"] == "Available" and c["status"] == "True"
                           for c in (live.get("status") or {}).get("conditions") or [])

            wait_for("the metrics APIService to be Available", available, timeout=60)
            yield api
    finally:
        with contextlib.suppress(ApiError):
            unregister_metrics_apiservice(api)
    # The broker password never reaches the log (start_operator checked it for failures).
    assert "guest:guest" not in log.read_text(errors="replace")


def quantity(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def worker_service(namespace: str, queue: str) -> dict[str, Any]:
    up = {"maxPercentPerPeriod": 1000, "maxPodsPerPeriod": 10, "periodSeconds": 5}
    down = {"maxPercentPerPeriod": 100, "maxPodsPerPeriod": 10, "periodSeconds": 5}
    return {
        "apiVersion": "djangoscale.io/v1alpha1",
        "kind": "DjangoService",
        "metadata": {"name": "shop", "namespace": namespace},
        "spec": {
            "image": "registry.example.com/shop:1.4.2",
            "wsgiApp": "sampleproject.wsgi:application",
            "replicas": {"min": 1, "max": 1},
            "autoscaling": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, **up},
                "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_STABILIZATION, **down},
            }},
            "broker": {"type": "rabbitmq", "secretName": "shop-broker"},
            "workers": [{
                "name": "default", "app": "sampleproject.celery", "queues": [queue],
                "concurrency": 2, "replicas": {"min": 1, "max": 6},
                "targetQueueLengthPerWorker": TARGET_PER_WORKER,
            }],
        },
    }


def test_queue_burst_scales_workers_up_and_a_drained_queue_down(operator, rabbitmq):
    from djangoscale_dev.cluster.api import ApiError

    api = operator
    namespace = f"celery-{uuid.uuid4().hex[:6]}"
    queue = f"hpa-{uuid.uuid4().hex[:6]}"
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/shop-worker-default"
    hpa_path = (f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/"
                "shop-worker-default")
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": namespace}})
    try:
        api.create(f"/api/v1/namespaces/{namespace}/secrets", {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shop-broker"},
            "stringData": {"url": rabbitmq.url, "managementUrl": rabbitmq.management_url}})
        # The queue exists and is empty before the service starts (a worker would declare it).
        rabbitmq.api(f"queues/%2F/{queue}", "PUT", {"durable": True})
        api.create(f"/apis/djangoscale.io/v1alpha1/namespaces/{namespace}/djangoservices",
                   worker_service(namespace, queue))

        def hpa() -> dict[str, Any]:
            with contextlib.suppress(ApiError):
                return dict(api.get(hpa_path))
            return {}

        def replicas() -> int:
            with contextlib.suppress(ApiError):
                return int(api.get(deployment).get("spec", {}).get("replicas") or 0)
            return 0

        def metric_served() -> list[float]:
            selector = "app.kubernetes.io/component%3Dworker-default"
            items = api.get(f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/"
                            f"djangoscale_celery_queue_length?labelSelector={selector}")["items"]
            return sorted(quantity(item["value"]) for item in items)

        wait_for("the worker HPA to read the queue length", lambda: any(
            c["type"] == "ScalingActive" and c["status"] == "True"
            for c in hpa().get("status", {}).get("conditions", [])), timeout=120)
        assert replicas() == 1
        assert metric_served() == [0]

        # A burst: 45 queued, 10 per worker wanted -> ceil(45 / 10) = 5 workers.
        burst_at = time.monotonic()
        publish(rabbitmq.url, queue, [10] * 45)
        wait_for("5 workers", lambda: replicas() == 5, timeout=90)
        scaled_up = time.monotonic() - burst_at
        # Every worker pod is served its share: 45 / 5 = 9 each.
        wait_for("the share of 5 pods", lambda: metric_served() == [9] * 5, timeout=30)

        # Drained: purge the queue -> back to the minimum after the stabilization window.
        rabbitmq.api(f"queues/%2F/{queue}/contents", "DELETE")
        drained_at = time.monotonic()
        wait_for("1 worker", lambda: replicas() == 1, timeout=120)
        scaled_down = time.monotonic() - drained_at
        print(f"\nworker HPA: burst of 45 -> 5 pods in {scaled_up:.1f}s; drained -> 1 pod in "
              f"{scaled_down:.1f}s (scale-down stabilization {SCALE_DOWN_STABILIZATION}s)")
    finally:
        with contextlib.suppress(ApiError):
            api.delete(f"/api/v1/namespaces/{namespace}")
