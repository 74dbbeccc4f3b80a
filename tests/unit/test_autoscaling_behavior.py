"""`spec.autoscaling`: behaviour presets, tolerance, per-service windows, and the HPA built."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from djangoscale import spec
from djangoscale.builders.hpa import build_hpa

MINIMAL: dict[str, Any] = {
    "apiVersion": "djangoscale.io/v1alpha1",
    "kind": "DjangoService",
    "metadata": {"name": "shop", "namespace": "web"},
    "spec": {"image": "shop:1", "wsgiApp": "shop.wsgi:application",
             "replicas": {"min": 2, "max": 200}},
}


def with_autoscaling(**autoscaling: Any) -> spec.DjangoService:
    body = copy.deepcopy(MINIMAL)
    body["spec"]["autoscaling"] = autoscaling
    return spec.parse(body)


def behavior(**autoscaling: Any) -> dict[str, Any]:
    hpa = build_hpa(with_autoscaling(**autoscaling))
    found: dict[str, Any] = hpa["spec"]["behavior"]
    return found


def policies(rules: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {p["type"]: (p["value"], p["periodSeconds"]) for p in rules["policies"]}


def reachable(rules: dict[str, Any], start: int, seconds: int) -> int:
    """Replicas the HPA may reach from `start` in `seconds`, asking one period at a time for
    as many pods as the scale-up rules allow (selectPolicy Max: the larger policy)."""
    replicas = start
    for _ in range(seconds // rules["policies"][0]["periodSeconds"]):
        allowed = [
            replicas * p["value"] // 100 if p["type"] == "Percent" else p["value"]
            for p in rules["policies"]
        ]
        replicas += max(allowed)
    return replicas


def test_without_a_preset_the_hpa_gets_the_default_rules() -> None:
    rules = behavior()
    assert rules == behavior(behavior={"preset": "default"})
    up, down = rules["scaleUp"], rules["scaleDown"]
    assert (up["stabilizationWindowSeconds"], up["selectPolicy"]) == (0, "Max")
    assert policies(up) == {"Percent": (100, 15), "Pods": (4, 15)}
    assert (down["stabilizationWindowSeconds"], down["selectPolicy"]) == (300, "Min")
    assert policies(down) == {"Percent": (10, 60), "Pods": (2, 60)}
    assert "tolerance" not in up and "tolerance" not in down  # the cluster's default


@pytest.mark.parametrize("start", [1, 2, 5, 10, 20])
def test_burst_reaches_ten_times_the_pods_within_30_seconds(start: int) -> None:
    up = behavior(behavior={"preset": "burst"})["scaleUp"]
    assert (up["stabilizationWindowSeconds"], up["selectPolicy"]) == (0, "Max")
    # One HPA period already allows 10x; the panic window and one HPA sync fit in the rest.
    assert reachable(up, start, 15) >= 10 * start
    assert reachable(up, start, 30) >= 10 * start


@pytest.mark.parametrize("start", [2, 5, 10, 20])
def test_default_and_conservative_do_not(start: int) -> None:
    assert reachable(behavior()["scaleUp"], start, 30) < 10 * start
    conservative = behavior(behavior={"preset": "conservative"})["scaleUp"]
    assert reachable(conservative, start, 30) < reachable(behavior()["scaleUp"], start, 30)


def test_presets_order_from_slow_to_fast_both_ways() -> None:
    ups = [behavior(behavior={"preset": name})["scaleUp"]
           for name in ("conservative", "default", "burst")]
    reached = [reachable(rules, 10, 60) for rules in ups]
    assert reached == sorted(reached) and len(set(reached)) == 3
    conservative = behavior(behavior={"preset": "conservative"})["scaleDown"]
    assert conservative["stabilizationWindowSeconds"] > behavior()["scaleDown"][
        "stabilizationWindowSeconds"]
    # Burst scales down as the default does: capacity stays for the next burst.
    assert behavior(behavior={"preset": "burst"})["scaleDown"] == behavior()["scaleDown"]


def test_a_field_given_overrides_its_preset_value_only() -> None:
    rules = behavior(behavior={"preset": "burst",
                               "scaleUp": {"maxPodsPerPeriod": 8},
                               "scaleDown": {"stabilizationWindowSeconds": 30}})
    assert policies(rules["scaleUp"]) == {"Percent": (900, 15), "Pods": (8, 15)}
    assert rules["scaleDown"]["stabilizationWindowSeconds"] == 30
    assert policies(rules["scaleDown"]) == {"Percent": (10, 60), "Pods": (2, 60)}


def test_tolerance_is_a_quantity_per_direction() -> None:
    rules = behavior(behavior={"scaleUp": {"tolerance": 0.05},
                               "scaleDown": {"tolerance": 0.2}})
    assert rules["scaleUp"]["tolerance"] == "50m"
    assert rules["scaleDown"]["tolerance"] == "200m"
    assert behavior(behavior={"scaleUp": {"tolerance": 0}})["scaleUp"]["tolerance"] == "0m"


def test_windows_and_threshold_are_per_service_with_schema_defaults() -> None:
    default = with_autoscaling().autoscaling
    assert (default.stable_window_seconds, default.panic_window_seconds,
            default.panic_threshold) == (60, 6, 2.0)
    given = with_autoscaling(stableWindowSeconds=30, panicWindowSeconds=3,
                             panicThreshold=1.5).autoscaling
    assert (given.stable_window_seconds, given.panic_window_seconds,
            given.panic_threshold) == (30, 3, 1.5)


def test_panic_window_must_be_shorter_than_the_stable_window() -> None:
    with pytest.raises(spec.SpecError) as raised:
        with_autoscaling(stableWindowSeconds=10, panicWindowSeconds=10)
    assert raised.value.problems == [
        "spec.autoscaling.panicWindowSeconds: must be shorter than "
        "spec.autoscaling.stableWindowSeconds (10 >= 10)"
    ]


def test_the_crd_says_the_same_in_cel() -> None:
    rules = [item["rule"] for item in spec.spec_schema()["x-kubernetes-validations"]]
    assert ("self.autoscaling.panicWindowSeconds < self.autoscaling.stableWindowSeconds"
            in rules)
