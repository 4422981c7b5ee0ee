#!/usr/bin/env bash
# The cluster end to end: dirigent-cp, dirigent-dp and two dirigent-workers (process runtime,
# real dirigent-fn sandboxes) on 127.0.0.1 with ephemeral ports and a 300 ms heartbeat, driven
# the way InVitro and users drive them.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
SRC=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
FN=$B/dirigent-fn
TAG="DG_CLUSTER_TEST=$$"

plan 13

trap 'tap_cleanup; cleanup_sandboxes' EXIT # daemons first: a live worker would replace what we kill


bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --dataDir "$TAP_TMP/cpdata" \
  --heartbeatInterval 300ms --placementPolicy round-robin --traceOutputFolder "$TAP_TMP/trace"
CP_PID=$BG_PID
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REG=http://127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')

start_dp() {
  bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 10s \
    --traceOutputFolder "$TAP_TMP/trace"
  DP_PID=$BG_PID
  wait_for_log "$TAP_TMP/dp.log" 'proxy on' || return 1
  P=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
}
start_worker() { # start_worker NAME
  bg_start "$TAP_TMP/$1.log" "$B/dirigent-worker" --port 0 --name "$1" \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --processUser nobody
  eval "PID_$1=$BG_PID"
  wait_for_log "$TAP_TMP/$1.log" 'listening on' || return 1
}
start_dp && start_worker w1 && start_worker w2 || { echo "Bail out! cluster did not start"; exit 1; }

# wait until the CP's status satisfies a python expression over it (s), 10 s at most
wait_status() {
  local i=0
  while [ $i -lt 200 ]; do
    curl -sf "$REG/v1/status" | /usr/bin/python3 -c "import json,sys; s=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "timed out waiting for: $1"; curl -s "$REG/v1/status"; echo; return 1
}
wait_status 'len(s["workers"]) == 2 and len(s["dataplanes"]) == 1' || { echo "Bail out! not registered"; exit 1; }

register() { # register NAME [extra form fields]
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&env_vars=$TAG${2:-}"
}

t_register() {
  [ "$(register hello)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(cat "$TAP_TMP/reg.out")" = "${P#http://}" ] || { echo "body: $(cat "$TAP_TMP/reg.out")"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/check?name=hello")" = 200 ] || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/check?name=nobody")" = 404 ] || return 1
  [ "$(register hello)" = 409 ] && grep -q "function 'hello' is already registered" "$TAP_TMP/reg.out" || return 1
  # the JSON API: update of the scaling bounds, and a bad one
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XPUT "$REG/v1/functions/hello" -d '{"scaling_upper_bound":5}')" = 200 ] || return 1
  [ "$(json_field "$(curl -sf "$REG/v1/functions/hello")" scaling_upper_bound)" = 5 ] || return 1
  [ "$(curl -s -o "$TAP_TMP/upd" -w '%{http_code}' -XPUT "$REG/v1/functions/hello" -d '{"scaling_lower_bound":9}')" = 400 ] &&
    grep -q "field 'scaling_lower_bound': expected at most scaling_upper_bound (5), got 9" "$TAP_TMP/upd"
}
check "registration: 200 with the DP address, /check, 409 on a duplicate; bounds update" t_register

t_invitro() {
  # InVitro's own bytes (tests/integration/invitro_http1.py: its PostForm registration and its
  # HTTP/1 invocations, POST and GET, judged as InVitro judges them), then the function removed
  # (its sandbox has no $TAG to be found by)
  cat >"$TAP_TMP/inv.json" <<EOF
{"cp": "${REG#http://}", "method": "POST",
 "functions": [{"name": "invitro-0-42", "image": "$FN", "port": 80, "protocol": "tcp", "upper": 1,
   "lower": 0, "cpu": 100, "memory": 64, "sweep": false}],
 "invocations": [{"at_ms": 0, "function": 0, "runtime": 5, "memory": 64, "multiplier": 102},
   {"at_ms": 0, "function": 0, "runtime": 5, "memory": 64, "multiplier": 102, "method": "GET"}]}
EOF
  /usr/bin/python3 "$SRC/tests/integration/invitro_http1.py" "$TAP_TMP/inv.json" "$TAP_TMP/inv.out" || return 1
  /usr/bin/python3 -c 'import json,sys
r = json.load(open(sys.argv[1]))
assert len(r) == 2 and all(x["ok"] and x["response"]["Function"] == "invitro-0-42" for x in r), r' "$TAP_TMP/inv.out" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$REG/v1/functions/invitro-0-42")" = 200 ] &&
    wait_status 'not [f for f in s["functions"] if f["name"] == "invitro-0-42"] and sum(w["sandboxes"] for w in s["workers"]) == sum(f["ready"] + f["creating"] for f in s["functions"])'
}
check "registration and invocations with InVitro's exact HTTP/1 bytes (its PostForm, POST and GET)" t_invitro

t_cold_then_warm() {
  local out i
  out=$(curl -sf -H 'Host: hello' "$P/") || return 1
  [ "$(json_field "$out" Function)" = hello ] || return 1
  for i in 1 2 3 4 5; do
    [ "$(json_field "$(curl -sf -H 'Host: hello' "$P/")" Status)" = OK ] || return 1
  done
  wait_status '[f for f in s["functions"] if f["name"]=="hello"][0]["ready"] >= 1'
}
check "a cold invocation of a function at zero, then warm ones" t_cold_then_warm

t_burst_bounded() {
  [ "$(register burst '&scaling_upper_bound=3')" = 200 ] || return 1
  local i pids=()
  for i in $(seq 1 50); do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Host: burst' -H 'requested_cpu: 20' "$P/" >"$TAP_TMP/burst.$i" &
    pids+=($!)
  done
  wait_bounded "${pids[@]}"
  local codes
  codes=$(cat "$TAP_TMP"/burst.* | sort | uniq -c)
  echo "$codes"
  [ "$(cat "$TAP_TMP"/burst.* | sort -u)" = 200 ] || return 1
  local n
  n=$(curl -sf "$REG/v1/functions/burst" | /usr/bin/python3 -c \
    'import json,sys; f=json.load(sys.stdin); print(f["ready"] + f["creating"])')
  echo "sandboxes: $n"
  [ "$n" -le 3 ] && [ "$n" -ge 1 ]
}
check "50 concurrent requests at zero with upper bound 3: all succeed, at most 3 sandboxes" t_burst_bounded

t_sweep_to_zero() {
  [ "$(register sweep '&cold_start_sweep=true')" = 200 ] || return 1
  [ "$(json_field "$(curl -sf -H 'Host: sweep' "$P/")" Status)" = OK ] || return 1
  # stable window 6 s in this profile: back to zero within ~8 s of the last request
  local i=0
  while [ $i -lt 300 ]; do
    [ "$(curl -sf "$REG/v1/functions/sweep" | /usr/bin/python3 -c 'import json,sys; f=json.load(sys.stdin); print(f["ready"]+f["creating"])')" = 0 ] && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}
check "the cold_start_sweep profile returns to zero sandboxes after traffic stops" t_sweep_to_zero

t_bad_registrations() {
  local body code
  for body in "image=x&port_forwarding=80&port_forwarding=tcp|field 'name': required" \
    "name=UPPER&image=x&port_forwarding=80&port_forwarding=tcp|field 'name'" \
    "name=a%2Fb&image=x&port_forwarding=80&port_forwarding=tcp|field 'name'" \
    "name=ok&port_forwarding=80&port_forwarding=tcp|field 'image': required" \
    "name=ok&image=x&port_forwarding=0&port_forwarding=tcp|field 'port_forwarding'" \
    "name=ok&image=x&port_forwarding=70000&port_forwarding=tcp|field 'port_forwarding'" \
    "name=ok&image=x&port_forwarding=abc&port_forwarding=tcp|field 'port_forwarding'" \
    "name=ok&image=x&port_forwarding=80|expected two values" \
    "name=ok&image=x&port_forwarding=80&port_forwarding=sctp|expected protocol" \
    "name=ok&image=x&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=-1|field 'scaling_lower_bound'" \
    "name=ok&image=x&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=5&scaling_upper_bound=2|expected at most" \
    "name=ok&image=x&port_forwarding=80&port_forwarding=tcp&requested_cpu=lots|field 'requested_cpu'" \
    "name=ok&image=x&port_forwarding=80&port_forwarding=tcp&requested_memory=1e3|field 'requested_memory'"; do
    code=$(curl -s -o "$TAP_TMP/bad.out" -w '%{http_code}' -XPOST "$REG/registerService" -d "${body%%|*}")
    [ "$code" = 400 ] && grep -q "${body#*|}" "$TAP_TMP/bad.out" || { echo "$body -> $code $(cat "$TAP_TMP/bad.out")"; return 1; }
  done
  head -c 2000000 /dev/zero | tr '\0' a >"$TAP_TMP/huge"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect:' -XPOST "$REG/registerService" --data-binary @"$TAP_TMP/huge")
  [ "$code" = 413 ] || { echo "oversized: $code"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/check?name=ok")" = 404 ] # nothing registered
}
check "bad registrations: 400 naming the field (413 when oversized), nothing registered" t_bad_registrations

t_bad_peers() {
  local code
  code=$(curl -s -o "$TAP_TMP/bp" -w '%{http_code}' -XPOST "http://$CPI/v1/dataplanes" \
    -d '{"name":"dpx","api":"localhost:8081","proxy":"127.0.0.1:1"}')
  [ "$code" = 400 ] && grep -q "'localhost:8081': expected a numeric IP address" "$TAP_TMP/bp" || { cat "$TAP_TMP/bp"; return 1; }
  code=$(curl -s -o "$TAP_TMP/bp" -w '%{http_code}' -XPOST "http://$CPI/v1/workers" -d '{"name":"w2","address":"nowhere:1"}')
  [ "$code" = 400 ] || return 1
  # nothing changed (the 400 comes before any change): the CP is alive, w2 keeps its
  # address, dpx does not exist
  wait_status 'len([d for d in s["dataplanes"] if d["name"]=="dpx"]) == 0 and [w for w in s["workers"] if w["name"]=="w2"][0]["address"].startswith("127.0.0.1:")'
}
check "a data plane or worker registering a bad address gets 400 and changes nothing" t_bad_peers

t_unknown() {
  [ "$(curl -s -o "$TAP_TMP/u" -w '%{http_code}' -H 'Host: ghost' "$P/")" = 404 ] && grep -q "ghost" "$TAP_TMP/u"
}
check "an unknown function gets 404" t_unknown

# at_sandboxes FN N: the DP has sent N of FN's requests on to its sandboxes (its API)
at_sandboxes() {
  local v
  v=$(curl -sf "http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')/v1/functions" | /usr/bin/python3 -c \
    "import json,sys; print(sum(e['inFlight'] for f in json.load(sys.stdin) if f['name']=='$1' for e in f['endpoints']))")
  [ "$v" = "$2" ] || { echo "$1: $v at sandboxes, not $2"; return 1; }
}
t_sandbox_dies() {
  local code pid out
  curl -s -o "$TAP_TMP/die.out" -w '%{http_code}' -H 'Host: hello' -H 'requested_cpu: 3000' "$P/" >"$TAP_TMP/die.code" &
  local c=$!
  wait_status '[f for f in s["functions"] if f["name"]=="hello"][0]["ready"] >= 1' || return 1
  # the 3 s request is running in a sandbox now (the DP sent it on to one)
  poll_until 200 at_sandboxes hello 1 || return 1
  # kill every sandbox: the request in flight must get 502, not hang or an empty 200
  for pid in $(grep -l "$TAG" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    tr '\0' '\n' </proc/$pid/cmdline 2>/dev/null | grep -q dirigent-fn && kill -9 "$pid"
  done
  wait_bounded $c
  echo "in flight: $(cat "$TAP_TMP/die.code") $(cat "$TAP_TMP/die.out")"
  [ "$(cat "$TAP_TMP/die.code")" = 502 ] || return 1
  # it says why (the worker's report reached the DP through the CP's push), and so does the API
  grep -q "^function 'hello': sandbox .* killed by signal 9" "$TAP_TMP/die.out" || return 1
  curl -sf "$REG/v1/functions/hello" | /usr/bin/python3 -c 'import json,sys; f=json.load(sys.stdin)
sys.exit(0 if f["error_kind"] == "exit" and "killed by signal 9" in f["error"] else 1)' || return 1
  # the next request is served by a replacement
  code=$(curl -s -o "$TAP_TMP/next.out" -w '%{http_code}' -H 'Host: hello' "$P/")
  echo "next: $code $(cat "$TAP_TMP/next.out")"
  [ "$code" = 200 ] || return 1
  # a reason longer than any worker's (it would go to every DP and into 502s) is refused
  local long
  long=$(printf 'x%.0s' $(seq 300))
  out=$(curl -s -w ' %{http_code}' -XPOST "http://$CPI/v1/sandboxes/exited" \
    -d "{\"worker\":\"w1\",\"id\":\"none\",\"function\":\"hello\",\"reason\":\"$long\"}" | tr '\n' ' ')
  echo "long reason: $out"
  grep -q "field 'reason': expected at most 256 characters, got 300  400$" <<<"$out"
}
check "a sandbox that dies mid-request: 502 saying why (also in GET /v1/functions/NAME); the next request gets a replacement" t_sandbox_dies

t_dp_restart() {
  kill -9 "$DP_PID"; wait_bounded "$DP_PID" 2>/dev/null
  start_dp || return 1
  wait_status 'len(s["dataplanes"]) == 1 and s["dataplanes"][0]["proxy"].endswith("'"${P##*:}"'")' || return 1
  local out
  out=$(curl -sf -H 'Host: hello' "$P/") || return 1
  [ "$(json_field "$out" Function)" = hello ]
}
check "kill -9 and restart of the DP: it gets every function back; invocations work" t_dp_restart

t_worker_dies() {
  [ "$(register two '&scaling_lower_bound=2')" = 200 ] || return 1
  wait_status '[f for f in s["functions"] if f["name"]=="two"][0]["ready"] == 2' || return 1
  kill -9 "$PID_w1"; wait_bounded "$PID_w1" 2>/dev/null
  # after 3 missed heartbeats w1 is unschedulable and "two" is back to 2 sandboxes on w2
  wait_status '[w for w in s["workers"] if w["name"]=="w1"][0]["schedulable"] == False' || return 1
  wait_status '[f for f in s["functions"] if f["name"]=="two"][0]["ready"] == 2 and [w for w in s["workers"] if w["name"]=="w2"][0]["sandboxes"] >= 2' || return 1
  [ "$(json_field "$(curl -sf -H 'Host: two' "$P/")" Function)" = two ]
}
check "kill -9 of a worker: its sandboxes are replaced on the other after the heartbeat timeout" t_worker_dies

# metric URL NAME: the value of an unlabelled sample in URL/metrics (0 when there is none)
metric() { curl -sf "$1/metrics" | awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print 0}'; }
# the sandboxes the live worker w2 runs (its own API), sorted ids
w2_sandboxes() {
  curl -sf "http://127.0.0.1:$(port_of "$TAP_TMP/w2.log" 'listening on')/v1/sandboxes" |
    /usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(s["id"] for s in json.load(sys.stdin)["sandboxes"])))'
}
reconstructed() { awk "BEGIN {exit !($(metric "http://$CPI" dg_cp_reconstruction_seconds) > 0)}"; }
t_cp_restart() {
  # kill -9 of the CP: functions come back from sqlite, sandboxes from the workers, no duplicates
  local fns_before ids_before creates_before W2
  W2=http://127.0.0.1:$(port_of "$TAP_TMP/w2.log" 'listening on')
  # hello has a sandbox to rediscover (the one it had may have been on the worker killed above)
  [ "$(json_field "$(curl -sf -m 20 -H 'Host: hello' "$P/")" Function)" = hello ] || return 1
  wait_status '[f for f in s["functions"] if f["name"]=="hello"][0]["ready"] >= 1' || return 1
  fns_before=$(curl -sf "$REG/v1/functions" | /usr/bin/python3 -c 'import json,sys; print(sorted(f["name"] for f in json.load(sys.stdin)))')
  ids_before=$(w2_sandboxes)
  creates_before=$(metric "$W2" dg_worker_sandbox_creates_total)
  kill -9 "$CP_PID"; wait_bounded "$CP_PID" 2>/dev/null
  bg_start "$TAP_TMP/cp2.log" "$B/dirigent-cp" --port "${CPI##*:}" --registrationServer "${REG#http://}" --dataDir "$TAP_TMP/cpdata" \
    --heartbeatInterval 300ms --placementPolicy round-robin --traceOutputFolder ""
  CP_PID=$BG_PID
  wait_for_log "$TAP_TMP/cp2.log" 'registration on' || return 1
  answers_as "$CPI" /v1/status "$CP_PID" || return 1
  # w1 (dead since the check above, it cannot register again) is listed: restored from sqlite
  wait_status 'sorted(w["name"] for w in s["workers"]) == ["w1", "w2"] and len(s["dataplanes"]) == 1' || return 1
  # every function registered before is listed, without registering again
  [ "$(curl -sf "$REG/v1/functions" | /usr/bin/python3 -c 'import json,sys; print(sorted(f["name"] for f in json.load(sys.stdin)))')" = "$fns_before" ] || return 1
  [ "$(register hello)" = 409 ] || return 1
  # the workers' sandboxes are rediscovered (the reconstruction is over: its duration is shown),
  # not created again: the same ones on w2, no create by the new CP or on the worker
  poll_until 200 reconstructed || return 1
  wait_status '[f for f in s["functions"] if f["name"]=="hello"][0]["ready"] >= 1' || return 1
  [ "$(json_field "$(curl -sf -H 'Host: hello' "$P/")" Function)" = hello ] || return 1
  echo "w2's sandboxes before: $ids_before; after: $(w2_sandboxes)"
  [ -n "$ids_before" ] && [ "$(w2_sandboxes)" = "$ids_before" ] &&
    [ "$(metric "$W2" dg_worker_sandbox_creates_total)" = "$creates_before" ] &&
    [ "$(metric "http://$CPI" dg_cp_sandbox_creates_total)" = 0 ]
}
check "kill -9 of the CP: functions back from sqlite, sandboxes rediscovered from the workers, none created again" t_cp_restart

t_traces() {
  # written off the loop about once a second
  local i=0
  while [ $i -lt 60 ] && ! grep -q ',hello,' "$TAP_TMP/trace/proxy_trace.csv" 2>/dev/null; do
    sleep 0.05; i=$((i + 1))
  done
  head -2 "$TAP_TMP/trace/cold_start_trace.csv" "$TAP_TMP/trace/proxy_trace.csv"
  head -1 "$TAP_TMP/trace/cold_start_trace.csv" | grep -q '^time,service_name,container_id,success,image_fetch,sandbox_create,sandbox_start,network_setup,iptables,readiness_probe,data_plane_propagation,snapshot_creation,configure_monitoring,find_snapshot,db,other_worker_node$' &&
    grep -qE '^[0-9]+,hello,[^,]+,true,' "$TAP_TMP/trace/cold_start_trace.csv" &&
    # data_plane_propagation: from the worker's answer to the DPs' acknowledgement of the push
    awk -F, '$2 == "hello" && $4 == "true" && $11 > 0 {ok = 1} END {exit !ok}' "$TAP_TMP/trace/cold_start_trace.csv" &&
    head -1 "$TAP_TMP/trace/proxy_trace.csv" | grep -q '^time,service_name,container_id,get_metadata,add_deployment,cold_start,load_balancing,cc_throttling,proxying,serialization,persistence_layer,other$' &&
    grep -qE '^[0-9]+,hello,' "$TAP_TMP/trace/proxy_trace.csv"
}
check "cold-start and proxy traces in the original's CSV columns" t_traces

tap_done
