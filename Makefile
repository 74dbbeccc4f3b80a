# The two commands of the README. Both set up what they need (scripts/setup.sh).
.PHONY: dev test setup unit

setup:
	./scripts/setup.sh

# The operator against a local control plane (or $KUBECONFIG's cluster), with the example.
dev: setup
	.venv/bin/djangoscale dev

# Every test: unit and end-to-end (local control plane, PostgreSQL, pgbouncer, WSGI servers).
test: setup
	.venv/bin/python -m pytest tests

# Only the fast unit tests, for the edit loop.
unit: setup
	.venv/bin/python -m pytest tests/unit
