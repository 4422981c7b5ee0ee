#!/usr/bin/env bash
# Quotas and registration strictness (issue 14, findings 3, 5 and 14) through the real daemons:
# dirigent-cp with small quotas (maxFunctions 3, maxSandboxesPerFunction 3,
# maxSandboxesPerWorker 4, maxSandboxes 5), dirigent-dp and emulated workers, all on ephemeral
# ports. Each attack is refused with a status and a message naming the field and the limit and
# changes nothing; the legitimate path next to it still works.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn

plan 9

trap 'tap_cleanup' EXIT

start_cp_dp --traceOutputFolder "" --placementPolicy round-robin --maxFunctions 3 \
  --maxSandboxesPerFunction 3 --maxSandboxesPerWorker 4 --maxSandboxes 5
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --runtime emulated \
  --fnBinary "$FN" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! worker did not start"; exit 1; }
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME [EXTRA FORM FIELDS]: prints the status, the body in reg.out
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp${2:-}"
}
put() { # put NAME JSON
  curl -s -o "$TAP_TMP/put.out" -w '%{http_code}' -XPUT "$REG/v1/functions/$1" -d "$2"
}
expect() { # expect CODE GOT FILE TEXT: the status and the message
  [ "$2" = "$1" ] && grep -qF "$4" "$3" || { echo "got $2: $(cat "$3")"; echo "want $1: $4"; return 1; }
}

t_print_config() {
  local out
  out=$("$B/dirigent-cp" --print-config) || return 1
  for k in maxFunctions maxSandboxesPerFunction maxSandboxesPerWorker maxSandboxes maxCreatesPerWorkerPerSecond; do
    grep -q "^$k:" <<<"$out" || { echo "no $k in --print-config"; return 1; }
  done
  grep -q '^maxSandboxesPerWorker: 500$' <<<"$out" && grep -q '^maxCreatesPerWorkerPerSecond: 300$' <<<"$out"
}
check "--print-config shows the quotas with their defaults" t_print_config

# Finding 5: PUT {"scaling_lower_bound":2147483647} started ~1,900 containers in a minute.
t_put_bound() {
  [ "$(register hello)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  expect 400 "$(put hello '{"scaling_lower_bound":2147483647}')" "$TAP_TMP/put.out" \
    "field 'scaling_lower_bound': 2147483647 exceeds maxSandboxesPerFunction 3 (control plane config)" || return 1
  expect 400 "$(put hello '{"scaling_upper_bound":10}')" "$TAP_TMP/put.out" \
    "field 'scaling_upper_bound': 10 exceeds maxSandboxesPerFunction 3" || return 1
  # nothing changed: its bounds as registered, nothing created
  local j
  j=$(curl -sf "$REG/v1/functions/hello") || return 1
  [ "$(json_field "$j" scaling_lower_bound)" = 0 ] && [ "$(json_field "$j" scaling_upper_bound)" = 2147483647 ] &&
    [ "$(json_field "$j" desired)" = 0 ] || { echo "$j"; return 1; }
  # the legitimate update: within the quota, its sandboxes come
  [ "$(put hello '{"scaling_lower_bound":3,"scaling_upper_bound":3}')" = 200 ] || { cat "$TAP_TMP/put.out"; return 1; }
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 3'
}
check "PUT bounds above maxSandboxesPerFunction: 400 naming the field and the limit, nothing changed; within it: 3 ready" t_put_bound

t_register_bound() {
  expect 400 "$(register big '&scaling_lower_bound=4')" "$TAP_TMP/reg.out" \
    "registration: function 'big' not registered: field 'scaling_lower_bound': 4 exceeds maxSandboxesPerFunction 3" || return 1
  expect 400 "$(register big '&scaling_upper_bound=1000')" "$TAP_TMP/reg.out" \
    "field 'scaling_upper_bound': 1000 exceeds maxSandboxesPerFunction 3" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/big")" = 404 ]
}
check "a registration with a bound above maxSandboxesPerFunction: 400, not registered" t_register_bound

# The worker's quota: hello holds 3 of w1's 4; two more of `two` find room for one.
t_worker_quota() {
  [ "$(register two '&scaling_lower_bound=2')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/functions/two" 'j["ready"] == 1 and j["desired"] == 2 and j["error_kind"] == "unschedulable" and "maxSandboxesPerWorker 4" in j["error"]' || return 1
  wait_json "$REG/v1/status" 'j["workers"][0]["sandboxes"] == 4'
}
check "maxSandboxesPerWorker: placement stops at 4 on w1, the function says why" t_worker_quota

# A second worker has room; the cluster's quota (5) gives `two` its second sandbox and no more.
t_cluster_quota() {
  bg_start "$TAP_TMP/w2.log" "$B/dirigent-worker" --port 0 --name w2 --runtime emulated \
    --fnBinary "$FN" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms
  wait_for_log "$TAP_TMP/w2.log" 'w2: listening on' || return 1
  wait_json "$REG/v1/functions/two" 'j["ready"] == 2' || return 1
  [ "$(register three '&scaling_lower_bound=1')" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "$REG/v1/functions/three" 'j["state"] == "unschedulable" and "maxSandboxes 5" in j["error"]' || return 1
  local code
  code=$(curl -s -m 20 -o "$TAP_TMP/inv" -w '%{http_code}' -H "Host: three" "$P/")
  [ "$code" = 503 ] && grep -q "maxSandboxes 5" "$TAP_TMP/inv" || { echo "$code $(cat "$TAP_TMP/inv")"; return 1; }
  # the legitimate path: hello's sandboxes answer
  [ "$(curl -s -m 20 -o /dev/null -w '%{http_code}' -H "Host: hello" "$P/")" = 200 ]
}
check "maxSandboxes: the cluster stops at 5; a request to a function left out gets 503 naming the quota" t_cluster_quota

t_max_functions() {
  expect 429 "$(register four)" "$TAP_TMP/reg.out" \
    "registration: function 'four' not registered: maxFunctions 3 reached (control plane config)" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/four")" = 404 ] || return 1
  # room again once one is deleted
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$REG/v1/functions/three")" = 200 ] || return 1
  [ "$(register four)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
}
check "maxFunctions: the fourth registration gets 429 naming the limit; after a delete it registers" t_max_functions

# Finding 14: a second name=, port_forwarding=...&udp, and JSON "name":123.
t_strict_form() {
  expect 400 "$(register five '&name=evil')" "$TAP_TMP/reg.out" "field 'name': given 2 times, expected once" || return 1
  expect 400 "$(register five '&udp')" "$TAP_TMP/reg.out" "field 'udp': not a registration field, and without a value" || return 1
  local code
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=five&image=$FN&port_forwarding=80&port_forwarding=udp")
  expect 400 "$code" "$TAP_TMP/reg.out" "field 'port_forwarding': expected protocol 'tcp'" || return 1
  for n in five evil; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/$n")" = 404 ] || { echo "$n registered"; return 1; }
  done
}
check "form: a second name=, a bare '&udp', protocol udp: 400 naming the field, nothing registered" t_strict_form

t_strict_json() {
  local code
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/v1/functions" \
    -d "{\"name\":123,\"image\":\"$FN\",\"port_forwarding\":[80,\"tcp\"]}")
  expect 400 "$code" "$TAP_TMP/reg.out" "field 'name': expected a string, got integer" || return 1
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/123")" = 404 ] || return 1
  code=$(curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/v1/functions" \
    -d "{\"name\":\"a\",\"name\":\"b\",\"image\":\"$FN\",\"port_forwarding\":[80,\"tcp\"]}")
  expect 400 "$code" "$TAP_TMP/reg.out" "duplicate" || return 1
  # the CLI's JSON still registers (after making room)
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XDELETE "$REG/v1/functions/four")" = 200 ] || return 1
  "$B/dirigent" --cp "$REGA" function deploy viacli --image "$FN" --max 2 >"$TAP_TMP/cli.out" 2>&1 ||
    { cat "$TAP_TMP/cli.out"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/viacli")" = 200 ]
}
check "JSON: \"name\":123 and a duplicate key: 400 naming the field; the CLI's registration works" t_strict_json

# Finding 3: a metrics report for an unknown data plane is answered 404 naming it (it printed
# freed memory; the sanitizer run of this test catches a regression).
t_metrics_404() {
  local code
  code=$(curl -s -o "$TAP_TMP/m.out" -w '%{http_code}' -XPOST "http://$CPI/v1/metrics" \
    -d '{"dataplane":"ghost-dp-name","functions":[{"name":"hello","inflight":1000000}]}')
  expect 404 "$code" "$TAP_TMP/m.out" "metrics: data plane 'ghost-dp-name' is not registered" || return 1
  # nothing scaled: hello keeps its 3
  wait_json "$REG/v1/functions/hello" 'j["desired"] == 3 and j["ready"] == 3'
}
check "a metrics report from an unknown data plane: 404 naming it, nothing scaled" t_metrics_404

tap_done
