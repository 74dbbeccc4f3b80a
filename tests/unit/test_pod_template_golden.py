"""The pod templates the operator renders are part of its contract with running apps.

A new operator version that renders a different pod template for an existing spec restarts
that app's pods when it is installed (staggered, `djangoscale.rollouts`, but restarted all the
same). This test fails when a change to the builders changes the pod template of an existing
spec: the builder fixtures' inputs, data/golden-specs/ and the examples users copy. Then either
keep the old output for existing objects, or mark the change as one that rolls pods: a line
under `### Rolls pods` in the `## Unreleased` section of CHANGELOG.md, then

    DJANGOSCALE_UPDATE_FIXTURES=1 pytest tests/unit/test_pod_template_golden.py

rewrites data/pod-templates.yaml (it refuses while that section is empty).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from djangoscale import spec
from djangoscale.builders import build_children
from djangoscale.builders.pgbouncer import DatabaseCredentials

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "pod-templates.yaml"
CHANGELOG = ROOT / "CHANGELOG.md"


def existing_specs() -> dict[str, tuple[dict[str, Any], DatabaseCredentials | None]]:
    """Name -> (DjangoService, database credentials) of every spec the golden file covers."""
    found: dict[str, tuple[dict[str, Any], DatabaseCredentials | None]] = {}
    for folder in ("builders/input", "golden-specs"):
        for path in sorted((DATA / folder).glob("*.yaml")):
            case = yaml.safe_load(path.read_text())
            credentials = case.get("credentials")
            found[f"{folder.split('/')[0]}/{path.stem}"] = (
                case["djangoservice"],
                DatabaseCredentials(**credentials) if credentials else None)
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DjangoService":
                found[f"examples/{path.stem}/{doc['metadata']['name']}"] = (doc, None)
    return found


def template_digest(template: dict[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rendered() -> dict[str, dict[str, str]]:
    """Spec name -> Deployment name -> digest of its pod template."""
    result: dict[str, dict[str, str]] = {}
    for name, (body, credentials) in existing_specs().items():
        children = build_children(spec.parse(body), credentials)
        result[name] = {child["metadata"]["name"]: template_digest(child["spec"]["template"])
                        for child in children if child["kind"] == "Deployment"}
    return result


def unreleased_pod_rolls(text: str) -> list[str]:
    """The bullet lines under `### Rolls pods` in the `## Unreleased` section."""
    unreleased = re.split(r"^## ", text, flags=re.MULTILINE)
    section = next((part for part in unreleased if part.startswith("Unreleased")), "")
    rolls = re.split(r"^### ", section, flags=re.MULTILINE)
    body = next((part for part in rolls if part.startswith("Rolls pods")), "")
    return [line for line in body.splitlines() if line.startswith("- ")]


def test_existing_specs_render_the_same_pod_templates():
    current = rendered()
    if os.environ.get("DJANGOSCALE_UPDATE_FIXTURES"):
        golden = yaml.safe_load(GOLDEN.read_text()) if GOLDEN.exists() else current
        if current != golden:
            assert unreleased_pod_rolls(CHANGELOG.read_text()), (
                "the pod templates changed: say so under '### Rolls pods' in CHANGELOG.md's "
                "'## Unreleased' section before rewriting the golden file")
        GOLDEN.write_text(yaml.safe_dump(current, sort_keys=True))
    golden = yaml.safe_load(GOLDEN.read_text())
    changed = sorted(f"{name}: Deployment {deployment}"
                     for name, deployments in current.items()
                     for deployment, digest in deployments.items()
                     if golden.get(name, {}).get(deployment) != digest)
    assert not changed, (
        "these existing specs would get a new pod template, so every such app restarts when "
        "the operator is upgraded:\n  " + "\n  ".join(changed) + "\nKeep the old output for "
        "existing objects, or add a line under '### Rolls pods' in CHANGELOG.md's "
        "'## Unreleased' and run with DJANGOSCALE_UPDATE_FIXTURES=1 (see this module)")
    assert current.keys() == golden.keys(), "a spec was added or removed: update the file"


def test_the_golden_file_covers_web_and_worker_deployments():
    golden = yaml.safe_load(GOLDEN.read_text())
    assert len(golden) >= 5
    assert any(len(deployments) > 1 for deployments in golden.values())  # worker groups


def test_changelog_has_an_unreleased_section_the_test_can_read():
    text = CHANGELOG.read_text()
    assert text.startswith("# Changelog")
    assert "## Unreleased" in text
    sample = "## Unreleased\n\n### Rolls pods\n\n- a label\n\n## 0.1.0\n\n### Rolls pods\n- old\n"
    assert unreleased_pod_rolls(sample) == ["- a label"]
    assert unreleased_pod_rolls("## Unreleased\n\n### Added\n- x\n") == []
