#!/usr/bin/env bash
# The Prometheus Operator's PodMonitor and ServiceMonitor CRDs, taken from its Go module
# (through the Go module proxy, no release download) into a cache keyed by the version, so
# the e2e tests can dry-run the chart's monitors on the real API server.
#
# Usage: fetch.sh            prints the directory holding the two CRD YAMLs
# Env:   DJANGOSCALE_CACHE   cache root (default ~/.cache/djangoscale)
set -euo pipefail

version=v0.85.0
out=${DJANGOSCALE_CACHE:-$HOME/.cache/djangoscale}/tools/prometheus-operator-$version
if [[ -f $out/monitoring.coreos.com_podmonitors.yaml ]]; then
  echo "$out"
  exit 0
fi
# Outside any module: `go mod download` of module@version fills the module cache only.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
mkdir -p "$out.tmp"
for kind in podmonitors servicemonitors; do
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$out.tmp/"
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
