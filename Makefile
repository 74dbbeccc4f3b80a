# The two commands of the README. Both set up what they need (scripts/setup.sh).
.PHONY: dev test setup unit manifests docs-check

setup:
	./scripts/setup.sh

# The example autoscaling under load on a local real node (or $KUBECONFIG's cluster);
# `make dev ARGS=--once` runs the load steps once and exits.
dev: setup
	.venv/bin/djangoscale dev $(ARGS)

# Every test: unit and end-to-end (local control plane, PostgreSQL, pgbouncer, WSGI servers).
test: setup
	.venv/bin/ruff check operator devtools tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/python bench/check_docs_figures.py
	.venv/bin/djangoscale cluster build
	.venv/bin/python -m pytest tests

# Every figure in README.md and docs/*.md names the bench/ script or test that prints it.
docs-check:
	.venv/bin/python bench/check_docs_figures.py

# Only the fast unit tests, for the edit loop (tests/chart builds helm from Go: `make test`).
unit: setup
	.venv/bin/python -m pytest tests/unit

# Regenerate manifests/install/ and the chart README from the chart (tests check both are current).
manifests: setup
	.venv/bin/python tests/tools/install_manifests.py
	$$(tests/tools/helm-docs/build.sh) --chart-search-root charts
