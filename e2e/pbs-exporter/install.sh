#!/usr/bin/env bash
# Installs the Prometheus exporter `pbs-exporter` (PyPI) that e2e/tests/pbs_exporter.rs runs
# against the server: a virtualenv of Debian's /usr/bin/python3 under ~/.cache/pbs-cloud, keyed
# by the exporter's version. Idempotent: an existing, working venv is kept. Prints the venv path.
set -euo pipefail

version="${PBS_EXPORTER_VERSION:-0.2.1}"
venv="${PBS_EXPORTER_VENV:-$HOME/.cache/pbs-cloud/pbs-exporter-$version}"

if "$venv/bin/python" -c 'import pbs_exporter' 2>/dev/null; then
    echo "$venv"
    exit 0
fi

if ! /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
/usr/bin/python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "pbs-exporter==$version" >&2
"$venv/bin/python" -c 'import pbs_exporter' >&2
echo "$venv"
