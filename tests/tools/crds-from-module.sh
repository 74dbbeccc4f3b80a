#!/usr/bin/env bash
# CRD files taken from a Go module (through the Go module proxy, no release download) into a
# cache keyed by the module's version; prints the directory holding them. The callers
# (gateway-api/fetch.sh, prometheus-operator/fetch.sh) name the module and the files.
#
# Usage: crds-from-module.sh NAME MODULE VERSION MARKER PATTERN...
#   NAME     the cache directory's name (NAME-VERSION under the cache root)
#   MARKER   a file the cache must hold to count as filled
#   PATTERN  paths inside the module, globs allowed, copied flat into the cache directory
# Env:   DJANGOSCALE_CACHE   cache root (default ~/.cache/djangoscale)
set -euo pipefail

name=$1 module=$2 version=$3 marker=$4
shift 4
out=${DJANGOSCALE_CACHE:-$HOME/.cache/djangoscale}/tools/$name-$version
if [[ -f $out/$marker ]]; then
  echo "$out"
  exit 0
fi
# Outside any module: `go mod download` of module@version fills the module cache only.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dir=$(cd "$work" && GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go mod download -json "$module@$version" |
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error")))')
mkdir -p "$out.tmp"
for pattern in "$@"; do
  # Unquoted on purpose: the pattern is a glob inside the module's directory.
  cp $dir/$pattern "$out.tmp/"
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
