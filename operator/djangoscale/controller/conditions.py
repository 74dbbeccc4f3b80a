"""Status conditions, kept as the API conventions ask: keyed by type, with transition times.

`Ready`, `Progressing` and `Degraded` are always present (Unknown at first), so Flux kstatus and
Argo CD can tell "not yet" from "failed".
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Reconciling", "Stalled")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: list[dict[str, Any]],
    current: list[Condition],
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """The new conditions list; a condition keeps its lastTransitionTime unless status changed."""
    old = {item.get("type"): item for item in previous or []}
    merged = []
    for condition in current:
        before = old.get(condition.type, {})
        changed = before.get("status") != condition.status
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now if changed else before.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    # Conditions of other types (MetricsAvailable, ...) are owned by other writers: keep them.
    known = {condition.type for condition in current}
    merged += [item for item in previous or [] if item.get("type") not in known]
    # One order whoever writes, so two writers never flap the list (and the resourceVersion).
    return sorted(merged, key=condition_order)


def condition_order(item: dict[str, Any]) -> tuple[int, str]:
    type_ = str(item.get("type"))
    rank = CONDITION_TYPES.index(type_) if type_ in CONDITION_TYPES else len(CONDITION_TYPES)
    return rank, type_


def with_kstatus(conditions: list[Condition]) -> list[Condition]:
    """Add the two abnormal-true conditions Flux's kstatus reads: Reconciling mirrors
    Progressing, Stalled mirrors Degraded (kstatus ignores both of ours)."""
    by_type = {condition.type: condition for condition in conditions}
    extra = []
    for ours, theirs in (("Progressing", "Reconciling"), ("Degraded", "Stalled")):
        if ours in by_type:
            source = by_type[ours]
            extra.append(Condition(theirs, source.status, source.reason, source.message))
    return conditions + extra


def failed(reason: str, message: str) -> list[Condition]:
    """The object cannot be run as written: nothing will change until someone edits it."""
    return with_kstatus(
        [
            Condition("Ready", "False", reason, message),
            Condition("Progressing", "False", reason, message),
            Condition("Degraded", "True", reason, message),
        ]
    )


def find(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((item for item in conditions or [] if item.get("type") == type_), None)
