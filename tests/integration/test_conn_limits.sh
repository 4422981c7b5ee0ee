#!/usr/bin/env bash
# Connection exhaustion (issue 14, finding 6): a control plane whose open-files limit is low
# (300) is flooded with connections to its registration listener; the flood is capped per
# client and per listener (503 naming the cap) and the internal listener, with a budget of its
# own, keeps answering /health. Slow request bodies: tests/integration/test_http_server.c.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
SRC=${DG_SOURCE_DIR:-$(dirname "$0")/../..}
FLOOD=$SRC/tests/integration/conn_flood.py

plan 5

# RLIMIT_NOFILE 300 (soft and hard): automatic caps 64 per listener, 32 per client
bg_start "$TAP_TMP/cp.log" bash -c 'ulimit -n 300 && exec "$@"' cp "$B/dirigent-cp" --port 0 \
  --registrationServer 127.0.0.1:0 --dataDir "$TAP_TMP/cpdata" --persistence none
CP_PID=$BG_PID
wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REGP=$(port_of "$TAP_TMP/cp.log" 'registration on')

flood() { # flood NAME N SRC_IP: start a flood to the registration port, wait for its counts
  bg_start "$TAP_TMP/$1.out" /usr/bin/python3 "$FLOOD" 127.0.0.1 "$REGP" "$2" "$3"
  wait_for_log "$TAP_TMP/$1.out" '^answer=' 40 >/dev/null
}
count() { sed -n "s/.*$2=\([0-9]*\).*/\1/p" "$TAP_TMP/$1.out" | head -1; }

t_per_client() {
  flood f1 400 127.0.0.1 || return 1
  cat "$TAP_TMP/f1.out"
  [ "$(count f1 open)" -le 32 ] && [ "$(count f1 refused)" -ge 368 ] &&
    grep -q '^answer=HTTP/1.1 503 .*too many connections from this client (http.maxConnsPerClient)' "$TAP_TMP/f1.out"
}
check "400 connections from one client: at most 32 held, the rest 503 naming maxConnsPerClient" t_per_client

t_other_client() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --interface 127.0.0.2 "http://127.0.0.1:$REGP/v1/functions")
  echo "code $code"
  [ "$code" != 000 ] && [ "$code" != 503 ]
}
check "another client is still served by the registration listener" t_other_client

t_listener_cap() {
  flood f2 40 127.0.0.2 && flood f3 40 127.0.0.3 && flood f4 40 127.0.0.4 || return 1
  cat "$TAP_TMP"/f[234].out
  local held=$(($(count f1 open) + $(count f2 open) + $(count f3 open) + $(count f4 open)))
  echo "held $held"
  [ "$held" -le 64 ] &&
    grep -qh '^answer=HTTP/1.1 503 .*too many connections to this server (http.maxConns)' "$TAP_TMP"/f[234].out
}
check "floods from several clients: at most 64 held by the listener, then 503 naming maxConns" t_listener_cap

t_health() {
  [ "$(json_field "$(curl -s "http://$CPI/health")" status)" = ok ] && curl -sf "http://$CPI/metrics" |
    grep -E '^dg_http_refused_connections' | tee /dev/stderr | grep -q '^dg_http_refused_connections 0$'
}
check "the internal listener answers /health during the flood (its own budget, nothing refused)" t_health

t_log() {
  grep -q 'too many connections from this client' "$TAP_TMP/cp.log" && kill -0 "$CP_PID"
}
check "the CP logs the refusals and is still running" t_log

tap_done
