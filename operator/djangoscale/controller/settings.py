"""kopf settings: quiet on success, state kept off the user's object where kopf allows it."""

from __future__ import annotations

import logging
from typing import Any

import kopf


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
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = 16
    # With peering (two replicas, one active): a crashed active peer is given up after 20 s,
    # not kopf's default 60 s, so the standby takes over within the 60 s users expect.
    settings.peering.lifetime = 20
