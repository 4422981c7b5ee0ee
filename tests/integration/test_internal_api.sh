#!/usr/bin/env bash
# Issue 14 findings 9 and 12, as an attacker on the network would try them, against real
# daemons on ephemeral ports (unauthenticated: loopback without authTokenFile):
#   12: forged internal messages (a 10 KB or multi-line worker name, a data plane proxy
#       "junk;evil", a negative or huge inflight, a push with one bad item, a drain of ids that
#       are not the function's, a create with a bad name or env entry) are refused with 400
#       naming the field, and change nothing; the legitimate messages still work.
#   9:  a stale endpoint of function f whose address now serves function g's sandbox: the data
#       plane's call of f is refused by g's sandbox (it knows its own id) and goes to f's next
#       sandbox instead; g is served as before.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn

plan 14

code_of() { curl -s -o "$TAP_TMP/body" -w '%{http_code}' "$@"; }
# refused URL BODY TEXT [METHOD]: the answer is 400 and its body holds TEXT
refused() {
  local c
  c=$(code_of -X "${4:-POST}" "$1" --data-binary "$2")
  echo "$c $(head -c 400 "$TAP_TMP/body")"
  [ "$c" = 400 ] && grep -qF -- "$3" "$TAP_TMP/body"
}
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- the control plane's internal API --------------------------------------------------------
start_cp_dp
status() { curl -sf "http://$CPI/v1/status"; }

t_worker_names() {
  local big
  big=$(head -c 10240 /dev/zero | tr '\0' a)
  refused "http://$CPI/v1/workers" "{\"name\":\"$big\",\"address\":\"127.0.0.1:1\"}" \
    "worker: field 'name': expected a name (1..128 of A-Z a-z 0-9 . _ -" || return 1
  grep -qF '(10240 bytes)' "$TAP_TMP/body" || return 1
  refused "http://$CPI/v1/workers" '{"name":"w\nx","address":"127.0.0.1:1"}' \
    "got 'w?x'" || return 1
  refused "http://$CPI/v1/workers" '{"name":"w1","address":"127.0.0.1:1","sandboxCount":-1}' \
    "field 'sandboxCount'" || return 1
  # nothing registered
  status | /usr/bin/python3 -c 'import json,sys; sys.exit(1 if json.load(sys.stdin)["workers"] else 0)'
}
check "CP: a 10 KB, a multi-line worker name, a negative count: 400 naming the field, no worker" t_worker_names

t_dp_proxy() {
  refused "http://$CPI/v1/dataplanes" '{"name":"evil","api":"127.0.0.1:1","proxy":"junk;evil"}' \
    "dataplane: field 'proxy': expected HOST:PORT" || return 1
  refused "http://$CPI/v1/dataplanes" '{"name":"dp1","api":"127.0.0.1:0","proxy":"127.0.0.1:2"}' \
    "field 'api'" || return 1
  # the real data plane (registered by its own heartbeat) is the only one, unmoved
  wait_json "http://$CPI/v1/status" \
    "[d['name'] for d in j['dataplanes']] == ['dp1'] and j['dataplanes'][0]['proxy'] == '$DPA'"
}
check "CP: a data plane proxy 'junk;evil' or port 0: 400, the real data plane unmoved" t_dp_proxy

t_metrics() {
  refused "http://$CPI/v1/metrics" '{"dataplane":"dp1","functions":[{"name":"hello","inflight":-1}]}' \
    "metrics: field 'functions': item 0: field 'inflight': expected an integer 0..1000000000, got -1" || return 1
  refused "http://$CPI/v1/metrics" '{"dataplane":"dp1","functions":[{"name":"hello","inflight":1e300}]}' \
    "field 'inflight'" || return 1
  # an exit report of a sandbox the CP does not know: said, nothing changes
  refused "http://$CPI/v1/sandboxes/exited" '{"id":"x y","function":"hello"}' \
    "sandbox exit: field 'id': expected a sandbox id" || return 1
  [ "$(code_of -XPOST "http://$CPI/v1/sandboxes/exited" -d '{"id":"nope-1","function":"hello"}')" = 404 ] &&
    grep -qF "no sandbox 'nope-1' of function 'hello' here" "$TAP_TMP/body" || return 1
  # the legitimate report
  [ "$(code_of -XPOST "http://$CPI/v1/metrics" -d '{"dataplane":"dp1","functions":[{"name":"hello","inflight":0}]}')" = 200 ]
}
check "CP: a negative or 1e300 inflight, a bad sandbox id: 400; an unknown sandbox's exit: 404; a real report: 200" t_metrics

# ---- a data plane's API (standalone: no CP pushes over what the test sets) -----------------
bg_start "$TAP_TMP/dp2.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp2 --controlPlaneAddress '' \
  --traceOutputFolder '' --coldStartTimeout 20s --loadBalancingPolicy round-robin
wait_for_log "$TAP_TMP/dp2.log" 'proxy on' || { echo "Bail out! dirigent-dp did not start"; exit 1; }
P2=http://127.0.0.1:$(port_of "$TAP_TMP/dp2.log" 'proxy on')
A2=http://127.0.0.1:$(port_of "$TAP_TMP/dp2.log" 'api on')
dp_fns() { curl -sf "$A2/v1/functions" | /usr/bin/python3 -c \
  'import json,sys; print(" ".join(sorted(f["name"] + "=" + ",".join(e["id"] + "@" + e["address"] for e in f["endpoints"]) for f in json.load(sys.stdin))))'; }

# sandboxes: dirigent-fn processes that know their ids, as the worker starts them
start_sb() { # start_sb ID PORT LOG
  bg_start "$3" env DIRIGENT_SANDBOX_ID="$1" "$FN" --host 127.0.0.1 --port "$2"
  SB_PID=$BG_PID
  wait_for_log "$3" 'listening on'
}
PA=$(free_port)
start_sb wk-1-1 "$PA" "$TAP_TMP/sba.log" || { echo "Bail out! dirigent-fn did not start"; exit 1; }
SBA_PID=$SB_PID

t_push_all_or_nothing() {
  curl -sf -XPUT "$A2/v1/endpoints" -d "{\"functions\":[{\"name\":\"f\",\"endpoints\":[{\"id\":\"wk-1-1\",\"address\":\"127.0.0.1:$PA\"}]},{\"name\":\"h\",\"endpoints\":[]}]}" >/dev/null || return 1
  local before
  before=$(dp_fns)
  echo "before: $before"
  [ "$before" = "f=wk-1-1@127.0.0.1:$PA h=" ] || return 1
  # a full push (the CP's whole table) with one forged item: refused whole, f not removed,
  # h not redirected
  refused "$A2/v1/endpoints" "{\"full\":true,\"functions\":[{\"name\":\"h\",\"endpoints\":[{\"id\":\"x\",\"address\":\"127.0.0.1:$PA\"}]},{\"name\":\"g\",\"endpoints\":[{\"id\":\"y\",\"address\":\"junk;evil\"}]}]}" \
    "endpoints: field 'functions': item 1: field 'endpoints': item 0: field 'address': expected HOST:PORT" PUT || return 1
  grep -qF '(nothing applied)' "$TAP_TMP/body" && [ "$(dp_fns)" = "$before" ]
}
check "DP: a push with one forged item is refused whole (400 naming it) and changes nothing" t_push_all_or_nothing

t_dp_names() {
  refused "$A2/v1/functions/Bad_Name" '{}' "expected a function name in the path" PUT || return 1
  refused "$A2/v1/functions/h/endpoints" '{"endpoints":[{"id":"a\nb","address":"127.0.0.1:1"}]}' \
    "field 'endpoints': item 0: field 'id': expected a sandbox id" PUT || return 1
  [ "$(dp_fns)" = "f=wk-1-1@127.0.0.1:$PA h=" ]
}
check "DP: a bad function name, a bad sandbox id: 400, nothing added" t_dp_names

t_drain_unknown() {
  local c
  c=$(code_of -XPOST "$A2/v1/functions/h/drain" -d '{"ids":["nope"]}')
  echo "$c $(cat "$TAP_TMP/body")"
  [ "$c" = 404 ] && grep -qF "no sandbox nope in function 'h' (nothing drained)" "$TAP_TMP/body" || return 1
  # in a batch: each item says what happened to it
  curl -sf -XPOST "$A2/v1/drain" -d '{"items":[{"name":"f","ids":["nope","gone"]},{"name":"ghost","ids":["a"]}]}' >"$TAP_TMP/lines" || return 1
  cat "$TAP_TMP/lines"
  grep -q '"i":0,"status":404' "$TAP_TMP/lines" && grep -q '"i":1,"status":404' "$TAP_TMP/lines" &&
    [ "$(dp_fns)" = "f=wk-1-1@127.0.0.1:$PA h=" ]
}
check "DP: a drain of ids that are not the function's: 404 per item naming them, nothing drained" t_drain_unknown

t_f_served() {
  local out
  out=$(curl -sf -H 'Host: f' "$P2/") || return 1
  echo "$out"
  [ "$(json_field "$out" Function)" = f ]
}
check "DP: f's call reaches f's sandbox (the legitimate path)" t_f_served

# ---- finding 9: f's sandbox dies, its address goes to g's sandbox, the DP still lists it ------
f_queued() {
  curl -sf "$A2/v1/functions" | /usr/bin/python3 -c \
    'import json,sys; sys.exit(0 if [f["queued"] for f in json.load(sys.stdin) if f["name"] == "f"] == [1] else 1)'
}
invocations() { # invocations PORT: what the sandbox there counted (its /metrics)
  curl -sf "http://127.0.0.1:$1/metrics" | awk '$1 == "dg_fn_invocations_total" {print $2}'
}
t_reuse() {
  kill -9 "$SBA_PID" && wait "$SBA_PID" 2>/dev/null
  start_sb wk-1-2 "$PA" "$TAP_TMP/sbb.log" || return 1 # g's sandbox, at f's old address
  curl -sf -XPUT "$A2/v1/functions/g" -d '{}' >/dev/null &&
    curl -sf -XPUT "$A2/v1/functions/g/endpoints" -d "{\"endpoints\":[{\"id\":\"wk-1-2\",\"address\":\"127.0.0.1:$PA\"}]}" >/dev/null || return 1
  echo "DP lists: $(dp_fns)" # f's stale endpoint still there: the CP's removal never came
  # f's call: g's sandbox refuses it, the DP drops the stale endpoint and the call waits for
  # f's next sandbox (a cold start), which it then reaches
  curl -s -D "$TAP_TMP/f.h" -o "$TAP_TMP/f.out" -w '%{http_code}' -H 'Host: f' "$P2/" >"$TAP_TMP/f.code" &
  local c=$!
  poll_until 200 f_queued || return 1
  echo "DP lists: $(dp_fns)"
  [ "$(dp_fns)" = "f= g=wk-1-2@127.0.0.1:$PA h=" ] || return 1
  PC=$(free_port)
  start_sb wk-1-3 "$PC" "$TAP_TMP/sbc.log" || return 1
  curl -sf -XPUT "$A2/v1/functions/f/endpoints" -d "{\"endpoints\":[{\"id\":\"wk-1-3\",\"address\":\"127.0.0.1:$PC\"}]}" >/dev/null || return 1
  wait_bounded $c
  echo "f: $(cat "$TAP_TMP/f.code") $(cat "$TAP_TMP/f.out")"
  [ "$(cat "$TAP_TMP/f.code")" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/f.out")" Function)" = f ] &&
    [ "$(invocations "$PC")" = 1 ] || return 1
  grep -q "fn=f endpoint wk-1-1 at 127.0.0.1:$PA is stale (sandbox wk-1-2 answers there)" "$TAP_TMP/dp2.log" || return 1
  # g's sandbox ran none of f's calls
  [ "$(invocations "$PA")" = 0 ]
}
check "DP: f's call never runs in g's sandbox at f's reused address (421, then f's next sandbox)" t_reuse

t_g_served() {
  local out
  out=$(curl -sf -H 'Host: g' "$P2/") || return 1
  [ "$(json_field "$out" Function)" = g ] && [ "$(invocations "$PA")" = 1 ]
}
check "DP: g's calls reach g's sandbox as before" t_g_served

t_client_header() {
  # a client cannot aim at another sandbox: its own X-Dirigent-Sandbox is replaced
  local out
  out=$(curl -sf -H 'Host: g' -H 'X-Dirigent-Sandbox: wk-1-1' "$P2/") || return 1
  [ "$(json_field "$out" Function)" = g ]
}
check "DP: a client's own X-Dirigent-Sandbox is not forwarded" t_client_header

# ---- a worker's API (process runtime: sandboxes are dirigent-fn processes) ----------------------
bg_start "$TAP_TMP/wk.log" "$B/dirigent-worker" --workerNodeIp 127.0.0.1 --port 0 --name sec-wk \
  --controlPlaneAddress '' --dataDir "$TAP_TMP/wkdata" --processUser nobody
wait_for_log "$TAP_TMP/wk.log" 'listening on 127\.0\.0\.1:[0-9]+, runtime' ||
  { echo "Bail out! dirigent-worker did not start"; exit 1; }
WK="http://127.0.0.1:$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+, runtime' "$TAP_TMP/wk.log" | head -1 | sed 's/.*://; s/,.*//')"
TAG=dg-sec-$$
trap 'cleanup_sandboxes; tap_cleanup' EXIT
nsandboxes() { curl -sf "$WK/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sandboxes"]))'; }

t_worker_create() {
  refused "$WK/v1/sandboxes" "{\"function\":\"Bad Name\",\"image\":\"$FN\"}" \
    "sandbox: field 'function': expected a function name" || return 1
  refused "$WK/v1/sandboxes" "{\"function\":\"f\",\"image\":\"$FN\",\"env\":[\"LD_PRELOAD\"]}" \
    "sandbox: field 'env': item 0: expected NAME=value" || return 1
  [ "$(nsandboxes)" = 0 ] || return 1
  local c
  c=$(code_of -XDELETE "$WK/v1/sandboxes/nope")
  [ "$c" = 404 ] && grep -qF "sandbox 'nope' not found" "$TAP_TMP/body"
}
check "worker: a bad function name or env entry: 400, nothing created; an unknown delete: 404" t_worker_create

t_worker_id() {
  local out ep id c
  out=$(curl -sf -XPOST "$WK/v1/sandboxes" -d "{\"function\":\"f\",\"image\":\"$FN\",\"port\":80,\"env\":[\"DG_TAG=$TAG\",\"DIRIGENT_SANDBOX_ID=forged\"]}") || return 1
  echo "$out"
  ep=$(json_field "$out" endpoint) && id=$(json_field "$out" id) || return 1
  # the sandbox knows its id (the worker's, not the caller's): it refuses a call for another
  c=$(curl -s -D "$TAP_TMP/h" -o "$TAP_TMP/body" -w '%{http_code}' -H 'X-Dirigent-Sandbox: forged' "http://$ep/")
  echo "$c $(cat "$TAP_TMP/body")"
  [ "$c" = 421 ] && tr -d '\r' <"$TAP_TMP/h" | grep -qx "X-Dirigent-Sandbox: $id" || return 1
  out=$(curl -sf -H "X-Dirigent-Sandbox: $id" -H 'function: f' "http://$ep/") || return 1
  [ "$(json_field "$out" Function)" = f ]
}
check "worker: a sandbox gets its own id and refuses a call meant for another (421 with its id)" t_worker_id

t_unknown_delete_batch() {
  curl -sf -XPOST "$WK/v1/sandboxes/delete" -d '{"items":["nope","a b"]}' >"$TAP_TMP/lines" || return 1
  cat "$TAP_TMP/lines"
  grep -q '"i":0,"status":404' "$TAP_TMP/lines" && grep -q '"i":1,"status":400' "$TAP_TMP/lines" &&
    grep -qF "expected a sandbox id" "$TAP_TMP/lines"
}
check "worker: a batch delete answers per item (unknown: 404, not an id: 400)" t_unknown_delete_batch

t_cp_still_works() {
  # after all that, the CP still lists only the real data plane and no worker
  wait_json "http://$CPI/v1/status" "[d['name'] for d in j['dataplanes']] == ['dp1'] and j['workers'] == []"
}
check "CP: after the forged messages, its tables hold only what the real daemons registered" t_cp_still_works

tap_done
