"""The wheel built from pyproject.toml: the product only, never the dev tooling.

Outside tests/unit: building a wheel takes a fresh build environment (~15 s).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_product_and_no_dev_tooling(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("djangoscale-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"djangoscale", wheel.name.split("-py")[0] + ".dist-info"}, packages
    assert not [name for name in names if "djangoscale_dev" in name or "/cluster/" in name]
    # What the operator and render need at run time is in it.
    assert "djangoscale/data/crd.yaml" in names
    assert {"djangoscale/entry.py", "djangoscale/k8s/api.py", "djangoscale/contract.py",
            "djangoscale/serve/cli.py"} <= set(names)
