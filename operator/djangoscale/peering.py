"""Who is active among the operator's kopf peers, read from the peering object's status.

kopf keeps one record per running operator in the peering object (`status.<id>`: priority,
lifetime, lastseen) and pauses every operator that sees a live peer of higher or equal
priority. The operator-wide loops (`djangoscale.background`) apply the same rule to
themselves: kopf pauses its watches and handlers, but not a loop started at startup.
`djangoscale doctor` reports the active peer from the same records.
"""

from __future__ import annotations

import datetime
from typing import Any


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
