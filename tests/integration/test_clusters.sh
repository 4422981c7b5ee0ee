#!/usr/bin/env bash
# Two local clusters on one host never harm each other (issue 12): `dirigent up --state-dir A`
# on the default ports and `dirigent up --state-dir B --port-base 18080` side by side, both with
# the oci runtime (real containers). B's start, restart and stop leave A's sandbox serving; a
# second `up` on A's state dir is refused (`already running (pid N)`), one on A's ports names
# the busy port; neither touches A. After Ctrl-C of both, nothing of either remains.
# Root with crun only (skipped otherwise). Uses the default ports: not run in parallel.
set -u
SRC=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
. "$SRC/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
D=$B/dirigent

if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null || [ ! -d "$B/images/dirigent-fn" ]; then
  echo "1..0 # SKIP needs root, crun and the dirigent-fn image"
  exit 0
fi

plan 7

A_DIR=$TAP_TMP/a
B_DIR=$TAP_TMP/b
BEFORE=$TAP_TMP/before
host_snapshot >"$BEFORE"

# start_up NAME ARGS...: `dirigent up` in its own process group (a terminal's foreground job);
# its group id in PG_<NAME>
start_up() {
  local name=$1; shift
  setsid "$D" up --runtime oci "$@" >"$TAP_TMP/$name.log" 2>&1 &
  TAP_PIDS+=("$!")
  eval "PG_$name=$!"
}
# ctrl_c NAME: SIGINT to the group, as Ctrl-C does; waits until all of it has exited
ctrl_c() {
  local pg
  eval "pg=\${PG_$1}"
  kill -INT -- "-$pg" 2>/dev/null || return 1
  for _ in $(seq 300); do kill -0 -- "-$pg" 2>/dev/null || return 0; sleep 0.1; done
  echo "$1 still running 30 s after Ctrl-C"
  return 1
}
clusters_cleanup() {
  for g in "${PG_a:-}" "${PG_b:-}"; do
    [ -n "$g" ] && kill -0 -- "-$g" 2>/dev/null && { kill -INT -- "-$g"; sleep 3; kill -9 -- "-$g"; }
  done 2>/dev/null
  tap_cleanup
}
trap clusters_cleanup EXIT

hello_on() { curl -sf -m 30 -H 'Host: hello' "http://127.0.0.1:$1/"; }

A_MACHINE=
t_a() {
  start_up a --state-dir "$A_DIR"
  wait_for_log "$TAP_TMP/a.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:8080/$" 90 || return 1
  local out
  out=$(hello_on 8080) || return 1
  echo "$out"
  A_MACHINE=$(json_field "$out" MachineName)
  [ -n "$A_MACHINE" ]
}
check "cluster A (default ports, oci): hello answers from a container" t_a

t_b() {
  start_up b --state-dir "$B_DIR" --port-base 18080
  wait_for_log "$TAP_TMP/b.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:18080/$" 90 || return 1
  local out
  out=$(hello_on 18080) || return 1
  echo "$out"
  [ "$(json_field "$out" Function)" = hello ] && [ "$(json_field "$out" MachineName)" != "$A_MACHINE" ] || return 1
  # A's sandbox survived B's start-up (its cleanup touched only B's own)
  [ "$(json_field "$(hello_on 8080)" MachineName)" = "$A_MACHINE" ]
}
check "cluster B (--port-base 18080, oci) beside A: both serve, A's sandbox untouched" t_b

# refused_up REGEX UP-ARGS...: that `up` exits non-zero saying REGEX, and A still serves from
# the same sandbox
refused_up() {
  local re=$1 out rc=0
  shift
  out=$(timeout 30 "$D" up --runtime oci "$@" 2>&1) || rc=$?
  echo "$out"
  [ $rc != 0 ] && grep -qE "$re" <<<"$out" &&
    [ "$(json_field "$(hello_on 8080)" MachineName)" = "$A_MACHINE" ]
}
check "a second up on A's state dir: 'already running (pid N)', non-zero, A untouched" \
  refused_up "already running \(pid [0-9]+\)" --state-dir "$A_DIR"
check "an up on A's ports names the busy port, exits non-zero, A untouched" \
  refused_up "port (8079|8080|8081|9090|9091|10010)" --state-dir "$TAP_TMP/c"

t_b_restart() {
  ctrl_c b || return 1
  start_up b --state-dir "$B_DIR" --port-base 18080
  wait_for_log "$TAP_TMP/b.log" "^ready: curl -H 'Host: hello' http://127.0.0.1:18080/$" 90 || return 1
  [ "$(json_field "$(hello_on 18080)" Function)" = hello ] &&
    [ "$(json_field "$(hello_on 8080)" MachineName)" = "$A_MACHINE" ]
}
check "B stopped and started again: B serves, A's sandbox still the same" t_b_restart

t_stop() {
  ctrl_c b && ctrl_c a || return 1
  PG_a= PG_b=
  if grep -l 'second signal' "$A_DIR"/logs/*.log "$B_DIR"/logs/*.log; then return 1; fi
  return 0
}
check "Ctrl-C stops both; no daemon saw a second signal" t_stop

check "nothing of either cluster remains (processes, mounts, netns, links, cgroups, nft tables)" host_nothing_left "$BEFORE"
