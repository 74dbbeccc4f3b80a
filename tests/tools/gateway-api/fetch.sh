#!/usr/bin/env bash
# The Gateway API's standard CRDs, taken from its Go module (through the Go module proxy, no
# release download) into a cache keyed by the version, for the e2e tests of spec.gateway.
#
# Usage: fetch.sh            prints the directory holding the standard CRD YAMLs
# Env:   DJANGOSCALE_CACHE   cache root (default ~/.cache/djangoscale)
set -euo pipefail

# v1.7 needs a newer Go than the one the local control plane is built with.
version=v1.6.0
out=${DJANGOSCALE_CACHE:-$HOME/.cache/djangoscale}/tools/gateway-api-$version
if [[ -f $out/gateway.networking.k8s.io_httproutes.yaml ]]; then
  echo "$out"
  exit 0
fi
# Outside any module: `go mod download` of module@version fills the module cache only.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go mod download -json "sigs.k8s.io/gateway-api@$version" |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
mkdir -p "$out.tmp"
# The CRDs only: the ValidatingAdmissionPolicy beside them is for upgrades of a real cluster.
cp "$dir"/config/crd/standard/gateway.networking.k8s.io_*.yaml "$out.tmp/"
rm -f "$out.tmp"/gateway.networking.k8s.io_vap_*.yaml
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
