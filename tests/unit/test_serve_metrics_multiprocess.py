"""Metrics summed over worker processes, and live gauges of dead workers forgotten."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {operator!r})
    from djangoscale.serve.metrics import process_metrics
    m = process_metrics()
    for _ in range({n}):
        m.request_started(); m.request_finished("GET", "200 OK", 0.01)
    m.threads_total.set(4)
    """
)

PARENT = textwrap.dedent(
    """
    import subprocess, sys
    sys.path.insert(0, {operator!r})
    from djangoscale.serve.metrics import prepare_multiprocess_dir, sweep_dead_processes
    path = prepare_multiprocess_dir({path!r})
    for n in (3, 5):
        subprocess.run([sys.executable, "-c", {child!r}.replace("{{n}}", str(n))], check=True)
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess
    print("swept", len(sweep_dead_processes(path)))
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)
    print(generate_latest(registry).decode())
    """
)


def test_counters_sum_over_processes_and_dead_live_gauges_are_swept(tmp_path):
    child = CHILD.format(operator=str(REPO / "operator"), n="{n}")
    script = PARENT.format(operator=str(REPO / "operator"), path=str(tmp_path / "m"), child=child)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "counter_stale.db").write_bytes(b"")  # left over from a previous run
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert 'djangoscale_requests_total{method="GET",status_class="2xx"} 8.0' in out
    assert "swept 2" in out
    assert "djangoscale_threads_total 0.0" in out or "djangoscale_threads_total " not in out
