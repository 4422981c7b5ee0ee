#!/usr/bin/env bash
# Registering and deleting many functions at once (issue 16: the overload benchmark's load
# generator registers 120,000 functions on a control plane already holding 150,000), through
# the real daemons: dirigent-cp, dirigent-dp and an emulated worker, on ephemeral ports.
# `dirigent load rps --cold` registers N functions (each invoked cold), a second run registers
# N more on the control plane holding the first N, then all are deleted: the data plane
# forgets them all (POST /v1/forget, in batches), nothing is left at either. The forget batch
# answers item by item and names what is wrong; the load generator stops registering at the
# first refusal, says how far it got, and removes what it registered.
# N: MANY_FUNCTIONS (default 20,000; 2,000 under sanitizers, which are ~10x slower).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
PY=/usr/bin/python3
N=${MANY_FUNCTIONS:-20000}
[ -n "${DG_SANITIZED:-}" ] && N=${MANY_FUNCTIONS:-2000}
RATE=$((N / 10)) # --cooldown 10: RATE x 10 functions, RATE invocations in the 1 s run

plan 8

trap 'tap_cleanup' EXIT

start_cp_dp --traceOutputFolder "" --maxFunctions 0 --maxSandboxes 0 --maxSandboxesPerWorker 0 \
  --maxSandboxesPerFunction 0 --maxCreatesPerWorkerPerSecond 0 --heartbeatInterval 1s
DPAPI=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --runtime emulated \
  --fnBinary "$FN" --controlPlaneAddress "$CPI" --heartbeatInterval 1s --emulatedNodes 4 \
  --emulatedCreateDelayMs 0 --cpuMilli 100000000 --memoryMiB 100000000
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 4 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

# cold_count URL: how many functions of the CP's status or the DP's list at URL are named cold-*
cold_count() {
  curl -sf -m 60 "$1" | $PY -c '
import json, sys
j = json.load(sys.stdin)
fns = j["functions"] if isinstance(j, dict) else j
print(sum(1 for f in fns if f["name"].startswith("cold-")))'
}

# load rps --cold, its stderr in $TAP_TMP/load$1.err
load_cold() {
  local k=$1; shift
  "$B/dirigent" --cp "$REGA" --dp "$DPA" load rps --cold --rate "$RATE" --cooldown 10 \
    --duration 1 --timeout 60 "$@" >"$TAP_TMP/load$k.out" 2>"$TAP_TMP/load$k.err"
}

t_first() {
  load_cold 1 --keep || { cat "$TAP_TMP/load1.err" "$TAP_TMP/load1.out"; return 1; }
  grep -q "registered $N function(s)" "$TAP_TMP/load1.err" &&
    grep -q "ok $RATE (cold $RATE" "$TAP_TMP/load1.out" ||
    { cat "$TAP_TMP/load1.err" "$TAP_TMP/load1.out"; return 1; }
}
check "load rps --cold registers $N functions and invokes $RATE of them cold, no error" t_first

t_known() {
  [ "$(cold_count "$REG/v1/status")" = "$N" ] &&
    wait_json "http://$DPAPI/v1/functions" "sum(1 for f in j if f['name'].startswith('cold-')) == $N" 1200
}
check "the control plane holds the $N functions and the data plane knows them all" t_known

t_second() {
  load_cold 2 || { cat "$TAP_TMP/load2.err" "$TAP_TMP/load2.out"; return 1; }
  grep -q "registered $N function(s)" "$TAP_TMP/load2.err" &&
    grep -q "removed the $N function(s) it registered" "$TAP_TMP/load2.err" ||
    { cat "$TAP_TMP/load2.err"; return 1; }
}
check "$N more registered, invoked and removed on the control plane holding $N" t_second

# the first N deleted through the registration API, 4 keep-alive connections
t_delete() {
  REGA=$REGA $PY - "$(sed -n 's/.*kept the [0-9]* function(s) it registered (\(cold-[0-9]*\)-0 .*/\1/p' "$TAP_TMP/load1.err")" "$N" <<'EOF'
import http.client, os, sys, threading
host, port = os.environ["REGA"].split(":")
prefix, n = sys.argv[1], int(sys.argv[2])
bad = []
def run(k):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    for i in range(k, n, 4):
        c.request("DELETE", f"/v1/functions/{prefix}-{i}")
        r = c.getresponse(); r.read()
        if r.status != 200:
            bad.append((i, r.status))
ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{len(bad)} failed: {bad[:5]}")
sys.exit(1 if bad or not prefix else 0)
EOF
}
check "the first $N deleted (200 each)" t_delete

t_gone() {
  wait_json "$REG/v1/status" "sum(1 for f in j['functions'] if f['name'].startswith('cold-')) == 0" 1200 &&
    wait_json "http://$DPAPI/v1/functions" "sum(1 for f in j if f['name'].startswith('cold-')) == 0" 1200
}
check "none is left at the control plane, and the data plane forgot every one" t_gone

# the forget batch, item by item (the CP's own route: unauthenticated on loopback here)
t_forget() {
  curl -sf -o /dev/null -d "name=keep1&image=$FN&port_forwarding=80&port_forwarding=tcp" \
    "$REG/registerService" || return 1
  wait_json "http://$DPAPI/v1/functions" "any(f['name'] == 'keep1' for f in j)" || return 1
  curl -s -X POST -H 'Content-Type: application/json' \
    -d '{"items":["no-such-fn","Bad_Name",42,"keep1"]}' "http://$DPAPI/v1/forget" >"$TAP_TMP/forget.out"
  $PY - "$TAP_TMP/forget.out" <<'EOF' || { cat "$TAP_TMP/forget.out"; return 1; }
import json, sys
lines = {}
for raw in open(sys.argv[1]).read().splitlines():
    if raw.strip():
        l = json.loads(raw)
        lines[l["i"]] = l
ok = (lines[0]["status"] == 404 and lines[1]["status"] == 400 and "function name" in lines[1]["body"]
      and lines[2]["status"] == 400 and "string" in lines[2]["body"] and lines[3]["status"] == 200)
sys.exit(0 if ok else 1)
EOF
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"items":[]}' "http://$DPAPI/v1/forget")" = 400 ] &&
    wait_json "http://$DPAPI/v1/functions" "not any(f['name'] == 'keep1' for f in j)"
}
check "POST /v1/forget answers each item: removed 200, unknown 404, a bad name or a number 400; an empty batch 400" t_forget

# a control plane that refuses past maxFunctions 50: the load generator stops at the first
# refusal and removes what it registered
bg_start "$TAP_TMP/cp2.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
  --dataDir "$TAP_TMP/cp2data" --traceOutputFolder "" --maxFunctions 50
wait_for_log "$TAP_TMP/cp2.log" 'registration on' || { echo "Bail out! cp2 did not start"; exit 1; }
REG2=127.0.0.1:$(port_of "$TAP_TMP/cp2.log" 'registration on')
t_refused() {
  ! "$B/dirigent" --cp "$REG2" --dp "$DPA" load rps --cold --rate 100 --cooldown 10 --duration 1 \
    >/dev/null 2>"$TAP_TMP/load3.err" &&
    grep -q "registering 1000 function(s): 50 done, [0-9]* failed, [0-9]* not sent; the first failure: 429 .*maxFunctions 50" "$TAP_TMP/load3.err" ||
    { cat "$TAP_TMP/load3.err"; return 1; }
}
check "past maxFunctions the load generator stops, names the limit and how far it got" t_refused
check "and removes the 50 it registered" \
  wait_json "http://$REG2/v1/status" "len(j['functions']) == 0"
