#!/bin/sh
# run.sh [SECONDS]: build the libFuzzer targets in build-fuzz/ (clang, -Dfuzz=true) and fuzz
# each for SECONDS (default 60) over a temporary copy of its seed corpus, so nothing new is
# written into the repository. Fails if any target crashes; the crashing inputs are kept in
# build-fuzz/fuzz-artifacts/ and printed as C strings.
#
# Environment: FUZZ_TARGETS (space-separated subset), FUZZ_JOBS (targets run in parallel,
# default 1), FUZZ_BUILD_DIR (default <repo>/build-fuzz), FUZZ_ARGS (extra libFuzzer flags).
set -eu

secs=${1:-60}
case $secs in
'' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-fuzz_json fuzz_config fuzz_http_server fuzz_http_client fuzz_http2_client fuzz_wire fuzz_form fuzz_image fuzz_trace fuzz_batch fuzz_h2_server}
jobs=${FUZZ_JOBS:-1}

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Dstatic_fn=false -Db_lundef=false
fi
for t in $targets; do
    ninja -C "$build" "tests/fuzz/$t"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/dirigent-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"

dict_of() {
    case $1 in
    fuzz_json) echo "$here/dict/json.dict" ;;
    fuzz_wire) echo "$here/dict/wire.dict" ;;
    fuzz_config) echo "$here/dict/yaml.dict" ;;
    fuzz_form) echo "$here/dict/form.dict" ;;
    fuzz_image) echo "$here/dict/image.dict" ;;
    fuzz_trace) echo "$here/dict/trace.dict" ;;
    fuzz_batch) echo "$here/dict/json.dict" ;;
    fuzz_h2_server) echo "$here/dict/h2.dict" ;;
    *) echo "$here/dict/http.dict" ;;
    esac
}

# One target: fuzz a copy of its corpus, write "<target> <rc> <runs> <exec/s>" to $work/<t>.res.
run_one() {
    t=$1
    rm -f "$artifacts/$t-"*
    mkdir -p "$work/$t/corpus"
    cp "$here/corpus/$t/"* "$work/$t/corpus/" 2>/dev/null || true
    rc=0
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    (cd "$work/$t" &&
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            "$build/tests/fuzz/$t" corpus -dict="$(dict_of "$t")" -max_total_time="$secs" \
            -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
            -artifact_prefix="$artifacts/$t-" ${FUZZ_ARGS:-} >"$work/$t.log" 2>&1) || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/$t.log" | tail -n 1)
    echo "$t $rc ${runs:-?} ${speed:-?}" >"$work/$t.res"
}

# Print a crashing input as a C string literal.
c_string() {
    od -An -v -tx1 "$1" | tr -s ' \n' '  ' |
        awk '{ s = ""; for (i = 1; i <= NF; i++) s = s "\\x" $i; print "\"" s "\"" }'
}

# shellcheck disable=SC2086 # a space-separated list
set -- $targets
while [ $# -gt 0 ]; do
    n=0
    while [ $# -gt 0 ] && [ $n -lt "$jobs" ]; do
        echo "fuzzing $1 for ${secs}s"
        run_one "$1" &
        shift
        n=$((n + 1))
    done
    wait
done

failed=0
total=0
for t in $targets; do
    total=$((total + 1))
    read -r name rc runs speed <"$work/$t.res"
    if [ "$rc" -eq 0 ]; then
        echo "ok   $name: $runs runs, $speed exec/s"
        grep "^$name: " "$work/$t.log" | tail -n 1 | sed 's/^/    /' # the target's own summary
        continue
    fi
    failed=$((failed + 1))
    echo "FAIL $name (exit $rc) after $runs runs; log tail:"
    grep -E 'ERROR|SUMMARY|runtime error|^fuzz_|#[0-9]+ 0x.* in [a-z_]+ .*(lib|tests)/' "$work/$t.log" |
        head -n 20 | sed 's/^/    /'
    for f in "$artifacts/$name-"*; do
        [ -f "$f" ] || continue
        echo "    input $f:"
        echo "    $(c_string "$f")"
    done
done
echo "$((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
