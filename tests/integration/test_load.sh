#!/usr/bin/env bash
# dirigent load (issue 7): the open-loop generator's own correctness. Its arrivals against a
# counting backend (dirigent-fn counts what it answers), the trace plans of both Azure formats
# (the InVitro samples) with their inter-arrival distributions, malformed traces named by line,
# the summary statistics of a hand-made CSV, and a trace replay through a real cluster whose
# data plane reports cold and warm starts.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
SRC=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent
TAG="DG_LOAD_TEST=$$"
DATA=$SRC/tests/data/invitro-example

plan 10
trap 'tap_cleanup; cleanup_sandboxes' EXIT

bg_start "$TAP_TMP/fn.log" "$B/dirigent-fn" --port 0 --host 127.0.0.1
wait_for_log "$TAP_TMP/fn.log" 'listening on' || { echo "Bail out! dirigent-fn did not start"; exit 1; }
FNA=127.0.0.1:$(port_of "$TAP_TMP/fn.log" 'listening on')
answered() { curl -s "http://$FNA/metrics" | awk '/^dg_fn_invocations_total/ {print $2}'; }

py() { /usr/bin/python3 - "$@"; }

t_rps() {
  local before after
  before=$(answered)
  "$D" --json --dp "$FNA" load rps --rate 400 --duration 3 anyfn --csv "$TAP_TMP/rps.csv" >"$TAP_TMP/rps.json" || return 1
  after=$(answered)
  cat "$TAP_TMP/rps.json"
  # the backend answered exactly what was planned (rate x duration), no more, no less
  [ $((after - before)) = 1200 ] || { echo "backend counted $((after - before))"; return 1; }
  py "$TAP_TMP/rps.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 1200, len(rows)
assert all(r["status"] == "200" and r["function"] == "anyfn" for r in rows)
EOF
}
check "load rps: the counting backend saw exactly rate x duration, every one answered" t_rps

# An upstream that holds every request until the test lets them go (tests/lib/gate_server.py)
GATE=$TAP_TMP/gate
mkdir -p "$GATE"
bg_start "$TAP_TMP/gate.log" /usr/bin/python3 "$SRC/tests/lib/gate_server.py" "$GATE"
arrived() { [ "$(cat "$GATE/arrived" 2>/dev/null | wc -l)" = "$1" ]; }

t_open_loop() {
  # open loop: the sends follow the schedule, not the answers. With no answer given, all 40
  # requests of the schedule arrive (a closed loop would wait for the first answer)
  poll_until 200 test -s "$GATE/port" || return 1
  "$D" --json --dp "127.0.0.1:$(cat "$GATE/port")" load rps --rate 20 --duration 2 anyfn \
    --csv "$TAP_TMP/open.csv" >"$TAP_TMP/open.json" &
  local load=$!
  poll_until 1200 arrived 40 || { touch "$GATE/open.all"; return 1; }
  [ ! -s "$GATE/done" ] || { echo "answered before all were sent"; touch "$GATE/open.all"; return 1; }
  touch "$GATE/open.all"
  wait_bounded $load || return 1
  arrived 40 && [ "$(grep -c . "$GATE/done")" = 40 ] &&
    [ "$(json_field "$(cat "$TAP_TMP/open.json")" ok)" = 40 ]
}
check "load rps is an open loop: every scheduled request is sent while none has been answered" t_open_loop

t_burst() {
  local before after
  before=$(answered)
  "$D" --json --dp "$FNA" load burst 64 anyfn >"$TAP_TMP/burst.json" || return 1
  after=$(answered)
  [ $((after - before)) = 64 ] && json_field "$(cat "$TAP_TMP/burst.json")" ok | grep -qx 64
}
check "load burst: N requests at once, all answered" t_burst

# a hand-made Azure 2019 trace: one function, 600 invocations in each of 2 minutes
mk_trace() {
  mkdir -p "$TAP_TMP/tr"
  {
    echo "HashOwner,HashApp,HashFunction,Trigger,1,2"
    echo "o1,a1,f1,http,600,600"
  } >"$TAP_TMP/tr/invocations.csv"
  {
    echo "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100"
    echo "o1,a1,f1,10,1200,10,10,10,10,10,10,10,10,10"
  } >"$TAP_TMP/tr/durations.csv"
}
t_iat() {
  mk_trace
  local iat
  for iat in equidistant uniform exponential; do
    "$D" load trace "$TAP_TMP/tr" --iat "$iat" --seed 7 --dry-run >"$TAP_TMP/plan-$iat.csv" || return 1
  done
  py "$TAP_TMP" <<'EOF'
import csv, sys, statistics as st
d = sys.argv[1]
for iat in ("equidistant", "uniform", "exponential"):
    at = [float(r["at_ms"]) for r in csv.DictReader(open(f"{d}/plan-{iat}.csv"))]
    assert len(at) == 1200, (iat, len(at))
    assert sum(1 for a in at if a < 60000) == 600, iat           # per-minute counts kept
    for m in (0, 1):                                                # uniform positions in a minute:
        xs = sorted((a - 60000 * m) / 60000 for a in at if 60000 * m <= a < 60000 * (m + 1))
        ks = max(max(abs((i + 1) / len(xs) - x), abs(i / len(xs) - x)) for i, x in enumerate(xs))
        assert ks < 0.07, (iat, m, ks)
    gaps = [b - a for a, b in zip(at, at[1:]) if int(a // 60000) == int(b // 60000)]
    cv = st.pstdev(gaps) / st.mean(gaps)
    print(iat, "mean gap %.1f ms, cv %.3f" % (st.mean(gaps), cv))
    assert 95 <= st.mean(gaps) <= 105, iat
    if iat == "equidistant": assert cv < 0.01
    if iat == "exponential": assert 0.85 < cv < 1.15
    if iat == "uniform": assert 0.8 < cv < 1.2   # gaps of uniform points are ~exponential
EOF
}
check "load trace --dry-run: per-minute counts kept; equidistant, uniform and exponential arrivals" t_iat

t_formats() {
  local n out
  # the InVitro 2019 sample: the first 3 minutes (5 + 5 + 5), 1 of them warm-up
  "$D" load trace "$DATA" --minutes 3 --warmup-minutes 1 --dry-run >"$TAP_TMP/p19.csv" || return 1
  [ "$(grep -c ',measure$' "$TAP_TMP/p19.csv")" = 10 ] && [ "$(grep -c ',warmup$' "$TAP_TMP/p19.csv")" = 5 ] || { cat "$TAP_TMP/p19.csv"; return 1; }
  # the 2021 sample: one row per invocation
  n=$(($(wc -l <"$DATA/Azure2021/Azure2021_30.csv") - 1))
  "$D" load trace "$DATA/Azure2021/Azure2021_30.csv" --dry-run >"$TAP_TMP/p21.csv" || return 1
  [ "$(($(wc -l <"$TAP_TMP/p21.csv") - 1))" = "$n" ] || return 1
  # a malformed row: an error naming the file and line, nothing sent
  mk_trace
  sed -i '2s/,600,600$/,600,x1/' "$TAP_TMP/tr/invocations.csv"
  out=$("$D" load trace "$TAP_TMP/tr" --dry-run 2>&1) && return 1
  echo "$out"
  grep -q "invocations.csv:2: column 6: expected a number" <<<"$out" || return 1
  out=$("$D" load trace "$TAP_TMP/tr" --minutes 2 --warmup-minutes 2 2>&1) && return 1
  grep -q -- "--warmup-minutes: expected fewer than --minutes" <<<"$out"
}
check "load trace: both Azure formats (the InVitro samples), warm-up marked; a malformed row named by line" t_formats

t_summary() {
  cat >"$TAP_TMP/hand.csv" <<'EOF'
start_ms,function,status,response_ms,execution_ms,requested_ms,cold,phase
0.000,a,200,110.000,100.000,100,cold,measure
1.000,a,200,100.000,100.000,100,warm,measure
2.000,b,200,40.000,,10,warm,measure
3.000,b,503,5.000,,10,,measure
4.000,b,200,999.000,,10,warm,warmup
EOF
  "$D" --json load summarize "$TAP_TMP/hand.csv" >"$TAP_TMP/sum.json" || return 1
  cat "$TAP_TMP/sum.json"
  # by hand: the warm-up row is not counted; latencies 40, 100, 110 -> p50 100; scheduling
  # latency 0, 10, 30 -> p50 10; slowdown a = sqrt(1.1 x 1.0), b = 40/10 = 4, overall
  # sqrt(1.0488 x 4) = 2.048
  py "$TAP_TMP/sum.json" <<'EOF'
import json, sys, math
j = json.load(open(sys.argv[1]))
exp = {"sent": 5, "counted": 4, "ok": 3, "errors": 1, "errors_503": 1, "cold": 1, "warm": 2,
       "p50_ms": 100, "sched_p50_ms": 10, "functions": 2}
for k, v in exp.items(): assert abs(j[k] - v) < 1e-9, (k, j[k], v)
assert abs(j["slowdown_geomean"] - math.sqrt(math.sqrt(1.1) * 4)) < 1e-3, j["slowdown_geomean"]
assert abs(j["slowdown_p50"] - math.sqrt(1.1)) < 1e-3
EOF
  [ $? = 0 ] || return 1
  printf 'start_ms,function,status,response_ms,execution_ms,requested_ms,cold,phase\n1,a,200,x,,1,warm,measure\n' >"$TAP_TMP/bad.csv"
  ! "$D" load summarize "$TAP_TMP/bad.csv" 2>"$TAP_TMP/err" && grep -q 'bad.csv:2: expected' "$TAP_TMP/err"
}
check "load summarize: the statistics of a hand-made CSV, worked out by hand; a bad row named by line" t_summary

# a real cluster (process runtime): the trace's functions registered as InVitro does, replayed
start_cp_dp --traceOutputFolder ""
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --controlPlaneAddress "$CPI" \
  --heartbeatInterval 300ms --set "fnBinary=$B/dirigent-fn" --processUser nobody \
  --processAllowedDirs "$B,$TAP_TMP"
wait_for_log "$TAP_TMP/w1.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "http://$REGA/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

t_trace_cluster() {
  # the 2019 sample's first 2 minutes at 20x: 10 invocations of 4 functions
  "$D" --json --cp "$REGA" --dp "$DPA" load trace "$DATA" --minutes 2 --speed 20 --prefix "lt$$-" \
    --csv "$TAP_TMP/run.csv" >"$TAP_TMP/run.json" || { cat "$TAP_TMP/run.json"; return 1; }
  cat "$TAP_TMP/run.json"
  [ "$(curl -s "http://$REGA/v1/functions" | grep -o "\"lt$$-" | wc -l)" = 4 ] || return 1
  py "$TAP_TMP/run.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 10 and all(r["status"] == "200" for r in rows), rows
assert any(r["cold"] == "cold" for r in rows)                  # the DP says which were cold
for r in rows:                                                  # each worked for its duration
    assert float(r["execution_ms"]) >= int(r["requested_ms"]), r  # (at least: a floor)
    assert float(r["response_ms"]) >= float(r["execution_ms"]), r
EOF
}
check "load trace through a cluster: functions registered, every invocation answered, cold starts reported" t_trace_cluster

t_image_path() {
  # the image is a form value: a path with '+', '&' or '%' (a clone in ~/src/c++) reaches
  # the control plane as it is, and every cold call is answered
  local dir="$TAP_TMP/c++a&b%41"
  # under processAllowedDirs, and reachable for the sandboxes' user (nobody, as root)
  mkdir -p "$dir" && cp "$B/dirigent-fn" "$dir/" && chmod o+x "$TAP_TMP" "$dir" || return 1
  "$D" --json --cp "$REGA" --dp "$DPA" load rps --cold --rate 2 --duration 1 --cooldown 1 \
    --image "$dir/dirigent-fn" >"$TAP_TMP/img.json" 2>"$TAP_TMP/img.err" ||
    { cat "$TAP_TMP/img.json" "$TAP_TMP/img.err"; return 1; }
  cat "$TAP_TMP/img.json"
  py "$TAP_TMP/img.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["counted"] >= 1 and s["ok"] == s["counted"], s
EOF
}
check "load rps --cold --image with '+', '&' and '%' in the path: registered as it is, answered" t_image_path

t_two_dps() {
  # --dp A,B: function i always to the (i mod 2)th data plane (the CP pushes to both)
  bg_start "$TAP_TMP/dp2.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp2 \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 60s --traceOutputFolder ""
  wait_for_log "$TAP_TMP/dp2.log" 'proxy on' || return 1
  local dpb api_a api_b out
  dpb=127.0.0.1:$(port_of "$TAP_TMP/dp2.log" 'proxy on')
  api_a=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
  api_b=127.0.0.1:$(port_of "$TAP_TMP/dp2.log" 'api on')
  wait_json "http://$REGA/v1/status" 'len(j["dataplanes"]) == 2' || return 1
  "$D" --json --cp "$REGA" --dp "$DPA,$dpb" load rps --cold --keep --rate 4 --duration 2 --cooldown 1 \
    --csv "$TAP_TMP/two.csv" >"$TAP_TMP/two.json" 2>"$TAP_TMP/two.err" ||
    { cat "$TAP_TMP/two.json" "$TAP_TMP/two.err"; return 1; }
  cat "$TAP_TMP/two.json"
  curl -s "http://$api_a/metrics" >"$TAP_TMP/ma" && curl -s "http://$api_b/metrics" >"$TAP_TMP/mb" || return 1
  py "$TAP_TMP/two.csv" "$TAP_TMP/ma" "$TAP_TMP/mb" <<'EOF'
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 8 and all(r["status"] == "200" for r in rows), rows
names = sorted({r["function"] for r in rows}, key=lambda n: int(n.rsplit("-", 1)[1]))
assert len(names) == 4, names
def counts(path):
    return {m.group(1): int(float(m.group(2))) for m in
            re.finditer(r'^dg_dp_requests_total\{function="([^"]+)"\} (\S+)', open(path).read(), re.M)}
a, b = counts(sys.argv[2]), counts(sys.argv[3])
for i, n in enumerate(names):  # each function's 2 calls all on its own data plane
    mine, other = (a, b) if i % 2 == 0 else (b, a)
    assert mine.get(n) == 2 and other.get(n, 0) == 0, (n, a, b)
EOF
  [ $? = 0 ] || return 1
  out=$("$D" --dp "$DPA,,$dpb" load burst 1 x 2>&1) && return 1
  grep -q "comma-separated" <<<"$out" || { echo "$out"; return 1; }
  out=$("$D" --dp "$DPA,10.1.2.3:80" load burst 1 x 2>&1) && return 1
  grep -q "10.1.2.3:80: only 127.0.0.0/8" <<<"$out" || { echo "$out"; return 1; }
}
check "load --dp A,B: each function's requests all to one data plane, alternating; a bad list refused" t_two_dps

t_targets() {
  local out
  out=$("$D" --dp 10.1.2.3:80 load burst 1 x 2>&1) && return 1
  grep -q "only 127.0.0.0/8" <<<"$out"
}
check "load refuses targets outside the machine" t_targets

tap_done
