#!/usr/bin/env bash
# persistence: redis (issue 6): a Redis server started by this test on 127.0.0.1; the CP keeps
# functions in it with fullPersistence (AOF, fsync always). A CP killed and restarted gets them
# back; Redis killed with kill -9 and restarted loses no registration; while it is down a
# registration gets 503 naming it and nothing is registered; the CP reconnects by itself.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn

plan 5
if ! command -v redis-server >/dev/null; then
  for i in 1 2 3 4 5; do echo "ok $i # SKIP needs redis-server"; done
  exit 0
fi
RP=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RDIR=$TAP_TMP/redis
mkdir -p "$RDIR"
start_redis() {
  bg_start "$TAP_TMP/redis.log" redis-server --port "$RP" --bind 127.0.0.1 --dir "$RDIR" --save "" \
    --appendonly yes --appendfsync always
  REDIS_PID=$BG_PID
  for _ in $(seq 1 100); do redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG && return 0; sleep 0.05; done
  return 1
}
start_cp() { # start_cp LOG
  bg_start "$1" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" \
    --persistence redis --redis.address "127.0.0.1:$RP" --redis.fullPersistence
  CP_PID=$BG_PID
  wait_for_log "$1" 'registration on' || return 1
  REG=http://127.0.0.1:$(port_of "$1" 'registration on')
}
register() {
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp"
}
names() { curl -sf "$REG/v1/functions" | /usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(f["name"] for f in json.load(sys.stdin))))'; }
start_redis || { echo "Bail out! redis did not start"; exit 1; }

t_register() {
  start_cp "$TAP_TMP/cp1.log" || return 1
  local i
  for i in 1 2 3 4 5; do [ "$(register "r$i")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }; done
  [ "$(redis-cli -p "$RP" HLEN dirigent:function)" = 5 ] || return 1
  [ "$(redis-cli -p "$RP" CONFIG GET appendfsync | tail -1)" = always ] &&
    [ "$(redis-cli -p "$RP" CONFIG GET appendonly | tail -1)" = yes ]
}
check "registrations go to Redis (HSET dirigent:function), with AOF and fsync always" t_register

t_cp_restart() {
  kill -9 "$CP_PID"; wait_bounded "$CP_PID" 2>/dev/null
  start_cp "$TAP_TMP/cp2.log" || return 1
  # (the CP has no other store here: --persistence redis, and Redis holds the five)
  [ "$(names)" = "r1 r2 r3 r4 r5" ] && [ "$(redis-cli -p "$RP" HLEN dirigent:function)" = 5 ]
}
check "kill -9 of the CP: every function back from Redis" t_cp_restart

t_redis_down() {
  kill -9 "$REDIS_PID"; wait_bounded "$REDIS_PID" 2>/dev/null
  local code
  code=$(register down)
  [ "$code" = 503 ] && grep -q "function 'down' not registered: the store failed (redis 127.0.0.1:$RP" "$TAP_TMP/reg.out" ||
    { echo "$code $(cat "$TAP_TMP/reg.out")"; return 1; }
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$REG/v1/functions/down")" = 404 ]
}
check "Redis down: a registration gets 503 naming Redis, nothing registered" t_redis_down

t_redis_restart() {
  start_redis || return 1
  # nothing lost by the kill -9 (AOF, fsync always); the CP reconnects by itself
  [ "$(redis-cli -p "$RP" HKEYS dirigent:function | sort | tr '\n' ' ')" = "r1 r2 r3 r4 r5 " ] || return 1
  local i code
  for i in $(seq 1 60); do
    code=$(register r6)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] && [ "$(redis-cli -p "$RP" HLEN dirigent:function)" = 6 ] && [ "$(names)" = "r1 r2 r3 r4 r5 r6" ]
}
check "Redis killed and restarted with its AOF: no registration lost; the CP reconnects" t_redis_restart

t_password() {
  # issue 14: a Redis with a password (in a 0600 file; protected mode on) refuses a client
  # without it; the CP sends it (redis.passwordFile); a wrong one stops the CP naming the key
  local rp2 code
  rp2=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TAP_TMP/redis.pass" &&
    printf 'requirepass %s\n' "$(cat "$TAP_TMP/redis.pass")" >"$TAP_TMP/redis2.conf" &&
    echo wrong >"$TAP_TMP/wrong.pass") || return 1
  mkdir -p "$TAP_TMP/redis2"
  bg_start "$TAP_TMP/redis2.log" redis-server "$TAP_TMP/redis2.conf" --port "$rp2" --bind 127.0.0.1 \
    --protected-mode yes --dir "$TAP_TMP/redis2" --save ""
  for _ in $(seq 1 100); do REDISCLI_AUTH=$(cat "$TAP_TMP/redis.pass") redis-cli -p "$rp2" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done
  redis-cli -p "$rp2" HLEN dirigent:function 2>&1 | grep -q NOAUTH || { echo "redis answers without the password"; return 1; }
  timeout 20 "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" \
    --persistence redis --redis.address "127.0.0.1:$rp2" --redis.passwordFile "$TAP_TMP/wrong.pass" >"$TAP_TMP/cpw.log" 2>&1
  code=$?
  [ $code -ne 0 ] && [ $code -ne 124 ] && grep -q 'AUTH (redis.passwordFile)' "$TAP_TMP/cpw.log" ||
    { echo "wrong password: rc $code"; tail -3 "$TAP_TMP/cpw.log"; return 1; }
  bg_start "$TAP_TMP/cp3.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" \
    --persistence redis --redis.address "127.0.0.1:$rp2" --redis.passwordFile "$TAP_TMP/redis.pass"
  wait_for_log "$TAP_TMP/cp3.log" 'registration on' || return 1
  REG=http://127.0.0.1:$(port_of "$TAP_TMP/cp3.log" 'registration on')
  [ "$(register p1)" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  [ "$(REDISCLI_AUTH=$(cat "$TAP_TMP/redis.pass") redis-cli -p "$rp2" HKEYS dirigent:function)" = p1 ]
}
check "Redis with a password: refused without it (NOAUTH); a CP with a wrong redis.passwordFile stops naming it; with the right one it registers" t_password

tap_done
