#!/usr/bin/env bash
# The original's shipped config files (tests/data/original-configs, copies of Go Dirigent's
# cmd/*/config*.yaml) load in the corresponding daemon: every key of the original is accepted
# with a "FILE:LINE: KEY: ..." warning naming what it became or why it is ignored
# (lib/config_compat.c), while a key in neither set still fails naming file and line. Then a
# cluster starts from three of them (ports overridden to ephemeral ones on 127.0.0.1).
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
S=${DG_SOURCE_DIR:-$(dirname "$0")/../..}
O=$S/tests/data/original-configs

plan 9
trap tap_cleanup EXIT

# load PROG FILE: --print-config of FILE; exit 0, at least one warning, and nothing on stderr
# but "PROG: warning: FILE:LINE: KEY: ..." lines
load() {
  local prog=$1 f=$2 base
  base=$(basename "$f" .yaml)
  if ! DAEMON_PORT=10010 "$B/$prog" --config "$f" --print-config >"$TAP_TMP/$base.out" \
    2>"$TAP_TMP/$base.err"; then
    echo "# $prog --config $f failed:"; sed 's/^/#   /' "$TAP_TMP/$base.err"; return 1
  fi
  [ -s "$TAP_TMP/$base.err" ] || { echo "# $f: no warnings"; return 1; }
  if grep -vqE "^$prog: warning: $f:[0-9]+: [A-Za-z.]+: " "$TAP_TMP/$base.err"; then
    echo "# $f: unexpected stderr:"; grep -vE "^$prog: warning: $f:[0-9]+: " \
      "$TAP_TMP/$base.err" | sed 's/^/#   /'; return 1
  fi
}

# load_all PROG DIR: every file of DIR loads
load_all() {
  local n=0 f
  for f in "$O/$2"/*.yaml; do load "$1" "$f" || return 1; n=$((n + 1)); done
  [ $n -ge 8 ] || { echo "# only $n files in $O/$2"; return 1; }
}
check "every master_node config loads in dirigent-cp with warnings" load_all dirigent-cp master_node
check "every data_plane config loads in dirigent-dp with warnings" load_all dirigent-dp data_plane
check "every worker_node config loads in dirigent-worker with warnings" \
  load_all dirigent-worker worker_node

# has FILE-BASE REGEX...: the effective config (.out) or the warnings (.err) match each
has() {
  local b=$1 r; shift
  for r in "$@"; do
    grep -qE -- "$r" "$TAP_TMP/$b.out" "$TAP_TMP/$b.err" || { echo "# $b lacks: $r"; return 1; }
  done
}
t_mapped() {
  has config_cluster_raft_1 '^logLevel: "debug"$' '^persistence: "redis"$' \
    'config_cluster_raft_1.yaml:5: verbosity: the original.s key; using logLevel: debug$' \
    "config_cluster_raft_1.yaml:8: persistence: 'true' is the original's value; using persistence: redis" \
    'config_cluster_raft_1.yaml:19: profiler: ignored: ' &&
    has config_r3 '^persistence: "none"$' '^registrationServer: "127.0.0.1:9091"$' &&
    has config_cluster '^controlPlaneAddress: \["10.0.1.2:9090"\]$' \
      'config_cluster.yaml:5: criType: the original.s key; using runtime: oci \(Firecracker is not available' \
      'config_cluster.yaml:14: firecracker: ignored: Firecracker is not available' &&
    has config_async '^controlPlaneAddress: \["127.0.0.1:9090"\]$' \
      '^async: true$' '^portProxyRead: 8082$' '^numberRetries: 3$' \
      'config_async.yaml:10: persistRequests: ignored: asynchronous requests and results are always kept' &&
    has config_cluster_fake_worker '^runtime: "emulated"$' '^port: 10010$'
}
check "the original's keys map to ours (verbosity, persistence, criType, split addresses)" t_mapped

t_unknown() {
  { cat "$O/worker_node/config.yaml"; printf '\nfirecrackerKernal: typo\n'; } >"$TAP_TMP/typo.yaml"
  local rc=0
  "$B/dirigent-worker" --config "$TAP_TMP/typo.yaml" --print-config >/dev/null \
    2>"$TAP_TMP/typo.err" || rc=$?
  [ $rc = 2 ] || { echo "# exit $rc"; return 1; }
  grep -qF "dirigent-worker: $TAP_TMP/typo.yaml:15: unknown key 'firecrackerKernal'" \
    "$TAP_TMP/typo.err" || { sed 's/^/#   /' "$TAP_TMP/typo.err"; return 1; }
  ! grep -q warning "$TAP_TMP/typo.err" # a failed load warns about nothing
}
check "a key in neither set still fails with file:line" t_unknown

t_placeholder() {
  local rc=0
  env -u DAEMON_PORT "$B/dirigent-worker" --config "$O/worker_node/config_cluster_fake_worker.yaml" \
    --print-config >/dev/null 2>"$TAP_TMP/ph.err" || rc=$?
  [ $rc = 2 ] && grep -qF "config_cluster_fake_worker.yaml:4: port: '\${DAEMON_PORT}' is a placeholder the original's scripts filled in: set DAEMON_PORT" "$TAP_TMP/ph.err" ||
    { echo "# exit $rc"; sed 's/^/#   /' "$TAP_TMP/ph.err"; return 1; }
}
check "the fake worker's \${DAEMON_PORT} without DAEMON_PORT names the variable" t_placeholder

# A cluster from the original's files; only ports, addresses and directories are overridden.
bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --config "$O/master_node/config.yaml" --port 0 \
  --registrationServer 127.0.0.1:0 --dataDir "$TAP_TMP/cpdata" --traceOutputFolder "$TAP_TMP" \
  --heartbeatInterval 300ms
t_cp() {
  wait_for_log "$TAP_TMP/cp.log" 'registration on' || return 1
  grep -q "verbosity: the original's key; using logLevel: debug" "$TAP_TMP/cp.log"
}
check "dirigent-cp runs from master_node/config.yaml" t_cp
CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
REG=http://127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --config "$O/data_plane/config.yaml" --portProxy 0 \
  --portGRPC 0 --controlPlaneAddress "$CPI" --traceOutputFolder "$TAP_TMP" --heartbeatInterval 300ms
check "dirigent-dp runs from data_plane/config.yaml" wait_for_log "$TAP_TMP/dp.log" 'proxy on'
DAEMON_PORT=0 bg_start "$TAP_TMP/wk.log" "$B/dirigent-worker" \
  --config "$O/worker_node/config_cluster_fake_worker.yaml" --workerNodeIp 127.0.0.1 \
  --controlPlaneAddress "$CPI" --name orig-fake --heartbeatInterval 300ms
WK_PID=$BG_PID
# the emulated runtime's shared dirigent-fn ends with a clean stop of its worker only: SIGTERM
# the worker (and wait for it) before tap.sh's SIGKILLs
stop_worker() {
  kill -TERM "$WK_PID" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$WK_PID" 2>/dev/null || break; sleep 0.05; done
  tap_cleanup
}
trap stop_worker EXIT
t_registered() {
  wait_for_log "$TAP_TMP/wk.log" 'listening on' || return 1
  wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1'
}
check "the fake worker (emulated runtime) and the data plane register with the CP" t_registered
tap_done
