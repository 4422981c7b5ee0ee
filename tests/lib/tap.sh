# tap.sh: TAP output and clean-up for shell integration tests. Source it, call
# `plan N`, then `ok COND-EXIT-STATUS "name"` style checks through `check`.
# Every process started with `bg_start` is killed on exit, also when a test fails.

TAP_N=0
TAP_FAILED=0
TAP_PIDS=()
TAP_TMP=$(mktemp -d /tmp/dg-test.XXXXXX)

tap_cleanup() {
  # SIGTERM first: a daemon removes what it made on the host (sandboxes, run dirs); SIGKILL
  # what is still running 3 s later
  local p alive=() i any
  for p in "${TAP_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && alive+=("$p"); done
  for i in $(seq 30); do
    any=
    for p in "${alive[@]}"; do kill -0 "$p" 2>/dev/null && { any=1; break; }; done
    [ -z "$any" ] && break
    sleep 0.1
  done
  for p in "${alive[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${DG_KEEP_TMP:-}" ] && echo "# kept $TAP_TMP" || rm -rf "$TAP_TMP"
}
trap tap_cleanup EXIT

plan() { echo "1..$1"; }

# Every curl of a test has a bound: --max-time 30 unless the call gives its own -m/--max-time
# (curl takes an option's last value). Exported, so `bash -c` in a check gets it too.
curl() { command curl --max-time 30 "$@"; }
export -f curl

# skip "name" "why": a TAP skip (counts in the plan; `ok N - name # SKIP why`)
skip() {
  TAP_N=$((TAP_N + 1))
  echo "ok $TAP_N - $1 # SKIP $2"
}

# poll_until TRIES command...: run the command (quietly) every 50 ms until it exits 0, at most
# TRIES times; on giving up, runs it once more with its output (for the check's log) and fails.
# The bound keeps a broken daemon from hanging the test; the verdict is the state polled.
poll_until() {
  local n=$1 i=0
  shift
  while [ $i -lt "$n" ]; do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.05
    i=$((i + 1))
  done
  echo "gave up after $n polls: $*"
  "$@"
  return 1
}

# wait_bounded PID...: `wait` for children of this shell, with a bound: polls (50 ms apart,
# WAIT_TRIES times, 1200 unless set) for each to exit first; one that does not is killed
# (SIGKILL), said, and the result is 124. Else the exit status of the last, as `wait` gives.
wait_bounded() {
  local pid n=${WAIT_TRIES:-1200} i st rc=0
  for pid in "$@"; do
    i=0
    while [ $i -lt "$n" ]; do
      st=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
      [ -z "$st" ] || [ "$st" = Z ] && break
      sleep 0.05
      i=$((i + 1))
    done
    if [ $i -ge "$n" ]; then
      echo "pid $pid still running after $n polls: killed"
      kill -9 "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null
      rc=124
    else
      wait "$pid"
      rc=$?
    fi
  done
  return $rc
}

# answers_as ADDR PATH PID: the daemon answering GET http://ADDR/PATH (a CP's /v1/status, any
# daemon's /health) names PID as its own: the process the test started, not another one that
# holds the port
answers_as() {
  local got auth=()
  # a 4th argument: a file with the credential to send (a cluster with authTokenFile)
  [ $# -ge 4 ] && auth=(-H "Authorization: Bearer $(cat "$4")")
  got=$(command curl -s --max-time 5 "${auth[@]}" "http://$1$2" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("pid"))' 2>/dev/null)
  [ "$got" = "$3" ] && return 0
  echo "http://$1$2 answers as pid ${got:-none}, not $3"
  return 1
}

# check "name" command...   (passes when the command exits 0)
check() {
  local name=$1; shift
  TAP_N=$((TAP_N + 1))
  if "$@" >"$TAP_TMP/check.out" 2>&1; then
    echo "ok $TAP_N - $name"
  else
    echo "not ok $TAP_N - $name"
    sed "s/^/# /" "$TAP_TMP/check.out" | head -n 20
    TAP_FAILED=$((TAP_FAILED + 1))
  fi
}

# bg_start LOGFILE command... : start in the background, remember the pid in BG_PID
bg_start() {
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  TAP_PIDS+=("$BG_PID")
}

# wait_for_log FILE REGEX [TIMEOUT_S]: poll until the file has a matching line
wait_for_log() {
  local f=$1 re=$2 t=${3:-10} i=0
  while [ $i -lt $((t * 20)) ]; do
    grep -qE "$re" "$f" 2>/dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "timed out waiting for /$re/ in $f:"; cat "$f"
  return 1
}

# json_field JSON KEY: print one top-level field of a JSON object
json_field() {
  /usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# cleanup_sandboxes: kill processes left by a killed worker, found by $TAG in their environment
# (process sandboxes get the test's TAG through env_vars)
cleanup_sandboxes() {
  local p
  for p in $(grep -l "$TAG" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do kill -9 "$p" 2>/dev/null; done
}

# port_of LOG TEXT: the port of the first "TEXT host:port" in a daemon's log
port_of() { grep -oE "$2 [0-9.]+:[0-9]+" "$1" | head -1 | sed 's/.*://'; }

# start_cp_dp [CP ARGS...]: a control plane and a data plane of $B on ephemeral ports (the CP
# with its state in $TAP_TMP/cpdata and the extra ARGS, logs cp.log and dp.log); sets CPI (the
# CP's internal API), REGA and REG (its registration server), DPA and P (the DP's proxy).
# Bails out when one does not start.
# cluster_key: a cluster key for this test ($TAP_TMP/cluster.key) and credentials derived from it
# ($TAP_TMP/operator.token, $TAP_TMP/cp.token); KEY_ARGS (--authTokenFile KEY) is what each
# daemon is given, and start_cp_dp gives it to its CP and DP.
KEY_ARGS=()
cluster_key() {
  "$B/dirigent" token init --key "$TAP_TMP/cluster.key" >/dev/null 2>&1 &&
    "$B/dirigent" token create --key "$TAP_TMP/cluster.key" --role operator --name test \
      --out "$TAP_TMP/operator.token" >/dev/null &&
    "$B/dirigent" token create --key "$TAP_TMP/cluster.key" --role cp --name test \
      --out "$TAP_TMP/cp.token" >/dev/null || { echo "Bail out! dirigent token failed"; exit 1; }
  KEY_ARGS=(--authTokenFile "$TAP_TMP/cluster.key")
}

start_cp_dp() {
  local optoken=()
  [ ${#KEY_ARGS[@]} -gt 0 ] && optoken=("$TAP_TMP/operator.token")
  bg_start "$TAP_TMP/cp.log" "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --dataDir "$TAP_TMP/cpdata" --heartbeatInterval 300ms "${KEY_ARGS[@]}" "$@"
  wait_for_log "$TAP_TMP/cp.log" 'registration on' || { echo "Bail out! cp did not start"; exit 1; }
  CP_PID=$BG_PID
  CPI=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'internal api on')
  REGA=127.0.0.1:$(port_of "$TAP_TMP/cp.log" 'registration on')
  REG=http://$REGA
  bg_start "$TAP_TMP/dp.log" "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --coldStartTimeout 60s --traceOutputFolder "" "${KEY_ARGS[@]}"
  wait_for_log "$TAP_TMP/dp.log" 'proxy on' || { echo "Bail out! dp did not start"; exit 1; }
  DP_PID=$BG_PID
  DPA=127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'proxy on')
  P=http://$DPA
  answers_as "$CPI" /v1/status "$CP_PID" "${optoken[@]}" &&
    answers_as "127.0.0.1:$(port_of "$TAP_TMP/dp.log" 'api on')" /health "$DP_PID" ||
    { echo "Bail out! the daemons answering are not the ones started"; exit 1; }
}

# wait_json URL PYEXPR [TRIES]: poll (50 ms apart, 200 tries) until the JSON at URL makes the
# python expression over it (j) true
wait_json() {
  local i=0
  while [ $i -lt "${3:-200}" ]; do
    curl -sf -m 5 "$1" | /usr/bin/python3 -c "import json,sys; j=json.load(sys.stdin); sys.exit(0 if ($2) else 1)" 2>/dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "timed out waiting for $2 at $1:"; curl -s "$1"; echo; return 1
}

tap_done() { exit $((TAP_FAILED > 0)); }

# host_snapshot: what the host has that a cluster could leave behind (links, network namespaces,
# mounts, cgroups, nftables tables, dirigent/redis/haproxy processes), one sorted line each.
# host_nothing_left BEFORE: fails, listing them, when the host now has lines that snapshot BEFORE
# did not, less the hugetlb hierarchy crun needs on hybrid cgroups (mounted once per boot,
# PLATFORM.md), and the machine's own process_api cgroups (the sandboxing of the shell that
# runs the tests, which come and go with its commands, not with ours). Of the dirigent programs run from a build directory (.../build*/dirigent-*) only
# this test's own count: those under a directory in HOST_OWN (':'-separated; default $B, the
# test's build directory), not another tree's that started meanwhile on a shared machine; nor
# the processes of a benchmark running beside (configs under their /tmp/dg-bench-* directory).
host_snapshot() {
  {
    ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
    ls /run/netns 2>/dev/null | sed 's/^/netns /'
    awk '{print "mount " $5}' /proc/self/mountinfo
    for h in /sys/fs/cgroup/*/; do
      [ -d "$h" ] && find "$h" -mindepth 1 -maxdepth 3 -type d 2>/dev/null | sed 's/^/cgroup /'
    done
    command -v nft >/dev/null && nft list tables 2>/dev/null | sed 's/^/nft /'
    # the cluster's programs and the sandboxes' (by command name, not by a word in arguments)
    ps -eo pid=,comm=,args= | awk '$2 ~ /^(dirigent|dirigent-(cp|dp|worker|fn)|redis-server|haproxy|crun)$/ {print "proc " $0}'
  } | sort -u
}
host_nothing_left() {
  local left
  host_snapshot >"$TAP_TMP/host.after"
  left=$(comm -13 "$1" "$TAP_TMP/host.after" |
    grep -v -E '^mount /sys/fs/cgroup/hugetlb$|^cgroup /sys/fs/cgroup/hugetlb/|^cgroup /sys/fs/cgroup/[^/]+/process_api(/|$)' |
    awk -v own="${HOST_OWN:-${B:-}}" '
      # a daemon binary of another tree (another test run, a bench beside) is not ours; the
      # /dirigent-fn of a sandbox (no directory) always counts
      $1 == "proc" && $4 ~ /^\/.+\/dirigent(-[a-z]+)?$/ && own != "" {
        n = split(own, o, ":")
        for (i = 1; i <= n; i++) if (index($4, o[i] "/") == 1) { print; next }
        next
      }
      $1 == "proc" && index($0, "/dg-bench-") { next } # a benchmark run beside (bench/*.sh temp dirs)
      { print }')
  [ -z "$left" ] && return 0
  echo "left behind:"
  echo "$left" | head -n 40
  return 1
}
