#!/usr/bin/env bash
# Builds the tests' control plane from the sources pinned in go.mod beside this file:
# kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes) and etcd
# (go.etcd.io/etcd/server/v3), all from the Go module proxy. No release binaries.
#     tests/cluster/build.sh DEST_DIR
set -euo pipefail
dest=$(realpath -m "$1")
cd "$(dirname "$0")"
mkdir -p "$dest"
# the version the binaries report (kubectl and helm read it), from the one pin in go.mod
version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$version" | cut -d. -f2)
kube="-s -w -X k8s.io/component-base/version.gitVersion=$version \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean"
for tool in kube-apiserver kube-controller-manager kubectl; do
  go build -trimpath -buildvcs=false -ldflags "$kube" -o "$dest/$tool" "k8s.io/kubernetes/cmd/$tool"
done
go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dest/etcd" go.etcd.io/etcd/server/v3
"$dest/kube-apiserver" --version
