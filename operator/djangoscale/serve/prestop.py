"""`djangoscale prestop`: the app container's preStop hook.

It first tells the server to drain (`djangoscale.serve.drain`): readiness 503 and
`Connection: close` on every response, so keep-alive clients leave this pod while its
endpoint is being removed, before SIGTERM closes what is left.

With a pgbouncer sidecar: a Deployment creates a terminating pod's replacement at once, while
the old pod drains with its pool still open, so a rollout or a scale down and up can have more
pods holding pools than the budget was divided over. The hook shrinks the pod's pgbouncer pool
to `DRAINING_POOL_SIZE`, so the server connections come back as soon as their transactions
end, and the budget sets that much aside for every pod that may be draining. Then it waits
the preStop delay (load balancers stop sending meanwhile; late requests queue in pgbouncer on
the one connection). A failure to reach pgbouncer is logged and the wait still happens:
the hook must never make the pod's shutdown faster or fail.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from djangoscale.contract import DRAINING_POOL_SIZE
from djangoscale.serve.config import DEFAULTS, ENV_VARS, ConfigError, PgBouncerAdmin, parse_address


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sleep", type=float, default=0.0,
                        help="seconds to wait after shrinking the pool (the preStop delay)")
    parser.add_argument("--pool-size", type=int, default=DRAINING_POOL_SIZE,
                        help="server connections the draining pod keeps")
    parser.add_argument("--bind", help="the server's HOST:PORT (DJANGOSCALE_BIND)")


def tell_server_to_drain(bind: str | None) -> None:
    from djangoscale.serve.drain import signal_drain

    try:
        port = parse_address(bind or os.environ.get(ENV_VARS["bind"]) or DEFAULTS["bind"]).port
    except ConfigError as error:
        print(f"djangoscale prestop: bind: {error}", file=sys.stderr)
        return
    pid = signal_drain(port)
    if pid is None:
        print(f"djangoscale prestop: no server recorded for port {port}", file=sys.stderr)
    else:
        print(f"djangoscale prestop: server {pid} draining", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    from djangoscale.serve.pgbouncer import shrink_pool

    tell_server_to_drain(args.bind)
    admin = PgBouncerAdmin.from_env()
    if admin is not None:
        try:
            shrink_pool(admin, args.pool_size)
            print(f"djangoscale prestop: pgbouncer pool shrunk to {args.pool_size}",
                  file=sys.stderr)
        except Exception as error:  # noqa: BLE001 (log it; the wait must still happen)
            print(f"djangoscale prestop: could not shrink the pgbouncer pool: {error}",
                  file=sys.stderr)
    time.sleep(max(args.sleep, 0.0))
    return 0
