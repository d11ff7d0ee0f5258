#!/usr/bin/env bash
# tests/env/setup.sh - install what fluxrelay's end-to-end tests need. Idempotent: run it on
# every CI run; when everything is already in place it only checks (about a second).
#
# Provides (written to $FLUXRELAY_CACHE/env.sh as `export` lines, and printed at the end):
#   FLUXRELAY_MOTO_SERVER     <cache>/venv/bin/moto_server   moto[server], pinned in requirements.txt
#   FLUXRELAY_SAM             <cache>/venv/bin/sam           aws-sam-cli (lint offline: SAM_CLI_TELEMETRY=0 sam validate --lint)
#   FLUXRELAY_CFN_LINT        <cache>/venv/bin/cfn-lint      cfn-lint
#   FLUXRELAY_KUBE_APISERVER  <cache>/kube-apiserver/v1.20.2/kube-apiserver  built once from Debian source
#   FLUXRELAY_ETCD            $(command -v etcd)             Debian's etcd-server
#   FLUXRELAY_CACHE           the cache directory itself
# Environment:
#   FLUXRELAY_CACHE             default ${XDG_CACHE_HOME:-$HOME/.cache}/fluxrelay (outside the repo)
#   FLUXRELAY_PYTHON            interpreter for the venv (default python3)
#   FLUXRELAY_KUBE_DEB_VERSION  build another Debian `kubernetes` source version than the recipe's pin
#   FLUXRELAY_DEBIAN_MIRROR     Debian mirror for the deb-src download (default: the machine's own)
# Caches, and what invalidates them:
#   venv            sha256 of requirements.txt + constraints.txt + the interpreter's version
#   kube-apiserver  Debian source version + sha256 of build-kube-apiserver.sh (the recipe)
# Exit status: 0 when everything is in place; otherwise 1 with a message that says what is
# missing and how to fix it.
set -euo pipefail

T_START=$(date +%s%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FLUXRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxrelay}
mkdir -p "$CACHE/logs"
CACHE=$(cd "$CACHE" && pwd)
LOGS=$CACHE/logs

say() { echo "==> $*"; }
# die WHAT [FIX...]: the message names what is missing, each FIX line how to fix it.
die() {
  echo "setup.sh: error: $1" >&2
  shift
  local fix
  for fix in "$@"; do echo "  fix: $fix" >&2; done
  exit 1
}
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# Debian packages. Never add kubernetes-client here: it ships /usr/bin/kubectl, which collides
# with the machine's own kubectl package.
RUNTIME_PKGS=(etcd-server openssl curl iproute2)        # to run the cluster (kube-up.sh)
BUILD_PKGS=(golang-go dpkg-dev make rsync jq openssl curl iproute2
            golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)  # to build it once

# One setup.sh at a time per cache: parallel CI steps would otherwise race on the venv and build.
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.setup.lock"
  flock -w 3600 9 || die "another setup.sh has held $CACHE/.setup.lock for an hour" "kill it, or remove the lock file"
fi

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
APT_UPDATED=0
missing_pkgs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || echo "$p"
  done
}
# ensure_pkgs WHY PKG...: install the missing ones; `apt-get update` at most once per run.
ensure_pkgs() {
  local why=$1; shift
  local -a missing sudo=()
  command -v dpkg-query >/dev/null || die "dpkg-query not found: this script needs a Debian system (bookworm)"
  mapfile -t missing < <(missing_pkgs "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
    else die "missing Debian packages (${why}): ${missing[*]}" \
             "as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    fi
  fi
  say "installing Debian packages for ${why}: ${missing[*]}"
  if [ "$APT_UPDATED" = 0 ]; then
    "${sudo[@]}" apt-get update -q > "$LOGS/apt.log" 2>&1 ||
      { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get update failed (log: $LOGS/apt.log)" "check that the Debian mirror is reachable, then re-run"; }
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >> "$LOGS/apt.log" 2>&1 ||
    { tail -n 20 "$LOGS/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $LOGS/apt.log)" \
        "run: apt-get install -y --no-install-recommends ${missing[*]} and fix what it reports"; }
  mapfile -t missing < <(missing_pkgs "$@")
  [ ${#missing[@]} -eq 0 ] || die "still not installed after apt-get install: ${missing[*]}" "see $LOGS/apt.log"
}

ensure_pkgs "the test cluster" "${RUNTIME_PKGS[@]}"
ETCD=$(command -v etcd) || die "etcd not on PATH although etcd-server is installed" "apt-get install --reinstall etcd-server"

# ---------------------------------------------------------------------------------------------
# Python virtualenv: moto[server], cfn-lint, aws-sam-cli
# ---------------------------------------------------------------------------------------------
VENV=$CACHE/venv
REQ=$HERE/requirements.txt
CON=$HERE/constraints.txt
PY=${FLUXRELAY_PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
  [ "$PY" = python3 ] || die "FLUXRELAY_PYTHON=$PY not found" "point FLUXRELAY_PYTHON at a Python >= 3.9, or unset it"
  ensure_pkgs "the Python tools" python3 python3-venv
fi
PY_ID=$("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])') || die "$PY does not run"
VENV_KEY="$(cat "$REQ" "$CON" | sha256sum | cut -d' ' -f1) $PY_ID"

# Exit 0 when every requirements.txt pin is installed in the venv at exactly that version.
venv_pins_ok() {
  "$VENV/bin/python" - "$REQ" <<'EOF'
import importlib.metadata as md, re, sys
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    m = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line)
    if not m:
        sys.exit(f"requirements.txt: pin every line as name==version: {line}")
    try:
        have = md.version(m[1])
    except md.PackageNotFoundError:
        have = "missing"
    if have != m[3]:
        bad.append(f"{m[1]} {have} (want {m[3]})")
if bad:
    sys.exit("not at the pinned versions: " + ", ".join(bad))
EOF
}

venv_ready() {
  [ "$(cat "$VENV/.fluxrelay-key" 2>/dev/null)" = "$VENV_KEY" ] || return 1
  local b
  for b in moto_server sam cfn-lint python; do [ -x "$VENV/bin/$b" ] || return 1; done
  venv_pins_ok 2>/dev/null
}

if venv_ready; then
  say "python tools: up to date ($VENV)"
else
  say "installing python tools into $VENV (moto[server], cfn-lint, aws-sam-cli; 1-2 minutes)"
  t0=$(date +%s%N)
  if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian's own python3 splits venv/ensurepip into python3-venv.
    [ "$(command -v "$PY")" = /usr/bin/python3 ] && ensure_pkgs "the Python venv" python3-venv
    "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
      die "$PY cannot create virtualenvs (no venv/ensurepip module)" "apt-get install python3-venv, or set FLUXRELAY_PYTHON to a full Python"
  fi
  rm -rf "$VENV"   # a venv is not relocatable or reliably upgradable in place: start clean
  "$PY" -m venv "$VENV" > "$LOGS/pip.log" 2>&1 ||
    { tail -n 20 "$LOGS/pip.log" >&2; die "'$PY -m venv $VENV' failed (log: $LOGS/pip.log)"; }
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/pip" install --no-input -r "$REQ" -c "$CON" >> "$LOGS/pip.log" 2>&1 ||
    { tail -n 20 "$LOGS/pip.log" >&2
      die "pip install of $REQ failed (log: $LOGS/pip.log)" \
          "check that PyPI is reachable (pip config list); if a pin no longer resolves, update requirements.txt and regenerate constraints.txt"; }
  "$VENV/bin/pip" check >> "$LOGS/pip.log" 2>&1 ||
    { tail -n 20 "$LOGS/pip.log" >&2; die "pip check found conflicting requirements in $VENV" "fix the pins in constraints.txt"; }
  msg=$(venv_pins_ok 2>&1) || die "after pip install, $msg" "fix requirements.txt / constraints.txt"
  for b in moto_server sam cfn-lint; do
    [ -x "$VENV/bin/$b" ] || die "$VENV/bin/$b is missing after pip install" "see $LOGS/pip.log"
  done
  echo "$VENV_KEY" > "$VENV/.fluxrelay-key"   # written last: marks a complete install
  say "python tools installed in $(( $(ms_since "$t0") / 1000 )) s"
fi

# ---------------------------------------------------------------------------------------------
# kube-apiserver v1.20.2, built from Debian's `kubernetes` source package once, then cached
# ---------------------------------------------------------------------------------------------
RECIPE=$HERE/build-kube-apiserver.sh
PIN=$(sed -n "s/^KUBE_DEB_VERSION_PIN='\(.*\)'\$/\1/p" "$RECIPE")
[ -n "$PIN" ] || die "KUBE_DEB_VERSION_PIN not found in $RECIPE"
DEB_VERSION=${FLUXRELAY_KUBE_DEB_VERSION:-$PIN}
KDIR=$CACHE/kube-apiserver/v1.20.2
KBIN=$KDIR/kube-apiserver
KEY="debian-src=$DEB_VERSION recipe-sha256=$(sha256sum < "$RECIPE" | cut -d' ' -f1)"

if [ -x "$KBIN" ] && [ "$(cat "$KDIR/build.key" 2>/dev/null)" = "$KEY" ]; then
  say "kube-apiserver: cached ($KBIN)"
else
  ensure_pkgs "the kube-apiserver build" "${BUILD_PKGS[@]}"
  WORK=$CACHE/kube-apiserver/build
  rm -rf "$WORK"                               # leftovers of an earlier failed build
  avail_kb=$(df -Pk "$CACHE" | awk 'NR==2 {print $4}')
  [ "$avail_kb" -ge $((3 * 1024 * 1024)) ] ||
    die "the build needs about 3 GB free under $CACHE, only $((avail_kb / 1024)) MB are" "free some space or set FLUXRELAY_CACHE elsewhere"
  say "building kube-apiserver (about 5 minutes, once) from Debian source kubernetes $DEB_VERSION"
  t0=$(date +%s%N)
  KUBE_DEB_VERSION=$DEB_VERSION bash "$RECIPE" "$WORK" "$WORK/out/kube-apiserver" ||
    die "building kube-apiserver failed; the build tree and log are kept in $WORK (build.log)" \
        "fix the cause shown above and re-run setup.sh (it starts the build afresh)"
  mkdir -p "$KDIR"
  cp "$WORK/build.log" "$KDIR/build.log"
  mv -f "$WORK/out/kube-apiserver" "$KBIN.tmp"
  mv -f "$KBIN.tmp" "$KBIN"
  echo "$KEY" > "$KDIR/build.key"              # written last: marks a complete build
  rm -rf "$WORK"                               # ~1.5 GB of source tree and GOCACHE
  say "built kube-apiserver in $(( $(ms_since "$t0") / 1000 )) s ($(du -h "$KBIN" | cut -f1)); build leftovers removed"
fi

# ---------------------------------------------------------------------------------------------
# env.sh: the paths, for tests and scripts to source
# ---------------------------------------------------------------------------------------------
ENV_SH=$CACHE/env.sh
tmp=$(mktemp "$CACHE/.env.sh.XXXXXX")
{
  echo "# Written by fluxrelay tests/env/setup.sh; source this file."
  printf 'export FLUXRELAY_CACHE=%q\n' "$CACHE"
  printf 'export FLUXRELAY_MOTO_SERVER=%q\n' "$VENV/bin/moto_server"
  printf 'export FLUXRELAY_KUBE_APISERVER=%q\n' "$KBIN"
  printf 'export FLUXRELAY_ETCD=%q\n' "$ETCD"
  printf 'export FLUXRELAY_SAM=%q\n' "$VENV/bin/sam"
  printf 'export FLUXRELAY_CFN_LINT=%q\n' "$VENV/bin/cfn-lint"
} > "$tmp"
chmod 644 "$tmp"   # mktemp creates 0600; the file holds only paths
mv -f "$tmp" "$ENV_SH"

total_ms=$(ms_since "$T_START")
say "environment ready in $((total_ms / 1000)).$(printf '%03d' $((total_ms % 1000))) s; source $ENV_SH:"
cat "$ENV_SH"
