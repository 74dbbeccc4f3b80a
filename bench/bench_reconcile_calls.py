"""API calls per reconcile of one DjangoService: its creation, a resync of it unchanged, and
the same resync when it prunes again (as every resync did before).

At 1,000 DjangoServices every resync round makes this many calls per object, so the count is
what a round costs the API server and the operator. Counted on the in-memory API of the unit
tests (`tests/fixtures/fake_api.py`), which records each call the operator makes; the spec is
the unit tests' own (`tests/unit/test_reconcile.py`: a database, autoscaling on).

    .venv/bin/python bench/bench_reconcile_calls.py
"""

from __future__ import annotations

import collections
import copy
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kopf  # noqa: E402

from djangoscale.context import OperatorContext  # noqa: E402
from djangoscale.controller import handlers  # noqa: E402
from djangoscale.settings import OperatorSettings  # noqa: E402
from tests.fixtures.fake_api import FakeApi  # noqa: E402
from tests.unit.test_reconcile import SHOP, database_secret  # noqa: E402

VERBS = ("get", "list", "apply", "patch_status", "scale", "delete")


def counted(api: FakeApi) -> collections.Counter[tuple[str, str]]:
    """Wrap the API's calls; the counter fills as the operator calls them."""
    calls: collections.Counter[tuple[str, str]] = collections.Counter()
    for verb in VERBS:
        original = getattr(api, verb)

        def wrapper(*args: Any, _original: Any = original, _verb: str = verb,
                    **kwargs: Any) -> Any:
            kind = args[0]["kind"] if _verb == "apply" else args[1]
            calls[(_verb, kind)] += 1
            return _original(*args, **kwargs)

        setattr(api, verb, wrapper)
    return calls


def show(title: str, calls: collections.Counter[tuple[str, str]]) -> None:
    by_verb: collections.Counter[str] = collections.Counter()
    for (verb, _), n in calls.items():
        by_verb[verb] += n
    print(f"{title}: {sum(calls.values())} calls ("
          + ", ".join(f"{verb} {n}" for verb, n in sorted(by_verb.items())) + ")")


def main() -> None:
    api = FakeApi()
    api.put(database_secret())
    context = OperatorContext.create(OperatorSettings(), api)
    calls = counted(api)
    api.put(SHOP)
    handlers.on_change(body=kopf.Body(copy.deepcopy(SHOP)), logger=logging.getLogger("bench"),
                       memo=context)
    show("first reconcile (creation)", calls)
    calls.clear()
    handlers._reconcile_live(context, ("web", "shop"))
    show("resync of the unchanged object", calls)
    # As every resync did before the operator remembered what it had pruned (and as the
    # first resync after an operator restart does).
    context.pruned.clear()
    calls.clear()
    handlers._reconcile_live(context, ("web", "shop"))
    show("resync, pruning again", calls)


if __name__ == "__main__":
    main()
