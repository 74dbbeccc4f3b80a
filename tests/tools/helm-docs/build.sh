#!/usr/bin/env bash
# Build helm-docs from Go modules into a cache keyed by this module's go.mod + go.sum (like
# ../helm/build.sh); prints the binary's path.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)
out=${DJANGOSCALE_CACHE:-$HOME/.cache/djangoscale}/tools/$key
bin=$out/helm-docs
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$out"
cd "$here"
start=$(date +%s)
CGO_ENABLED=0 GOFLAGS="-mod=mod -p=1" nice -n 10 go build -trimpath -ldflags "-s -w" \
  -o "$bin.tmp" github.com/norwoodj/helm-docs/cmd/helm-docs >&2
mv "$bin.tmp" "$bin"
echo "==> helm-docs built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
