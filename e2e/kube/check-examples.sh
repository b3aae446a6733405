#!/bin/bash
# The issue's acceptance check against the real API server: apply crds/ and examples/, run
# the operator binary, and wait until the example tenant has its Deployment, Service, Secrets
# and a filled status. Prints what `kubectl get` shows.
# usage: e2e/kube/check-examples.sh   (KUBECONFIG from start-kube.sh; binaries in CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
T=${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR to where pbs-cloud-operator and crdgen are built}/debug
: "${KUBECONFIG:?export KUBECONFIG from e2e/kube/start-kube.sh}"
work=$(mktemp -d)
trap 'kill $op_pid 2>/dev/null || true; rm -rf "$work"' EXIT
# A 1.20 server does not know x-kubernetes-validations (CEL, 1.25+): apply the CRDs without them.
minor=$(kubectl version -o json 2>/dev/null | jq -r '.serverVersion.minor' | tr -dc 0-9)
if [ "${minor:-99}" -lt 25 ]; then
  "$T/crdgen" --strip-cel "$work/crds" >/dev/null
  kubectl apply -f "$work/crds" >/dev/null
else
  kubectl apply -f crds/ >/dev/null
fi
kubectl wait --for=condition=Established crd --all --timeout=30s >/dev/null
kubectl apply -f examples/
"$T/pbs-cloud-operator" --namespace pbs-demo --metrics-addr 127.0.0.1:0 > "$work/operator.log" 2>&1 &
op_pid=$!
for _ in $(seq 1 120); do
  fp=$(kubectl -n pbs-demo get tenant acme -o jsonpath='{.status.certificateFingerprint}' 2>/dev/null || true)
  if [ -n "$fp" ] && kubectl -n pbs-demo get deploy/acme-pbs svc/acme-pbs secret/acme-pbs-config \
      secret/acme-pbs-credentials secret/acme-pbs-tls >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.5
done
kubectl -n pbs-demo get tenants,datastores,prunepolicies,retentionlocks,syncjobs -o wide
kubectl -n pbs-demo get deploy,svc,secret,pvc
kubectl -n pbs-demo get tenant acme -o jsonpath='{.status}' | jq .
if [ -z "${ok:-}" ]; then
  echo "FAIL: example tenant not reconciled; operator log:" >&2; tail -30 "$work/operator.log" >&2; exit 1
fi
kubectl -n pbs-demo get secret acme-pbs-config -o jsonpath='{.data.config\.toml}' | base64 -d > "$work/config.toml"
grep -q 'keep_daily = 7' "$work/config.toml" && grep -q 'mode = "compliance"' "$work/config.toml"
grep -q 'id = "acme-mirror"' "$work/config.toml"
echo "examples: 1 passed, 0 failed"
