#!/usr/bin/env bash
# tests/env/kube-down.sh - stop the servers started by kube-up.sh.
#
# Usage: kube-down.sh [--purge] [DIR]     DIR defaults to $KUBE_TESTENV_DIR.
#   Stops kube-apiserver FIRST, then etcd: once etcd is gone, the apiserver's graceful
#   shutdown keeps retrying etcd and hangs for a minute or more. Each gets SIGTERM, then
#   SIGKILL after KT_STOP_TIMEOUT seconds (default 5).
#   Removes the pid files, the `ready` marker and the etcd data (the logs, certs and tokens
#   stay, for debugging); --purge removes the whole directory.
# Works from inside or outside the network namespace (it only signals pids). Safe to run twice.
set -euo pipefail

log() { echo "kube-down: $*" >&2; }
die() { echo "kube-down: error: $*" >&2; exit 1; }

purge=0
if [ "${1:-}" = --purge ]; then purge=1; shift; fi
D=${1:-${KUBE_TESTENV_DIR:-}}
[ -n "$D" ] || die "usage: $0 [--purge] DIR (or set KUBE_TESTENV_DIR)"
[ -d "$D" ] || { log "$D does not exist; nothing to stop"; exit 0; }
STOP_TIMEOUT=${KT_STOP_TIMEOUT:-5}
[[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "KT_STOP_TIMEOUT must be a number of seconds"

# alive PID: running and not a zombie (a zombie not yet reaped by its parent still answers
# kill -0, but it holds no ports and will never exit "more").
alive() {
  kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# stop NAME: signal the pid in $D/NAME.pid, but only if that pid is still NAME's program
# (a stale pid file must never make us kill an unrelated process that reused the pid).
stop() {
  local name=$1 pidfile=$D/$1.pid pid i
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
     tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
      ! alive "$pid" || die "$name (pid $pid) is still running after SIGKILL"
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

stop apiserver
stop etcd
rm -f "$D/ready"
if [ "$purge" = 1 ]; then
  rm -rf "$D"
  log "removed $D"
else
  rm -rf "$D/etcd-data"
fi
