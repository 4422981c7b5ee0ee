#!/usr/bin/env bash
# A function whose sandboxes cannot start: dirigent-cp, dirigent-dp and one dirigent-worker
# (process runtime) on ephemeral ports. The worker's reason reaches the requests waiting on
# the data plane at once (503 naming it, long before their 60 s queue deadline), the JSON
# API, the DP's API and the CLI; a create that works clears it.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
CLI=$B/dirigent
TAG="DG_CREATE_ERROR_TEST=$$"
REASON="cannot start '$B/nonexistent-fn' for 'bad': no such file or directory"

plan 8

trap 'tap_cleanup; cleanup_sandboxes' EXIT

# the DP's queue deadline (60 s) far above what the answer may take: a hang fails through
# curl's --max-time
start_cp_dp --traceOutputFolder ""
DPA=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 \
  --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --processUser nobody \
  --processAllowedDirs "$B,$TAP_TMP"
wait_for_log "$TAP_TMP/w1.log" 'listening on' || { echo "Bail out! worker did not start"; exit 1; }

wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME IMAGE
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$2&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&env_vars=$TAG"
}
invoke() { # invoke NAME OUT: prints the status; the body goes to OUT
  curl -s --max-time 20 -o "$2" -w '%{http_code}' -H "Host: $1" "$P/"
}
# python over the CP's JSON for one function (as f)
fn_check() { # fn_check NAME EXPR
  curl -sf "$REG/v1/functions/$1" | /usr/bin/python3 -c "import json,sys; f=json.load(sys.stdin); assert ($2), f"
}

t_answered() {
  [ "$(register bad $B/nonexistent-fn)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$DPA/v1/functions" '[f for f in j if f["name"]=="bad"]' || return 1
  local i pids=() code
  for i in 1 2 3; do # three waiting at once: every one gets the reason
    invoke bad "$TAP_TMP/bad.$i" >"$TAP_TMP/bad.$i.code" &
    pids+=($!)
  done
  wait_bounded "${pids[@]}"
  for i in 1 2 3; do
    code=$(cat "$TAP_TMP/bad.$i.code")
    echo "$i: $code $(cat "$TAP_TMP/bad.$i")"
    [ "$code" = 503 ] && grep -qF "function 'bad' cannot start: " "$TAP_TMP/bad.$i" &&
      grep -qF "$REASON" "$TAP_TMP/bad.$i" || return 1
  done
}
check "requests waiting for a sandbox that cannot start get 503 with the worker's reason" t_answered

t_api() {
  fn_check bad 'f["state"] == "failing" and "'"$REASON"'" in f["error"] and f["error_worker"] == "w1" and f["ready"] == 0 and f["error_age_ms"] >= 0 and f["error_at_ms"] > 0' || return 1
  curl -sf "$REG/v1/functions" | /usr/bin/python3 -c \
    "import json,sys; f=[f for f in json.load(sys.stdin) if f['name']=='bad'][0]; assert \"$REASON\" in f['error'], f" || return 1
  # and the data plane shows what it was told
  curl -sf "$DPA/v1/functions" | /usr/bin/python3 -c \
    "import json,sys; f=[f for f in json.load(sys.stdin) if f['name']=='bad'][0]; assert \"$REASON\" in f['error'] and f['queued'] == 0, f"
}
check "the JSON APIs (CP list and one, DP list) show the error, the worker and the state 'failing'" t_api

t_cli() {
  local out
  out=$("$CLI" --cp "$REGA" function get bad) || return 1
  echo "$out"
  grep -qE '^bad +failing +0 ' <<<"$out" &&
    grep -qE "^  error: .*$REASON \(worker w1, [0-9]+ s ago\)$" <<<"$out" || return 1
  out=$("$CLI" --cp "$REGA" status) || return 1
  echo "$out"
  grep -qE '^bad +failing ' <<<"$out" && grep -qF "$REASON (worker w1," <<<"$out"
}
check "dirigent function get and status show the state and an error line" t_cli

t_later() {
  # a request arriving after the error queues as usual, triggers a new attempt and is
  # answered by that attempt's failure
  local code
  code=$(invoke bad "$TAP_TMP/later")
  echo "$code $(cat "$TAP_TMP/later")"
  [ "$code" = 503 ] && grep -qF "function 'bad' cannot start: " "$TAP_TMP/later" && grep -qF "$REASON" "$TAP_TMP/later"
}
check "a later request is answered by the next attempt's failure, again with the reason" t_later

t_good() {
  [ "$(register good "$FN")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$DPA/v1/functions" '[f for f in j if f["name"]=="good"]' || return 1
  local code
  code=$(invoke good "$TAP_TMP/good")
  echo "$code $(cat "$TAP_TMP/good")"
  [ "$code" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/good")" Function)" = good ] || return 1
  fn_check good 'f["error"] is None and f["state"] == "ready" and "error_worker" not in f' || return 1
  # the failing one is unchanged by it
  fn_check bad 'f["state"] == "failing"'
}
check "a working function next to it works and has no error" t_good

t_fixed() {
  # a path that does not exist yet: fails, then the executable appears and the retry works
  local later=$TAP_TMP/later-fn code i
  [ "$(register fixed "$later")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$DPA/v1/functions" '[f for f in j if f["name"]=="fixed"]' || return 1
  code=$(invoke fixed "$TAP_TMP/fixed")
  echo "before: $code $(cat "$TAP_TMP/fixed")"
  [ "$code" = 503 ] && grep -qF "cannot start '$later' for 'fixed'" "$TAP_TMP/fixed" || return 1
  ln -s "$FN" "$later" || return 1
  # a create already in flight when the link appeared may still fail: try a few times
  for i in 1 2 3; do
    code=$(invoke fixed "$TAP_TMP/fixed")
    echo "after ($i): $code $(cat "$TAP_TMP/fixed")"
    [ "$code" = 200 ] && break
  done
  [ "$code" = 200 ] || return 1
  fn_check fixed 'f["error"] is None and f["state"] == "ready"' || return 1
  wait_json "$DPA/v1/functions" '[f for f in j if f["name"]=="fixed" and f["error"] is None and f["endpoints"]]'
}
check "once a create works the error is cleared (CP and DP) and requests are served" t_fixed

# metric URL SAMPLE: the value of the sample (name with its labels) in URL/metrics, 0 if none
metric() { curl -sf "$1/metrics" | awk -v n="$2" '$1 == n {print $2; f = 1} END {if (!f) print 0}'; }
t_counted() {
  local cf cc wf br bq
  cf=$(metric "http://$CPI" dg_cp_sandbox_create_failures_total)
  cc=$(metric "http://$CPI" dg_cp_sandbox_creates_total)
  wf=$(metric "http://127.0.0.1:$(port_of "$TAP_TMP/w1.log" 'listening on')" dg_worker_sandbox_create_failures_total)
  br=$(metric "$DPA" 'dg_dp_requests_total{function="bad"}')
  bq=$(metric "$DPA" 'dg_dp_queue_depth{function="bad"}')
  echo "CP: $cf failed, $cc created; worker: $wf failed; DP: $br requests for bad, $bq queued"
  # bad failed at least twice (the first three requests, the later one), fixed at least once;
  # good and fixed were created; every failure was the worker's; the DP took the four
  # requests for bad and answered them all (none left queued)
  [ "$cf" -ge 3 ] && [ "$cc" -ge 2 ] && [ "$wf" = "$cf" ] && [ "$br" = 4 ] && [ "$bq" = 0 ]
}
check "the CP's and the worker's metrics count the failed and the working creates; the DP's the requests it answered" t_counted

t_bulk_validation() {
  # a malformed error field in a push is refused for that item and changes nothing
  local code
  code=$(curl -s -o "$TAP_TMP/put" -w '%{http_code}' -XPUT "$DPA/v1/functions/good/endpoints" \
    -d '{"endpoints":[],"error":42}')
  echo "$code $(cat "$TAP_TMP/put")"
  [ "$code" = 400 ] && grep -qF "field 'error': expected string, got integer" "$TAP_TMP/put" &&
    wait_json "$DPA/v1/functions" '[f for f in j if f["name"]=="good" and f["endpoints"] and f["error"] is None]'
}
check "the DP refuses an 'error' that is not a string (400) and keeps the list" t_bulk_validation

tap_done
