"""kopf settings: quiet on success, state kept off the user's object where kopf allows it."""

from __future__ import annotations

import logging
from typing import Any, Final

import kopf

# Seconds a watch may stay silent before it is restarted; the client gives the server
# WATCH_CLIENT_MARGIN_SECONDS more to answer before giving up itself.
WATCH_SERVER_TIMEOUT_SECONDS: Final = 300
WATCH_CLIENT_MARGIN_SECONDS: Final = 30
# Sync handlers (reconciles) run at once in kopf's thread pool.
MAX_HANDLER_THREADS: Final = 16
# With peering (two replicas, one active): a crashed active peer is given up after this, not
# kopf's default 60 s, so the standby takes over within the 60 s users expect.
PEERING_LIFETIME_SECONDS: Final = 20


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Success is not news: events only for warnings (the handlers post those themselves).
    settings.posting.level = logging.WARNING
    # Handler progress lives in status, not in annotations the user's GitOps tool would see.
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="djangoscale.io", key="last-handled-configuration"
    )
    # Watches that stall behind a proxy are restarted rather than waiting forever
    # (kopf issue #585).
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_SECONDS
    settings.watching.client_timeout = WATCH_SERVER_TIMEOUT_SECONDS + WATCH_CLIENT_MARGIN_SECONDS
    settings.execution.max_workers = MAX_HANDLER_THREADS
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
