"""Who is active among the operator's kopf peers, read from the peering object's status.

kopf keeps one record per running operator in the peering object (`status.<id>`: priority,
lifetime, lastseen) and pauses every operator that sees a live peer of higher or equal
priority. The operator-wide loops (`djangoscale.background`) apply the same rule to
themselves: kopf pauses its watches and handlers, but not a loop started at startup.
`djangoscale doctor` reports the active peer from the same records.

In a pod, the active peer also labels its own pod (`ACTIVE_PEER_LABEL`), and the chart's
metrics API Service selects that label: the aggregator reaches the one operator that collects,
while every operator pod is Ready as long as its process is healthy (a standby that is never
Ready would hang `helm upgrade --wait` and leave its PodDisruptionBudget no disruption).
"""

from __future__ import annotations

import datetime
from typing import Any

from djangoscale.contract import ACTIVE_PEER_LABEL


def _parse_time(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    # kopf writes naive UTC times.
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def live_peers(status: dict[str, Any] | None,
               now: datetime.datetime) -> list[tuple[int, str]]:
    """(priority, identity) of the peers whose record has not expired, highest first."""
    live = []
    for identity, peer in (status or {}).items():
        if not isinstance(peer, dict) or "lastseen" not in peer:
            continue
        deadline = _parse_time(str(peer["lastseen"])) + datetime.timedelta(
            seconds=int(peer.get("lifetime", 60)))
        if deadline > now:
            live.append((int(peer.get("priority", 0)), str(identity)))
    return sorted(live, reverse=True)


def is_active(status: dict[str, Any] | None, priority: int, now: datetime.datetime) -> bool:
    """kopf's rule, without knowing our own record's id: at most one live peer (ourselves)
    at our priority or above."""
    return sum(1 for peer_priority, _ in live_peers(status, now) if peer_priority >= priority) <= 1


def is_active_peer(status: dict[str, Any] | None, identity: str,
                   now: datetime.datetime) -> bool:
    """Whether the peer `identity` (kopf's id: the pod's name, from POD_ID) is the active one:
    its own record is live and every other live peer has a lower priority. Unlike `is_active`
    it is False before kopf has written our record, so a pod that starts beside an active peer
    never takes the label for a moment."""
    live = live_peers(status, now)
    mine = [priority for priority, peer in live if peer == identity]
    return bool(mine) and all(priority < mine[0] for priority, peer in live if peer != identity)


def active_peer_patch(active: bool) -> dict[str, Any]:
    """The merge patch of the operator's own pod: the label on the active peer, none on a
    standby (null removes it)."""
    return {"metadata": {"labels": {ACTIVE_PEER_LABEL: "true" if active else None}}}
