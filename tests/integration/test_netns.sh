#!/usr/bin/env bash
# A multi-host cluster on one machine (issue 6): scripts/netns-cluster.sh up builds ten hosts
# as network namespaces on a bridge (redis, three CP replicas, two DPs, HAProxy, three process
# workers); the test registers through HAProxy (registration frontend) and invokes through
# HAProxy (invocation frontend), then injects faults and counts what was lost (the goal is
# nothing): kill -9 of the leader CP under warm load; kill -9 of a worker with sandboxes and
# its restart under the same name; kill -9 of a DP and its restart; a worker's link cut for
# longer than 3 heartbeats and restored. Root only (skipped otherwise, or without haproxy,
# redis-server or a usable `ip netns`). Its own names and subnet (DGT_PREFIX, default dgt9;
# DGT_NET, default 100.64.9), so a cluster a user runs (dgc, 100.64.0) is left alone; `down`
# always runs on exit.
set -u
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$S/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
CLUSTER=$S/scripts/netns-cluster.sh
# every call carries the cluster's operator credential (netns-cluster.sh up makes it)
curl() { command curl -H "Authorization: Bearer $(cat "$STATE/operator.token" 2>/dev/null)" "$@"; }
export DGC_PREFIX=${DGT_PREFIX:-dgt9} DGC_NET=${DGT_NET:-100.64.9}
N=$DGC_NET
LB=$N.30:8079
REG=$N.30:9092
STATE=$TAP_TMP/cluster
PY=/usr/bin/python3
NCHECKS=11
declare -A ADDR=([cp1]=$N.11 [cp2]=$N.12 [cp3]=$N.13 [dp1]=$N.21 [dp2]=$N.22 [w1]=$N.41 [w2]=$N.42 [w3]=$N.43)

# check_i NAME FUNC...: check, then the lines of its output that start with "info:" as comments
check_i() {
  check "$@"
  local rc=$?
  grep '^info: ' "$TAP_TMP/check.out" 2>/dev/null | sed 's/^info: /# /'
  return $rc
}

plan $NCHECKS
skip_all() {
  for i in $(seq 1 $NCHECKS); do echo "ok $i # SKIP $1"; done
  exit 0
}
[ "$(id -u)" = 0 ] || skip_all "needs root (network namespaces, a bridge)"
for t in haproxy redis-server redis-cli curl setsid ip; do
  command -v $t >/dev/null || skip_all "needs $t"
done
if ! { ip netns add "$DGC_PREFIX-probe" && ip netns del "$DGC_PREFIX-probe"; } >/dev/null 2>&1; then
  skip_all "'ip netns' does not work here"
fi

cluster_down() {
  "$CLUSTER" down --state-dir "$STATE" >>"$TAP_TMP/down.log" 2>&1
  # DGT_KEEP_LOGS=DIR: the daemons' logs are copied there (for a look after the run)
  [ -n "${DGT_KEEP_LOGS:-}" ] && mkdir -p "$DGT_KEEP_LOGS" && cp -r "$STATE/logs" "$STATE/haproxy.cfg" "$TAP_TMP"/*.log "$DGT_KEEP_LOGS/" 2>/dev/null
  return 0
}
trap 'cluster_down; tap_cleanup' EXIT
trap 'exit 1' INT TERM
# leftovers of an earlier run that was killed (same prefix: the test's own names)
"$CLUSTER" down --state-dir "$TAP_TMP/old" >/dev/null 2>&1

# ---- helpers ------------------------------------------------------------------------------
# lstatus: the leader's /v1/status (asks each replica; the one that says it leads)
lstatus() {
  local h j
  for h in cp1 cp2 cp3; do
    j=$(curl -s -m 1 "http://${ADDR[$h]}:9090/v1/status") || continue
    [ "$(echo "$j" | jq_ 'j["role"]')" = leader ] && { echo "$j"; return 0; }
  done
  return 1
}
# jq_ PYEXPR: a python expression over the JSON on stdin (j), printed
jq_() { $PY -c "import json,sys; j=json.load(sys.stdin); print($1)" 2>/dev/null; }
leader_name() { # cpN of the leader
  local h
  for h in cp1 cp2 cp3; do
    [ "$(curl -s -m 1 "http://${ADDR[$h]}:9090/v1/status" | jq_ 'j["role"]')" = leader ] && { echo "$h"; return 0; }
  done
  return 1
}
pid_of() { cat "$STATE/pids/$1.pid"; }
# register NAME [LOWER UPPER]: through HAProxy's registration frontend; prints the HTTP code
register() {
  curl -s -m 10 -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "http://$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&scaling_lower_bound=${2:-0}&scaling_upper_bound=${3:-100}"
}
invoke() { # invoke NAME [HOST:PORT]: 0 when the function itself answered 200
  local out
  out=$(curl -s -m 10 -H "Host: $1" "http://${2:-$LB}/") &&
    [ "$(echo "$out" | jq_ 'j["Function"]')" = "$1" ] || { echo "invoke $1 at ${2:-$LB}: '$out'"; return 1; }
}
haproxy_cmd() {
  $PY - "$STATE/haproxy.sock" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); out = b""
while True:
    b = s.recv(65536)
    if not b: break
    out += b
sys.stdout.write(out.decode(errors="replace"))
EOF
}
# hap_dp: "name state" of each server in HAProxy's dataplanes backend (state 2 = UP)
hap_dp() { haproxy_cmd "show servers state dataplanes" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ && NF > 10 {print $4, $6}'; }
# fn_pids WORKER: the dirigent-fn processes in the worker's namespace ("pid ppid" each)
fn_pids() {
  local p
  for p in $(ip netns pids "$DGC_PREFIX-$1" 2>/dev/null); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "^$FN" && echo "$p $(awk '{print $4}' "/proc/$p/stat" 2>/dev/null)"
  done
}
# load_loop STOP OUT FN...: sequential invocations through HAProxy until the file STOP exists
# (at most 3000); "code fn" a line, in order
load_loop() {
  local stop=$1 out=$2 i=0 f c
  shift 2
  local fns=("$@")
  while [ ! -e "$stop" ] && [ $i -lt 3000 ]; do
    f=${fns[$((i % ${#fns[@]}))]}
    i=$((i + 1))
    c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H "Host: $f" "http://$LB/")
    echo "$c $f"
  done >"$out"
}
# lines_at_least N FILE...: the files have N lines or more together
lines_at_least() { [ "$(cat "${@:2}" 2>/dev/null | grep -c .)" -ge "$1" ]; }
now_ms() { echo $((${EPOCHREALTIME/./} / 1000)); }
# poll TRIES CMD...: run the command every 100 ms until it succeeds
poll() {
  local n=$1 i
  shift
  for i in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  "$@" # once more, with its output
}
# reconciled: the leader's sandbox count per worker equals what the worker runs, equals the
# dirigent-fn processes in its namespace (children of the worker: none orphaned), and the
# totals equal the functions' ready counts with nothing being created
reconciled() {
  local j w cpn wkn procs orph tot=0 ready
  j=$(lstatus) || { echo "no leader"; return 1; }
  ready=$(echo "$j" | jq_ 'sum(f["ready"] for f in j["functions"]) if all(f["creating"]==0 for f in j["functions"]) else -1')
  [ "$ready" != -1 ] || { echo "creating: $(echo "$j" | jq_ '[(f["name"],f["creating"]) for f in j["functions"] if f["creating"]]')"; return 1; }
  for w in w1 w2 w3; do
    cpn=$(echo "$j" | jq_ "[x['sandboxes'] for x in j['workers'] if x['name']=='$w'][0]")
    wkn=$(curl -s -m 2 "http://${ADDR[$w]}:10010/v1/sandboxes" | jq_ 'len([s for s in j["sandboxes"] if s["state"]=="ready"])')
    procs=$(fn_pids "$w" | grep -c .)
    orph=$(fn_pids "$w" | awk -v p="$(pid_of "$w")" '$2 != p' | grep -c .)
    echo "$w: cp says $cpn, worker runs $wkn, fn processes $procs (orphaned $orph)"
    [ "$cpn" = "$wkn" ] && [ "$wkn" = "$procs" ] && [ "$orph" = 0 ] || return 1
    tot=$((tot + cpn))
  done
  echo "total $tot, functions ready $ready"
  [ "$tot" = "$ready" ]
}
# replaced_off W: W is unschedulable with no sandbox; every function has what it wants ready
# (at least its lower bound), nothing is being created, and the workers hold exactly those
replaced_off() {
  lstatus | jq_ "(lambda ws, fs: (not ws['$1']['schedulable']) and ws['$1']['sandboxes'] == 0 and all(f['ready'] >= max(f['desired'], f['scaling_lower_bound']) and f['creating'] == 0 for f in fs) and sum(w['sandboxes'] for w in ws.values()) == sum(f['ready'] for f in fs))({w['name']: w for w in j['workers']}, j['functions'])" | grep -qx True
}
# summary: the leader's view, compact (for failure messages)
summary() {
  lstatus | jq_ '"leader %s\n" % j["leader"] + "\n".join("worker %s schedulable=%s sandboxes=%d" % (w["name"], w["schedulable"], w["sandboxes"]) for w in j["workers"]) + "\n" + "\n".join("fn %s %s ready=%d creating=%d desired=%d lower=%d error=%s" % (f["name"], f["state"], f["ready"], f["creating"], f["desired"], f["scaling_lower_bound"], f["error"]) for f in j["functions"])' ||
    echo "no leader answers"
}
schedulable() { lstatus | jq_ "[w['schedulable'] for w in j['workers'] if w['name']=='$1'][0]" | grep -qx True; }
fns_on() { # the functions of the sandboxes a worker runs
  curl -s -m 2 "http://${ADDR[$1]}:10010/v1/sandboxes" | jq_ '" ".join(sorted(set(s["function"] for s in j["sandboxes"])))'
}
busiest_worker() { # the worker with most sandboxes (w2 on a tie)
  lstatus | jq_ 'sorted(j["workers"], key=lambda w: (-w["sandboxes"], w["name"] != "w2"))[0]["name"]'
}
kill_orphans() { # kill_orphans W: dirigent-fn processes in W's namespace not the worker's children
  local p
  for p in $(fn_pids "$1" | awk -v p="$(pid_of "$1")" '$2 != p {print $1}'); do kill -9 "$p"; done
}

# ---- the cluster -------------------------------------------------------------------------
FNS=(fn1 fn2 fn3 fn4 fn5 fn6)
t_up() {
  local t0 out
  t0=$(now_ms)
  "$CLUSTER" up --state-dir "$STATE" --build "$B" --runtime process >"$TAP_TMP/up.log" 2>&1 || { cat "$TAP_TMP/up.log"; return 1; }
  cat "$TAP_TMP/up.log"
  echo "info: up in $(($(now_ms) - t0)) ms"
  grep -q "ready: leader .*$LB.*$REG" "$TAP_TMP/up.log" || return 1
  # the CP leader puts both data planes into HAProxy's dataplanes backend (haproxy.api)
  if ! "$B/dirigent-cp" --help | grep -q 'haproxy\.api'; then
    echo "this dirigent-cp has no haproxy.api key: nothing adds the data planes to HAProxy's backend"
    echo "'dataplanes' (every invocation through $LB gets 503)"
    return 1
  fi
  poll 100 eval '[ "$(hap_dp | awk '\''$2 == 2'\'' | grep -c .)" = 2 ]' || { echo "HAProxy's dataplanes backend:"; hap_dp; return 1; }
  hap_dp
}
if ! check_i "up: a leader, 3 workers and 2 data planes registered; the leader put both DPs into HAProxy" t_up; then
  if ! lstatus >/dev/null; then
    echo "Bail out! the cluster did not come up"
    tail -n 30 "$TAP_TMP/up.log" | sed 's/^/# /'
    exit 1
  fi
fi

t_register() {
  local f code
  for f in "${FNS[@]}"; do
    code=$(register "$f" 1 1) # one sandbox each: the counts below do not depend on the autoscaler
    [ "$code" = 200 ] || { echo "register $f: $code $(cat "$TAP_TMP/reg.out")"; return 1; }
  done
  grep -qx "$LB" "$TAP_TMP/reg.out" || { echo "the registration answer names '$(cat "$TAP_TMP/reg.out")', not $LB"; return 1; }
  for f in "${FNS[@]}"; do invoke "$f" || return 1; done
  poll 100 reconciled
}
check_i "six functions (one sandbox each) registered through HAProxy (round robin over the replicas); cold starts through HAProxy" t_register

# ---- 1: kill -9 of the leader CP under warm load ------------------------------------------
t_leader() {
  local L NEW="" n fails i mark
  L=$(leader_name) || { echo "no leader"; return 1; }
  rm -f "$TAP_TMP/stop1"
  load_loop "$TAP_TMP/stop1" "$TAP_TMP/warm1" "${FNS[@]}" &
  local l1=$!
  load_loop "$TAP_TMP/stop1" "$TAP_TMP/warm2" "${FNS[@]}" &
  local l2=$!
  # warm requests before the kill, while there is no leader, and after the new one leads
  poll 300 lines_at_least 20 "$TAP_TMP/warm1" "$TAP_TMP/warm2" || { touch "$TAP_TMP/stop1"; return 1; }
  kill -9 "$(pid_of "$L")"
  for i in $(seq 1 150); do
    NEW=$(leader_name) && [ "$NEW" != "$L" ] && break
    NEW=""
    sleep 0.1
  done
  mark=$(cat "$TAP_TMP/warm1" "$TAP_TMP/warm2" | grep -c .)
  [ -n "$NEW" ] && poll 300 lines_at_least $((mark + 20)) "$TAP_TMP/warm1" "$TAP_TMP/warm2"
  touch "$TAP_TMP/stop1"
  wait_bounded "$l1" "$l2"
  n=$(cat "$TAP_TMP/warm1" "$TAP_TMP/warm2" | grep -c .)
  fails=$(cat "$TAP_TMP/warm1" "$TAP_TMP/warm2" | awk '$1 != 200' | grep -c .)
  echo "info: killed $L; new leader ${NEW:-none}; warm requests $n ($mark until it led), failed $fails"
  cat "$TAP_TMP/warm1" "$TAP_TMP/warm2" | awk '$1 != 200' | head -5
  [ -n "$NEW" ] && [ "$fails" = 0 ] && [ "$n" -ge $((mark + 20)) ] || return 1
  # every function is still listed (asked through HAProxy: it finds the leader)
  local names
  names=$(curl -s -m 5 "http://$REG/v1/functions" | jq_ '" ".join(sorted(f["name"] for f in j))')
  [ "$names" = "${FNS[*]}" ] || { echo "listed: '$names'"; return 1; }
  # the killed replica comes back as a follower
  "$CLUSTER" start "$L" --state-dir "$STATE" || return 1
  poll 100 eval '[ "$(curl -s -m 1 http://${ADDR[$L]}:9090/v1/status | jq_ "j[\"role\"]")" = follower ]'
}
check_i "1: kill -9 of the leader CP under warm load: a new leader, no failed warm request, every function listed" t_leader

t_cold_after() {
  local code
  code=$(register after 0 1) && [ "$code" = 200 ] || { echo "register: $code $(cat "$TAP_TMP/reg.out")"; return 1; }
  invoke after || return 1
  FNS+=(after)
  # the new leader keeps HAProxy's backend: both DPs still there and up
  poll 50 eval '[ "$(hap_dp | awk '\''$2 == 2'\'' | grep -c .)" = 2 ]' || { hap_dp; return 1; }
}
check_i "1: after the failover, a new function registers and cold-starts through HAProxy; both DPs still in HAProxy" t_cold_after

# ---- 3: kill -9 of a worker with sandboxes, restarted under the same name -----------------
t_worker_kill() {
  local W fns t0 f
  W=$(busiest_worker) && [ -n "$W" ] || { echo "no leader"; return 1; }
  fns=$(fns_on "$W")
  [ -n "$fns" ] || { echo "$W runs no sandbox"; return 1; }
  WK=$W
  t0=$(now_ms)
  kill -9 "$(pid_of "$W")"
  poll 150 replaced_off "$W" || { summary; return 1; }
  echo "info: killed $W (sandboxes of: $fns): replaced after $(($(now_ms) - t0)) ms"
  for f in $fns; do invoke "$f" || return 1; done
}
check_i "3: kill -9 of a worker: its sandboxes are replaced on the others; its functions answer through HAProxy" t_worker_kill

t_worker_restart() {
  local W=${WK:-w1} rc=0
  "$CLUSTER" start "$W" --state-dir "$STATE" || return 1
  poll 100 schedulable "$W" || return 1
  poll 150 reconciled || rc=1
  if [ $rc = 1 ]; then
    echo "dirigent-fn processes in $W's namespace that its new worker does not own (left by the killed one):"
    fn_pids "$W" | awk -v p="$(pid_of "$W")" '$2 != p'
    kill_orphans "$W" # so that the next cases start clean
  fi
  return $rc
}
check_i "3: the worker restarted under its name: CP, workers and processes agree (nothing twice, no leaked fn process)" t_worker_restart

# ---- 4: kill -9 of a DP, restarted --------------------------------------------------------
dp_requests() { # dp_requests DP: invocations it proxied (its metrics)
  curl -s -m 2 "http://${ADDR[$1]}:8081/metrics" | awk '/^dg_dp_requests_total/ {s += $NF} END {print s + 0}'
}
dp_up_in_hap() { [ -n "$(hap_dp | awk -v s="dp_$1" '$1 == s && $2 == 2')" ]; }
t_dp_kill() {
  local D n early late mark
  # the DP that HAProxy's hash sends most functions to
  if [ "$(dp_requests dp1)" -ge "$(dp_requests dp2)" ]; then D=dp1; else D=dp2; fi
  DK=$D
  rm -f "$TAP_TMP/stop2"
  load_loop "$TAP_TMP/stop2" "$TAP_TMP/dpload" "${FNS[@]}" &
  local l=$!
  poll 300 lines_at_least 10 "$TAP_TMP/dpload" || { touch "$TAP_TMP/stop2"; return 1; }
  kill -9 "$(pid_of "$D")"
  # HAProxy stops counting on it (down by its checks, or removed by the CP): from then on
  # (less the one request in flight at that moment) nothing may fail
  poll 100 eval '! dp_up_in_hap '"$D" || { touch "$TAP_TMP/stop2"; echo "HAProxy still has $D up:"; hap_dp; return 1; }
  mark=$(grep -c . "$TAP_TMP/dpload")
  poll 300 lines_at_least $((mark + 30)) "$TAP_TMP/dpload"
  touch "$TAP_TMP/stop2"
  wait_bounded "$l"
  n=$(grep -c . "$TAP_TMP/dpload")
  early=$(awk -v m="$mark" '$1 != 200 && NR <= m + 1' "$TAP_TMP/dpload" | grep -c .)
  late=$(awk -v m="$mark" '$1 != 200 && NR > m + 1' "$TAP_TMP/dpload" | grep -c .)
  echo "info: killed $D: $n requests through HAProxy, failed: $early until HAProxy took it out (request $mark), $late after"
  awk '$1 != 200 {print "request " NR ":", $1, $2}' "$TAP_TMP/dpload" | head -5
  [ "$late" = 0 ] && [ "$n" -ge $((mark + 30)) ]
}
check_i "4: kill -9 of a DP: invocations through HAProxy keep working (failures only until HAProxy takes it out)" t_dp_kill

dp_has_all() { # dp_has_all DP: it knows every function with the endpoints the CP has ready
  local cp dp
  cp=$(lstatus | jq_ '" ".join("%s:%d" % (f["name"], f["ready"]) for f in sorted(j["functions"], key=lambda f: f["name"]))')
  dp=$(curl -s -m 2 "http://${ADDR[$1]}:8081/v1/functions" | jq_ '" ".join("%s:%d" % (f["name"], len(f["endpoints"])) for f in sorted(j if isinstance(j, list) else j["functions"], key=lambda f: f["name"]))')
  echo "cp: $cp"
  echo "$1: $dp"
  [ -n "$cp" ] && [ "$cp" = "$dp" ]
}
t_dp_restart() {
  local D=${DK:-dp1} f cold
  "$CLUSTER" start "$D" --state-dir "$STATE" || return 1
  poll 100 dp_has_all "$D" || return 1
  for f in "${FNS[@]}"; do invoke "$f" "${ADDR[$D]}:8080" || return 1; done
  cold=$(curl -s -m 2 "http://${ADDR[$D]}:8081/metrics" | awk '/^dg_dp_cold_starts_total/ {s += $NF} END {print s + 0}')
  echo "info: cold starts at the restarted $D: $cold"
  [ "$cold" = 0 ] || return 1
  # the leader put it back into HAProxy
  poll 100 eval '[ "$(hap_dp | awk -v s=dp_$D '\''$1 == s && $2 == 2'\'' | grep -c .)" = 1 ]' || { hap_dp; return 1; }
}
check_i "4: the DP restarted: every function and endpoint back, direct invocations without a cold start, back in HAProxy" t_dp_restart

# ---- 6: a worker's link cut for longer than 3 heartbeats, then restored --------------------
t_link_cut() {
  local W fns t0 f
  W=$(busiest_worker) && [ -n "$W" ] || { echo "no leader"; return 1; }
  fns=$(fns_on "$W")
  LW=$W
  t0=$(now_ms)
  ip link set "$DGC_PREFIX-$W" down || return 1
  poll 150 replaced_off "$W" || { summary; return 1; }
  echo "info: cut $W (sandboxes of: ${fns:-none}): unschedulable and replaced after $(($(now_ms) - t0)) ms"
  [ -n "$fns" ] || { echo "$W ran no sandbox: nothing to replace"; return 1; }
  for f in $fns; do invoke "$f" || return 1; done
}
check_i "6: a worker's link cut past 3 heartbeats: unschedulable, its sandboxes replaced, its functions answer" t_link_cut

t_link_restored() {
  local W=${LW:-w2} t0
  ip link set "$DGC_PREFIX-$W" up || return 1
  t0=$(now_ms)
  poll 100 schedulable "$W" || return 1
  echo "info: $W schedulable again after $(($(now_ms) - t0)) ms"
  poll 200 reconciled || return 1
  for f in "${FNS[@]}"; do invoke "$f" || return 1; done
}
check_i "6: the link restored: schedulable again; CP, workers and processes agree (no leak); every function answers" t_link_restored

# ---- down ---------------------------------------------------------------------------------
t_down() {
  local left
  "$CLUSTER" down --state-dir "$STATE" || return 1
  left=$(ip netns list | grep -c "^$DGC_PREFIX-")
  [ "$left" = 0 ] && [ ! -e "/sys/class/net/${DGC_PREFIX}0" ] || { ip netns list; return 1; }
  "$CLUSTER" down --state-dir "$STATE" # idempotent
}
check_i "down: every process, namespace, veth and the bridge gone; a second down is fine" t_down

if [ "$TAP_FAILED" -gt 0 ]; then
  for f in "$STATE"/logs/*.log; do
    echo "# ---- $f (last 12 lines)"
    tail -n 12 "$f" | sed 's/^/# /'
  done
fi
tap_done
