"""The RPS math: counter deltas over two windows, resets, churn, the burst rule, hold-last."""

from __future__ import annotations

import math

import pytest

from djangoscale.autoscaling.windows import (
    PodCounter,
    Rates,
    ServiceWindows,
    decide,
    format_rps,
    in_panic,
    quantity,
    round_rps,
)


def feed(windows: ServiceWindows, pod: str, start: float, seconds: int, rps: float,
         first: float = 0.0, step: float = 1.0) -> float:
    """Scrape `pod` every `step` s for `seconds` s at a steady `rps`; return the last counter."""
    value = first
    t = start
    for _ in range(int(seconds / step) + 1):
        windows.observe_counter(pod, t, value)
        t += step
        value += rps * step
    return value - rps * step


def test_steady_rate_is_the_same_in_both_windows() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6)
    feed(windows, "a", 0, 120, rps=25)
    rates = windows.rates()["a"]
    assert rates.stable == pytest.approx(25)
    assert rates.panic == pytest.approx(25)


def test_step_shows_in_the_panic_window_first() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6)
    last = feed(windows, "a", 0, 60, rps=10)
    feed(windows, "a", 61, 9, rps=100, first=last + 100)  # 10 s at 100 RPS after a minute at 10
    rates = windows.rates()["a"]
    assert rates.panic == pytest.approx(100)
    # The stable window mixes 50 s at 10 with 10 s at 100.
    assert rates.stable == pytest.approx((50 * 10 + 10 * 100) / 60, rel=0.05)


def test_one_sample_is_not_a_rate() -> None:
    windows = ServiceWindows()
    windows.observe_counter("new", 0.0, 500.0)
    assert windows.rates() == {}
    windows.observe_counter("new", 2.0, 540.0)
    assert windows.rates()["new"].panic == pytest.approx(20)


def test_counter_reset_counts_the_new_value_as_increase_not_a_negative_rate() -> None:
    counter = PodCounter()
    for t, raw in [(0, 1000), (1, 1010), (2, 1020), (3, 5), (4, 15)]:  # restart between 2 and 3
        counter.observe(t, raw, keep_seconds=60)
    # Increases: 10, 10, 5 (since restart), 10 -> 35 over 4 s.
    assert counter.rate(60) == pytest.approx(35 / 4)
    assert counter.rate(1.0) == pytest.approx(10)


def test_repeated_resets_never_go_negative() -> None:
    counter = PodCounter()
    for t, raw in enumerate([50, 0, 0, 3, 1, 0]):
        counter.observe(float(t), float(raw), keep_seconds=60)
    rate = counter.rate(60)
    assert rate is not None and rate >= 0
    assert rate == pytest.approx((0 + 0 + 3 + 1 + 0) / 5)


def test_out_of_order_sample_is_ignored() -> None:
    counter = PodCounter()
    counter.observe(10, 100, keep_seconds=60)
    counter.observe(12, 120, keep_seconds=60)
    counter.observe(11, 0, keep_seconds=60)  # late: would look like a reset
    assert counter.rate(60) == pytest.approx(10)
    assert counter.offset == 0


def test_old_samples_are_trimmed_but_the_window_stays_covered() -> None:
    counter = PodCounter()
    for t in range(1000):
        counter.observe(float(t), float(t * 7), keep_seconds=60)
    assert len(counter.samples) <= 62
    assert counter.samples[0][0] <= 999 - 60
    assert counter.rate(60) == pytest.approx(7)


def test_pod_churn_forgets_gone_pods_and_new_pods_wait_for_a_second_sample() -> None:
    windows = ServiceWindows()
    feed(windows, "old", 0, 10, rps=30)
    windows.forget_missing(["fresh"])
    windows.observe_counter("fresh", 10.0, 0.0)
    assert windows.rates() == {}
    assert "old" not in windows.counters


def test_a_pod_whose_scrape_failed_holds_its_last_rates() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6)
    feed(windows, "a", 0, 30, rps=40)
    feed(windows, "b", 0, 30, rps=40)
    before = windows.rates()["a"]
    # "a" keeps answering at a lower rate; "b" stops answering for a minute (no samples).
    feed(windows, "a", 31, 60, rps=10, first=30 * 40 + 10)
    after = windows.rates()
    assert after["b"] == before  # held, not zero, not decayed
    assert after["a"].panic == pytest.approx(10)


def test_decide_reports_stable_values_below_the_burst_threshold() -> None:
    rates = {"a": Rates(stable=20, panic=30), "b": Rates(stable=20, panic=40)}
    decision = decide(rates, pods=2, target_per_pod=20, threshold=2.0)  # panic total 70 < 2 x 40
    assert not decision.panic
    assert decision.per_pod == {"a": 20, "b": 20}
    assert decision.stable_per_pod == pytest.approx(20)
    assert decision.panic_per_pod == pytest.approx(35)


def test_decide_switches_to_panic_at_twice_capacity() -> None:
    rates = {"a": Rates(stable=10, panic=40), "b": Rates(stable=10, panic=40)}
    decision = decide(rates, pods=2, target_per_pod=20, threshold=2.0)  # panic total 80 == 2 x 40
    assert decision.panic
    assert decision.per_pod == {"a": 40, "b": 40}


def test_in_panic_keeps_the_larger_value_per_pod() -> None:
    rates = {"a": Rates(stable=90, panic=50), "b": Rates(stable=10, panic=200)}
    decision = decide(rates, pods=2, target_per_pod=20, threshold=2.0)
    assert decision.panic
    assert decision.per_pod == {"a": 90, "b": 200}


def test_burst_threshold_counts_pods_without_a_rate_yet() -> None:
    # 4 ready pods, only 2 with rates: capacity is 4 x 20 = 80, so 120 is not a burst.
    assert not in_panic(120, pods=4, target_per_pod=20, threshold=2.0)
    assert in_panic(160, pods=4, target_per_pod=20, threshold=2.0)
    assert not in_panic(1e9, pods=0, target_per_pod=20, threshold=2.0)


def test_burst_end_to_end_through_windows() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6)
    last_a = feed(windows, "a", 0, 60, rps=5)
    last_b = feed(windows, "b", 0, 60, rps=5)
    # 10x burst for 4 s
    feed(windows, "a", 61, 4, rps=50, first=last_a + 50)
    feed(windows, "b", 61, 4, rps=50, first=last_b + 50)
    decision = decide(windows.rates(), pods=2, target_per_pod=20, threshold=2.0)
    assert decision.panic
    assert min(decision.per_pod.values()) > 30
    assert decision.stable_per_pod < 20


@pytest.mark.parametrize(("value", "expected"), [
    (0, "0.0"), (-3, "0.0"), (math.nan, "0.0"), (0.04, "0.0"), (3.14159, "3.1"),
    (12.49, "12"), (12.5, "12"), (99.6, "100"), (123.4, "120"), (1789, "1800"),
])
def test_format_rps_rounds_to_two_significant_digits(value: float, expected: str) -> None:
    assert format_rps(value) == expected


def test_rounding_absorbs_jitter() -> None:
    assert round_rps(49.6) == round_rps(50.4)
    assert round_rps(118) == round_rps(121)


def test_quantity_is_in_milli_units() -> None:
    assert quantity(12.5) == "12500m"
    assert quantity(0) == "0m"
    assert quantity(-1) == "0m"
    assert quantity(1 / 3) == "333m"


def test_pods_starting_count_as_capacity_on_the_way() -> None:
    # 2 ready pods at 20 RPS each take 40; the short window sees 100: a burst ...
    rates = {"a": Rates(stable=20, panic=50), "b": Rates(stable=20, panic=50)}
    assert decide(rates, pods=2, target_per_pod=20, threshold=2.0).panic
    # ... until 3 more pods are starting: 5 x 20 x 2 = 200 > 100, so the stable value stands
    # and the HPA asks for no more pods while those start.
    calm = decide(rates, pods=2, target_per_pod=20, threshold=2.0, starting=3)
    assert not calm.panic
    assert calm.per_pod == {"a": 20, "b": 20}
    # A burst bigger than the pods on the way still panics.
    big = {"a": Rates(stable=20, panic=300), "b": Rates(stable=20, panic=300)}
    assert decide(big, pods=2, target_per_pod=20, threshold=2.0, starting=3).panic


def test_a_takeover_starts_from_the_carried_rates_with_no_gap() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6, carried=Rates(40, 45))
    windows.start(["a", "b"])
    # Before any sample of its own (the first round: one sample is not a rate), the carried
    # rates stand: the HPA's value does not vanish.
    assert windows.rates() == {"a": Rates(40, 45), "b": Rates(40, 45)}
    windows.observe_counter("a", 0.0, 10_000.0)
    windows.observe_counter("b", 0.0, 20_000.0)
    assert windows.rates()["a"] == Rates(40, 45)


def test_carried_rates_fade_out_as_the_samples_cover_each_window() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6, carried=Rates(40, 40))
    windows.start(["a"])
    feed(windows, "a", 0, 3, rps=10)  # the load fell to 10 RPS meanwhile
    after_3s = windows.rates()["a"]
    # 3 s of 60 measured: the stable value is still mostly the carried one; the panic window
    # (6 s) is half measured.
    assert after_3s.stable == pytest.approx(40 * 57 / 60 + 10 * 3 / 60)
    assert after_3s.panic == pytest.approx(25)
    feed(windows, "a", 4, 60, rps=10, first=40)
    settled = windows.rates()["a"]
    assert settled == Rates(pytest.approx(10), pytest.approx(10))  # type: ignore[arg-type]
    assert "a" not in windows.seeded  # its own samples cover both windows now


def test_steady_load_reads_the_same_through_a_takeover() -> None:
    """What the HPA reads per pod, every 2 s, when the active operator dies at t=120 under a
    steady 30 RPS per pod and a new one takes over at t=140 from the status it left."""
    before = ServiceWindows(stable_window=60, panic_window=6)
    for t in range(0, 121, 2):
        before.observe_counter("a", float(t), 30.0 * t)
    status = before.rates()["a"]
    after = ServiceWindows(stable_window=60, panic_window=6, carried=status)
    after.start(["a"])
    read = []
    for t in range(140, 260, 2):
        read.append(after.rates()["a"].stable)
        after.observe_counter("a", float(t), 30.0 * t)
    read.append(after.rates()["a"].stable)
    assert min(read) == pytest.approx(30) and max(read) == pytest.approx(30)
    # Without the carried rates the first round has nothing for the HPA to read.
    cold = ServiceWindows(stable_window=60, panic_window=6)
    cold.start(["a"])
    cold.observe_counter("a", 140.0, 30.0 * 140)
    assert cold.rates() == {}


def test_a_pod_created_after_the_takeover_gets_no_carried_rate() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6, carried=Rates(40, 40))
    windows.start(["a"])
    windows.start(["a", "new"])  # later rounds do not seed
    windows.observe_counter("new", 0.0, 0.0)
    assert "new" not in windows.rates()
    windows.forget_missing(["new"])
    assert windows.seeded == {}


def test_a_rate_from_prometheus_replaces_the_carried_one() -> None:
    windows = ServiceWindows(carried=Rates(40, 40))
    windows.start(["a", "b"])
    windows.observe_rate("a", 12.0)
    assert windows.rates() == {"a": Rates(12.0, 12.0), "b": Rates(40, 40)}
    assert set(windows.seeded) == {"b"}  # b's query answer has not come yet: it holds


def test_concurrency_and_queue_time_carry_over_a_takeover_and_fade_out() -> None:
    windows = ServiceWindows(stable_window=60, panic_window=6, carried_values={
        "concurrency": Rates(6, 6), "queueTime": Rates(0.2, 0.2)})
    windows.start(["a", "b"])
    # The first round: one sample each, no value of its own yet; the carried ones stand.
    windows.observe_busy("a", 0.0, 100.0)
    windows.observe_queue("a", 0.0, (0.1, math.inf), (0.0, 0.0))
    assert windows.concurrency() == {"a": Rates(6, 6), "b": Rates(6, 6)}
    assert windows.queue_time()["a"] == Rates(0.2, 0.2)
    # The pods are idle now: 6 s of 60 measured.
    for t in range(1, 7):
        windows.observe_busy("a", float(t), 100.0)
        windows.observe_queue("a", float(t), (0.1, math.inf), (0.0, 0.0))
    assert windows.concurrency()["a"] == Rates(pytest.approx(6 * 54 / 60), 0.0)  # type: ignore[arg-type]
    assert windows.queue_time()["a"].stable == pytest.approx(0.2 * 54 / 60)
    for t in range(7, 62):
        windows.observe_busy("a", float(t), 100.0)
        windows.observe_queue("a", float(t), (0.1, math.inf), (0.0, 0.0))
    assert windows.concurrency()["a"] == Rates(0.0, 0.0)  # its own samples cover both
    assert "a" not in windows.seeded_values["concurrency"]
    windows.forget_missing(["a"])
    assert windows.concurrency() == {"a": Rates(0.0, 0.0)}  # b, gone, holds nothing
    # A pod created after the takeover starts from nothing.
    windows.start(["a", "new"])
    assert "new" not in windows.concurrency()
