#!/usr/bin/env bash
# The Gateway API's standard CRDs from its Go module, cached by version, for the e2e tests of
# spec.gateway. Prints the directory holding them.
set -euo pipefail

# v1.7 needs a newer Go than the one the local control plane is built with. The CRDs only
# ([!v]: not the ValidatingAdmissionPolicy files beside them, which are for upgrades of a
# real cluster).
exec "$(dirname "$0")/../crds-from-module.sh" gateway-api sigs.k8s.io/gateway-api v1.6.0 \
  gateway.networking.k8s.io_httproutes.yaml \
  'config/crd/standard/gateway.networking.k8s.io_[!v]*.yaml'
