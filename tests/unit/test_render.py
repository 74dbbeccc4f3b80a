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
    # The migration Job (on by default with a database) before the Deployment it gates.
    assert kinds == [
        "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"
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
        "Secret", "Job", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"
    ]
    ini = base64.b64decode(docs[0]["data"]["pgbouncer.ini"]).decode()
    assert "shop = host=postgres.db.svc port=5432 dbname=shop" in ini


def test_a_field_the_crd_does_not_declare_is_refused_with_its_path():
    document = yaml.safe_load(EXAMPLE.read_text())
    document["spec"]["replicas"]["mx"] = 3  # a typo of max
    result = run_render("-f", "-", stdin=yaml.safe_dump(document))
    assert result.returncode == 1
    assert "spec.replicas.mx: unknown field" in result.stderr
    assert result.stdout == ""


# Every third-party module outside the base install (pyyaml, prometheus-client).
NOT_IN_THE_BASE_INSTALL = (
    "kopf", "kubernetes", "jsonschema", "aiohttp", "cryptography", "redis", "celery",
    "cheroot", "gunicorn", "gevent", "waitress", "granian", "bjoern", "django", "psycopg",
)
BASE_INSTALL = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in {NOT_IN_THE_BASE_INSTALL!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
from djangoscale.cli import main
sys.exit(main(sys.argv[1:]))
"""


def base_install(*args: str) -> subprocess.CompletedProcess[str]:
    """`djangoscale ARGS` as after `pip install djangoscale` with no extras."""
    return subprocess.run([sys.executable, "-c", BASE_INSTALL, *args],
                          capture_output=True, text=True, check=False)


def test_render_runs_from_the_base_install():
    result = base_install("render", "-f", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert [doc["kind"] for doc in yaml.safe_load_all(result.stdout)][:3] == [
        "Secret", "Job", "Deployment"]


def test_a_command_that_needs_an_extra_says_which_in_one_line():
    result = base_install("run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "djangoscale run: the Python module 'kopf' is not installed: "
        "pip install 'djangoscale[operator]'"]
    result = base_install("worker", "--app", "shop.celery")
    assert result.returncode == 2
    assert "pip install 'djangoscale[celery]'" in result.stderr
    assert "Traceback" not in result.stderr
