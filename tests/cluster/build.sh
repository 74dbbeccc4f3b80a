#!/usr/bin/env bash
# Build the local control plane into OUT_DIR: `k8s-local` (kube-apiserver,
# kube-controller-manager, kube-scheduler, embedded etcd), `kwok` (fake kubelet) and
# `stages/`, the KWOK stage YAMLs of the kwok version built.
#
# Static (CGO off), stripped, version-stamped the way upstream's hack/lib/version.sh does,
# with the version read from go.mod so `/version` reports the release we build from.
# kwok lives in its own module (kwok/go.mod) because it is built against a newer
# k8s.io/client-go than the 1.35 staging modules pinned here.
#
# Usage: build.sh OUT_DIR       (BUILD_VERBOSE=1 lists each package as it compiles)
set -euo pipefail

out=${1:?usage: build.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

# readonly: go.mod and go.sum are complete, a build never edits them; no VCS stamping, so
# the binaries depend on the module inputs alone (and the link step stays cached).
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
verbose=()
[[ -n ${BUILD_VERBOSE-} ]] && verbose=(-v)

# build NAME PACKAGE LDFLAGS: announce the package count (for progress), then build.
build() {
  local name=$1 pkg=$2 ldflags=$3 start
  echo "==> $name: $(go list -deps "$pkg" | wc -l) packages"
  start=$(date +%s)
  go build "${verbose[@]}" -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg"
  mv "$out/$name.tmp" "$out/$name"
  echo "==> $name built in $(( $(date +%s) - start ))s"
}

cd "$here"
version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
build_date=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X '$pkg.gitVersion=$version' -X '$pkg.gitMajor=$major' -X '$pkg.gitMinor=$minor'"
  ldflags+=" -X '$pkg.gitTreeState=clean' -X '$pkg.buildDate=$build_date'"
done
echo "==> building k8s-local $version (kube-apiserver, kube-controller-manager, kube-scheduler, etcd)"
build k8s-local ./cmd/k8s-local "$ldflags"

cd "$here/kwok"
kwok_version=$(go list -m -f '{{.Version}}' sigs.k8s.io/kwok)
echo "==> building kwok $kwok_version"
build kwok sigs.k8s.io/kwok/cmd/kwok \
  "-s -w -X 'sigs.k8s.io/kwok/pkg/consts.Version=${kwok_version#v}'"

# The stages that make fake nodes Ready and fake pods Running, from the same kwok version.
kwok_dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
rm -rf "$out/stages" && mkdir -p "$out/stages"
for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
             pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  cp "$kwok_dir/kustomize/stage/$stage.yaml" "$out/stages/"
done
chmod -R u+w "$out/stages"
echo "==> done: $out"
