#!/bin/bash
# Start etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1, or reuse the ones this
# script started before. Builds/caches the binaries with build-kube.sh first.
# usage: e2e/kube/start-kube.sh [RUN_DIR]   (default ~/.cache/pbs-cloud/kube-run)
# Prints `export KUBECONFIG=...` last. Stop with e2e/kube/stop-kube.sh [RUN_DIR].
# The API server writes an audit log (RUN_DIR/audit.log, JSON lines at metadata level: one line
# per request; watches are logged when they start) that the operator's load tests read. An API
# server started with other flags (e.g. by an older version of this script, without the audit
# log) is restarted alone: etcd and every object in it stay.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUN=${1:-${PBS_CLOUD_KUBE_RUN:-$HOME/.cache/pbs-cloud/kube-run}}
ETCD_PORT=${ETCD_PORT:-23790} API_PORT=${API_PORT:-16443}
mkdir -p "$RUN/pki" && RUN=$(cd "$RUN" && pwd) && cd "$RUN"
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
ready() {
  KUBECONFIG=$RUN/kubeconfig kubectl get --raw /readyz >/dev/null 2>&1 &&
    KUBECONFIG=$RUN/kubeconfig kubectl get namespace default >/dev/null 2>&1
}
cat > audit-policy.yaml.new <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version", "/metrics", "/openapi/*"]
  - level: None
    namespaces: ["kube-system"]
  - level: Metadata
    verbs: ["watch"]
    omitStages: ["RequestReceived", "ResponseComplete", "Panic"]
  - level: Metadata
    omitStages: ["RequestReceived", "ResponseStarted"]
POLICY
if cmp -s audit-policy.yaml.new audit-policy.yaml; then rm audit-policy.yaml.new
else mv audit-policy.yaml.new audit-policy.yaml; fi
APISERVER_ARGS=(--etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1
  --secure-port="$API_PORT" --cert-dir=./pki --insecure-port=0 --token-auth-file=./tokens.csv
  --authorization-mode=RBAC --endpoint-reconciler-type=none
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=./pki/sa.pub
  --service-account-signing-key-file=./pki/sa.key --service-cluster-ip-range=10.0.0.0/24
  --advertise-address=127.0.0.1 --allow-privileged=true --disable-admission-plugins=ServiceAccount
  --audit-policy-file=./audit-policy.yaml --audit-log-path=./audit.log --audit-log-format=json
  --audit-log-maxsize=200 --audit-log-maxbackup=2)
# What the running API server was started with: its flags and the policy file's digest.
args_text=$(printf '%s\n' "${APISERVER_ARGS[@]}" "$(sha256sum < audit-policy.yaml)")
start_apiserver() {
  printf '%s\n' "$args_text" > apiserver.args
  nohup "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}" > apiserver.log 2>&1 &
  echo $! > apiserver.pid
  for _ in $(seq 1 120); do
    if ready; then return 0; fi
    sleep 0.5
  done
  echo "kube-apiserver not ready; see $RUN/apiserver.log" >&2; tail -20 apiserver.log >&2; exit 1
}
# One controller manager, without leader election (it would exit when the API server is away).
start_kcm() {
  nohup "$BIN/kube-controller-manager" --kubeconfig=./kubeconfig --secure-port=0 --port=0 \
    --leader-elect=false \
    --controllers='*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle' \
    --service-account-private-key-file=./pki/sa.key --use-service-account-credentials=false \
    > kcm.log 2>&1 &
  echo $! > kcm.pid
}
stop() {
  if alive "$1"; then
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}
if alive apiserver.pid && alive etcd.pid && ready; then
  if [ "$(cat apiserver.args 2>/dev/null)" != "$args_text" ]; then
    BIN=$("$HERE/build-kube.sh" | tail -1)
    stop kcm.pid
    stop apiserver.pid
    start_apiserver
  fi
  if ! alive kcm.pid; then
    BIN=${BIN:-$("$HERE/build-kube.sh" | tail -1)}
    start_kcm
  fi
  echo "export KUBECONFIG=$RUN/kubeconfig"; exit 0
fi
BIN=$("$HERE/build-kube.sh" | tail -1)
command -v kubectl >/dev/null || { echo "kubectl is missing: apt-get install kubernetes-client" >&2; exit 1; }
for f in kcm.pid apiserver.pid etcd.pid; do
  if alive "$f"; then kill "$(cat "$f")" 2>/dev/null || true; fi
  rm -f "$f"
done
sleep 0.5
rm -rf etcd-data
if [ ! -f pki/sa.key ]; then
  openssl genrsa -out pki/sa.key 2048 2>/dev/null
  openssl rsa -in pki/sa.key -pubout -out pki/sa.pub 2>/dev/null
fi
token=${KUBE_TOKEN:-pbs-cloud-test-token}
echo "$token,admin,admin-uid,system:masters" > tokens.csv
cat > kubeconfig <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$API_PORT", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: $token}
contexts:
- name: test
  context: {cluster: test, user: admin, namespace: default}
current-context: test
KC
nohup etcd --data-dir ./etcd-data --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 10))" \
  --unsafe-no-fsync > etcd.log 2>&1 &
echo $! > etcd.pid
start_apiserver
start_kcm
echo "export KUBECONFIG=$RUN/kubeconfig"
