"""`djangoscale worker`: a Celery worker with fair scheduling, acks late and a health endpoint.

Celery has no command-line flag for `task_acks_late`, so this sets it (and
`task_reject_on_worker_lost`, so a task whose worker died is requeued too) on the app before
starting `celery worker` with the flags the Deployment shows: `--pool threads --concurrency N
--prefetch-multiplier 1 -O fair`. It also serves `/healthz` on `--health-bind`: 200 while the
consumer's event loop ticks, so a wedged worker is restarted without running `celery inspect
ping` (a Python start and a broker round trip per probe) in every pod.

SIGTERM is Celery's warm shutdown: stop consuming, finish running tasks, exit.
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from typing import Any

from djangoscale.serve.config import WorkerSettings

# The consumer loop ticks this often; /healthz fails after STALE_AFTER seconds without a tick.
TICK_SECONDS = 5.0
STALE_AFTER = 60.0


class Health:
    """The last tick of the consumer's loop, shared with the health server's thread."""

    def __init__(self) -> None:
        self.last_tick: float | None = None

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def alive(self, now: float | None = None) -> bool:
        if self.last_tick is None:
            return False
        return (time.monotonic() if now is None else now) - self.last_tick < STALE_AFTER


HEALTH = Health()


def serve_health(bind: str, health: Health = HEALTH) -> http.server.ThreadingHTTPServer:
    host, _, port = bind.rpartition(":")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] in ("/healthz", "/readyz") and health.alive()
            body = b"ok\n" if ok else b"consumer loop not ticking\n"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def heartbeat_step(health: Health = HEALTH) -> type:
    """A consumer bootstep whose timer runs in the consumer's own loop: it stops if that does."""
    from celery import bootsteps

    class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, consumer: Any) -> None:
            health.tick()
            self.tref = consumer.timer.call_repeatedly(TICK_SECONDS, health.tick)

        def stop(self, consumer: Any) -> None:
            tref = getattr(self, "tref", None)
            if tref is not None:
                tref.cancel()

    return Heartbeat


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", "-A", required=True, help="the Celery app, as for `celery -A`")
    parser.add_argument("--pool", "-P", default="threads",
                        choices=["threads", "prefork", "solo", "gevent"])
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--prefetch-multiplier", type=int, default=1,
                        help="messages reserved per concurrency slot (1: fair spread)")
    parser.add_argument("-O", dest="optimization", default="fair", choices=["fair", "default"])
    parser.add_argument("--queues", "-Q", default="celery", help="comma-separated")
    parser.add_argument("--acks-late", action=argparse.BooleanOptionalAction, default=True,
                        help="acknowledge after the task ran (tasks must be idempotent)")
    parser.add_argument("--hostname", "-n", default=None)
    defaults = WorkerSettings.from_env()
    parser.add_argument("--loglevel", "-l", default=defaults.loglevel)
    parser.add_argument("--health-bind",
                        default=defaults.health_bind,
                        help="HOST:PORT for /healthz (empty: none)")
    parser.add_argument("celery_args", nargs=argparse.REMAINDER,
                        help="more `celery worker` arguments, after --")


def celery_worker_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        "worker",
        "--pool", args.pool,
        "--concurrency", str(args.concurrency),
        "--prefetch-multiplier", str(args.prefetch_multiplier),
        "-O", args.optimization,
        "--queues", args.queues,
        "--loglevel", args.loglevel,
        # Gossip and mingle are worker-to-worker chatter that grows with the pod count.
        "--without-gossip", "--without-mingle",
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    extra = [item for item in args.celery_args if item != "--"]
    return argv + extra


def main(args: argparse.Namespace) -> int:
    if args.pool == "gevent":
        # Monkey patching must happen before anything imports sockets or threads.
        from celery import maybe_patch_concurrency

        maybe_patch_concurrency(["-P", "gevent"])
    from celery.app.utils import find_app

    app = find_app(args.app)
    app.conf.task_acks_late = args.acks_late
    app.conf.task_reject_on_worker_lost = args.acks_late
    app.conf.worker_prefetch_multiplier = args.prefetch_multiplier
    app.conf.broker_connection_retry_on_startup = True
    app.steps["consumer"].add(heartbeat_step())
    if args.health_bind:
        serve_health(args.health_bind)
    app.worker_main(argv=celery_worker_argv(args))
    return 0
