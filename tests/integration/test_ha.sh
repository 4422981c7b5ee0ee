#!/usr/bin/env bash
# Control-plane replicas (issue 6): Redis started by this test, three dirigent-cp replicas
# (persistence redis, raft election), one dirigent-dp and one dirigent-worker (process
# runtime) that know all three. One leader; followers forward the user API to it and refuse
# heartbeats naming it; kill -9 of the leader
# under warm load: a new leader, no failed warm request, every function still listed, a cold
# start after the failover works.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
TAG="DG_HA_TEST=$$"

plan 5
if ! command -v redis-server >/dev/null; then
  for i in 1 2 3 4 5; do echo "ok $i # SKIP needs redis-server"; done
  exit 0
fi
trap 'tap_cleanup; cleanup_sandboxes' EXIT
free_ports() { /usr/bin/python3 -c '
import socket
ss=[socket.socket() for _ in range(int(__import__("sys").argv[1]))]
[s.bind(("127.0.0.1",0)) for s in ss]
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
read -r RP A1 A2 A3 G1 G2 G3 F1 F2 F3 <<<"$(free_ports 10)"
# redis with a password (issue 14): in a 0600 file the CPs read (redis.passwordFile)
(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TAP_TMP/redis.pass" &&
  printf 'requirepass %s\n' "$(cat "$TAP_TMP/redis.pass")" >"$TAP_TMP/redis.conf")
bg_start "$TAP_TMP/redis.log" redis-server "$TAP_TMP/redis.conf" --port "$RP" --bind 127.0.0.1 --dir "$TAP_TMP" --save ""
for _ in $(seq 1 100); do REDISCLI_AUTH=$(cat "$TAP_TMP/redis.pass") redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
API=(127.0.0.1:$A1 127.0.0.1:$A2 127.0.0.1:$A3)
REGS=(127.0.0.1:$G1 127.0.0.1:$G2 127.0.0.1:$G3)
RAFT="127.0.0.1:$F1,127.0.0.1:$F2,127.0.0.1:$F3"
ALL="${API[0]},${API[1]},${API[2]}"
CPID=()
start_cp() { # start_cp ID (1..3)
  local i=$1
  bg_start "$TAP_TMP/cp$i.log" "$B/dirigent-cp" --port "${API[$((i - 1))]##*:}" \
    --registrationServer "${REGS[$((i - 1))]}" --persistence redis --redis.address "127.0.0.1:$RP" --redis.passwordFile "$TAP_TMP/redis.pass" \
    --replicas "$ALL" --raftAddresses "$RAFT" --replicaId "$i" --dataDir "$TAP_TMP/cp$i" \
    --heartbeatInterval 300ms --traceOutputFolder ""
  CPID[$i]=$BG_PID
}
for i in 1 2 3; do start_cp "$i"; done
bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
  --controlPlaneAddress "$ALL" --heartbeatInterval 300ms --coldStartTimeout 30s --traceOutputFolder ""
wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dp did not start"; exit 1; }
P=http://127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
bg_start "$TAP_TMP/w1.log" "$B/dirigent-worker" --port 0 --name w1 --controlPlaneAddress "$ALL" \
  --heartbeatInterval 300ms --processUser nobody
wait_for_log "$TAP_TMP/w1.log" 'w1: listening on' || { echo "Bail out! worker did not start"; exit 1; }

role() { curl -s -m 1 "http://$1/v1/status" | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["role"], j["leader"])' 2>/dev/null; }
leader_index() { # the index (1..3) of the replica that says it leads, skipping $1
  local i
  for i in 1 2 3; do
    [ "$i" = "${1:-0}" ] && continue
    [ "$(role "${API[$((i - 1))]}" | cut -d' ' -f1)" = leader ] && { echo "$i"; return 0; }
  done
  return 1
}
register() { # register REGADDR NAME
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "http://$1/registerService" \
    -d "name=$2&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64&env_vars=$TAG"
}

t_one_leader() {
  local i L=""
  for i in $(seq 1 100); do L=$(leader_index) && break; sleep 0.05; done
  [ -n "$L" ] || { for i in 1 2 3; do role "${API[$((i - 1))]}"; done; return 1; }
  LEADER=$L
  for i in 1 2 3; do
    [ "$(role "${API[$((i - 1))]}" | cut -d' ' -f2)" = "${API[$((L - 1))]}" ] || { role "${API[$((i - 1))]}"; return 1; }
  done
  # exactly one says it leads (and the ones answering are the replicas this test started)
  local leaders=0
  for i in 1 2 3; do
    answers_as "${API[$((i - 1))]}" /v1/status "${CPID[$i]}" || return 1
    [ "$(role "${API[$((i - 1))]}" | cut -d' ' -f1)" = leader ] && leaders=$((leaders + 1))
  done
  [ $leaders = 1 ] || { echo "$leaders replicas say they lead"; return 1; }
}
check "three replicas: exactly one leads, and every replica names it" t_one_leader

t_follower_forwards() {
  local f=$((LEADER % 3 + 1)) code
  # the user API on a follower is forwarded to the leader (answer relayed, leader named)
  code=$(curl -s -D "$TAP_TMP/h" -o "$TAP_TMP/b" -w '%{http_code}' -XPOST "http://${REGS[$((f - 1))]}/registerService" \
    -d "name=viaf&image=$FN&port_forwarding=80&port_forwarding=tcp&env_vars=$TAG")
  [ "$code" = 200 ] && grep -qi "^X-Dirigent-Leader: ${API[$((LEADER - 1))]}" "$TAP_TMP/h" || { echo "$code"; cat "$TAP_TMP/h" "$TAP_TMP/b"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://${REGS[$((f - 1))]}/v1/functions/viaf")" = 200 ] || return 1
  # the internal API (workers, data planes) is not forwarded: they follow the header
  code=$(curl -s -D "$TAP_TMP/h" -o "$TAP_TMP/b" -w '%{http_code}' -XPOST "http://${API[$((f - 1))]}/v1/workers" -d '{}')
  [ "$code" = 503 ] && grep -qi "^X-Dirigent-Leader: ${API[$((LEADER - 1))]}" "$TAP_TMP/h" &&
    grep -q "does not lead; the leader.s internal API is ${API[$((LEADER - 1))]}" "$TAP_TMP/b" || { echo "$code"; cat "$TAP_TMP/h" "$TAP_TMP/b"; return 1; }
  for i in 1 2 3 4 5; do [ "$(register "${REGS[$((LEADER - 1))]}" "fn$i")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }; done
  # the worker and the data plane found the leader (heartbeats follow X-Dirigent-Leader)
  wait_json "http://${REGS[$((LEADER - 1))]}/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' || return 1
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: fn1' "$P/")" Function)" = fn1 ]
}
check "a follower forwards registrations to the leader and refuses worker heartbeats naming it; worker and DP follow it; a cold start" t_follower_forwards

warm_done() { [ "$(grep -c . "$TAP_TMP/warm" 2>/dev/null)" -ge "$1" ]; }
t_failover() {
  local i NEW="" fails=0 n=0 before
  # warm load on fn1 through the DP, one request after the other until told to stop, while
  # the leader dies: some before, some while there is none, some after the new one leads
  rm -f "$TAP_TMP/stop"
  ( while [ ! -e "$TAP_TMP/stop" ]; do
      c=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H 'Host: fn1' "$P/"); echo "$c"; done ) >"$TAP_TMP/warm" &
  local load=$!
  poll_until 200 warm_done 5 || { touch "$TAP_TMP/stop"; return 1; }
  kill -9 "${CPID[$LEADER]}"
  before=$(grep -c . "$TAP_TMP/warm")
  for i in $(seq 1 300); do NEW=$(leader_index "$LEADER") && break; sleep 0.01; done
  # and ten more once the new leader is known
  [ -n "$NEW" ] && poll_until 400 warm_done $(($(grep -c . "$TAP_TMP/warm") + 10))
  touch "$TAP_TMP/stop"
  wait_bounded "$load"
  n=$(grep -c . "$TAP_TMP/warm"); fails=$(grep -vc '^200$' "$TAP_TMP/warm")
  echo "new leader: ${NEW:-none}; warm requests: $n ($before before the kill), failed: $fails"
  [ -n "$NEW" ] && [ "$fails" = 0 ] && [ "$n" -ge $((before + 10)) ] || return 1
  DEAD=$LEADER LEADER=$NEW
  # every function registered before is listed by the new leader
  [ "$(curl -sf "http://${REGS[$((NEW - 1))]}/v1/functions" | /usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(f["name"] for f in json.load(sys.stdin))))')" = "fn1 fn2 fn3 fn4 fn5 viaf" ]
}
check "kill -9 of the leader under warm load: a new leader, no failed warm request, every function listed" t_failover

t_cold_after() {
  [ "$(register "${REGS[$((LEADER - 1))]}" after)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  wait_json "http://${REGS[$((LEADER - 1))]}/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' || return 1
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: after' "$P/")" Function)" = after ] || return 1
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: fn2' "$P/")" Function)" = fn2 ]
}
check "after the failover: registrations and cold starts work (through the new leader)" t_cold_after

# A leader that stalls (SIGSTOP) past the election timeout is deposed while it sleeps; when it
# wakes it learns of the newer term, drops its registry (it starts afresh, same pid) and
# follows; the cluster keeps serving.
t_deposed() {
  local old=$LEADER pid=${CPID[$LEADER]} i NEW="" st
  # the replica killed above comes back first (a majority must remain without the leader)
  start_cp "$DEAD"
  wait_json "http://${API[$((DEAD - 1))]}/v1/status" 'j["role"] == "follower" and j["leader"] == "'"${API[$((old - 1))]}"'"' || return 1
  wait_json "http://${API[$((old - 1))]}/v1/status" 'j["role"] == "leader" and j["functions"] and j["workers"]' || return 1
  kill -STOP "$pid"
  for i in $(seq 1 300); do NEW=$(leader_index "$old") && break; sleep 0.01; done
  kill -CONT "$pid"
  [ -n "$NEW" ] || { echo "no new leader while $old slept"; return 1; }
  # the same process (its pid), now a follower of the new leader with an empty registry (it
  # led with functions and a worker before it slept)
  wait_json "http://${API[$((old - 1))]}/v1/status" 'j["pid"] == '"$pid"' and j["role"] == "follower" and j["leader"] == "'"${API[$((NEW - 1))]}"'" and j["functions"] == [] and j["workers"] == []' || return 1
  LEADER=$NEW
  [ "$(json_field "$(curl -sf -m 10 -H 'Host: fn3' "$P/")" Function)" = fn3 ] &&
    [ "$(register "${REGS[$((old - 1))]}" afterdepose)" = 200 ] # through the restarted follower
}
check "a stalled leader is deposed, drops its registry on waking (same pid) and follows; the cluster serves on" t_deposed

tap_done
