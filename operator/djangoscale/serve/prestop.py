"""`djangoscale prestop`: the app container's preStop hook when a pgbouncer sidecar runs.

A Deployment creates a terminating pod's replacement at once, while the old pod drains with
its pool still open, so a rollout or a scale down and up can have more pods holding pools than
the budget was divided over. The hook shrinks the pod's pgbouncer pool to
`DRAINING_POOL_SIZE` first, so the server connections come back as soon as their transactions
end, and the budget sets that much aside for every pod that may be draining. Then it waits
the preStop delay (load balancers stop sending meanwhile; late requests queue in pgbouncer on
the one connection). A failure to reach pgbouncer is logged and the wait still happens:
the hook must never make the pod's shutdown faster or fail.
"""

from __future__ import annotations

import argparse
import sys
import time

from djangoscale.contract import DRAINING_POOL_SIZE
from djangoscale.serve.config import PgBouncerAdmin


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sleep", type=float, default=0.0,
                        help="seconds to wait after shrinking the pool (the preStop delay)")
    parser.add_argument("--pool-size", type=int, default=DRAINING_POOL_SIZE,
                        help="server connections the draining pod keeps")


def main(args: argparse.Namespace) -> int:
    from djangoscale.serve.pgbouncer import shrink_pool

    admin = PgBouncerAdmin.from_env()
    if admin is None:
        print("djangoscale prestop: no pgbouncer in this pod (DJANGOSCALE_PGBOUNCER unset)",
              file=sys.stderr)
    else:
        try:
            shrink_pool(admin, args.pool_size)
            print(f"djangoscale prestop: pgbouncer pool shrunk to {args.pool_size}",
                  file=sys.stderr)
        except Exception as error:  # noqa: BLE001 (log it; the wait must still happen)
            print(f"djangoscale prestop: could not shrink the pgbouncer pool: {error}",
                  file=sys.stderr)
    time.sleep(max(args.sleep, 0.0))
    return 0
