"""The operator's entry module: importing it registers every handler, and nothing else does.

`djangoscale run` imports it, builds the shared context (`djangoscale.context`) from the
settings and starts kopf with that context as `memo`. The handler modules import the layers
below them (spec, builders, the API layer); none imports another handler module or this one.
`background` holds the index of every DjangoService that their operator-wide loops read.
"""

from __future__ import annotations

from typing import Any

import kopf

from djangoscale import background
from djangoscale.autoscaling import handlers as autoscaling
from djangoscale.celery import handlers as celery
from djangoscale.context import context_of
from djangoscale.controller import handlers, kopf_settings

__all__ = ["autoscaling", "background", "celery", "handlers", "kopf_settings"]


@kopf.on.cleanup()
async def close_context(memo: object, **_: Any) -> None:
    """Stop the metrics API server, close the scrapers' and the API's connections."""
    await context_of(memo).close()
