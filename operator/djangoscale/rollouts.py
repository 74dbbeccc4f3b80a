"""Staggered rollouts: an operator upgrade never restarts every app at once.

A new operator version whose builders render a different pod template (a new label, a changed
probe) would otherwise roll every Deployment it manages within the same minute. A rollout the
user did not ask for, one that comes with an unchanged spec (a new operator version, a rotated
database Secret), waits for a slot of `RolloutGate`: at most `limit` DjangoServices roll such a
change at a time, and a slot frees when every Deployment of its DjangoService has rolled out
and is Available, as node pool upgrades surge a few nodes at a time. A spec edit is the user's
intent and rolls at once, as before.

A rollout that never completes (a pod template that cannot start) holds its slot, and so stops
the wave, as a node pool upgrade stops at a failed node: the status says which one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from djangoscale.conditions import rolled_out
from djangoscale.k8s import Api

# (namespace, name) of a DjangoService.
Key = tuple[str, str]


class RolloutGate:
    """Slots for rollouts nobody asked for, shared by every reconcile (threads, hence a lock).

    `limit` 0 turns staggering off (every rollout goes at once).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._rolling: list[Key] = []
        self._waiting: list[Key] = []

    @property
    def rolling(self) -> list[Key]:
        with self._lock:
            return list(self._rolling)

    @property
    def waiting(self) -> list[Key]:
        with self._lock:
            return list(self._waiting)

    def admit(self, key: Key) -> bool:
        """True when `key` may roll now (it holds a slot until `finish`); else it queues."""
        with self._lock:
            if key in self._rolling or self.limit <= 0:
                return True
            free = self.limit - len(self._rolling)
            # First come, first served: the first `free` waiting go before a newcomer.
            first = self._waiting[:free] if free > 0 else []
            if key in first or (free > 0 and key not in self._waiting
                                and len(self._waiting) < free):
                if key in self._waiting:
                    self._waiting.remove(key)
                self._rolling.append(key)
                return True
            if key not in self._waiting:
                self._waiting.append(key)
            return False

    def withdraw(self, key: Key) -> None:
        """`key` no longer waits (its spec edit rolled it, or there is nothing to roll)."""
        with self._lock:
            if key in self._waiting:
                self._waiting.remove(key)

    def holds(self, key: Key) -> bool:
        with self._lock:
            return key in self._rolling

    def position(self, key: Key) -> int:
        """1 for the next in line; 0 when not waiting."""
        with self._lock:
            return self._waiting.index(key) + 1 if key in self._waiting else 0

    def finish(self, key: Key) -> list[Key]:
        """Free `key`'s slot; the waiting services that may now go (to reconcile at once)."""
        with self._lock:
            if key not in self._rolling:
                return []
            self._rolling.remove(key)
            return self._waiting[:max(0, self.limit - len(self._rolling))]

    def retain(self, present: Iterable[Key]) -> list[Key]:
        """Forget services that no longer exist (deleted mid-rollout or while waiting)."""
        keep = set(present)
        with self._lock:
            gone = [k for k in self._rolling if k not in keep]
            self._rolling = [k for k in self._rolling if k in keep]
            self._waiting = [k for k in self._waiting if k in keep]
            return self._waiting[:max(0, self.limit - len(self._rolling))] if gone else []


def user_asked(body: dict[str, Any]) -> bool:
    """The spec changed since the last reconcile that reported: a rollout the user asked for."""
    observed = (body.get("status") or {}).get("observedGeneration")
    return observed is None or observed != body["metadata"].get("generation")


def template_changes(api: Api, deployment: dict[str, Any]) -> bool:
    """Applying `deployment` would change the live pod template, i.e. roll its pods.

    Asked of the API server (a dry-run apply), which fills in the same defaults as on the
    live object, so only a real difference counts. A Deployment that does not exist yet
    rolls nothing.
    """
    metadata = deployment["metadata"]
    live = api.get(deployment["apiVersion"], deployment["kind"], metadata.get("namespace"),
                   metadata["name"])
    if live is None:
        return False
    dry = api.apply(deployment, dry_run=True)
    return bool(dry.get("spec", {}).get("template") != live.get("spec", {}).get("template"))


def all_rolled_out(deployments: Iterable[dict[str, Any] | None]) -> bool:
    return all(live is not None and rolled_out(live) for live in deployments)
