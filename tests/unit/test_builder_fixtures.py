"""Data-driven builder tests: `data/builders/input/X.yaml` renders to `output/X.yaml`.

Run with DJANGOSCALE_UPDATE_FIXTURES=1 to rewrite the outputs after a deliberate change, then
read the diff. Every rendered object is also validated against the Kubernetes OpenAPI schemas.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import DatabaseCredentials

DATA = Path(__file__).parent / "data" / "builders"
CASES = sorted(path.stem for path in (DATA / "input").glob("*.yaml"))
KUBERNETES_VERSION = "1.35"


def render_case(name: str) -> list[dict]:
    case = yaml.safe_load((DATA / "input" / f"{name}.yaml").read_text())
    credentials = case.get("credentials")
    return build_children(
        spec.parse(case["djangoservice"]),
        DatabaseCredentials(**credentials) if credentials else None,
    )


@pytest.mark.parametrize("name", CASES)
def test_builders_render_the_expected_children(name):
    children = render_case(name)
    expected_path = DATA / "output" / f"{name}.yaml"
    if os.environ.get("DJANGOSCALE_UPDATE_FIXTURES"):
        # Rewriting the expectation makes this test pass by construction: never in CI.
        assert not os.environ.get("CI"), "DJANGOSCALE_UPDATE_FIXTURES is refused when CI is set"
        expected_path.write_text(yaml.safe_dump_all(children, sort_keys=False))
    assert children == list(yaml.safe_load_all(expected_path.read_text()))


@pytest.mark.parametrize("name", CASES)
def test_rendered_children_validate_against_the_kubernetes_schemas(name):
    for child in render_case(name):
        kubernetes_validate.validate(child, KUBERNETES_VERSION, strict=True)
