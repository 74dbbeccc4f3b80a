"""Deleting never waits for the operator: no DjangoService carries a finalizer, so a delete, and
a namespace delete, finish with the operator stopped (crashed, or uninstalled first)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import API, djangoservice, ready, secret, start_operator
from tests.fixtures.polling import wait_for
from tests.tools.chart_install import operator_kubeconfig

# What a user, a GitOps prune or a CI teardown can wait for a deletion.
DELETE_DEADLINE_SECONDS = 30.0
FINALIZER_WATCH_SECONDS = 10.0


@pytest.fixture
def operator_log(cluster, tmp_path) -> tuple[Path, Path]:
    kubeconfig = operator_kubeconfig(cluster.kubeconfig, tmp_path / "sa" / "kubeconfig")
    return kubeconfig, tmp_path / "operator.log"


@pytest.fixture
def extra_namespace(kube) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    if kube.get("v1", "Namespace", None, name) is not None:
        kube.call("DELETE", f"/api/v1/namespaces/{name}")


def finalizers(kube: Any, namespace: str, name: str) -> list[str] | None:
    live = kube.get(API, "DjangoService", namespace, name)
    return None if live is None else list(live["metadata"].get("finalizers") or [])


def test_no_djangoservice_ever_carries_a_finalizer(kube, operator_log, namespace):
    kubeconfig, log = operator_log
    kube.apply(secret(namespace))
    with start_operator(kubeconfig, log, resync_seconds=2):
        kube.apply(djangoservice(namespace))
        seen: list[list[str] | None] = []
        edited_at = None
        give_up = time.monotonic() + 120  # only bounds a broken run
        # Sampled through creation, reconcile, status writes, an edit, and several resyncs
        # and RPS collection rounds after it.
        while time.monotonic() < give_up:
            seen.append(finalizers(kube, namespace, "shop"))
            if edited_at is None and ready(kube, namespace):
                # A spec change goes through the change handlers too.
                kube.apply(djangoservice(namespace, replicas={"min": 2, "max": 6}))
                edited_at = time.monotonic()
            if edited_at and time.monotonic() - edited_at > FINALIZER_WATCH_SECONDS:
                break
            time.sleep(0.2)
        wait_for("Ready=True after the edit", lambda: ready(kube, namespace))
        seen.append(finalizers(kube, namespace, "shop"))
    assert edited_at is not None, "the DjangoService never became Ready"
    assert len(seen) > 20
    assert [found for found in seen if found] == []


def test_deletes_finish_with_the_operator_stopped(kube, operator_log, namespace,
                                                  extra_namespace):
    kubeconfig, log = operator_log
    kube.apply(secret(namespace))
    kube.apply(secret(extra_namespace))
    names = ["shop", "blog", "api"]
    with start_operator(kubeconfig, log):
        kube.apply(djangoservice(namespace))
        for name in names:
            kube.apply(djangoservice(extra_namespace, name=name))
        wait_for("Ready=True", lambda: ready(kube, namespace))
        for name in names:
            wait_for(f"{name} Ready=True", lambda name=name: ready(kube, extra_namespace, name))
    # The operator is stopped now, as after a crash.

    started = time.monotonic()
    kube.delete(API, "DjangoService", namespace, "shop")
    wait_for("the DjangoService to go", lambda: kube.get(API, "DjangoService", namespace,
                                                         "shop") is None,
             timeout=DELETE_DEADLINE_SECONDS)
    deleted_after = time.monotonic() - started
    # Its children go with it (garbage collection, no operator needed).
    wait_for("its Deployment to go",
             lambda: kube.get("apps/v1", "Deployment", namespace, "shop") is None)

    started = time.monotonic()
    kube.call("DELETE", f"/api/v1/namespaces/{extra_namespace}")
    wait_for("the namespace with 3 DjangoServices to go",
             lambda: kube.get("v1", "Namespace", None, extra_namespace) is None,
             timeout=DELETE_DEADLINE_SECONDS)
    namespace_after = time.monotonic() - started
    print(f"with the operator stopped: DjangoService deleted in {deleted_after:.1f} s, "
          f"namespace with {len(names)} DjangoServices in {namespace_after:.1f} s")
    assert deleted_after < DELETE_DEADLINE_SECONDS
    assert namespace_after < DELETE_DEADLINE_SECONDS
