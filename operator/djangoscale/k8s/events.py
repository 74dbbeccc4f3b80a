"""Warning events about a DjangoService, posted through the API layer.

kopf's `kopf.warn` works only inside a kopf handler (it needs the event queue kopf sets up for
its handlers); the operator-wide loops (resync, RPS collection) run outside any handler, so
every event the operator posts goes this way instead.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any, Final

from djangoscale.k8s.api import Api, ApiError
from djangoscale.k8s.kinds import collection_path

logger = logging.getLogger(__name__)

# The component that events name as their source (`kubectl describe` shows it).
REPORTING_COMPONENT: Final = "djangoscale"
# The API server caps an event's message; the rest is cut rather than refused.
MAX_MESSAGE_LENGTH: Final = 1024


def warning_event(obj: dict[str, Any], reason: str, message: str,
                  now: datetime.datetime) -> dict[str, Any]:
    """A core/v1 Warning Event about `obj`, as `kubectl describe` lists them."""
    metadata = obj["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": metadata["namespace"],
        },
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid", ""),
        },
        "type": "Warning",
        "reason": reason,
        "message": message[:MAX_MESSAGE_LENGTH],
        "source": {"component": REPORTING_COMPONENT},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def warn(api: Api, obj: dict[str, Any], reason: str, message: str) -> None:
    """Post a Warning event about `obj` (a DjangoService or one of its children). An event
    that cannot be posted is logged: it never fails the reconcile or the status beside it."""
    event = warning_event(obj, reason, message, datetime.datetime.now(datetime.UTC))
    try:
        api.call("POST", collection_path("v1", "Event", obj["metadata"]["namespace"]),
                 body=event)
    except ApiError as error:
        if error.status == 403 and "NamespaceTerminating" in error.body:
            # The namespace and everything in it are going away: nobody will read the event.
            logger.info("the %s event was not posted: namespace %s is being deleted", reason,
                        obj["metadata"]["namespace"])
            return
        logger.warning("could not post the %s event: %s %s %s", reason, error.status,
                       error.reason, error.body[:300])
