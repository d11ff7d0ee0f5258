#!/usr/bin/env bash
# Build recipe: kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` SOURCE package.
#
# Called by tests/env/setup.sh, which caches the result. The sha256 of THIS FILE is part of
# the cache key, so any edit here makes setup.sh rebuild; keep everything that shapes the
# binary in this file. Why this way at all (no registry ships kube-apiserver, no Docker):
# see shared/reference/kube-testenv.md in the steering repo.
#
# Usage: build-kube-apiserver.sh WORKDIR OUTPUT
#   WORKDIR  scratch directory (source tree, GOCACHE, private apt index; ~1.5 GB). The
#            caller deletes it after success.
#   OUTPUT   where the finished binary is written.
#   KUBE_DEB_VERSION  Debian source version to build (default: KUBE_DEB_VERSION_PIN below).
# Step lines go to stderr; the noisy tool output goes to WORKDIR/build.log, whose tail is
# printed if a step fails.
# Needs (setup.sh installs them): golang-go dpkg-dev make rsync jq
#   golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
set -euo pipefail

# The Debian source version this recipe was written and tested against. If Debian replaces
# it (a bookworm point release), the download step fails and says which version is offered.
KUBE_DEB_VERSION_PIN='1.20.5+really1.20.2-1.1+deb12u1'
KUBE_VERSION='v1.20.2'

[ $# -eq 2 ] || { echo "usage: $0 WORKDIR OUTPUT" >&2; exit 2; }
WORK=$1 OUT=$2
VERSION=${KUBE_DEB_VERSION:-$KUBE_DEB_VERSION_PIN}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
LOG=$WORK/build.log
: > "$LOG"

step() { echo "    -> $* ($(date +%T))" >&2; echo "=== $* ===" >> "$LOG"; }
fail() {
  echo "build-kube-apiserver: error: $*" >&2
  echo "---- last 40 lines of $LOG ----" >&2
  tail -n 40 "$LOG" >&2 || true
  exit 1
}

# --- preconditions ------------------------------------------------------------------------
# shellcheck disable=SC1091  # /etc/os-release exists on every Debian
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$codename" = bookworm ] ||
  fail "this recipe needs Debian bookworm (found '${codename:-unknown}'): it builds bookworm's kubernetes source with bookworm's Go"
for tool in go dpkg-source make rsync jq apt-get; do
  command -v "$tool" >/dev/null || fail "'$tool' is missing; run tests/env/setup.sh (it installs the build packages)"
done
GOCODE=/usr/share/gocode/src/github.com
for lib in modern-go/reflect2 json-iterator/go; do
  [ -d "$GOCODE/$lib" ] ||
    fail "$GOCODE/$lib is missing; apt-get install golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev"
done
echo "go: $(go version)" >> "$LOG"

# --- 1. source package, through a PRIVATE deb-src index -----------------------------------
# The system sources.list is never touched: apt reads only $WORK/apt/etc, keeps its lists and
# downloads under $WORK/apt, and the index is verified with Debian's archive keyring.
step "fetching Debian source kubernetes=$VERSION"
mirror=${FLUXRELAY_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # The machine's own Debian mirror: the first non-security URI of its apt sources.
  mirror=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
              grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } |
            grep -v security | head -n1 || true)
fi
[ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*; set FLUXRELAY_DEBIAN_MIRROR=http://deb.debian.org/debian"
APT=$WORK/apt
mkdir -p "$APT/etc" "$APT/lists/partial" "$APT/cache/archives/partial" "$WORK/src"
printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  "$mirror" > "$APT/etc/fluxrelay-src.sources"
aptopt=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$APT/etc"
        -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache")
apt-get "${aptopt[@]}" update >> "$LOG" 2>&1 || fail "apt-get update of the private deb-src index ($mirror) failed"
cd "$WORK/src"
if ! apt-get "${aptopt[@]}" source --download-only "kubernetes=$VERSION" >> "$LOG" 2>&1; then
  offered=$(apt-cache "${aptopt[@]}" showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' | paste -sd' ' -)
  fail "Debian does not offer kubernetes source $VERSION (offered: ${offered:-none}).
  To build an offered version once: FLUXRELAY_KUBE_DEB_VERSION=<version> tests/env/setup.sh
  To switch for good: set KUBE_DEB_VERSION_PIN in tests/env/build-kube-apiserver.sh (check the vendor fix still applies)."
fi
rm -rf k8s
dpkg-source -x kubernetes_*.dsc k8s >> "$LOG" 2>&1 || fail "dpkg-source -x failed"
cd k8s

# --- 2. vendor fix -------------------------------------------------------------------------
# k8s 1.20 vendors modern-go/reflect2 1.0.1, which faults under Go >= 1.18: the first custom
# resource create killed the apiserver ("fatal error: fault" in runtime.mapiterinit, via
# json-iterator). Swap in Debian's reflect2 1.0.2 and json-iterator 1.1.12.
step "swapping vendored reflect2/json-iterator for Debian's"
rm -rf vendor/github.com/modern-go/reflect2 vendor/github.com/json-iterator/go
cp -r "$GOCODE/modern-go/reflect2" vendor/github.com/modern-go/reflect2
cp -r "$GOCODE/json-iterator/go" vendor/github.com/json-iterator/go
find vendor/github.com/modern-go/reflect2 vendor/github.com/json-iterator/go -name '*_test.go' -delete

# --- 3. build ------------------------------------------------------------------------------
# Everything Go writes stays in $WORK (HOME, GOCACHE, GOPATH); GOPROXY=off guarantees the
# build never reaches for a module proxy (all code is vendored); GOFLAGS is cleared so a
# caller's setting cannot change the build.
export HOME=$WORK/home GOCACHE=$WORK/gocache GOPROXY=off GOSUMDB=off GOFLAGS='' CGO_ENABLED=0
mkdir -p "$HOME"
# Generated code (zz_generated.openapi.go, deepcopy, ...) is not in the tarball; without it
# the build fails with "undefined: openapi.GetOpenAPIDefinitions". ~80 s when idle.
step "make generated_files"
make generated_files >> "$LOG" 2>&1 || fail "make generated_files failed"
# Module mode fails ("updates to go.mod needed"); build in GOPATH mode, as debian/rules does.
step "go build ./cmd/kube-apiserver (the long part)"
mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
cd .go/src/k8s.io/kubernetes
V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
GOPATH=$WORK/src/k8s/.go GO111MODULE=off \
  go build -ldflags "-s -w -X $V.gitVersion=$KUBE_VERSION -X $V.gitMajor=1 -X $V.gitMinor=20" \
    -o "$WORK/kube-apiserver" ./cmd/kube-apiserver >> "$LOG" 2>&1 || fail "go build failed"

# --- 4. check and hand over -----------------------------------------------------------------
got=$("$WORK/kube-apiserver" --version 2>&1) || fail "built binary does not run: $got"
[ "$got" = "Kubernetes $KUBE_VERSION" ] || fail "built binary reports '$got', expected 'Kubernetes $KUBE_VERSION'"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/kube-apiserver" "$OUT"
echo "    -> built $got from Debian source $VERSION with $(go version | awk '{print $3}')" >&2
