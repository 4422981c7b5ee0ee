#!/usr/bin/env bash
# run_all.sh: run every benchmark bench/*.sh (except this file) in name order, passing the
# arguments through (e.g. --quick), and end with one line "benchmarks: N passed, N failed".
# `make bench BENCH_ARGS=--quick` calls this. Exit status 1 if any benchmark failed.
set -uo pipefail

DIR=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0 failed_names=""
for b in "$DIR"/*.sh; do
    name=$(basename "$b")
    [ "$name" = run_all.sh ] && continue
    echo "=== $name $*"
    if bash "$b" "$@"; then
        passed=$((passed + 1))
    else
        echo "=== $name FAILED (exit $?)"
        failed=$((failed + 1)) failed_names="$failed_names $name"
    fi
    echo
done
echo "benchmarks: $passed passed, $failed failed${failed_names:+ ($failed_names )}"
[ "$failed" -eq 0 ]
