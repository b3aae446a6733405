#!/bin/bash
# Chart test: a virtualenv under ~/.cache with helm-python-sdk (needs Python >= 3.11) and
# kubernetes-validate, then e2e/kube/test_chart.py.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${PBS_CLOUD_HELM_VENV:-$HOME/.cache/pbs-cloud/helm-venv}
PY=${PYTHON:-python3}
if ! "$VENV/bin/python" -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null; then
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    { echo "helm-python-sdk needs Python >= 3.11 (found $("$PY" -V))" >&2; exit 1; }
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q helm-python-sdk==0.2.2 kubernetes-validate pyyaml
fi
exec "$VENV/bin/python" "$HERE/test_chart.py"
