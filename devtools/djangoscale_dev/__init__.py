"""Developer tooling for djangoscale: the local cluster, `djangoscale dev`, image building.

It runs only on a developer's machine or in CI, so it lives outside the operator package: the
operator wheel and image never carry it, and nothing in `djangoscale` imports it. Its commands
join the `djangoscale` command line through the `djangoscale.commands` entry points that
`devtools/pyproject.toml` declares.

Inputs from the repository (the Go module of the control plane, the example manifests) reach
the package through the links in `data/`, so no module walks up the tree to find them.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# Where `cluster up` and `dev` keep a local cluster (PKI, logs, state) unless told otherwise.
DEFAULT_DIR = Path(".djangoscale/cluster")
