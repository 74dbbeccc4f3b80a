"""What the launcher's middleware costs a request, in one process, without a server.

Django's WSGI handler for the sample project's `/hello/` is called directly, bare and wrapped
in the launcher's middleware (metrics on, as in a pod), best of `--repeat` batches of
`--calls` calls each; the difference is the middleware's own time per request. Then the
kept-connection check alone (`close_broken_connections`: a thread-local lookup, and one
poll() per kept connection), with no connection kept.

    .venv/bin/python bench/bench_middleware_micro.py --calls 3000 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import timeit
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLEAPP = ROOT / "tests" / "sampleapp"


def environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/hello/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }


def one_request(app: Any) -> None:
    body = app(environ(), lambda status, headers, exc_info=None: None)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def best_microseconds(func: Any, calls: int, repeat: int) -> float:
    return min(timeit.repeat(func, number=calls, repeat=repeat)) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sampleproject.settings")
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="djs-micro-"))
    for path in (str(SAMPLEAPP), str(ROOT / "operator")):
        sys.path.insert(0, path)
    from django.core.wsgi import get_wsgi_application

    from djangoscale.serve.app import wrap
    from djangoscale.serve.hygiene import close_broken_connections

    bare = get_wsgi_application()
    wrapped = wrap(bare)
    for app in (bare, wrapped):  # warm both paths
        for _ in range(200):
            one_request(app)
    bare_us = best_microseconds(lambda: one_request(bare), args.calls, args.repeat)
    wrapped_us = best_microseconds(lambda: one_request(wrapped), args.calls, args.repeat)
    check_us = best_microseconds(close_broken_connections, args.calls * 100, args.repeat)
    print(f"/hello/ through Django's WSGI handler, best of {args.repeat} x {args.calls} calls")
    print(f"  bare:            {bare_us:6.1f} us a request")
    print(f"  with middleware: {wrapped_us:6.1f} us a request")
    print(f"  middleware cost: {wrapped_us - bare_us:6.1f} us a request "
          f"({bare_us:.0f} -> {wrapped_us:.0f} us)")
    print(f"kept-connection check, no connection kept: {check_us:.2f} us a call")


if __name__ == "__main__":
    main()
