#!/usr/bin/env bash
# dirigent-sim: replays worked out by hand, the trace formats read honestly, determinism,
# the comparison table, and errors that name the flag.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
SIM=$B/dirigent-sim
EX=$S/tests/data/invitro-example # InVitro's example traces (SOURCE.md there)

plan 8

jq_total() { /usr/bin/python3 -c 'import json,sys; t=json.load(sys.stdin)["total"]; print(" ".join(str(t[k]) for k in sys.argv[1:]))' "$@"; }

# f: arrivals at 0 s and 0.5 s and 10 s, 1 s each; one worker, creation 100 ms, one request
# per sandbox. By hand: the first is a cold start (scale from zero: ready at 0.1 s, runs
# until 1.1 s: 100 ms waited); the second finds the sandbox busy and waits for it (starts at
# 1.1 s: 600 ms; not cold: a sandbox was ready); the third finds it idle (0 ms). p50 100,
# p99 600; slowdown (1.1 x 1.6 x 1.0)^(1/3) = 1.20736; the sandbox lives from 0 to the end
# at 11 s: 11 sandbox-seconds, 11 x 128 MiB-seconds.
t_hand() {
  printf 'app,func,end_timestamp,duration\na,f,1.0,1.0\na,f,1.5,1.0\na,f,11.0,1.0\n' >"$TAP_TMP/hand.csv"
  local got
  got=$("$SIM" "$TAP_TMP/hand.csv" --workers 1 --createLatency 100ms --memoryMiB 128 --json 2>/dev/null |
    jq_total invocations completed failed coldStarts schedulingLatencyP50Ms schedulingLatencyP99Ms sandboxSeconds memoryMiBSeconds sandboxesCreated slowdownGeomean)
  echo "$got"
  [ "${got% *}" = "3 3 0 1 100.0 600.0 11.0 1408.0 1" ] || return 1
  /usr/bin/python3 -c "import sys; sys.exit(0 if abs(float('${got##* }') - 1.76 ** (1 / 3)) < 1e-6 else 1)"
}
check "a hand-worked trace: cold starts, scheduling latency, slowdown, sandbox-seconds" t_hand

# the same trace with a 6 s stable window: samples 1 (0 s), 1 (2 s: the second request still
# runs), then 0 at 4, 6, 8 s: the window is all zeros at 8 s and the sandbox goes; the request
# at 10 s is a second cold start (ready 10.1 s, done 11.1 s): 8 + 1.1 sandbox-seconds. With a
# 30 s scale-to-zero grace (Knative's) the sandbox stays: one cold start, 11 s.
t_hand_windows() {
  local got
  got=$("$SIM" "$TAP_TMP/hand.csv" --workers 1 --createLatency 100ms --stableWindow 6s --json 2>/dev/null |
    jq_total coldStarts sandboxesCreated sandboxSeconds schedulingLatencyP99Ms)
  [ "$got" = "2 2 9.1 600.0" ] || { echo "6 s window: $got"; return 1; }
  got=$("$SIM" "$TAP_TMP/hand.csv" --workers 1 --createLatency 100ms --stableWindow 6s \
    --scaleToZeroGrace 30s --json 2>/dev/null | jq_total coldStarts sandboxesCreated sandboxSeconds)
  [ "$got" = "1 1 11.0" ] || { echo "with grace: $got"; return 1; }
}
check "the hand-worked trace with a 6 s window, then with a 30 s scale-to-zero grace" t_hand_windows

# capacity: one worker with 100m; f (5 s) from 0 s holds it; g at 1 s fits nowhere and is
# answered at once (no-capacity), as the DP does. f's last non-zero sample is at the 4 s tick,
# so its 60 s window is all zeros at 64 s: its sandbox goes then. g's window emptied at 60 s
# (no retry left); g's request at 70 s is a cold start again: ready at 70.1 s.
t_capacity() {
  printf 'app,func,end_timestamp,duration\na,f,5.0,5.0\na,g,2.0,1.0\na,g,71.0,1.0\n' >"$TAP_TMP/cap.csv"
  "$SIM" "$TAP_TMP/cap.csv" --workers 1 --workerCpuMilli 100 --cpuMilli 100 --createLatency 100ms \
    --csv "$TAP_TMP/cap.out" >"$TAP_TMP/cap.table" 2>/dev/null || return 1
  cat "$TAP_TMP/cap.out"
  diff <(printf '%s\n' 'function,arrival_ms,start_ms,end_ms,duration_ms,scheduling_ms,cold,status' \
    'g,1000.000,,1000.000,1000.000,,cold,no-capacity' \
    'f,0.000,100.000,5100.000,5000.000,100.000,cold,ok' \
    'g,70000.000,70100.000,71100.000,1000.000,100.000,cold,ok') "$TAP_TMP/cap.out" || return 1
  # the table: f's sandbox 0..64 s, g's 70..71.1 s
  grep -qE '^f +1 +1 100.00% +100.00 +100.00 +1.020 +64.0 ' "$TAP_TMP/cap.table" &&
    grep -qE '^g +2 +2 100.00% +100.00 +100.00 +1.100 +1.1 .* 1$' "$TAP_TMP/cap.table"
}
check "a hand-worked trace with no capacity: 503 at once, the sandbox after the window empties" t_capacity

t_2019_counts() {
  # the first 20 minutes hold exactly the invocations counted in columns 1..20
  local want got
  want=$(awk -F, 'NR>1 {for (i = 5; i <= 24; i++) s += $i} END {print s}' "$EX/invocations.csv")
  got=$("$SIM" "$EX" --minutes 20 --json 2>/dev/null | jq_total invocations)
  echo "want $want got $got"
  [ "$got" = "$want" ] || return 1
  # and warm-up minutes are simulated but not counted
  want=$(awk -F, 'NR>1 {for (i = 10; i <= 24; i++) s += $i} END {print s}' "$EX/invocations.csv")
  got=$("$SIM" "$EX" --minutes 20 --warmupMinutes 5 --json 2>/dev/null | jq_total invocations)
  [ "$got" = "$want" ]
}
check "the Azure 2019 trace: the invocations of the first minutes, warm-up excluded" t_2019_counts

t_2021() {
  local rows got
  rows=$(awk 'NR > 1' "$EX/Azure2021/Azure2021_200.csv" | grep -c .)
  got=$("$SIM" "$EX/Azure2021/Azure2021_200.csv" --json 2>/dev/null | jq_total invocations completed)
  [ "$got" = "$rows $rows" ] || { echo "rows $rows, got $got"; return 1; }
}
check "the Azure 2021 trace: one invocation per row, all served" t_2021

t_deterministic() {
  "$SIM" "$EX" --minutes 30 --iat exponential --seed 7 --placementPolicy kubernetes >"$TAP_TMP/a" 2>/dev/null &&
    "$SIM" "$EX" --minutes 30 --iat exponential --seed 7 --placementPolicy kubernetes >"$TAP_TMP/b" 2>/dev/null &&
    "$SIM" "$EX" --minutes 30 --iat exponential --seed 8 --placementPolicy kubernetes >"$TAP_TMP/c" 2>/dev/null || return 1
  cmp "$TAP_TMP/a" "$TAP_TMP/b" || return 1
  ! cmp -s "$TAP_TMP/a" "$TAP_TMP/c"
}
check "the same seed gives the same output byte for byte; another seed another" t_deterministic

t_compare() {
  "$SIM" "$EX" --minutes 20 --compare 'placementPolicy=random|round-robin|kubernetes|chbl,autoscaler=dirigent|knative' \
    >"$TAP_TMP/cmp" 2>/dev/null || return 1
  cat "$TAP_TMP/cmp"
  local p a
  for p in random round-robin kubernetes chbl; do
    for a in dirigent knative; do
      grep -qE "^$p $a +[0-9]+ " "$TAP_TMP/cmp" || { echo "no row $p $a"; return 1; }
    done
  done
  [ "$(grep -cE '^(random|round-robin|kubernetes|chbl) ' "$TAP_TMP/cmp")" = 8 ] || return 1
  # each row's values are those of a run with that setting alone (its JSON totals, rounded as
  # the table prints them), and every row has all the trace's invocations
  local want
  want=$(awk -F, 'NR>1 {for (i = 5; i <= 24; i++) s += $i} END {print s}' "$EX/invocations.csv")
  for p in random round-robin kubernetes chbl; do
    for a in dirigent knative; do
      "$SIM" "$EX" --minutes 20 --placementPolicy "$p" --autoscaler "$a" --json >"$TAP_TMP/one.json" 2>/dev/null || return 1
      /usr/bin/python3 - "$TAP_TMP/one.json" "$(grep -E "^$p $a " "$TAP_TMP/cmp")" "$want" <<'EOF' || return 1
import json, sys
t = json.load(open(sys.argv[1]))["total"]
row = sys.argv[2].split()[2:]
expect = [str(t["invocations"]), str(t["coldStarts"]), "%.2f%%" % (100 * t["coldStartRatio"]),
          "%.2f" % t["schedulingLatencyP50Ms"], "%.2f" % t["schedulingLatencyP99Ms"],
          "%.3f" % t["slowdownGeomean"], "%.1f" % t["sandboxSeconds"],
          "%.1f" % (t["memoryMiBSeconds"] / 1024), str(t["failed"]), str(t["imagePulls"])]
ok = row == expect and t["invocations"] == int(sys.argv[3]) == t["completed"] + t["failed"]
if not ok:
    print("row:  ", row, "\nalone:", expect, "\ntrace invocations:", sys.argv[3])
sys.exit(0 if ok else 1)
EOF
    done
  done
}
check "compare: one row per combination of placement policy and autoscaler, each with the values of that run alone" t_compare

t_errors() {
  local out
  out=$("$SIM" --workers 3 2>&1); [ $? = 2 ] && grep -q "trace: required" <<<"$out" || { echo "$out"; return 1; }
  out=$("$SIM" "$EX" --createLatency soon 2>&1); [ $? = 2 ] && grep -q "createLatency: expected DURATION" <<<"$out" || { echo "$out"; return 1; }
  out=$("$SIM" "$EX" --placementPolicy best 2>&1); [ $? = 2 ] && grep -q "placementPolicy" <<<"$out" || { echo "$out"; return 1; }
  out=$("$SIM" /nonexistent 2>&1); [ $? = 2 ] && grep -q "trace '/nonexistent'" <<<"$out" || { echo "$out"; return 1; }
  out=$("$SIM" "$EX" --compare 'placementPolicy' 2>&1); [ $? = 2 ] && grep -q "compare: expected KEY=V1|V2" <<<"$out"
}
check "bad input: exit 2 and a message naming the flag" t_errors

tap_done
