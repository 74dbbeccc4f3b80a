"""`djangoscale render`: YAML out for valid input; field-named problems, no traceback, for bad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "shop.yaml"


def run_render(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "djangoscale.cli", "render", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )


def test_renders_every_child_of_the_example():
    result = run_render("-f", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == [
        "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"
    ]


def test_reads_stdin_and_several_documents():
    text = EXAMPLE.read_text()
    result = run_render("-f", "-", stdin=text + "---\n" + text.replace("name: shop", "name: shop2"))
    assert result.returncode == 0, result.stderr
    names = {doc["metadata"]["name"] for doc in yaml.safe_load_all(result.stdout)}
    assert {"shop", "shop2"} <= names


def test_invalid_input_names_the_field_and_prints_nothing_on_stdout():
    bad = EXAMPLE.read_text().replace("{min: 10, max: 60}", "{min: 40, max: 20}")
    result = run_render("-f", "-", stdin=bad)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "<stdin>#0: spec.replicas.min: must be <= spec.replicas.max (40 > 20)"
    )
    assert "Traceback" not in result.stderr


def test_unreadable_file_is_one_line():
    result = run_render("-f", "/nonexistent.yaml")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_secret_beside_the_djangoservice_fills_in_the_pooler_config():
    import base64

    result = run_render("-f", str(ROOT / "examples" / "full.yaml"))
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == [
        "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"
    ]
    ini = base64.b64decode(docs[0]["data"]["pgbouncer.ini"]).decode()
    assert "shop = host=postgres.db.svc port=5432 dbname=shop" in ini
