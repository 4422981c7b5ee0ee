#!/usr/bin/env bash
# The control plane's state across restarts (sqlite): registrations, bound updates and deletes
# survive kill -9; a registration is answered only once stored, and a store that cannot write
# (a full disk) gets 503 naming the reason and registers nothing; persistence none forgets.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
FN=$B/dirigent-fn
DATA=$TAP_TMP/cpdata

plan 6

start_cp() { # start_cp LOG [flags]
  local log=$1; shift
  bg_start "$log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" "$@"
  CP_PID=$BG_PID
  wait_for_log "$log" 'registration on' || return 1
  REG=http://127.0.0.1:$(port_of "$log" 'registration on')
}
register() {
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$FN&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=64${2:-}"
}
names() { curl -sf "$REG/v1/functions" | /usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(f["name"] for f in json.load(sys.stdin))))'; }
kill_cp() { kill -9 "$CP_PID"; wait_bounded "$CP_PID" 2>/dev/null; return 0; }

t_survives() {
  start_cp "$TAP_TMP/cp1.log" --dataDir "$DATA" || return 1
  local i
  for i in 1 2 3 4 5; do [ "$(register "fn$i" "&env_vars=K$i=V$i&program_args=--x")" = 200 ] || return 1; done
  curl -sf -XPUT "$REG/v1/functions/fn2" -d '{"scaling_upper_bound":7}' >/dev/null || return 1
  curl -sf -XDELETE "$REG/v1/functions/fn3" >/dev/null || return 1
  kill_cp
  start_cp "$TAP_TMP/cp2.log" --dataDir "$DATA" || return 1
  [ "$(names)" = "fn1 fn2 fn4 fn5" ] || { names; return 1; }
  [ "$(json_field "$(curl -sf "$REG/v1/functions/fn2")" scaling_upper_bound)" = 7 ] || return 1
  [ "$(json_field "$(curl -sf "$REG/v1/functions/fn1")" requested_memory)" = 64 ] || return 1
  [ "$(register fn1)" = 409 ] && [ "$(register fn3)" = 200 ] || return 1
  curl -sf "http://127.0.0.1:$(port_of "$TAP_TMP/cp2.log" 'internal api on')/metrics" | grep -q '^dg_cp_reconstruction_seconds ' || return 1
  kill_cp
}
check "kill -9 of the CP: registrations, a bound update and a delete are all as they were" t_survives

t_delete_during_recon() {
  # a restored worker that accepts connections and never answers: the new CP's reconstruction
  # waits for its listing (3 s deadline); a delete meanwhile would miss sandboxes listed later
  /usr/bin/python3 -c 'import socket,sys,time
s=socket.socket(); s.bind(("127.0.0.1",0)); s.listen(64)
print(s.getsockname()[1], flush=True); time.sleep(60)' >"$TAP_TMP/silent.port" &
  local silent=$! port i code
  for i in $(seq 1 100); do port=$(cat "$TAP_TMP/silent.port"); [ -n "$port" ] && break; sleep 0.05; done
  [ -n "$port" ] || { kill "$silent"; return 1; }
  start_cp "$TAP_TMP/cp8.log" --dataDir "$TAP_TMP/cpdata8" || { kill "$silent"; return 1; }
  local cpi=127.0.0.1:$(port_of "$TAP_TMP/cp8.log" 'internal api on')
  curl -sf -XPOST "http://$cpi/v1/workers" \
    -d "{\"name\":\"silent\",\"address\":\"127.0.0.1:$port\",\"cpuMilli\":1000,\"memoryMiB\":1024}" >/dev/null &&
    [ "$(register gone)" = 200 ] || { kill "$silent"; kill_cp; return 1; }
  kill_cp
  start_cp "$TAP_TMP/cp9.log" --dataDir "$TAP_TMP/cpdata8" || { kill "$silent"; return 1; }
  code=$(curl -s -o "$TAP_TMP/del.out" -w '%{http_code}' -XDELETE "$REG/v1/functions/gone")
  echo "during: $code $(cat "$TAP_TMP/del.out")"
  [ "$code" = 503 ] && grep -q "reconstructing" "$TAP_TMP/del.out" && [ "$(names)" = "gone" ] ||
    { kill "$silent"; kill_cp; return 1; }
  # once the reconstruction's deadline passed, the delete goes through
  poll_until 200 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' -XDELETE '$REG/v1/functions/gone')\" = 200 ]" ||
    { kill "$silent"; kill_cp; return 1; }
  [ -z "$(names)" ] || { kill "$silent"; kill_cp; return 1; }
  kill "$silent"; wait_bounded "$silent" 2>/dev/null
  kill_cp
}
check "a delete while a restarted CP reconstructs: 503 naming why, then deleted once it is done" t_delete_during_recon

t_concurrent() {
  start_cp "$TAP_TMP/cp3.log" --dataDir "$TAP_TMP/cpdata3" || return 1
  local i pids=()
  for i in $(seq 1 40); do register "c$i" >/dev/null & pids+=($!); done
  # the same name twice at once: exactly one wins
  for i in 1 2 3; do
    curl -s -o /dev/null -w '%{http_code}\n' -XPOST "$REG/registerService" \
      -d "name=twin&image=$FN&port_forwarding=80&port_forwarding=tcp" >"$TAP_TMP/twin.$i" & pids+=($!)
  done
  wait_bounded "${pids[@]}"
  [ "$(cat "$TAP_TMP"/twin.* | sort | tr '\n' ' ')" = "200 409 409 " ] || { cat "$TAP_TMP"/twin.*; return 1; }
  kill_cp
  start_cp "$TAP_TMP/cp4.log" --dataDir "$TAP_TMP/cpdata3" || return 1
  [ "$(names | wc -w)" = 41 ] || { names; return 1; }
  kill_cp
}
check "40 registrations at once (group commits) and a name registered thrice at once: all kept, one twin" t_concurrent

t_full_disk() {
  local small=$TAP_TMP/small
  mkdir -p "$small" && mount -t tmpfs -o size=256k tmpfs "$small" || return 1
  start_cp "$TAP_TMP/cp5.log" --dataDir "$small/cp" || { umount "$small"; return 1; }
  local i code="" big
  big=$(head -c 3000 /dev/zero | tr '\0' a)
  for i in $(seq 1 400); do
    code=$(register "full$i" "&env_vars=PAD=$big")
    [ "$code" = 200 ] || break
  done
  echo "stopped at $i with $code: $(cat "$TAP_TMP/reg.out")"
  local ok=1
  [ "$code" = 503 ] && grep -q "not registered: the store failed (sqlite" "$TAP_TMP/reg.out" || ok=0
  # nothing half-registered: the refused one is not listed
  [ $ok = 1 ] && ! names | grep -qw "full$i" || ok=0
  kill_cp
  umount -l "$small"
  [ $ok = 1 ]
}
if [ "$(id -u)" = 0 ]; then
  check "a store that cannot write: 503 naming the reason, nothing registered" t_full_disk
else
  skip "a store that cannot write: 503 naming the reason, nothing registered" "needs root to mount a small tmpfs"
fi

t_none() {
  start_cp "$TAP_TMP/cp6.log" --persistence none --dataDir "$TAP_TMP/nodata" || return 1
  [ "$(register gone)" = 200 ] || return 1
  kill_cp
  start_cp "$TAP_TMP/cp7.log" --persistence none --dataDir "$TAP_TMP/nodata" || return 1
  [ "$(names)" = "" ] && [ ! -e "$TAP_TMP/nodata/cp.sqlite" ]
}
check "persistence none: a restart forgets, nothing written" t_none


t_nested_dirs() {
  # a dataDir and a trace folder whose parents do not exist yet (a fresh clone's data/local/...)
  # are made, parents and all; one that cannot be made is named
  local d=$TAP_TMP/new/a/b out rc=0
  start_cp "$TAP_TMP/cp8.log" --dataDir "$d/data" --traceOutputFolder "$d/trace" || return 1
  [ "$(register nest)" = 200 ] && [ -s "$d/data/cp.sqlite" ] && [ -d "$d/trace" ] || return 1
  kill_cp
  : >"$TAP_TMP/file"
  out=$(timeout 10 "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --traceOutputFolder "" \
    --dataDir "$TAP_TMP/file/data" 2>&1) || rc=$?
  echo "$out (exit $rc)"
  [ $rc != 0 ] && grep -q "dataDir '$TAP_TMP/file/data': cannot create directory $TAP_TMP/file/data: Not a directory" <<<"$out"
}
check "a dataDir and trace folder are made with their parents; one that cannot be made is named" t_nested_dirs

tap_done
