"""The database connection budget: how many pods can hold connections, and each pod's share.

Every web pod and every Celery worker pod runs its own pool (a pgbouncer sidecar, or Django's
pool per process), so the per-pod pool is the budget (maxConnections minus the reserve) divided
over the most pods that can ever run at once: each Deployment's replicas.max plus its one rollout
surge pod. Scaling out to the maximum then cannot exhaust PostgreSQL, whatever the concurrency.

One module for the rule, used by the spec's validation, the pgbouncer and Deployment builders
and the status the operator reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from djangoscale.spec import DjangoService

# Every Deployment rolls out with maxSurge 1, so one pod more than replicas.max may hold a pool.
ROLLOUT_SURGE: Final = 1
# Client connections beyond the app's concurrency: health checks, management commands.
CLIENT_HEADROOM: Final = 10


def pods_at_most(web_max: int, worker_maxes: list[int]) -> int:
    """The most pods that can hold database connections at once, surge pods included."""
    return web_max + ROLLOUT_SURGE + sum(m + ROLLOUT_SURGE for m in worker_maxes)


def pool_size_per_pod(budget: int, max_pods: int) -> int:
    return budget // max_pods


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
    if ds.pgbouncer.pool_size is not None:
        pool = ds.pgbouncer.pool_size
    else:
        # A pod never needs more server connections than requests it can run at once.
        pool = min(pool_size_per_pod(ds.database.pool_budget, max_pods), ds.server.concurrency)
    return PoolSizing(pool, clients, max_pods, pool)



def budget_problems(
    spec: dict[str, Any], database: dict[str, Any], mode: str, explicit_mode: str | None
) -> list[str]:
    """The spec's database budget rules (raw spec, defaults applied), one line per problem."""
    problems = []
    replicas = spec["replicas"]
    budget = database["maxConnections"] - database["reservedConnections"]
    worker_maxes = [group["replicas"]["max"] for group in spec.get("workers", [])]
    pods = pods_at_most(replicas["max"], worker_maxes)
    figures = (
        f"({database['maxConnections']} - {database['reservedConnections']} = {budget} "
        f"connections for {pods} pods)"
    )
    if budget < pods:
        largest = budget - (pods - replicas["max"])
        problems.append(
            "spec.database.maxConnections: the budget (maxConnections minus reservedConnections) "
            "must give one server connection to each of spec.replicas.max pods plus one rollout "
            "surge pod (and the same for each worker group); the largest spec.replicas.max it "
            "supports is maxConnections - reservedConnections - 1 - the worker groups' pods = "
            f"{largest} here"
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
    pool_size = spec["pgbouncer"].get("poolSize")
    if pool_size is not None and pool_size * pods > budget:
        problems.append(
            "spec.pgbouncer.poolSize: poolSize x (spec.replicas.max + 1 surge pod) must fit the "
            "budget (spec.database.maxConnections minus reservedConnections) "
            f"({pool_size} x {pods} > {budget})"
        )
    return problems
