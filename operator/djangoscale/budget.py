"""The database connection budget: how many pods can hold connections, and each pod's share.

Every web pod and every Celery worker pod runs its own pool (a pgbouncer sidecar, or Django's
pool per process), so the per-pod pool is the budget (maxConnections minus the reserve) divided
over the most pods that can ever run at once: each Deployment's replicas.max plus its one rollout
surge pod. Scaling out to the maximum then cannot exhaust PostgreSQL, whatever the concurrency.

A Deployment does not count terminating pods: it creates a deleted pod's replacement at once,
while the old pod drains with its pool open (up to its grace period). So with pgbouncer every
pod, as it terminates, shrinks its pool to DRAINING_POOL_SIZE (`djangoscale prestop`, the
preStop hook), and the budget sets that much aside for each pod that may be draining beside
a full set of running ones:

    running pods x pool + draining pods x DRAINING_POOL_SIZE <= budget,
    with both at most max_pods:  pool = budget // max_pods - DRAINING_POOL_SIZE

(Kubernetes 1.35 has no Deployment policy that waits for terminating pods; its
DeploymentReplicaSetTerminatingReplicas gate only reports them, in status.terminatingReplicas.)

One module for the rule, used by the spec's validation, the pgbouncer and Deployment builders
and the status the operator reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from djangoscale.contract import (
    DEFAULT_THREADS,
    DRAINING_POOL_SIZE,
    GROWING_SERVER,
    GROWING_SERVER_GROWTH,
)

if TYPE_CHECKING:
    from djangoscale.spec import DjangoService

# Every Deployment rolls out with maxSurge 1, so one pod more than replicas.max may hold a pool.
ROLLOUT_SURGE: Final = 1
# A Celery beat scheduler is one pod, never surged (its Deployment is Recreate).
BEAT_PODS: Final = 1
# Client connections beyond the app's concurrency: health checks, management commands.
CLIENT_HEADROOM: Final = 10


def pods_at_most(web_max: int, worker_maxes: list[int], beat: bool = False) -> int:
    """The most pods that can hold database connections at once, surge pods included."""
    return (web_max + ROLLOUT_SURGE + sum(m + ROLLOUT_SURGE for m in worker_maxes)
            + (BEAT_PODS if beat else 0))


def pool_size_per_pod(budget: int, max_pods: int, draining: int = 0) -> int:
    """Each pod's share of the budget, once `draining` connections are set aside for every
    pod that may be terminating beside its replacement."""
    return budget // max_pods - draining


def peak_server_connections(pool: int, running_pods: int, draining_pods: int,
                            draining_pool: int = DRAINING_POOL_SIZE) -> int:
    """The most server connections the pods can hold: full pools in the running pods, the
    shrunk pool in each draining one."""
    return pool * running_pods + draining_pool * draining_pods


def pgbouncer_budget_at_least(max_pods: int) -> int:
    """The smallest budget that gives each pod one connection and keeps one per draining pod."""
    return max_pods * (1 + DRAINING_POOL_SIZE)


def pooler_pods_at_most(pooler_max: int) -> int:
    """Pooler pods that can hold server connections at once: its replicas.max plus the surge
    pod of its rollout (a terminating one keeps DRAINING_POOL_SIZE, see the pooler builder)."""
    return pooler_max + ROLLOUT_SURGE


def pooler_clients_at_most(spec: dict[str, Any]) -> int:
    """Client connections the app's pods may open to the pooler (raw spec, defaults applied):
    one per thread of every pod, surge pods included, and the beat pod's one."""
    web, workers = unpooled_connections_at_most(spec)
    return web + workers + (BEAT_PODS if "beat" in spec else 0)


@dataclass(frozen=True)
class PoolSizing:
    pool_size_per_pod: int
    max_client_conn_per_pod: int
    max_pods: int
    # Django's native pool lives in each worker process; pgbouncer's is one per pod.
    pool_size_per_process: int

    @property
    def connections_at_max(self) -> int:
        return self.pool_size_per_pod * self.max_pods


def size_pool(ds: DjangoService) -> PoolSizing:
    """Per-pod pool and client limits; the spec was validated to fit the budget."""
    assert ds.database is not None
    # Web pods and Celery worker pods share one budget, each pod with its own pool.
    max_pods = ds.max_pods
    workers = ds.server.workers
    # Worker pods run the same pgbouncer config: it must take the busiest pod's clients.
    busiest = max([ds.server.concurrency] + [group.concurrency for group in ds.workers])
    clients = ds.pgbouncer.max_client_conn or busiest + CLIENT_HEADROOM
    if ds.uses_django_pool:
        # A process never needs more connections than threads it runs.
        per_process = min(
            pool_size_per_pod(ds.database.pool_budget, max_pods * workers), ds.server.max_threads
        )
        return PoolSizing(per_process * workers, clients, max_pods, per_process)
    if ds.pooler is not None:
        # The pooler's pods, not the app's, hold the server connections.
        pooler_pods = pooler_pods_at_most(ds.pooler.max_replicas)
        pool = ds.pgbouncer.pool_size or pool_size_per_pod(
            ds.database.pool_budget, pooler_pods, DRAINING_POOL_SIZE
        )
        return PoolSizing(pool, ds.pooler.max_client_conn, pooler_pods, pool)
    if ds.pgbouncer.pool_size is not None:
        pool = ds.pgbouncer.pool_size
    else:
        # A pod never needs more server connections than requests it can run at once.
        pool = min(
            pool_size_per_pod(ds.database.pool_budget, max_pods, DRAINING_POOL_SIZE),
            ds.server.concurrency,
        )
    return PoolSizing(pool, clients, max_pods, pool)



def budget_problems(
    spec: dict[str, Any], database: dict[str, Any], mode: str, explicit_mode: str | None
) -> list[str]:
    """The spec's database budget rules (raw spec, defaults applied), one line per problem."""
    problems: list[str] = []
    replicas = spec["replicas"]
    budget = database["maxConnections"] - database["reservedConnections"]
    worker_maxes = [group["replicas"]["max"] for group in spec.get("workers", [])]
    pods = pods_at_most(replicas["max"], worker_maxes, beat="beat" in spec)
    figures = (
        f"({database['maxConnections']} - {database['reservedConnections']} = {budget} "
        f"connections for {pods} pods)"
    )
    if mode == "external":
        # The user's own pooler guards the database; nothing here is divided.
        return problems
    if mode == "pooler":
        return _pooler_problems(spec, database, budget)
    if budget < pods:
        largest = budget - (pods - replicas["max"])
        problems.append(
            "spec.database.maxConnections: the budget (maxConnections minus reservedConnections) "
            "must give one server connection to each of spec.replicas.max pods plus one rollout "
            "surge pod (and the same for each worker group); the largest spec.replicas.max it "
            "supports is maxConnections - reservedConnections - 1 - the worker groups' pods = "
            f"{largest} here (budget {budget} cannot give {pods} pods a connection each; "
            "use pooling.mode: pooler)"
        )
    if mode == "pgbouncer" and budget < pgbouncer_budget_at_least(pods):
        largest = budget // (1 + DRAINING_POOL_SIZE) - (pods - replicas["max"])
        problems.append(
            "spec.database.maxConnections: with pgbouncer each pod needs one server connection "
            "while it runs and keeps one while it terminates beside its replacement, so the "
            "budget (maxConnections minus reservedConnections) must be at least 2 x "
            "(spec.replicas.max + 1 surge pod + the worker groups' pods) "
            f"({budget} < 2 x {pods}); "
            + (f"the largest spec.replicas.max it supports is {largest} here" if largest >= 1
               else "no spec.replicas.max fits beside the worker groups' pods here")
            + f" (budget {budget} cannot give {pods} pods a connection each and keep one for "
            "each terminating pod; use pooling.mode: pooler)"
        )
    if mode == "pgbouncer" and "secretName" not in database:
        problems.append(
            "spec.database.secretName: required when spec.pgbouncer.enabled is true "
            "(pgbouncer needs the credentials)"
        )
    workers = spec["server"]["workers"]
    if explicit_mode == "django" and budget < pods * workers:
        problems.append(
            "spec.pooling.mode: django pools per process; the budget (maxConnections minus "
            "reservedConnections) must give one connection to each of spec.server.workers "
            f"processes in spec.replicas.max pods plus one surge pod {figures[:-1]}, "
            f"x {workers} workers)"
        )
    if mode == "none":
        problems += _unpooled_problems(spec, budget)
    pool_size = spec["pgbouncer"].get("poolSize")
    if mode == "pgbouncer" and pool_size is not None and (
        pool_size + DRAINING_POOL_SIZE
    ) * pods > budget:
        problems.append(
            "spec.pgbouncer.poolSize: (poolSize + 1 connection kept by a terminating pod) x "
            "(spec.replicas.max + 1 surge pod + the worker groups' pods) must fit the budget "
            "(spec.database.maxConnections minus reservedConnections) "
            f"(({pool_size} + {DRAINING_POOL_SIZE}) x {pods} > {budget})"
        )
    return problems


def threads_at_most(server: dict[str, Any]) -> int:
    """Threads one web process may run (raw spec, defaults applied): the CRD's CEL twin."""
    threads: int = server.get("threads", DEFAULT_THREADS[server["type"]])
    if "maxThreads" in server:
        return int(server["maxThreads"])
    if server["type"] == GROWING_SERVER:
        return math.ceil(threads * GROWING_SERVER_GROWTH)
    return threads


def unpooled_connections_at_most(spec: dict[str, Any]) -> tuple[int, int]:
    """(web, workers): connections every thread of every pod may open without a pool,
    at replicas.max plus one surge pod per Deployment (raw spec, defaults applied)."""
    web = (spec["replicas"]["max"] + ROLLOUT_SURGE) * spec["server"]["workers"] * threads_at_most(
        spec["server"]
    )
    workers = sum(
        (group["replicas"]["max"] + ROLLOUT_SURGE) * group["concurrency"]
        for group in spec.get("workers", [])
    )
    return web, workers


def unpooled_connections_for(ds: DjangoService) -> int:
    """What `unpooled_connections_at_most` counts, from the parsed spec."""
    web = (ds.max_replicas + ROLLOUT_SURGE) * ds.server.concurrency
    return web + sum((g.max_replicas + ROLLOUT_SURGE) * g.concurrency for g in ds.workers)


def _unpooled_problems(spec: dict[str, Any], budget: int) -> list[str]:
    web, workers = unpooled_connections_at_most(spec)
    if web + workers <= budget:
        return []
    server, replicas = spec["server"], spec["replicas"]
    explicit = "mode" in spec["pooling"]
    figures = (
        f"{replicas['max'] + ROLLOUT_SURGE} pods x {server['workers']} workers x "
        f"{threads_at_most(server)} threads = {web}"
    )
    if workers:
        figures += f", + {workers} for the worker groups' concurrency"
    return [
        "spec.pooling.mode: none "
        + ("" if explicit else "(what spec.pgbouncer.enabled: false means without a mode) ")
        + "opens a database connection per thread, so the budget (spec.database.maxConnections "
        "minus reservedConnections) must cover spec.server.workers x maxThreads in each of "
        "spec.replicas.max pods plus one surge pod, and each worker group's concurrency x "
        "(replicas.max + 1); use pooling.mode pgbouncer, or raise spec.database.maxConnections "
        f"({figures}; {web + workers} > budget "
        f"{spec['database']['maxConnections']} - {spec['database']['reservedConnections']} "
        f"= {budget})"
    ]


def _pooler_problems(spec: dict[str, Any], database: dict[str, Any], budget: int) -> list[str]:
    """pooling.mode pooler: the budget is divided over the pooler's pods, and replicas.min of
    them must take every client connection the app's pods may open."""
    problems = []
    pooler = spec["pooling"]["pooler"]
    pooler_pods = pooler_pods_at_most(pooler["replicas"]["max"])
    if "secretName" not in database:
        problems.append(
            "spec.database.secretName: required with pooling.mode pooler (the pooler's "
            "pgbouncer needs the credentials)"
        )
    if budget < pgbouncer_budget_at_least(pooler_pods):
        problems.append(
            "spec.database.maxConnections: with pooling.mode pooler each pooler pod needs one "
            "server connection while it runs and keeps one while it terminates, so the budget "
            "(maxConnections minus reservedConnections) must be at least 2 x "
            f"(spec.pooling.pooler.replicas.max + 1 surge pod) ({budget} < 2 x {pooler_pods})"
        )
    pool_size = spec["pgbouncer"].get("poolSize")
    if pool_size is not None and (pool_size + DRAINING_POOL_SIZE) * pooler_pods > budget:
        problems.append(
            "spec.pgbouncer.poolSize: with pooling.mode pooler, (poolSize + 1 connection kept "
            "by a terminating pooler pod) x (spec.pooling.pooler.replicas.max + 1 surge pod) "
            "must fit the budget (spec.database.maxConnections minus reservedConnections) "
            f"(({pool_size} + {DRAINING_POOL_SIZE}) x {pooler_pods} > {budget})"
        )
    clients = pooler_clients_at_most(spec)
    capacity = pooler["replicas"]["min"] * pooler["maxClientConn"]
    if clients > capacity:
        problems.append(
            "spec.pooling.pooler.maxClientConn: spec.pooling.pooler.replicas.min pooler pods x "
            "maxClientConn must take a client connection from every thread of "
            "spec.replicas.max app pods plus one surge pod (spec.server.workers x maxThreads "
            "each), each worker group's concurrency x (replicas.max + 1) and the beat pod; "
            "raise maxClientConn or pooling.pooler.replicas.min, or lower spec.replicas.max "
            f"({pooler['replicas']['min']} x {pooler['maxClientConn']} = {capacity} < "
            f"{clients} client connections)"
        )
    return problems
