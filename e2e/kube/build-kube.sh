#!/bin/bash
# Build kube-apiserver + kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes`
# source package (it vendors every Go dependency, so the build needs no Go module downloads).
# Idempotent: the binaries are cached under ~/.cache/pbs-cloud/kube-<debian version>/bin and a
# second run returns at once. Needs root (apt-get) the first time. Takes ~13 min on 2 cores.
# usage: e2e/kube/build-kube.sh            prints the bin directory on its last line
set -euo pipefail
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
UPSTREAM=1.20.2
CACHE=${PBS_CLOUD_KUBE_CACHE:-$HOME/.cache/pbs-cloud/kube-$DEB_VERSION}
BIN=$CACHE/bin
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && command -v etcd >/dev/null; then
  echo "$BIN"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -q golang-go rsync jq etcd-server etcd-client openssl \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >/dev/null
if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ]; then echo "$BIN"; exit 0; fi
W=$CACHE/build; mkdir -p "$W" "$BIN"; cd "$W"
# deb-src index in a private apt state directory: /etc/apt stays untouched.
mkdir -p apt/lists/partial apt/cache/archives/partial
echo 'deb-src http://deb.debian.org/debian bookworm main' > apt/sources.list
A=(-o "Dir::Etc::SourceList=$W/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache")
if [ ! -f "kubernetes_${DEB_VERSION%-*}.orig.tar.gz" ]; then
  apt-get "${A[@]}" update -q >/dev/null
  apt-get "${A[@]}" source --download-only "kubernetes=$DEB_VERSION" >/dev/null 2>&1
fi
rm -rf "kubernetes-$UPSTREAM"
tar xzf "kubernetes_${DEB_VERSION%-*}.orig.tar.gz"
cd "kubernetes-$UPSTREAM"
# The vendored reflect2 1.0.1 crashes under Go 1.19 when a custom resource is encoded: use
# Debian's reflect2 1.0.2 and json-iterator 1.1.12 instead.
for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$p"; mkdir -p "vendor/$p"
  cp /usr/share/gocode/src/$p/*.go "vendor/$p/"
  cp /usr/share/gocode/src/$p/*.s "vendor/$p/" 2>/dev/null || true
  rm -f vendor/$p/*_test.go
done
env HOME="$W/home" CGO_ENABLED=0 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$BIN/"
cd "$W" && rm -rf "kubernetes-$UPSTREAM" home
echo "$BIN"
