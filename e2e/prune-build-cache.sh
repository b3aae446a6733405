#!/usr/bin/env bash
# Removes test and binary executables of earlier builds from the build cache: cargo writes a
# new file per crate hash and never deletes the old one, so each dependency or feature change
# left hundreds of MB per test binary behind. What stays: every executable the current
# workspace builds (cargo's own list) and every file still hard-linked from target/debug.
set -euo pipefail
cd "$(dirname "$0")/.."
deps="$CARGO_TARGET_DIR/debug/deps"
[ -d "$deps" ] || exit 0
current=$(mktemp)
trap 'rm -f "$current"' EXIT
cargo test --workspace --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    exe = msg.get("executable")
    if exe:
        print(os.path.basename(exe))
' | sort -u >"$current"
if [ ! -s "$current" ]; then
    echo "prune-build-cache: cargo listed no executables; nothing removed"
    exit 0
fi
removed=0
freed=0
while IFS= read -r -d '' file; do
    name=$(basename "$file")
    case "$name" in *.*) continue ;; esac
    grep -qxF "$name" "$current" && continue
    [ "$(stat -c %h "$file")" = 1 ] || continue
    freed=$((freed + $(stat -c %s "$file")))
    rm -f "$file"
    removed=$((removed + 1))
done < <(find "$deps" -maxdepth 1 -type f -perm -u+x -print0)
echo "prune-build-cache: removed $removed outdated executables ($((freed / 1048576)) MiB);" \
    "kept $(wc -l <"$current") current ones"
