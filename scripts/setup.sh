#!/usr/bin/env bash
# Everything the main job and the tests need on a fresh machine: Debian packages, a venv with
# the project and its extras. Idempotent and quick when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql pgbouncer libev-dev lua5.4 wrk rabbitmq-server redis-server)
# Images without Docker or a registry (devtools/djangoscale_dev/images); runc runs them in tests.
APT_PACKAGES+=(debootstrap buildah runc)
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their own servers; the tests run private ones on free ports.
for service in postgresql pgbouncer rabbitmq-server redis-server; do
  (command -v systemctl >/dev/null && systemctl disable --now "$service" >/dev/null 2>&1) || true
  service "$service" stop >/dev/null 2>&1 || true
done

# The local control plane is built from Go modules on first use (tests/cluster/go.mod).
if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go >= 1.26 is needed on PATH to build the local control plane" >&2
  exit 1
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.djangoscale-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ devtools/pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  # The product with every extra, and the developer tooling (local cluster, `dev`) beside it.
  .venv/bin/pip install -q -e '.[all]' -e ./devtools
  touch "$stamp"
fi
