"""Settings from the environment and flags, and which pods the collector counts as ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from djangoscale.autoscaling.handlers import pod_ready, rps_pods
from djangoscale.settings import OperatorSettings


def test_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DJANGOSCALE_METRICS_API_PORT", "7443")
    monkeypatch.setenv("DJANGOSCALE_METRICS_API_CERT_FILE", "/certs/tls.crt")
    monkeypatch.setenv("DJANGOSCALE_STABLE_WINDOW", "30")
    monkeypatch.setenv("DJANGOSCALE_METRICS_API_DNS_NAMES", "a.b.svc,a.b.svc.cluster.local")
    monkeypatch.setenv("DJANGOSCALE_RESYNC_SECONDS", "3")
    monkeypatch.setenv("DJANGOSCALE_QUEUE_POLL_INTERVAL", "1")
    monkeypatch.delenv("DJANGOSCALE_METRICS_API_KEY_FILE", raising=False)
    options = OperatorSettings.from_env()
    assert options.port == 7443
    assert options.cert_file == Path("/certs/tls.crt")
    assert options.key_file is None
    assert options.stable_window == 30.0
    assert options.panic_window == 6.0
    assert options.cert_dns_names == ("a.b.svc", "a.b.svc.cluster.local")
    assert (options.resync_seconds, options.queue_poll_seconds) == (3.0, 1.0)
    assert options.scrape_concurrency == 64 and isinstance(options.scrape_concurrency, int)


def test_every_setting_has_one_variable() -> None:
    from dataclasses import fields

    from djangoscale.settings import ENV

    assert set(ENV) == {item.name for item in fields(OperatorSettings)}
    assert len(set(ENV.values())) == len(ENV)


def test_flags_override_only_what_is_given() -> None:
    options = OperatorSettings(port=7443, bind="127.0.0.1")
    changed = options.with_overrides(port=9443, bind=None, stable_window=None)
    assert (changed.port, changed.bind, changed.stable_window) == (9443, "127.0.0.1", 60.0)


RUNNING_READY = {"phase": "Running", "podIP": "127.1.1.4",
                 "conditions": [{"type": "Ready", "status": "True"}]}


@pytest.mark.parametrize(("status", "meta", "expected"), [
    (RUNNING_READY, {}, True),
    (RUNNING_READY, {"deletionTimestamp": "2026-01-01T00:00:00Z"}, False),
    ({**RUNNING_READY, "phase": "Pending"}, {}, False),
    ({**RUNNING_READY, "conditions": [{"type": "Ready", "status": "False"}]}, {}, False),
    ({"phase": "Running"}, {}, False),
])
def test_pod_ready(status: dict, meta: dict, expected: bool) -> None:
    assert pod_ready(status, meta) is expected


def test_pod_index_keys_pods_by_their_djangoservice() -> None:
    labels = {"app.kubernetes.io/instance": "shop", "app.kubernetes.io/component": "web",
              "app.kubernetes.io/managed-by": "djangoscale"}
    fn = getattr(rps_pods, "__wrapped__", rps_pods)
    entry = fn(name="shop-1", namespace="web", labels=labels, status=RUNNING_READY, meta={})
    assert entry is not None
    target = entry[("web", "shop")]
    assert (target.name, target.ip, target.ready) == ("shop-1", "127.1.1.4", True)
    assert target.label_dict == labels
    assert fn(name="x", namespace="web", labels={}, status=RUNNING_READY, meta={}) is None


def test_djangoscale_run_reads_the_environment_then_its_flags(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from djangoscale.controller.cli import configure, settings_from

    parser = argparse.ArgumentParser()
    configure(parser)
    monkeypatch.setenv("DJANGOSCALE_STABLE_WINDOW", "30")
    monkeypatch.setenv("DJANGOSCALE_PANIC_WINDOW", "4")
    monkeypatch.delenv("DJANGOSCALE_METRICS_API_BIND", raising=False)
    settings = settings_from(parser.parse_args(["--bind", "127.0.0.1", "--panic-window", "3"]))
    assert (settings.stable_window, settings.panic_window) == (30.0, 3.0)
    assert settings.bind == "127.0.0.1"  # the metrics API follows --bind unless told
    monkeypatch.setenv("DJANGOSCALE_METRICS_API_BIND", "10.0.0.1")
    assert settings_from(parser.parse_args(["--bind", "127.0.0.1"])).bind == "10.0.0.1"
    flags = ["--bind", "127.0.0.1", "--metrics-api-bind", "::1"]
    assert settings_from(parser.parse_args(flags)).bind == "::1"
