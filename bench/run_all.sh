#!/usr/bin/env bash
# run_all.sh: run every benchmark bench/*.sh (except this file) in name order, passing the
# arguments through (e.g. --quick), then the extra variants listed in EXTRA below (a script with
# more arguments), and end with one line "benchmarks: N passed, N failed".
# `make bench BENCH_ARGS=--quick` calls this. Exit status 1 if any benchmark failed.
set -uo pipefail

DIR=$(cd "$(dirname "$0")" && pwd)
# script and its extra arguments, run after the plain pass (each skips itself where it cannot run)
EXTRA=(
    "coldstart_sweep.sh --runtime oci"
    "overload.sh --runtime oci"
)
passed=0 failed=0 failed_names=""
run() {
    local name=$1
    shift
    echo "=== $name $*"
    if bash "$DIR/$name" "$@"; then
        passed=$((passed + 1))
    else
        echo "=== $name FAILED (exit $?)"
        failed=$((failed + 1)) failed_names="$failed_names $name"
    fi
    echo
}
for b in "$DIR"/*.sh; do
    name=$(basename "$b")
    [ "$name" = run_all.sh ] || [ "$name" = lib.sh ] && continue
    run "$name" "$@"
done
for e in "${EXTRA[@]}"; do
    read -r -a words <<<"$e"
    run "${words[@]}" "$@"
done
echo "benchmarks: $passed passed, $failed failed${failed_names:+ ($failed_names )}"
[ "$failed" -eq 0 ]
