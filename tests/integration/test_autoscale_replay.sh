#!/usr/bin/env bash
# dirigent-autoscale-replay: the CP's decider from outside, over hand-computed series.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
R=${DG_BUILD_DIR:-build}/dirigent-autoscale-replay

plan 6

# expect "name" "input lines" "expected output" [flags...]
expect() {
  local name=$1 input=$2 want=$3; shift 3
  local got
  got=$(printf '%b' "$input" | "$R" "$@" 2>&1)
  TAP_N=$((TAP_N + 1))
  if [ "$got" = "$(printf '%b' "$want")" ]; then
    echo "ok $TAP_N - $name"
  else
    echo "not ok $TAP_N - $name"
    echo "# want:"; printf '%b\n' "$want" | sed 's/^/#   /'
    echo "# got:"; printf '%s\n' "$got" | sed 's/^/#   /'
    TAP_FAILED=$((TAP_FAILED + 1))
  fi
}

# cold-start sweep: stable window 3 ticks; the single request's sample leaves it after 3 zeros
# (6 s); 1 in flight on 1 ready is below the 2x panic threshold; upper bound 1
expect "cold-start-sweep profile returns to zero 6 s after the last request" \
  '0 1\n2 0\n4 0\n6 0\n8 0\n' '0 1 0\n2 1 0\n4 1 0\n6 0 0\n8 0 0' --cold-start-sweep

# from zero, 2 in flight on max(1, 0) ready is 2x: panic from the start (t=0), held for the
# 60 s stable window; a step to 10: panic avg (2+2+10)/3 -> 5, desired 5; then 4 with 5
# ready: panic avg 5.33 -> 6, desired 6; it does not come down while in panic
expect "a step into panic scales to the panic average and does not come down" \
  '0 2\n2 2\n4 2\n6 10\n8 4\n10 0\n' '0 2 1\n2 2 1\n4 2 1\n6 5 1\n8 6 1\n10 6 1'

# bounds: at most 3, at least 1
expect "upper and lower bounds" '0 10\n2 0\n' '0 3 1\n2 3 1' --max 3 --min 1

# unlimited concurrency: target 100 per sandbox -> 250 in flight asks for 3
expect "container concurrency 0 targets 100 per sandbox" '0 250\n' '0 3 1' --target 0

# Knative's 70% target: 7 in flight with concurrency 1 asks for ceil(7/0.7) = 10
expect "target percent" '0 7\n' '0 10 1' --target-percent 70

t_bad_input() {
  local out rc
  out=$(printf '0 1\nnot a number\n' | "$R" 2>&1); rc=$?
  echo "$out"
  [ $rc = 2 ] && grep -q "stdin:2: expected 't_seconds concurrency'" <<<"$out"
}
check "a bad line stops with the line number and what was expected" t_bad_input

tap_done
