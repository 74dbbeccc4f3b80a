"""Pure builders: each turns the typed spec into one child object, with no I/O.

`build_children` is the list the operator applies and `djangoscale render` prints.
"""

from __future__ import annotations

from typing import Any

from djangoscale.builders.beat import build_beat_deployment
from djangoscale.builders.deployment import build_deployment
from djangoscale.builders.hpa import build_hpa
from djangoscale.builders.migration import build_migration_job, mark_migrated
from djangoscale.builders.pdb import build_pdb
from djangoscale.builders.pgbouncer import DatabaseCredentials, build_database_secret
from djangoscale.builders.pooler import build_pooler
from djangoscale.builders.routes import build_http_route, build_ingress
from djangoscale.builders.service import build_service
from djangoscale.builders.static_files import with_static_files
from djangoscale.builders.workers import build_workers
from djangoscale.spec import DjangoService


def build_children(
    ds: DjangoService, credentials: DatabaseCredentials | None = None
) -> list[dict[str, Any]]:
    """Every child of a DjangoService, in the order they should be applied.

    `credentials` are the contents of the user's database Secret; without them (rendering
    offline) the database Secret is built from placeholders that name the keys to fill in.
    """
    children: list[dict[str, Any]] = []
    secret = None
    if ds.database is not None and ds.database.secret_name is not None:
        secret = build_database_secret(ds, credentials or DatabaseCredentials.placeholder())
        children.append(secret)
    children.append(with_static_files(ds, build_deployment(ds, secret)))
    children.append(build_service(ds))
    children.append(build_pdb(ds))
    if ds.autoscaling.enabled:
        children.append(build_hpa(ds))
    children += build_workers(ds, secret)
    if ds.beat is not None:
        children.append(build_beat_deployment(ds, secret))
    if ds.ingress is not None:
        children.append(build_ingress(ds))
    # Last: a cluster without the Gateway API refuses it, after everything else is in place.
    if ds.gateway is not None:
        children.append(build_http_route(ds))
    children = with_migration(ds, children)
    if ds.uses_pooler and secret is not None:
        # Right after its Secret, before the app's pods that connect to it; never held for a
        # migration (the Job connects to the database directly).
        children[1:1] = build_pooler(ds, secret)
    return children


def with_migration(ds: DjangoService, children: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The migration Job before the first Deployment, every Deployment marked with the
    migration its pods need."""
    if not ds.migrations.enabled:
        return children
    marked = [mark_migrated(child, ds) if child["kind"] == "Deployment" else child
              for child in children]
    first = next(i for i, child in enumerate(marked) if child["kind"] == "Deployment")
    return [*marked[:first], build_migration_job(ds), *marked[first:]]
