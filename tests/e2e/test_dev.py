"""`djangoscale dev --once` end to end on the real node, as `make dev` runs it.

The command itself takes the machine-wide real-node lock, brings up the node, loads the images,
starts PostgreSQL, installs the chart and applies the example; then it offers one scripted load
step through the Service and watches the scale-down after it. The test reads what it recorded
(load-summary.json and the timeline) and checks the machine is clean afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from djangoscale_dev.cluster import nodeconfig
from djangoscale_dev.dev_real import host_lacks_for_real_node
from djangoscale_dev.timeline import read_csv
from tests.fixtures import services

# One step up from a quiet start and back: 10 RPS is 1 pod's worth at the example's
# 20 RPS per pod (min 2 pods), 100 RPS asks for 5.
RPS, STEP_SECONDS = "10,100,10", 40
# The bar: the example scales up within 30 s of the step up.
SCALE_UP_WITHIN = 30.0
COMMAND_TIMEOUT = 1200


def test_dev_once_scales_the_example_up_under_the_step_and_back_down_after_it(
        tmp_path: Path) -> None:
    services.require(host_lacks_for_real_node())
    started = time.monotonic()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "djangoscale"), "dev", "--dir",
         str(tmp_path / "cluster"), "--once", "--rps", RPS, "--step-seconds", str(STEP_SECONDS),
         "--settle-seconds", "150"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        # Not the session cluster's KUBECONFIG (set by the e2e fixtures): with one, `dev`
        # runs against that cluster instead of bringing up the real node.
        env={key: value for key, value in os.environ.items() if key != "KUBECONFIG"},
    )
    output = done.stdout + done.stderr
    print(output[-6000:])
    print(f"dev --once took {time.monotonic() - started:.0f}s")
    assert "using the real node" in output, output[-3000:]
    summary = json.loads((tmp_path / "load-summary.json").read_text())
    assert done.returncode == 0, output[-3000:]

    requests = summary["requests"]
    assert requests["offered"] == 10 * STEP_SECONDS + 100 * STEP_SECONDS + 10 * STEP_SECONDS
    assert (requests["failed"], requests["ok"]) == (0, requests["offered"]), requests
    assert summary["first_scale_up"] is not None, summary
    assert summary["scale_up_delay"] <= SCALE_UP_WITHIN, summary
    assert summary["peak_desired"] > 2
    assert summary["first_scale_down"] is not None, summary
    assert summary["back_to_start"] is not None, summary
    print(f"first scale-up {summary['scale_up_delay']:.1f}s after the step "
          f"({summary['first_scale_up_after_command']:.0f}s after the command started), "
          f"back to 2 pods {summary['scale_down_delay']:.1f}s after the load ended")

    png = Path(summary["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    columns = read_csv(tmp_path / "load-timeline.csv")
    assert max(v or 0 for v in columns["served_rps"]) >= 80
    assert max(v or 0 for v in columns["ready_replicas"]) > 2  # new pods served, not only asked
    # Torn down: this run's bridge is gone (another run may have made its own since).
    assert not Path("/sys/class/net", nodeconfig.BRIDGE).exists() or (
        Path("/sys/class/net", nodeconfig.BRIDGE, "ifalias").read_text().strip()
        != str((tmp_path / "cluster").resolve()))
    assert "stopping the real node" in output
