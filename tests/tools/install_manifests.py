"""Render manifests/install/ (the plain-YAML install) from the Helm chart.

The plain install is the chart rendered with fixed values, split in two files because a custom
resource cannot be applied in the same `kubectl apply` as its CRD: `crds.yaml` (the namespace
and every CRD) first, then `djangoscale.yaml`. The metrics API's certificate comes from
cert-manager there: a Helm-generated key would be committed to Git and shared by every user.

    python tests/tools/install_manifests.py     # regenerate (tests/unit/test_chart.py checks)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "djangoscale"
INSTALL = ROOT / "manifests" / "install"
HELM_BUILD = ROOT / "tests" / "tools" / "helm" / "build.sh"
NAMESPACE = "djangoscale"
RELEASE = "djangoscale"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion); helm's default is older.
KUBE_VERSION = "1.28.0"
PLAIN_VALUES = ["--set", "metricsApi.tls.mode=certManager"]
HEADER = (
    "# Generated from charts/djangoscale by tests/tools/install_manifests.py; do not edit.\n"
)


def helm() -> str:
    """The helm binary built from Go modules (cached; built on first use)."""
    return subprocess.run(
        [str(HELM_BUILD)], check=True, capture_output=True, text=True
    ).stdout.strip()


def template(*args: str, namespace: str = NAMESPACE, release: str = RELEASE) -> str:
    """`helm template` of the chart; extra args are passed through (--set, --include-crds)."""
    result = subprocess.run(
        [helm(), "template", release, str(CHART), "--namespace", namespace,
         "--kube-version", KUBE_VERSION, *args],
        check=True, capture_output=True, text=True,
    )
    return result.stdout


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_install() -> dict[str, str]:
    """File name -> content of manifests/install/."""
    docs = documents(template("--include-crds", *PLAIN_VALUES))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    crds = [namespace] + [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] != "CustomResourceDefinition"]

    def dump(items: list[dict]) -> str:
        return HEADER + yaml.safe_dump_all(items, sort_keys=False, width=100)

    return {"crds.yaml": dump(crds), "djangoscale.yaml": dump(rest)}


def main() -> int:
    INSTALL.mkdir(parents=True, exist_ok=True)
    for name, text in render_install().items():
        (INSTALL / name).write_text(text)
        print(f"wrote {INSTALL / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
