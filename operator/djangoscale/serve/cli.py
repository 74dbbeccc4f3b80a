"""`djangoscale serve`: parse flags and environment, prepare metrics, run the chosen server.

Only argparse and the config module are imported when the parser is built; the server and
prometheus-client are imported once the configuration is known.
"""

from __future__ import annotations

import argparse
import logging
import sys

from djangoscale.serve.config import ConfigError, ServeConfig, configure_parser, from_args

log = logging.getLogger("djangoscale.serve")


def configure(parser: argparse.ArgumentParser) -> None:
    configure_parser(parser)


def serve(config: ServeConfig) -> int:
    from djangoscale.serve.metrics import prepare_multiprocess_dir

    # Must happen before prometheus_client is imported anywhere in this process.
    metrics_dir = prepare_multiprocess_dir()
    from djangoscale.serve.drain import drain_on_signal, forget_pid, record_pid
    from djangoscale.serve.servers import runner_for

    runner = runner_for(config.server)
    drain_on_signal()
    record_pid(config.bind.port)
    if config.metrics_bind is not None:
        from djangoscale.serve.config import PgBouncerAdmin
        from djangoscale.serve.metrics import start_metrics_server
        from djangoscale.serve.pgbouncer import PgBouncerCollector

        admin = PgBouncerAdmin.figures_from_env()
        extra = [] if admin is None else [PgBouncerCollector(admin)]
        start_metrics_server(
            config.metrics_bind.host, config.metrics_bind.port, metrics_dir, *extra
        )
    print(
        f"djangoscale serve: {config.wsgi_app} under {config.server} on {config.bind} "
        f"(workers={config.workers} threads={config.threads} max_threads={config.max_threads} "
        f"queue={config.queue_size}); metrics on {config.metrics_bind or 'off'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        return runner(config)
    finally:
        forget_pid(config.bind.port)


def main(args: argparse.Namespace) -> int:
    try:
        config = from_args(args)
    except ConfigError as error:
        print(f"djangoscale serve: {error}", file=sys.stderr)
        return 2
    return serve(config)
