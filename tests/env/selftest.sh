#!/usr/bin/env bash
# tests/env/selftest.sh - prove the test environment works: a real kube-apiserver + etcd from
# kube-up.sh, and moto_server / sam / cfn-lint from the venv. Run tests/env/setup.sh first.
#
# Everything runs inside a new private network namespace (`unshare -n`): the only addresses
# used are 127.0.0.1 and 192.0.2.10, and both exist only there.
# Prints one PASS/FAIL line per check and "selftest: N passed, N failed"; exits 1 on any
# failure (run directory kept for debugging), 0 otherwise (run directory removed).
# Environment: FLUXRELAY_CACHE (as setup.sh); KT_* as kube-up.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ "${1:-}" != --in-netns ]; then
  command -v unshare >/dev/null || { echo "selftest: error: unshare (util-linux) not found" >&2; exit 1; }
  # kube-up.sh must refuse the host's namespace (it stops at that check, before changing anything).
  probe=$(mktemp -d "${TMPDIR:-/tmp}/fluxrelay-refuse.XXXXXX")
  if out=$(KUBE_TESTENV_DIR=$probe "$HERE/kube-up.sh" 2>&1); then
    export SELFTEST_REFUSAL="FAIL kube-up.sh ran in the host network namespace"
    KUBE_TESTENV_DIR=$probe "$HERE/kube-down.sh" || true
  elif [[ $out == *"not inside a private network namespace"* ]]; then
    export SELFTEST_REFUSAL="PASS kube-up.sh refuses the host network namespace"
  else
    export SELFTEST_REFUSAL="FAIL kube-up.sh failed outside a namespace for another reason: ${out:0:300}"
  fi
  rm -rf "$probe"
  # Re-run this script as `unshare -n -- bash selftest.sh --in-netns` (needs root or user namespaces).
  exec unshare -n -- bash "$HERE/selftest.sh" --in-netns
fi

CACHE=${FLUXRELAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fluxrelay}
[ -f "$CACHE/env.sh" ] || { echo "selftest: error: $CACHE/env.sh missing; run tests/env/setup.sh first" >&2; exit 1; }
# shellcheck disable=SC1091
. "$CACHE/env.sh"

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
# check NAME CMD...: PASS when CMD succeeds, FAIL (with its output) otherwise.
check() {
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name: ${out:0:600}"; fi
}

T=$(mktemp -d "${TMPDIR:-/tmp}/fluxrelay-selftest.XXXXXX")
export KUBE_TESTENV_DIR=$T/kube
PIDS=()
cleanup() {
  local rc=$? p
  if [ "$rc" != 0 ] && [ "$FAILED" = 0 ]; then
    FAILED=1
    echo "FAIL selftest.sh aborted (exit status $rc) before its summary"
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  "$HERE/kube-down.sh" "$KUBE_TESTENV_DIR" || echo "FAIL kube-down.sh"
  if [ "$FAILED" = 0 ]; then rm -rf "$T"; else echo "selftest: kept $T for debugging"; fi
}
trap cleanup EXIT

ip link set lo up
case ${SELFTEST_REFUSAL:-} in
  PASS*) pass "${SELFTEST_REFUSAL#PASS }" ;;
  FAIL*) fail "${SELFTEST_REFUSAL#FAIL }" ;;
esac

# -------------------------------------------------------------------------------------------
# Kubernetes
# -------------------------------------------------------------------------------------------
t0=$(date +%s%N)
if out=$("$HERE/kube-up.sh"); then
  eval "$out"
  pass "kube-up.sh ($(( ($(date +%s%N) - t0) / 1000000 )) ms; $(cat "$KUBE_TESTENV_DIR/ready"))"
else
  fail "kube-up.sh exited non-zero"
  echo "selftest: $PASSED passed, $FAILED failed"
  exit 1
fi
D=$KUBE_TESTENV_DIR S=$KUBE_TESTENV_SERVER
missing=()

for f in ca.crt admin.crt admin.key dispatcher.crt dispatcher.key tokens.csv dispatcher.token nobody.token \
         apiserver.log etcd.log apiserver.pid etcd.pid ready env.sh admin.kubeconfig; do
  [ -s "$D/$f" ] || missing+=("$f")
done
if [ ${#missing[@]} = 0 ]; then pass "kube-up.sh wrote all its files"; else fail "kube-up.sh did not write: ${missing[*]}"; fi
check "dispatcher client cert has CN=fluxrelay-dispatcher-cert" \
  bash -c "openssl x509 -noout -subject -in '$D/dispatcher.crt' | grep -q 'CN *= *fluxrelay-dispatcher-cert'"

# curl with a given identity; prints "<status> <body>".
req() {  # req admin|cert|token:FILE|bearer:VALUE METHOD PATH [BODY]
  local who=$1 method=$2 path=$3 body=${4:-} auth=() data=() out
  case $who in
    admin) auth=(--cert "$D/admin.crt" --key "$D/admin.key") ;;
    cert) auth=(--cert "$D/dispatcher.crt" --key "$D/dispatcher.key") ;;
    token:*) auth=(-H "Authorization: Bearer $(cat "$D/${who#token:}")") ;;
    bearer:*) auth=(-H "Authorization: Bearer ${who#bearer:}") ;;
  esac
  [ "$method" = POST ] && data=(-H 'Content-Type: application/json' --data-binary "$body")
  out=$(curl -sS --max-time 10 --cacert "$D/ca.crt" "${auth[@]}" -X "$method" "${data[@]}" \
             -w '\n%{http_code}' "$S$path") || return 1
  echo "${out##*$'\n'} ${out%$'\n'*}"
}
expect() {  # expect NAME STATUS REGEX -- req-args...
  local name=$1 want=$2 re=$3; shift 4
  local got
  got=$(req "$@" 2>&1) || true
  if [[ ${got%% *} == "$want" && $got =~ $re ]]; then pass "$name"; else fail "$name: want $want /$re/, got: ${got:0:400}"; fi
}

expect "/readyz is ok" 200 '^200 ok$' -- admin GET /readyz
expect "CRD list has gitrepositories" 200 'gitrepositories\.source\.toolkit\.fluxcd\.io' -- \
  admin GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions
expect "CRD list has receivers" 200 'receivers\.notification\.toolkit\.fluxcd\.io' -- \
  admin GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions
expect "GitRepository list is served" 200 '"kind": *"GitRepositoryList"' -- \
  admin GET /apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories
expect "Receiver list is served" 200 '"kind": *"ReceiverList"' -- \
  admin GET /apis/notification.toolkit.fluxcd.io/v1/namespaces/flux-system/receivers
expect "no Roles in flux-system (tests bring their own RBAC)" 200 '"items": *\[\]' -- \
  admin GET /apis/rbac.authorization.k8s.io/v1/namespaces/flux-system/roles
expect "no RoleBindings in flux-system" 200 '"items": *\[\]' -- \
  admin GET /apis/rbac.authorization.k8s.io/v1/namespaces/flux-system/rolebindings

# A tiny receiver on 192.0.2.10:9292 that answers 200 to POST and echoes what it got.
cat > "$T/receiver.py" <<'EOF'
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = f"received POST {self.path} {len(body)} bytes".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, fmt, *args):
        sys.stderr.write("receiver: " + fmt % args + "\n")
HTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
EOF
RECV_HOST=${KUBE_TESTENV_RECEIVER_ADDR%:*} RECV_PORT=${KUBE_TESTENV_RECEIVER_ADDR##*:}
python3 "$T/receiver.py" "$RECV_HOST" "$RECV_PORT" 2> "$T/receiver.log" &
PIDS+=($!)
for _ in $(seq 100); do
  curl -s -o /dev/null -X POST "http://$KUBE_TESTENV_RECEIVER_ADDR/" && break
  sleep 0.1
done
check "receiver answers on $KUBE_TESTENV_RECEIVER_ADDR" curl -sf -X POST -d x "http://$KUBE_TESTENV_RECEIVER_ADDR/probe"

P=$KUBE_TESTENV_PROXY_BASE
BODY='{"object_kind":"push","ref":"refs/heads/main"}'
expect "service-proxy POST reaches the receiver (admin cert)" 200 "^200 received POST /hook/selftest ${#BODY} bytes\$" -- \
  admin POST "$P/hook/selftest" "$BODY"
# The identities kube-up.sh provides: authenticated, but no RBAC until a test applies it.
expect "dispatcher token authenticates (403, no RBAC yet)" 403 'User \\"fluxrelay-dispatcher\\" cannot create resource \\"services/proxy\\"' -- \
  token:dispatcher.token POST "$P/hook/selftest" "$BODY"
expect "dispatcher client cert authenticates (403, no RBAC yet)" 403 'User \\"fluxrelay-dispatcher-cert\\" cannot create' -- \
  cert POST "$P/hook/selftest" "$BODY"
expect "nobody token authenticates (403)" 403 'User \\"nobody\\" cannot create' -- \
  token:nobody.token POST "$P/hook/selftest" "$BODY"
expect "unknown token is 401 Unauthorized" 401 '"reason": *"Unauthorized"' -- \
  bearer:not-a-valid-token POST "$P/hook/selftest" "$BODY"
check "receiver saw the proxied POST" grep -q '"POST /hook/selftest HTTP/1.1" 200' "$T/receiver.log"

# kube-down.sh: apiserver first, then etcd; both gone and their pid files removed.
APISERVER_PID=$(cat "$D/apiserver.pid") ETCD_PID=$(cat "$D/etcd.pid")
down_stops_both() {
  local t0 rc=0
  t0=$(date +%s%N)
  "$HERE/kube-down.sh" "$D" || return 1
  echo "kube-down took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  for p in "$APISERVER_PID" "$ETCD_PID"; do
    if kill -0 "$p" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$p/stat")" != Z ]; then echo "pid $p still running"; rc=1; fi
  done
  if [[ -e $D/apiserver.pid || -e $D/etcd.pid || -e $D/ready ]]; then echo "pid files or ready marker left"; rc=1; fi
  return $rc
}
check "kube-down.sh stops apiserver and etcd" down_stops_both
check "kube-down.sh is safe to run twice" "$HERE/kube-down.sh" "$D"

# -------------------------------------------------------------------------------------------
# AWS: moto_server, spoken to like the AWS SDK does (JSON protocol, SigV4-shaped auth header)
# -------------------------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$FLUXRELAY_MOTO_SERVER" -H 127.0.0.1 -p "$PORT" > "$T/moto.log" 2>&1 &
PIDS+=($!)
t0=$(date +%s%N)
for _ in $(seq 300); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/moto-api/" && break
  sleep 0.1
done
check "moto_server answers /moto-api/ ($(( ($(date +%s%N) - t0) / 1000000 )) ms to start)" curl -sf -o /dev/null "http://127.0.0.1:$PORT/moto-api/"
aws_json() {  # aws_json SERVICE TARGET CONTENT-TYPE-VERSION BODY: one AWS JSON-protocol call
  curl -sS --fail-with-body --max-time 10 \
    -H "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/$1/aws4_request, SignedHeaders=host, Signature=0" \
    -H "X-Amz-Target: $2" -H "Content-Type: application/x-amz-json-$3" -d "$4" "http://127.0.0.1:$PORT/"
}
sqs_create() { aws_json sqs AmazonSQS.CreateQueue 1.0 '{"QueueName":"selftest.fifo","Attributes":{"FifoQueue":"true"}}' | grep '/selftest\.fifo"'; }
sqs_list() { aws_json sqs AmazonSQS.ListQueues 1.0 '{}' | grep 'selftest\.fifo'; }
secret_roundtrip() {
  aws_json secretsmanager secretsmanager.CreateSecret 1.1 '{"Name":"fluxrelay/clusters/selftest","SecretString":"{}"}' | grep '"ARN"' &&
  aws_json secretsmanager secretsmanager.GetSecretValue 1.1 '{"SecretId":"fluxrelay/clusters/selftest"}' | grep '"SecretString": *"{}"'
}
check "SQS CreateQueue (FIFO)" sqs_create
check "SQS ListQueues" sqs_list
check "Secrets Manager CreateSecret + GetSecretValue" secret_roundtrip

# -------------------------------------------------------------------------------------------
# SAM template linting, offline (this namespace has no route anywhere)
# -------------------------------------------------------------------------------------------
cat > "$T/template.yaml" <<'EOF'
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Resources:
  Queue:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      CodeUri: .
      Events:
        Q: {Type: SQS, Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 10}}
EOF
check "cfn-lint lints a SAM template offline" "$FLUXRELAY_CFN_LINT" "$T/template.yaml"
check "sam validate --lint works offline" env SAM_CLI_TELEMETRY=0 "$FLUXRELAY_SAM" validate --lint -t "$T/template.yaml"

echo "selftest: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
