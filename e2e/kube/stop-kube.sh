#!/bin/bash
# Stop what start-kube.sh started (by the pids it recorded).
RUN=${1:-${PBS_CLOUD_KUBE_RUN:-$HOME/.cache/pbs-cloud/kube-run}}
for f in kcm apiserver etcd; do
  if [ -f "$RUN/$f.pid" ]; then kill "$(cat "$RUN/$f.pid")" 2>/dev/null || true; rm -f "$RUN/$f.pid"; fi
done
