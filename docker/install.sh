#!/usr/bin/env sh
# The operator image's only install step, kept in one script so that a test runs exactly
# what the Dockerfile runs, in a clean venv
# (tests/e2e/test_install.py::test_image_install_script_works_in_a_clean_venv).
#
# Usage: install.sh VENV SRC     build VENV from the source tree SRC (pyproject.toml at its root)
#
# A regular (non-editable) install: the wheel must carry everything the operator needs at
# run time, including the CRD that operator/djangoscale/data/crd.yaml links to.
set -eu

venv=${1:?usage: install.sh VENV SRC}
src=${2:?usage: install.sh VENV SRC}

python3 -m venv "$venv"
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet --upgrade pip
# Only the operator extra: the launcher's WSGI servers run in the user's Django image, not here.
"$venv/bin/pip" install --no-cache-dir --disable-pip-version-check --quiet "$src[operator]"

# Fail the build, not the pod, when the installed package is incomplete: the CLI starts,
# the handlers import (kopf and the kubernetes client resolve) and the packaged CRD loads.
"$venv/bin/djangoscale" run --help >/dev/null
"$venv/bin/python" -c 'import djangoscale.controller; from djangoscale.spec import crd; assert crd()["kind"] == "CustomResourceDefinition"'
echo "install.sh: djangoscale installed into $venv"
