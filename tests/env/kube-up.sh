#!/usr/bin/env bash
# tests/env/kube-up.sh - start a real etcd + kube-apiserver (v1.20.2) for fluxrelay's
# end-to-end tests, with a fresh PKI and the minimal objects a Flux cluster would have.
#
# MUST run inside a private network namespace (it adds 192.0.2.10 to `lo` and listens on
# loopback ports), e.g.:
#   unshare -n -- bash -c 'eval "$(tests/env/kube-up.sh)"; cargo test ...; tests/env/kube-down.sh'
# Needs tests/env/setup.sh to have run (it reads $FLUXRELAY_CACHE/env.sh unless
# FLUXRELAY_KUBE_APISERVER / FLUXRELAY_ETCD are set).
#
# Environment:
#   KUBE_TESTENV_DIR      run directory (default: a new `mktemp -d`); created if missing
#   KT_APISERVER_PORT     apiserver https port on 127.0.0.1 (default 6443)
#   KT_ETCD_CLIENT_PORT   etcd client port (default 23791)
#   KT_ETCD_PEER_PORT     etcd peer port (default 23792)
#   KT_EXTRA_ARGS         extra kube-apiserver flags, split on whitespace
#                         (e.g. --authentication-token-webhook-config-file=... --authentication-token-webhook-version=v1)
#   KT_READY_TIMEOUT      seconds to wait for /readyz (default 90)
#
# Applied to the cluster (and nothing else: NO Role/RoleBinding, NO GitRepository/Receiver -
# tests apply infra/rbac.yaml and their own objects):
#   CRDs gitrepositories.source.toolkit.fluxcd.io and receivers.notification.toolkit.fluxcd.io
#   (and, for confirmation, kustomizations.kustomize.toolkit.fluxcd.io and helmreleases.helm.toolkit.fluxcd.io)
#     (v1, spec/status preserve-unknown-fields, status subresource)
#   CRDs for artifact triggers, the same way: ocirepositories, helmrepositories, helmcharts
#     (source.toolkit.fluxcd.io/v1), helmreleases (helm.toolkit.fluxcd.io/v2),
#     imagerepositories (image.toolkit.fluxcd.io/v1)
#   Namespace flux-system; ServiceAccount flux-system/default
#   Service flux-system/webhook-receiver (port `http` 80 -> targetPort `http-webhook`)
#   Pod flux-system/notification-controller-0 (never runs; status.podIP patched to 192.0.2.10)
#   Endpoints flux-system/webhook-receiver -> 192.0.2.10:9292 (targetRef the Pod)
#   => POST /api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy/<path>
#      reaches whatever listens on 192.0.2.10:9292 in this namespace.
#
# Files in $KUBE_TESTENV_DIR:
#   ca.crt ca.key                 test CA (serving and client certs)
#   admin.crt admin.key           client cert CN=admin, O=system:masters
#   dispatcher.crt dispatcher.key client cert CN=fluxrelay-dispatcher-cert (no groups)
#   apiserver.crt apiserver.key   serving cert (SAN 127.0.0.1, localhost); sa.key sa.pub SA signing keys
#   tokens.csv                    static tokens for users fluxrelay-dispatcher and nobody
#   dispatcher.token nobody.token the token values (no newline)
#   admin.kubeconfig              kubeconfig for admin (embedded certs)
#   apiserver.log etcd.log        server logs; apiserver.pid etcd.pid
#   env.sh                        the export lines below
#   ready                         written last: "ready_ms=<ms from start to fixtures applied>"
# Stdout: only `export KUBE_TESTENV_...=...` lines (so `eval "$(kube-up.sh)"` works):
#   KUBE_TESTENV_DIR, KUBE_TESTENV_SERVER=https://127.0.0.1:<port>, KUBE_TESTENV_CA,
#   KUBE_TESTENV_RECEIVER_ADDR=192.0.2.10:9292, KUBE_TESTENV_PROXY_BASE
# Progress and the ready time go to stderr. On failure the servers are stopped, the log tails
# are printed, and the exit status is 1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "kube-up: $*" >&2; }
die() { echo "kube-up: error: $*" >&2; exit 1; }

RECEIVER_IP=192.0.2.10      # TEST-NET-1; exists only on `lo` of this private namespace
RECEIVER_PORT=9292          # notification-controller's `http-webhook` container port
APISERVER_PORT=${KT_APISERVER_PORT:-6443}
ETCD_CLIENT_PORT=${KT_ETCD_CLIENT_PORT:-23791}
ETCD_PEER_PORT=${KT_ETCD_PEER_PORT:-23792}
READY_TIMEOUT=${KT_READY_TIMEOUT:-90}
for v in APISERVER_PORT ETCD_CLIENT_PORT ETCD_PEER_PORT READY_TIMEOUT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done

# --- 1. refuse to touch the host's network ----------------------------------------------------
# A private namespace (unshare -n) has its own `lo` and nothing else. Refuse when we share
# PID 1's namespace, or when any other interface exists (then traffic could leave the machine).
self_ns=$(readlink /proc/self/ns/net)
init_ns=$(readlink /proc/1/ns/net 2>/dev/null || true)
if [ "$self_ns" = "$init_ns" ] || ! ip -o link show | awk -F': ' '$2 != "lo" {found=1} END {exit found}'; then
  die "not inside a private network namespace (interfaces: $(ip -o link show | awk -F': ' '{printf "%s ", $2}')).
  Run it as: unshare -n -- bash -c 'eval \"\$($0)\"; ...; $HERE/kube-down.sh'"
fi

# --- 2. binaries --------------------------------------------------------------------------------
CACHE=${FLUXRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxrelay}
from_env_sh() {   # the value of $1 in setup.sh's env.sh, without changing this shell
  [ -f "$CACHE/env.sh" ] || return 0
  # shellcheck disable=SC1091
  (. "$CACHE/env.sh" && printenv "$1") || true
}
APISERVER=${FLUXRELAY_KUBE_APISERVER:-$(from_env_sh FLUXRELAY_KUBE_APISERVER)}
ETCD=${FLUXRELAY_ETCD:-$(from_env_sh FLUXRELAY_ETCD)}
ETCD=${ETCD:-$(command -v etcd || true)}
[[ -n $APISERVER && -x $APISERVER ]] ||
  die "kube-apiserver not found (FLUXRELAY_KUBE_APISERVER='${APISERVER}'); run tests/env/setup.sh first"
[[ -n $ETCD && -x $ETCD ]] || die "etcd not found; run tests/env/setup.sh first (installs etcd-server)"
for tool in openssl curl ip; do command -v "$tool" >/dev/null || die "'$tool' not found; run tests/env/setup.sh first"; done

# --- 3. run directory -----------------------------------------------------------------------------
if [ -n "${KUBE_TESTENV_DIR:-}" ]; then
  mkdir -p "$KUBE_TESTENV_DIR"
else
  KUBE_TESTENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fluxrelay-kube.XXXXXX")
fi
D=$(cd "$KUBE_TESTENV_DIR" && pwd)
export KUBE_TESTENV_DIR=$D
running() {  # running NAME: the pid in $D/NAME.pid is alive and still that program
  local pid
  pid=$(cat "$D/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "$1"
}
for p in kube-apiserver etcd; do
  ! running "${p#kube-}" || die "$p from an earlier kube-up.sh is still running in $D; run: KUBE_TESTENV_DIR=$D $HERE/kube-down.sh"
done
# Everything below is regenerated: a reused directory must not keep old certs, tokens or data.
# (Only our own names: a test may keep its own files in the same directory.)
rm -rf "$D/etcd-data" "$D/pki-work" "$D/ready" "$D/env.sh" "$D/tokens.csv" "$D/admin.kubeconfig" \
       "$D/sa.key" "$D/sa.pub" "$D/dispatcher.token" "$D/nobody.token" \
       "$D"/{ca,apiserver,admin,dispatcher}.{crt,key} "$D"/{apiserver,etcd}.{log,pid}

# Stop what we started if anything below fails, so a failed start leaves no servers behind.
UP_OK=0
on_exit() {
  [ "$UP_OK" = 1 ] && return 0
  log "start failed; stopping servers. Run directory: $D"
  for f in apiserver etcd; do
    [ -s "$D/$f.log" ] && { echo "---- last 25 lines of $D/$f.log ----" >&2; tail -n 25 "$D/$f.log" >&2; }
  done
  "$HERE/kube-down.sh" "$D" >&2 || true
}
trap on_exit EXIT

T0=$(date +%s%N)
ms() { echo $(( ($(date +%s%N) - T0) / 1000000 )); }

# --- 4. network: loopback up, the fake receiver's "pod IP" on lo ---------------------------------
ip link set lo up
ip addr replace "$RECEIVER_IP/32" dev lo

# --- 5. etcd (needs no PKI: it starts while the keys are made) ----------------------------------
# etcd and kube-apiserver get stdin from /dev/null and stdout/stderr to their logs, so they
# never hold the caller's pipes open (`eval "$(kube-up.sh)"` would otherwise wait forever).
"$ETCD" --name fluxrelay-test --data-dir "$D/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "fluxrelay-test=http://127.0.0.1:$ETCD_PEER_PORT" --logger zap --log-level warn \
  < /dev/null > "$D/etcd.log" 2>&1 &
echo $! > "$D/etcd.pid"

# --- 6. PKI -------------------------------------------------------------------------------------
# Fresh per run, valid 7 days. The serving cert covers 127.0.0.1 and localhost.
W=$D/pki-work
mkdir -p "$W"
ssl() { openssl "$@" 2>>"$W/openssl.log" || die "openssl $1 failed: $(tail -n 5 "$W/openssl.log")"; }
# RSA key generation is the slow part (~0.5 s per key on a busy 2-core machine): make all
# five keys in parallel first, then sign.
keys=(ca apiserver admin dispatcher sa) keypids=()
for k in "${keys[@]}"; do
  openssl genrsa -out "$D/$k.key" 2048 2> "$W/genrsa-$k.log" &
  keypids+=($!)
done
for i in "${!keys[@]}"; do
  wait "${keypids[$i]}" || die "openssl genrsa for ${keys[$i]} failed: $(cat "$W/genrsa-${keys[$i]}.log")"
done
ssl req -x509 -new -key "$D/ca.key" -out "$D/ca.crt" -days 7 -subj "/CN=fluxrelay-test-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$W/server.ext"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$W/client.ext"
issue() {  # issue NAME SUBJECT EXTFILE: $D/NAME.key -> $D/NAME.crt signed by the CA
  ssl req -new -key "$D/$1.key" -out "$W/$1.csr" -subj "$2"
  ssl x509 -req -in "$W/$1.csr" -CA "$D/ca.crt" -CAkey "$D/ca.key" -CAcreateserial -CAserial "$W/ca.srl" \
    -out "$D/$1.crt" -days 7 -extfile "$3"
}
issue apiserver "/CN=kube-apiserver" "$W/server.ext"
issue admin "/CN=admin/O=system:masters" "$W/client.ext"
issue dispatcher "/CN=fluxrelay-dispatcher-cert" "$W/client.ext"
ssl rsa -in "$D/sa.key" -pubout -out "$D/sa.pub"
# Static tokens (token,user,uid): random per run; users have no RBAC until a test grants it.
DISPATCHER_TOKEN=$(openssl rand -hex 24)
NOBODY_TOKEN=$(openssl rand -hex 24)
printf '%s' "$DISPATCHER_TOKEN" > "$D/dispatcher.token"
printf '%s' "$NOBODY_TOKEN" > "$D/nobody.token"
printf '%s,fluxrelay-dispatcher,uid-fluxrelay-dispatcher\n%s,nobody,uid-nobody\n' "$DISPATCHER_TOKEN" "$NOBODY_TOKEN" > "$D/tokens.csv"
chmod 600 "$D"/*.key "$D"/*.token "$D/tokens.csv"

SERVER=https://127.0.0.1:$APISERVER_PORT
b64() { base64 -w0 < "$1"; }
cat > "$D/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster: {server: "$SERVER", certificate-authority-data: $(b64 "$D/ca.crt")}
users:
- name: admin
  user: {client-certificate-data: $(b64 "$D/admin.crt"), client-key-data: $(b64 "$D/admin.key")}
contexts:
- name: admin@testenv
  context: {cluster: testenv, user: admin}
current-context: admin@testenv
EOF
chmod 600 "$D/admin.kubeconfig"

# --- 7. kube-apiserver --------------------------------------------------------------------------
log "PKI made in $(ms) ms"
# --advertise-address must be a non-loopback IP; 192.0.2.10 exists only in this namespace, so
# nothing the apiserver might dial on it can leave. The service-account flags are required in 1.20.
# Priority-and-fairness is off: it only adds startup work and no test needs it.
# shellcheck disable=SC2086  # KT_EXTRA_ARGS is deliberately split on whitespace
"$APISERVER" --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --bind-address=127.0.0.1 --advertise-address="$RECEIVER_IP" --secure-port="$APISERVER_PORT" --insecure-port=0 \
  --tls-cert-file="$D/apiserver.crt" --tls-private-key-file="$D/apiserver.key" \
  --client-ca-file="$D/ca.crt" --token-auth-file="$D/tokens.csv" \
  --authorization-mode=RBAC --anonymous-auth=false \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$D/sa.pub" \
  --service-account-signing-key-file="$D/sa.key" --service-cluster-ip-range=10.96.0.0/16 \
  --enable-priority-and-fairness=false ${KT_EXTRA_ARGS:-} \
  < /dev/null > "$D/apiserver.log" 2>&1 &
echo $! > "$D/apiserver.pid"

APISERVER_T0=$(date +%s%N)
kcurl() {  # curl as admin (system:masters); prints the body, fails with the body on HTTP >= 400
  curl -sS --fail-with-body --max-time 10 --cacert "$D/ca.crt" --cert "$D/admin.crt" --key "$D/admin.key" "$@"
}
deadline=$(( $(date +%s) + READY_TIMEOUT ))
until [ "$(kcurl "$SERVER/readyz" 2>/dev/null)" = ok ]; do
  running etcd || die "etcd exited during startup (see $D/etcd.log)"
  running apiserver || die "kube-apiserver exited during startup (see $D/apiserver.log)"
  [ "$(date +%s)" -lt "$deadline" ] || die "kube-apiserver not ready after ${READY_TIMEOUT}s (see $D/apiserver.log)"
  sleep 0.1
done
log "apiserver ready in $(ms) ms at $SERVER ($(( ($(date +%s%N) - APISERVER_T0) / 1000000 )) ms after its start)"

# --- 8. fixtures --------------------------------------------------------------------------------
apply() {  # apply PATH [METHOD] [CONTENT-TYPE] < body
  local out
  out=$(kcurl -X "${2:-POST}" -H "Content-Type: ${3:-application/yaml}" --data-binary @- "$SERVER$1" 2>&1) ||
    die "${2:-POST} $1 failed: $out"
}

# Minimal Flux CRDs. Not the real Flux CRDs: 1.20 knows no CEL validations, and the tests only
# need the API groups, kinds, plurals and a status subresource.
crd() {  # crd PLURAL GROUP KIND
  apply /apis/apiextensions.k8s.io/v1/customresourcedefinitions <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: $1.$2}
spec:
  group: $2
  names: {kind: $3, listKind: $3List, plural: $1, singular: ${3,,}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
EOF
}
crd gitrepositories source.toolkit.fluxcd.io GitRepository
crd receivers notification.toolkit.fluxcd.io Receiver

apply /api/v1/namespaces <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: flux-system}
EOF
# No controllers run, so nothing creates the default ServiceAccount; the ServiceAccount
# admission plugin would refuse the Pod without it.
apply /api/v1/namespaces/flux-system/serviceaccounts <<'EOF'
apiVersion: v1
kind: ServiceAccount
metadata: {name: default}
EOF
# As Flux's notification-controller config/manager/service.yaml.
apply /api/v1/namespaces/flux-system/services <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: webhook-receiver, labels: {app: notification-controller}}
spec:
  type: ClusterIP
  selector: {app: notification-controller}
  ports: [{name: http, port: 80, protocol: TCP, targetPort: http-webhook}]
EOF
# The service proxy only dials an Endpoints address whose targetRef Pod lists that IP in
# status.podIPs, so a placeholder Pod (never scheduled: no scheduler or kubelet runs) gets
# its status patched to the receiver's IP.
apply /api/v1/namespaces/flux-system/pods <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: notification-controller-0, labels: {app: notification-controller}}
spec:
  automountServiceAccountToken: false
  containers: [{name: manager, image: example.invalid/notification-controller:test, ports: [{name: http-webhook, containerPort: 9292}]}]
EOF
apply /api/v1/namespaces/flux-system/pods/notification-controller-0/status PATCH application/merge-patch+json <<EOF
{"status":{"phase":"Running","podIP":"$RECEIVER_IP","podIPs":[{"ip":"$RECEIVER_IP"}]}}
EOF
# Endpoints validation rejects loopback addresses, hence 192.0.2.10 on lo.
apply /api/v1/namespaces/flux-system/endpoints <<EOF
apiVersion: v1
kind: Endpoints
metadata: {name: webhook-receiver, labels: {app: notification-controller}}
subsets:
- addresses: [{ip: $RECEIVER_IP, targetRef: {kind: Pod, name: notification-controller-0, namespace: flux-system}}]
  ports: [{name: http, port: $RECEIVER_PORT, protocol: TCP}]
EOF

# The CRDs must be Established before tests use them: wait until both lists are served.
until kcurl -o /dev/null "$SERVER/apis/source.toolkit.fluxcd.io/v1/gitrepositories" 2>/dev/null &&
      kcurl -o /dev/null "$SERVER/apis/notification.toolkit.fluxcd.io/v1/receivers" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || die "CRDs not served after ${READY_TIMEOUT}s"
  sleep 0.1
done

# --- 8b. the other Flux kinds -------------------------------------------------------------------
# Artifact triggers (issue 16): OCIRepository, HelmRepository, HelmChart
# (source.toolkit.fluxcd.io/v1), HelmRelease (helm.toolkit.fluxcd.io/v2) and ImageRepository
# (image.toolkit.fluxcd.io/v1). Confirmation (issue 14): Kustomization
# (kustomize.toolkit.fluxcd.io/v1) and HelmRelease, the objects that consume a source. Each
# minimal like the ones above (schemaless, a status subresource, the real group, version,
# kind and plural), created only when absent. Nothing reconciles them: the Flux controller
# stand-in (tests/testkit/src/flux_controller.rs) writes their status.
flux_crd() {  # flux_crd PLURAL GROUP KIND VERSION
  kcurl -o /dev/null "$SERVER/apis/apiextensions.k8s.io/v1/customresourcedefinitions/$1.$2" 2>/dev/null && return 0
  apply /apis/apiextensions.k8s.io/v1/customresourcedefinitions <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: $1.$2}
spec:
  group: $2
  names: {kind: $3, listKind: $3List, plural: $1, singular: ${3,,}}
  scope: Namespaced
  versions:
  - name: $4
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
EOF
}
FLUX_CRDS="ocirepositories:source.toolkit.fluxcd.io:OCIRepository:v1
helmrepositories:source.toolkit.fluxcd.io:HelmRepository:v1
helmcharts:source.toolkit.fluxcd.io:HelmChart:v1
helmreleases:helm.toolkit.fluxcd.io:HelmRelease:v2
imagerepositories:image.toolkit.fluxcd.io:ImageRepository:v1
kustomizations:kustomize.toolkit.fluxcd.io:Kustomization:v1"
while IFS=: read -r plural group kind version; do
  flux_crd "$plural" "$group" "$kind" "$version"
done <<< "$FLUX_CRDS"
while IFS=: read -r plural group kind version; do
  until kcurl -o /dev/null "$SERVER/apis/$group/$version/$plural" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || die "CRD $plural.$group not served after ${READY_TIMEOUT}s"
    sleep 0.1
  done
done <<< "$FLUX_CRDS"

# --- 9. outputs -----------------------------------------------------------------------------------
{
  printf 'export KUBE_TESTENV_DIR=%q\n' "$D"
  printf 'export KUBE_TESTENV_SERVER=%q\n' "$SERVER"
  printf 'export KUBE_TESTENV_CA=%q\n' "$D/ca.crt"
  printf 'export KUBE_TESTENV_RECEIVER_ADDR=%q\n' "$RECEIVER_IP:$RECEIVER_PORT"
  printf 'export KUBE_TESTENV_PROXY_BASE=%q\n' "/api/v1/namespaces/flux-system/services/http:webhook-receiver:80/proxy"
} > "$D/env.sh"
echo "ready_ms=$(ms)" > "$D/ready"
UP_OK=1
log "cluster and fixtures ready in $(ms) ms (run directory $D)"
cat "$D/env.sh"
