#!/bin/bash
# Start etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1, or reuse the ones this
# script started before. Builds/caches the binaries with build-kube.sh first.
# usage: e2e/kube/start-kube.sh [RUN_DIR]   (default ~/.cache/pbs-cloud/kube-run)
# Prints `export KUBECONFIG=...` last. Stop with e2e/kube/stop-kube.sh [RUN_DIR].
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
if alive apiserver.pid && alive etcd.pid && ready; then
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
nohup "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 \
  --secure-port="$API_PORT" --cert-dir=./pki --insecure-port=0 --token-auth-file=./tokens.csv \
  --authorization-mode=RBAC --endpoint-reconciler-type=none \
  --service-account-issuer=https://kubernetes.default.svc --service-account-key-file=./pki/sa.pub \
  --service-account-signing-key-file=./pki/sa.key --service-cluster-ip-range=10.0.0.0/24 \
  --advertise-address=127.0.0.1 --allow-privileged=true --disable-admission-plugins=ServiceAccount \
  > apiserver.log 2>&1 &
echo $! > apiserver.pid
for _ in $(seq 1 120); do
  if ready; then ok=1; break; fi
  sleep 0.5
done
if [ -z "${ok:-}" ]; then
  echo "kube-apiserver not ready; see $RUN/apiserver.log" >&2; tail -20 apiserver.log >&2; exit 1
fi
nohup "$BIN/kube-controller-manager" --kubeconfig=./kubeconfig --secure-port=0 --port=0 \
  --controllers='*,-nodeipam,-nodelifecycle,-route,-service,-cloud-node-lifecycle' \
  --service-account-private-key-file=./pki/sa.key --use-service-account-credentials=false \
  > kcm.log 2>&1 &
echo $! > kcm.pid
echo "export KUBECONFIG=$RUN/kubeconfig"
