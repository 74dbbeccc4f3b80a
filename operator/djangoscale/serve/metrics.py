"""Prometheus metrics of the launcher, correct across worker processes.

The operator computes a pod's requests per second from `djangoscale_requests_total`
summed over its labels, so these names are a contract. Servers such as gunicorn, granian
and bjoern run several processes, so the metrics always use prometheus-client's
multiprocess mode: every process writes to files in one directory, and the launcher's top
process (which never serves requests) exposes their sum on `--metrics-bind`.

`PROMETHEUS_MULTIPROC_DIR` must be set before prometheus_client is first imported (it
chooses its value storage at import time), which is why nothing here imports it at module
level and `prepare_multiprocess_dir` runs first.
"""

from __future__ import annotations

import atexit
import bisect
import glob
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from typing import Any

from djangoscale.contract import (
    CPU_SECONDS_NAME,
    MULTIPROC_DIR_ENV,
    REQUEST_DURATION_NAME,
    REQUEST_QUEUE_NAME,
    REQUESTS_COUNTER_NAME,
)
from djangoscale.serve.config import ProcessSettings, hand_down

_LIVE_FILE = re.compile(r"gauge_live\w*?_(\d+)\.db$")

# Buckets around the latencies the product cares about (50 ms view, p95 < 600 ms target).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
# Around queue-time targets (tens to hundreds of ms): the collector's p95 interpolates in them.
QUEUE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
                 0.75, 1.0, 2.5, 5.0, 10.0)


def prepare_multiprocess_dir(path: str | None = None) -> str:
    """Create (or empty) the directory every process writes its metrics to."""
    path = (path or ProcessSettings.from_env().multiproc_dir
            or tempfile.mkdtemp(prefix="djangoscale-metrics-"))
    if os.path.isdir(path):
        for entry in glob.glob(os.path.join(path, "*.db")):
            os.remove(entry)
    else:
        os.makedirs(path, exist_ok=True)
    hand_down({MULTIPROC_DIR_ENV: path})
    return path


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_processes(path: str) -> list[int]:
    """Forget the live gauges of processes that are gone (a worker crashed or was replaced).

    Counters and histograms of dead processes are kept: a request served is still served.
    """
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for name in os.listdir(path):
        match = _LIVE_FILE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


def status_class(status: str | int) -> str:
    """'200 OK' -> '2xx'."""
    text = str(status).strip()
    return f"{text[:1]}xx" if text[:1].isdigit() else "unknown"


FLUSH_INTERVAL = 0.25  # seconds between flushes of a process's buffered request metrics

_STATUS_CLASSES: dict[str, str] = {}


def _status_class_of(status: str) -> str:
    """status_class, memoised for the few status lines a server sends."""
    cls = _STATUS_CLASSES.get(status)
    if cls is None:
        cls = status_class(status)
        if len(_STATUS_CLASSES) < 256:
            _STATUS_CLASSES[status] = cls
    return cls


class _FlushOnCollect:
    """Registered first in the Metrics' registry: collecting it flushes the buffers, so a
    registry read in this process always sees every request that has finished."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        self.metrics.flush()
        return []


class Metrics:
    """The metric objects one process updates.

    A request costs one cheap in-process lock on each end: counts, histogram buckets and
    the number in flight are kept in this object and added to the prometheus values (in
    multiprocess mode, locked writes into mmap'd files) by `flush`, which a background
    thread calls every FLUSH_INTERVAL seconds, a read of this process's registry or of the
    top process's /metrics calls first, and the process calls on its way out.
    """

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = REGISTRY if registry is None else registry
        registry.register(_FlushOnCollect(self))
        self.requests = Counter(
            REQUESTS_COUNTER_NAME,
            "HTTP requests served by the app (health endpoints excluded).",
            ["method", "status_class"],
            registry=registry,
        )
        self.duration = Histogram(
            REQUEST_DURATION_NAME,
            "Time from the request reaching the app to its response being closed.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "djangoscale_requests_in_flight",
            "Requests inside the app now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.threads_busy = Gauge(
            "djangoscale_threads_busy",
            "Worker threads (or greenlets) running a request.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.threads_total = Gauge(
            "djangoscale_threads_total",
            "Worker threads (or greenlet slots) available.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "djangoscale_queue_depth",
            "Accepted connections waiting for a worker thread (servers that expose it).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.queue = Histogram(
            REQUEST_QUEUE_NAME,
            "Time a request waited before a thread took it (from X-Request-Start when an "
            "ingress sets it); servers that cannot see the wait record nothing.",
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )
        self.cpu = Counter(
            CPU_SECONDS_NAME,
            "CPU time (user + system) of the processes that serve requests.",
            registry=registry,
        )
        self._cpu_counted = time.process_time()
        # Servers without a pool supervisor count busy threads as requests in flight.
        self.pool_supervised = False
        # The histogram's bounds as prometheus-client stores them (the last one +Inf):
        # a value goes to the first bucket whose bound is >= it, as in Histogram.observe.
        self._bounds: list[float] = list(self.duration._upper_bounds)
        self._queue_bounds: list[float] = list(self.queue._upper_bounds)
        self._lock = threading.Lock()  # guards the buffers below (held for a few bytecodes)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._in_flight = 0
        self._published_in_flight: int | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._buckets = [0] * len(self._bounds)
        self._sum = 0.0
        self._queue_buckets = [0] * len(self._queue_bounds)
        self._queue_sum = 0.0
        self._flusher: threading.Thread | None = None

    def request_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def request_finished(self, method: str, status: str, seconds: float,
                         waited: float | None = None) -> None:
        """`seconds` in the app; `waited` before it, when the server or an ingress saw it."""
        key = (method, _status_class_of(status))
        bucket = bisect.bisect_left(self._bounds, seconds)
        queue_bucket = -1 if waited is None else bisect.bisect_left(self._queue_bounds, waited)
        with self._lock:
            self._in_flight -= 1
            counts = self._counts
            counts[key] = counts.get(key, 0) + 1
            self._buckets[bucket] += 1
            self._sum += seconds
            if queue_bucket >= 0:
                self._queue_buckets[queue_bucket] += 1
                self._queue_sum += waited or 0.0

    def flush(self) -> None:
        """Add what was buffered since the last flush to the prometheus values, and set the
        in-flight gauges (idempotent: a second call with nothing new only sets gauges)."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
                buckets, self._buckets = self._buckets, [0] * len(self._bounds)
                total, self._sum = self._sum, 0.0
                queue_buckets = self._queue_buckets
                self._queue_buckets = [0] * len(self._queue_bounds)
                queue_total, self._queue_sum = self._queue_sum, 0.0
                in_flight = max(self._in_flight, 0)
            for (method, cls), count in counts.items():
                self.requests.labels(method=method, status_class=cls).inc(count)
            if counts:
                # Histogram.observe, a bucket at a time: prometheus-client keeps the
                # per-bucket (not cumulative) counts in _buckets and the total in _sum.
                for index, count in enumerate(buckets):
                    if count:
                        self.duration._buckets[index].inc(count)
                self.duration._sum.inc(total)
            if any(queue_buckets):
                for index, count in enumerate(queue_buckets):
                    if count:
                        self.queue._buckets[index].inc(count)
                self.queue._sum.inc(queue_total)
            cpu = time.process_time()
            if cpu > self._cpu_counted:
                self.cpu.inc(cpu - self._cpu_counted)
                self._cpu_counted = cpu
            if in_flight != self._published_in_flight:
                self.in_flight.set(in_flight)
                if not self.pool_supervised:
                    self.threads_busy.set(in_flight)
                self._published_in_flight = in_flight

    def start_flushing(self, interval: float = FLUSH_INTERVAL) -> None:
        """Flush every `interval` s from a daemon thread, and once more at process exit."""
        if self._flusher is not None:
            return

        def loop() -> None:
            stop = threading.Event()
            while not stop.wait(interval):
                try:
                    self.flush()
                except Exception:  # a failed flush must not end the flushing
                    continue

        self._flusher = threading.Thread(target=loop, name="djangoscale-metrics-flush",
                                         daemon=True)
        self._flusher.start()
        owner = os.getpid()

        def flush_at_exit() -> None:
            # A child forked from this process inherits the atexit list and a copy of the
            # buffers: only the process that counted them may add them.
            if os.getpid() == owner:
                self.flush()

        atexit.register(flush_at_exit)
        # multiprocessing's children (granian's workers) end in os._exit, past atexit,
        # but after running the finalizers that have an exit priority.
        from multiprocessing import util

        util.Finalize(None, flush_at_exit, exitpriority=100)

    def set_pool(self, total: int, busy: int, queued: int) -> None:
        self.pool_supervised = True
        self.threads_total.set(total)
        self.threads_busy.set(busy)
        self.queue_depth.set(queued)


_process_metrics: Metrics | None = None
_process_metrics_pid: int | None = None


def process_metrics() -> Metrics:
    """The Metrics of this process (re-created after a fork, so no value is shared), with
    its flusher started."""
    global _process_metrics, _process_metrics_pid
    if _process_metrics is None or _process_metrics_pid != os.getpid():
        from prometheus_client import CollectorRegistry

        # Each process gets its own (unexposed) registry: in multiprocess mode the values
        # live in files, and only the top process's MultiProcessCollector reads them.
        _process_metrics = Metrics(registry=CollectorRegistry())
        _process_metrics_pid = os.getpid()
        _process_metrics.start_flushing(
            ProcessSettings.from_env().flush_interval or FLUSH_INTERVAL
        )
    return _process_metrics


def flush_process_metrics() -> None:
    """Flush this process's buffered request metrics, if it has any (servers call this on
    their way out; the top process's /metrics before reading the files)."""
    if _process_metrics is not None and _process_metrics_pid == os.getpid():
        _process_metrics.flush()


class _SweepingCollector:
    def __init__(self, path: str) -> None:
        from prometheus_client import multiprocess

        self.path = path
        self.inner = multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Any:
        flush_process_metrics()  # this process's own requests (cherrypy, waitress)
        sweep_dead_processes(self.path)
        # A worker creates its file empty, then sizes it: reading it in between fails with
        # struct.error (a 500 from /metrics). A file still empty holds no value yet: skip it.
        # A file can also go between the glob and the read (a worker's exit): read again.
        import struct

        for attempt in range(3):
            files = [
                name for name in glob.glob(os.path.join(self.path, "*.db"))
                if _size(name) >= 8
            ]
            try:
                return self.inner.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
            except (struct.error, FileNotFoundError):
                if attempt == 2:
                    raise
        return []


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # removed since the glob: a dead process's live gauge
        return 0


# An idle keep-alive connection is closed after this long, so a collector that went away
# does not hold a thread of the launcher's top process.
IDLE_CONNECTION_SECONDS = 60.0


def pod_figures_of(registry: Any) -> bytes:
    """The compact form (`djangoscale.pod_figures`) of what the registry reads now."""
    from djangoscale.pod_figures import encode_figures, pod_scrape_from_samples

    return encode_figures(pod_scrape_from_samples(
        (sample.name, sample.labels, sample.value)
        for family in registry.collect() for sample in family.samples))


def start_metrics_server(host: str, port: int, path: str, *extra: Any) -> Any:
    """Serve the sum over all processes on host:port (a daemon thread of this process),
    and what the `extra` collectors read at each scrape (the pod's pgbouncer): the Prometheus
    text on every path, the compact figures the operator reads on FIGURES_PATH. HTTP/1.1 with
    keep-alive: the operator reads every pod every few seconds over one connection."""
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    from djangoscale.pod_figures import FIGURES_CONTENT_TYPE, FIGURES_PATH

    registry = CollectorRegistry()
    registry.register(_SweepingCollector(path))
    for collector in extra:
        registry.register(collector)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_CONNECTION_SECONDS

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] == FIGURES_PATH:
                body, content_type = pod_figures_of(registry), FIGURES_CONTENT_TYPE
                gzipped = False
            else:
                encoder, content_type = choose_encoder(self.headers.get("Accept"))
                body = encoder(registry)
                gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
                if gzipped:
                    body = gzip.compress(body)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return  # a scrape every few seconds is not worth a log line

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    Server.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="djangoscale-metrics-server",
                     daemon=True).start()
    return server
