"""`djangoscale run`: the operator, with a liveness endpoint and Prometheus metrics."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from djangoscale.settings import OperatorSettings


def configure(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)"
    )
    parser.add_argument("--liveness-port", type=int, default=8080, help="0 disables it")
    parser.add_argument("--metrics-port", type=int, default=8081)
    parser.add_argument("--bind", default="0.0.0.0", help="address of liveness and metrics")
    parser.add_argument("--peering", default=None, help="kopf peering name for HA (one active)")
    parser.add_argument("--priority", type=int, default=0, help="peering priority")
    parser.add_argument("-v", "--verbose", action="store_true")
    metrics_api = parser.add_argument_group(
        "custom.metrics.k8s.io server (the HPA's RPS metric; defaults from DJANGOSCALE_* env, "
        "see djangoscale/settings.py)")
    metrics_api.add_argument("--metrics-api-port", type=int, default=None,
                             help="HTTPS port (default 6443; 0 picks one; -1 disables)")
    metrics_api.add_argument("--metrics-api-bind", default=None,
                             help="address to listen on (default: --bind)")
    metrics_api.add_argument("--metrics-api-cert-file", type=Path, default=None,
                             help="serving cert (PEM); without it one is generated at start")
    metrics_api.add_argument("--metrics-api-key-file", type=Path, default=None)
    metrics_api.add_argument("--scrape-interval", type=float, default=None,
                             help="seconds between scrapes of the pods (default 2)")
    metrics_api.add_argument("--stable-window", type=float, default=None,
                             help="seconds of the stable RPS window (default 60)")
    metrics_api.add_argument("--panic-window", type=float, default=None,
                             help="seconds of the burst RPS window (default 6)")


def settings_from(args: argparse.Namespace) -> OperatorSettings:
    """The environment's settings, with the flags given on the command line over them."""
    from djangoscale.settings import OperatorSettings

    settings = OperatorSettings.from_env()
    return settings.with_overrides(
        port=args.metrics_api_port,
        bind=args.metrics_api_bind or settings.bind or args.bind,
        cert_file=args.metrics_api_cert_file, key_file=args.metrics_api_key_file,
        scrape_interval=args.scrape_interval, stable_window=args.stable_window,
        panic_window=args.panic_window,
    )


def main(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    import djangoscale.entry  # noqa: F401  (registers the handlers)
    from djangoscale.context import OperatorContext, PeeringSeat
    from djangoscale.k8s import KubernetesApi

    settings = settings_from(args)
    context = OperatorContext.create(settings, KubernetesApi(settings.kubeconfig))
    if args.peering:
        context.peering = PeeringSeat(args.peering, args.priority,
                                      args.namespace[0] if args.namespace else None)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    start_http_server(args.metrics_port, addr=args.bind)
    kwargs: dict[str, object] = {}
    if args.peering:
        kwargs.update(peering_name=args.peering, priority=args.priority, standalone=False)
    else:
        kwargs.update(standalone=True)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=f"http://{args.bind}:{args.liveness_port}/healthz"
            if args.liveness_port
            else None,
            memo=context,
            **kwargs,
        )
    )
    return 0
