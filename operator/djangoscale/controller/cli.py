"""`djangoscale run`: the operator, with a liveness endpoint and Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument("--liveness-port", type=int, default=8080)
    parser.add_argument("--metrics-port", type=int, default=8081)
    parser.add_argument("--bind", default="0.0.0.0", help="address of liveness and metrics")
    parser.add_argument("--peering", default=None, help="kopf peering name for HA (one active)")
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
    parser.add_argument("-v", "--verbose", action="store_true")


def main(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import djangoscale.controller  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    start_http_server(args.metrics_port, addr=args.bind)
    kwargs = {}
    if args.peering:
        kwargs.update(peering_name=args.peering, priority=args.priority, standalone=False)
    else:
        kwargs.update(standalone=True)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{args.bind}:{args.liveness_port}/healthz",
            **kwargs,
        )
    )
    return 0
