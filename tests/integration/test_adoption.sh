#!/usr/bin/env bash
# Adoption and worker restarts (issue 14, finding 1) through the real daemons: dirigent-cp
# (sqlite in the test's directory), dirigent-dp, one emulated dirigent-worker, and an impostor
# worker API (fake_worker.py), all on 127.0.0.1, ephemeral ports.
#   - An impostor registers as a worker listing a sandbox of `hello` at its own address: the CP
#     refuses it (logged, told to delete it), `hello`'s calls never reach it.
#   - A forged beat under the real worker's name with a new boot: the sandboxes the CP had
#     there are deleted on the worker, not orphaned.
#   - The legitimate adoption: the CP killed and restarted adopts the real worker's sandboxes
#     (none created again), and refuses what a restored impostor lists outside its subnet.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
SRC=${DG_SOURCE_DIR:-$(dirname "$0")/../..}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn

plan 4

trap 'tap_cleanup' EXIT

start_cp_dp --traceOutputFolder ""
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --runtime emulated \
  --fnBinary "$FN" --controlPlaneAddress "$CPI" --heartbeatInterval 300ms
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! worker did not start"; exit 1; }
W1=127.0.0.1:$(port_of "$TAP_TMP/w1.log" 'w1: listening on')
wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$REG/registerService" \
  -d "name=hello&image=$FN&port_forwarding=80&port_forwarding=tcp&scaling_lower_bound=1&scaling_upper_bound=1")" = 200 ] ||
  { echo "Bail out! registration"; exit 1; }
wait_json "$REG/v1/functions/hello" 'j["ready"] == 1' || { echo "Bail out! hello not ready"; exit 1; }

# the worker's ready sandboxes of `hello`, one id a line
worker_ids() {
  curl -sf "http://$W1/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)["sandboxes"] if s["state"] == "ready"]'
}

bg_start "$TAP_TMP/fake.out" /usr/bin/python3 "$SRC/tests/integration/fake_worker.py" "$TAP_TMP/fake.log" \
  '{"sandboxes":[{"id":"evil-2","function":"hello","state":"ready","endpoint":"10.9.9.9:80"}]}'
wait_for_log "$TAP_TMP/fake.out" 'fake worker on' || { echo "Bail out! fake worker"; exit 1; }
FAKE=127.0.0.1:$(port_of "$TAP_TMP/fake.out" 'fake worker on')

t_impostor() {
  local code
  code=$(curl -s -o "$TAP_TMP/beat.out" -w '%{http_code}' -XPOST "http://$CPI/v1/workers" -d \
    "{\"name\":\"impostor\",\"address\":\"$FAKE\",\"boot\":\"b1\",\"cpuMilli\":0,\"memoryMiB\":0,
      \"sandboxes\":[{\"id\":\"evil-1\",\"function\":\"hello\",\"endpoint\":\"$FAKE\"}]}")
  [ "$code" = 200 ] || { echo "beat: $code $(cat "$TAP_TMP/beat.out")"; return 1; }
  wait_for_log "$TAP_TMP/cp.log" "sandbox evil-1 at $FAKE listed by worker impostor refused: this control plane did not ask for it" || return 1
  # told to delete it
  wait_for_log "$TAP_TMP/fake.log" 'evil-1' || return 1
  grep -qE '^(POST /v1/sandboxes/delete .*evil-1|DELETE /v1/sandboxes/evil-1)' "$TAP_TMP/fake.log" ||
    { cat "$TAP_TMP/fake.log"; return 1; }
  # hello keeps its one sandbox; every call goes to the real one
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 1' || return 1
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -H 'Host: hello' -H 'Authorization: Bearer secret' "$P/")" = 200 ] || return 1
  done
  if grep -q '^GET / ' "$TAP_TMP/fake.log"; then echo "a call reached the impostor"; return 1; fi
}
check "an impostor worker listing a sandbox of hello at its address: refused, told to delete it, no call reaches it" t_impostor

t_new_boot() {
  local old new
  old=$(worker_ids)
  [ -n "$old" ] || { echo "no sandbox on w1"; return 1; }
  # a beat under w1's name, at w1's address, with a boot w1 never had
  [ "$(curl -s -o /dev/null -w '%{http_code}' -XPOST "http://$CPI/v1/workers" -d \
    "{\"name\":\"w1\",\"address\":\"$W1\",\"boot\":\"forged-boot\",\"cpuMilli\":4000,\"memoryMiB\":4096}")" = 200 ] || return 1
  wait_for_log "$TAP_TMP/cp.log" 'worker w1 restarted \(boot forged-boot' || return 1
  # the old sandbox is deleted on the worker (not orphaned)...
  local i=0
  while worker_ids | grep -qxF "$old"; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "$old still runs on w1"; return 1; }
    sleep 0.05
  done
  # ...and hello converges to one sandbox, the one the worker runs (w1's own next beat is a
  # "restart" again: what was made meanwhile goes the same way)
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 1 and j["creating"] == 0' || return 1
  i=0
  while :; do
    new=$(worker_ids)
    [ "$(wc -l <<<"$new")" = 1 ] && [ -n "$new" ] && [ "$new" != "$old" ] &&
      curl -sf "$REG/v1/functions/hello" | grep -q '"ready":1' && break
    i=$((i + 1)); [ $i -lt 200 ] || { echo "w1 runs: $new"; return 1; }
    sleep 0.05
  done
}
check "a beat under w1's name with a new boot: w1's old sandbox is deleted there, hello is replaced" t_new_boot

t_restart_adopts() {
  local before port reg
  # quiet first: no create or delete under way
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 1 and j["creating"] == 0' || return 1
  before=$(worker_ids)
  port=${CPI##*:}
  reg=${REGA##*:}
  kill -9 "$CP_PID"
  wait "$CP_PID" 2>/dev/null
  : >"$TAP_TMP/fake.log"
  bg_start "$TAP_TMP/cp2.log" "$B/dirigent-cp" --port "$port" --registrationServer "127.0.0.1:$reg" \
    --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms --traceOutputFolder ""
  CP_PID=$BG_PID
  wait_for_log "$TAP_TMP/cp2.log" "fn=hello adopted sandbox $before" 20 || return 1
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 1' || return 1
  # none created again: the worker runs the one it had, the CP counts one
  [ "$(worker_ids)" = "$before" ] || { echo "w1 runs $(worker_ids), had $before"; return 1; }
  wait_json "$REG/v1/status" 'sum(w["sandboxes"] for w in j["workers"]) == 1'
}
check "the CP killed and restarted adopts w1's sandbox (its first listing, in its subnet), creates none" t_restart_adopts

t_restart_refuses() {
  # the impostor was restored from the store too: its listing (an endpoint far from its host)
  # is refused although the CP is reconstructing
  wait_for_log "$TAP_TMP/cp2.log" "sandbox evil-2 at 10.9.9.9:80 listed by worker impostor refused: its endpoint is outside the worker's sandbox subnet" 20 || return 1
  wait_json "$REG/v1/functions/hello" 'j["ready"] == 1'
}
check "a restored impostor's listing with an endpoint outside its subnet: refused during the reconstruction" t_restart_refuses

tap_done
