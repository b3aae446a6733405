#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (the targets in server/fuzz/fuzz_targets/) with
# cargo-fuzz (libFuzzer) on the stable toolchain. Sanitizers need a nightly compiler and are
# off (`--sanitizer none`): the code under test is safe Rust, and what fuzzing finds there —
# panics, arithmetic overflows (overflow checks are on), allocations past the RSS limit,
# inputs that hang — is still caught.
#
#   e2e/fuzz.sh [--runs N] [--seconds S] [TARGET...]
#
# Default: 10,000,000 executions of each target (or of the named ones), one target at a time on
# one worker. `--seconds S` alone fuzzes each target for S seconds; with `--runs N` too, a
# target stops at N executions or after S seconds, whichever comes first. Prints one line per
# target: executions, seconds, executions per second, crashes; ends with status 1 on a crash,
# whose input libFuzzer leaves in server/fuzz/artifacts/<target>/ (replay it with
# `e2e/fuzz.sh --replay FILE TARGET`). Corpora persist under ~/.cache/pbs-cloud/fuzz-corpus/
# and start from server/fuzz/seeds/<target>/.
#
# cargo-fuzz is installed on first use into ~/.cache/pbs-cloud/cargo-fuzz-<version>, and the
# instrumented build lives in ~/.cache/pbs-cloud/fuzz-target-<rustc id> (FUZZ_TARGET_DIR
# overrides it).
set -euo pipefail
caller_dir=$(pwd)
cd "$(dirname "$0")/.."
root=$(pwd)

CARGO_FUZZ_VERSION=0.13.2
cache="$HOME/.cache/pbs-cloud"
runs=10000000
runs_given=""
seconds=""
replay=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; runs_given=1; shift 2 ;;
        --seconds) seconds="$2"; shift 2 ;;
        --replay) replay=$(cd "$caller_dir" && realpath -- "$2"); shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

tool_root="$cache/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [ ! -x "$tool_root/bin/cargo-fuzz" ]; then
    echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION into $tool_root"
    cargo install --locked --quiet --version "$CARGO_FUZZ_VERSION" --root "$tool_root" cargo-fuzz
fi
export PATH="$tool_root/bin:$PATH"
rust_id=$(rustc -V | sha256sum | cut -c1-12)
target_dir="${FUZZ_TARGET_DIR:-$cache/fuzz-target-$rust_id}"

fuzz_dir="$root/server/fuzz"
if [ ${#targets[@]} -eq 0 ]; then
    for file in "$fuzz_dir"/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
for target in "${targets[@]}"; do
    if ! grep -q "^name = \"$target\"$" "$fuzz_dir/Cargo.toml"; then
        echo "fuzz target '$target' has no [[bin]] entry in server/fuzz/Cargo.toml" \
            "(add one, or create targets with 'cargo fuzz add')" >&2
        exit 2
    fi
done

cd "$root/server"
build=(-s none --target-dir "$target_dir")
echo "== building ${#targets[@]} fuzz targets (release, instrumented, in $target_dir)"
for target in "${targets[@]}"; do
    cargo fuzz build "${build[@]}" "$target"
done
# Cargo keeps the executable of every earlier build in deps/ (about 130 MB per target and code
# change, so the cache grew by 2 GB per change); the current ones are hard-linked from the
# release dir, so a file with a single link is an earlier build's and can go.
removed=0
for deps in "$target_dir"/*/release/deps; do
    [ -d "$deps" ] || continue
    while IFS= read -r -d '' old; do
        rm -f "$old" && removed=$((removed + 1))
    done < <(find "$deps" -maxdepth 1 -type f -perm -u+x ! -name '*.*' -links 1 -print0)
done
[ "$removed" = 0 ] || echo "== removed $removed fuzz executables of earlier builds"

if [ -n "$replay" ]; then
    cargo fuzz run "${build[@]}" "${targets[0]}" "$replay"
    exit $?
fi

limit=(-runs="$runs")
if [ -n "$seconds" ]; then
    limit=(-max_total_time="$seconds")
    [ -n "$runs_given" ] && limit+=(-runs="$runs")
fi
status=0
printf '%-22s %14s %9s %12s %8s\n' target executions seconds exec/s crashes
for target in "${targets[@]}"; do
    corpus="$cache/fuzz-corpus/$target"
    seeds="$fuzz_dir/seeds/$target"
    mkdir -p "$corpus" "$seeds"
    log=$(mktemp)
    start=$(date +%s.%N)
    if cargo fuzz run "${build[@]}" "$target" "$corpus" "$seeds" -- \
        "${limit[@]}" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        crashes=0
    else
        crashes=1
        status=1
    fi
    end=$(date +%s.%N)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    execs=${execs:-0}
    elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    rate=$(awk -v n="$execs" -v s="$elapsed" 'BEGIN { printf "%.0f", (s > 0 ? n / s : n) }')
    printf '%-22s %14s %9s %12s %8s\n' "$target" "$execs" "$elapsed" "$rate" "$crashes"
    if [ "$crashes" != 0 ]; then
        echo "---- $target crashed; libFuzzer's output:" >&2
        tail -40 "$log" >&2
    fi
    rm -f "$log"
done
exit $status
