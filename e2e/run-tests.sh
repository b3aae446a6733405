#!/usr/bin/env bash
# The project's test command (README, .ci/run): formatting, lints, unit tests and end-to-end
# tests that run the real server binary. Installs nothing globally except what it says below.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build artefacts live outside the clone so CI runs on the same machine stay warm.
rust_id=$(rustc -V | sha256sum | cut -c1-12)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/pbs-cloud/target-$rust_id}"
export CARGO_TERM_COLOR=never
# A CI build starts from a clean clone: incremental state only costs disk there.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The cache is keyed by compiler only, so artefacts of old dependency sets pile up in it. Past
# a size limit it is dropped whole and the run builds cold (measured cold: see README).
cache_limit_gb=${PBS_CLOUD_TARGET_LIMIT_GB:-30}
if [ -d "$CARGO_TARGET_DIR" ]; then
    cache_gb=$(du -s --block-size=1G "$CARGO_TARGET_DIR" | cut -f1)
    if [ "$cache_gb" -gt "$cache_limit_gb" ]; then
        echo "== build cache $CARGO_TARGET_DIR is ${cache_gb} GB (limit ${cache_limit_gb} GB): removing it"
        rm -rf "$CARGO_TARGET_DIR"
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== third-party REST client for the API tests (Debian's python3-proxmoxer)"
if ! /usr/bin/python3 -c 'import proxmoxer' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-proxmoxer python3-requests >/dev/null
fi

echo "== headless browser for the console test (Debian's chromium and chromium-driver)"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

echo "== Prometheus exporter for the monitoring test (pbs-exporter from PyPI, in a venv under"
echo "   ~/.cache/pbs-cloud keyed by its version)"
PBS_EXPORTER_VENV=$(bash e2e/pbs-exporter/install.sh)
export PBS_EXPORTER_VENV

echo "== build the binaries the end-to-end and operator checks run (one feature set for all)"
cargo build --workspace --bins
export PBS_CLOUD_SERVER_BIN="$CARGO_TARGET_DIR/debug/pbs-cloud-server"

echo "== S3 test server (Ceph RGW on 127.0.0.1; S3 tests fail without it)"
s3_env=$(bash e2e/s3/start-ceph-rgw.sh)
eval "$s3_env"
export PBS_TEST_S3_ENDPOINT PBS_TEST_S3_ACCESS_KEY PBS_TEST_S3_SECRET_KEY PBS_TEST_S3_BUCKET \
    PBS_TEST_S3_LOCK_BUCKET

echo "== Kubernetes API server for the operator tests (kube-apiserver v1.20 built from Debian's"
echo "   source package and cached under ~/.cache/pbs-cloud; ~13 min the first time)"
kube_env=$(bash e2e/kube/start-kube.sh | tail -1)
eval "$kube_env"
export PBS_CLOUD_KUBECONFIG="$KUBECONFIG"

echo "== cargo test"
test_status=0
cargo test --workspace --no-fail-fast -- --test-threads=2 || test_status=$?

echo "== build cache: remove executables of earlier builds (e2e/prune-build-cache.sh)"
bash e2e/prune-build-cache.sh || echo "prune-build-cache failed; the cache is left as it is"
[ "$test_status" = 0 ] || exit "$test_status"

echo "== fuzz smoke run: every parser target for 2 s (cargo-fuzz cached under ~/.cache/pbs-cloud)"
bash e2e/fuzz.sh --seconds 2

echo "== operator: Helm chart renders, lints and validates (helm-python-sdk)"
bash e2e/kube/test-chart.sh

echo "== operator: crds/ and examples/ against the API server"
bash e2e/kube/check-examples.sh
