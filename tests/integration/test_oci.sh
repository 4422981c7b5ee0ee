#!/usr/bin/env bash
# Real sandboxes (issue 4): dirigent-cp, dirigent-dp and a dirigent-worker with the oci
# runtime (crun) on 127.0.0.1, images from a local registry (Debian's docker-registry) that
# this test starts, sandbox addresses in 100.126.0.0/24 on the test's own bridge. Root only:
# without root or the tools, every check is skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
CLI=$B/dirigent
NCHECKS=9
BRIDGE=dgoci
SUBNET=100.126.0.0/24
RUN=$TAP_TMP/run
DATA=$TAP_TMP/data

plan $NCHECKS
oci_require $NCHECKS docker-registry

# ---- clean-up: the worker stops its sandboxes on SIGTERM; whatever a killed one left is
# removed by hand (containers, mounts, namespaces, veths, the bridge, cgroups)
cleanup_oci() {
  oci_stop "${WK_PID:-}"
  tap_cleanup_pids
  oci_remove "$RUN" "$BRIDGE" "${VETH:-}" "${CGROUP:-}"
  rm -rf "$TAP_TMP"
}
tap_cleanup_pids() { for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup_oci EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- a local registry with the dirigent-fn image
RP=$(free_port)
mkdir -p "$TAP_TMP/registry"
cat >"$TAP_TMP/registry.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $TAP_TMP/registry
http:
  addr: 127.0.0.1:$RP
EOF
bg_start "$TAP_TMP/registry.log" docker-registry serve "$TAP_TMP/registry.yml"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$RP/v2/" >/dev/null && break; sleep 0.05; done
"$S/scripts/make-image.sh" "$B/dirigent-fn" "$TAP_TMP/image" >/dev/null &&
  skopeo copy --quiet --dest-tls-verify=false "oci:$TAP_TMP/image:latest" \
    "docker://127.0.0.1:$RP/dirigent-fn:latest" ||
  { echo "Bail out! cannot build or push the image"; exit 1; }
IMAGE=127.0.0.1:$RP/dirigent-fn:latest

# the worker's skopeo, counted: a shim first on its PATH writes each run's arguments to
# $TAP_TMP/skopeo.calls and runs the real one (pulls are counted by what the worker ran)
mkdir -p "$TAP_TMP/bin"
printf '#!/bin/sh\necho "$*" >>"%s/skopeo.calls"\nexec %s "$@"\n' "$TAP_TMP" "$(command -v skopeo)" >"$TAP_TMP/bin/skopeo"
chmod +x "$TAP_TMP/bin/skopeo"
pulls_of() { grep -c "^copy .*docker://$1 " "$TAP_TMP/skopeo.calls" 2>/dev/null; }

# ---- the cluster
start_cp_dp --traceOutputFolder "$TAP_TMP/trace"

start_worker() { # start_worker LOG
  PATH="$TAP_TMP/bin:$PATH" bg_start "$1" "$B/dirigent-worker" --port 0 --name oci-w1 --runtime oci --imageRoots "$TAP_TMP" \
    --controlPlaneAddress "$CPI" --heartbeatInterval 300ms --runDir "$RUN" --dataDir "$DATA" \
    --bridge "$BRIDGE" --sandboxSubnet "$SUBNET" --netnsPool 4 --readinessTimeout 10s \
    --cpuMilli 64000 --memoryMiB 65536
  WK_PID=$BG_PID
  wait_for_log "$1" 'oci-w1: listening on' 20 || return 1
  WKA=127.0.0.1:$(port_of "$1" 'oci-w1: listening on')
  instance_names "$1"
}
instance_names() { # instance_names LOG: the host names the worker logged (instance.c)
  oci_names "$1"
  VETH=$OCI_VETH CGROUP=$OCI_CGROUP
}
start_worker "$TAP_TMP/w1.log" || { echo "Bail out! the oci worker did not start"; exit 1; }

wait_json "$REG/v1/status" 'len(j["workers"]) == 1 and len(j["dataplanes"]) == 1' ||
  { echo "Bail out! not registered"; exit 1; }

register() { # register NAME IMAGE [extra form fields]
  curl -s -o "$TAP_TMP/reg.out" -w '%{http_code}' -XPOST "$REG/registerService" \
    -d "name=$1&image=$2&port_forwarding=80&port_forwarding=tcp&requested_cpu=1000&requested_memory=128${3:-}"
}
invoke() { curl -s -m 30 -o "$TAP_TMP/inv.$1" -w '%{http_code}' -H "Host: $1" "$P/"; }
sandbox_pids() { # the container init pids of a function's sandboxes
  local id
  for id in $(curl -sf "http://$WKA/v1/sandboxes" | /usr/bin/python3 -c \
    'import json,sys; [print(s["id"]) for s in json.load(sys.stdin)["sandboxes"] if s["function"]==sys.argv[1] and s["state"]=="ready"]' "$1"); do
    cat "$RUN/sandboxes/$id/pid"
  done
}
count_leftovers() { # containers mounts veths cgroups
  # (crun list makes its root if missing: only asked when there is one)
  echo "$( ([ -d "$RUN/crun" ] && crun --root "$RUN/crun" list -q 2>/dev/null) | grep -c .) $(grep -c " $RUN/" /proc/self/mountinfo) $(ls /sys/class/net | grep -c "^${VETH}[0-9]") $(ls -d /sys/fs/cgroup/memory/"$CGROUP"/*/ 2>/dev/null | grep -c .)"
}

t_registry() {
  [ "$(register reg "$IMAGE")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  local code
  code=$(invoke reg)
  [ "$code" = 200 ] && [ "$(json_field "$(cat "$TAP_TMP/inv.reg")" Status)" = OK ] ||
    { echo "$code $(cat "$TAP_TMP/inv.reg")"; tail -5 "$TAP_TMP/w1.log"; return 1; }
  # the CP's cold-start trace has the breakdown of the create: the pull (image_fetch), rootfs
  # (sandbox_create), crun (sandbox_start), network, readiness; written off the loop
  local i=0
  while [ $i -lt 100 ]; do
    awk -F, '$2=="reg" && $4=="true" && $5>0 && $6>0 && $7>0 && $10>0 {f=1} END {exit !f}' \
      "$TAP_TMP/trace/cold_start_trace.csv" 2>/dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  cat "$TAP_TMP/trace/cold_start_trace.csv"; return 1
}
check "an image pushed to a local registry: registered by reference, the cold invocation answers 200" t_registry

t_isolation() {
  local out pid
  out=$(cat "$TAP_TMP/inv.reg")
  [ "$(json_field "$out" MachineName)" != "$(hostname)" ] || { echo "machine: $out"; return 1; }
  pid=$(sandbox_pids reg | head -1)
  [ -n "$pid" ] || { echo "no sandbox pid"; return 1; }
  grep -q "^oci-w1-" <<<"$(json_field "$out" MachineName)" || { echo "hostname: $out"; return 1; }
  # its own pid namespace, where it is pid 1 and sees no host process; its own network
  [ "$(readlink /proc/$pid/ns/pid)" != "$(readlink /proc/self/ns/pid)" ] || return 1
  [ "$(awk '/^NSpid/ {print $NF}' /proc/$pid/status)" = 1 ] || return 1
  [ "$(readlink /proc/$pid/ns/net)" != "$(readlink /proc/self/ns/net)" ] || return 1
  # confinement: no new privileges, seccomp filter on, a reduced capability set
  grep -q '^NoNewPrivs:[[:space:]]*1' /proc/$pid/status || return 1
  grep -q '^Seccomp:[[:space:]]*2' /proc/$pid/status || return 1
  # crun's default three: CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE (issue 14)
  [ "$(awk '/^CapBnd/ {print $2}' /proc/$pid/status)" = 0000000020000420 ] ||
    { grep Cap /proc/$pid/status; return 1; }
  # the memory limit is the requested 128 MiB, read on the host
  local cg
  cg=$(awk -F: '$2=="memory" {print $3}' /proc/$pid/cgroup)
  [ "$(cat /sys/fs/cgroup/memory$cg/memory.limit_in_bytes)" = $((128 * 1024 * 1024)) ] ||
    { echo "cgroup $cg: $(cat /sys/fs/cgroup/memory$cg/memory.limit_in_bytes)"; return 1; }
  # two sandboxes of one function: different addresses
  curl -sf -XPUT "$REG/v1/functions/reg" -d '{"scaling_lower_bound":2}' >/dev/null || return 1
  wait_json "http://$WKA/v1/sandboxes" 'len([s for s in j["sandboxes"] if s["function"]=="reg" and s["state"]=="ready"]) == 2' || return 1
  curl -sf "http://$WKA/v1/sandboxes" | /usr/bin/python3 -c '
import json,sys
eps=[s["endpoint"] for s in json.load(sys.stdin)["sandboxes"] if s["function"]=="reg"]
print(eps); sys.exit(0 if len(set(e.split(":")[0] for e in eps)) == 2 else 1)'
}
check "isolation: own hostname, pid and network namespaces, seccomp, capabilities, the requested memory limit, one address per sandbox" t_isolation

t_bad_image() {
  local before code
  before=$(count_leftovers)
  [ "$(register bad "127.0.0.1:$RP/no-such-image:latest")" = 200 ] || { cat "$TAP_TMP/reg.out"; return 1; }
  code=$(invoke bad)
  [ "$code" = 503 ] && grep -q "pull of 127.0.0.1:$RP/no-such-image:latest failed" "$TAP_TMP/inv.bad" ||
    { echo "$code: $(cat "$TAP_TMP/inv.bad")"; return 1; }
  "$CLI" --cp "${REG#http://}" function get bad >"$TAP_TMP/get.bad" || return 1
  grep -q "pull of 127.0.0.1:$RP/no-such-image:latest failed" "$TAP_TMP/get.bad" || { cat "$TAP_TMP/get.bad"; return 1; }
  "$CLI" --cp "${REG#http://}" status | grep -q "pull of" || return 1
  # a second invocation is answered from the remembered failure, not a new pull
  code=$(invoke bad)
  [ "$code" = 503 ] && grep -q "not retried for" "$TAP_TMP/inv.bad" || { echo "$code: $(cat "$TAP_TMP/inv.bad")"; return 1; }
  [ "$(pulls_of "127.0.0.1:$RP/no-such-image:latest")" = 1 ] || { cat "$TAP_TMP/skopeo.calls"; return 1; }
  # nothing left behind
  [ "$(count_leftovers)" = "$before" ] || { echo "before $before after $(count_leftovers)"; return 1; }
}
check "an image that cannot be pulled: 503 with skopeo's reason, shown by function get and status, one pull, nothing left" t_bad_image

t_sandbox_killed() {
  [ "$(register victim "$IMAGE")" = 200 ] || return 1
  [ "$(invoke victim)" = 200 ] || return 1
  local pid
  pid=$(sandbox_pids victim)
  [ -n "$pid" ] || return 1
  kill -9 "$pid"
  wait_json "http://$WKA/v1/sandboxes" \
    '[s for s in j["sandboxes"] if s["function"]=="victim" and s["state"]=="ready"] and "'"$pid"'" not in open("'"$RUN"'/sandboxes/"+[s for s in j["sandboxes"] if s["function"]=="victim" and s["state"]=="ready"][0]["id"]+"/pid").read()' ||
    return 1
  [ "$(invoke victim)" = 200 ] || { cat "$TAP_TMP/inv.victim"; return 1; }
}
check "kill -9 of a sandbox's process: the CP replaces it, the next invocation succeeds" t_sandbox_killed

t_parallel() {
  local i pids=() img=127.0.0.1:$RP/dirigent-fn-par:v1
  # an image no cold start has pulled yet: the 20 wait for one pull
  skopeo copy --quiet --dest-tls-verify=false "oci:$TAP_TMP/image:latest" "docker://$img" || return 1
  for i in $(seq 1 20); do
    [ "$(register "par$i" "$img")" = 200 ] || return 1
  done
  for i in $(seq 1 20); do
    curl -s -m 60 -o /dev/null -w '%{http_code}\n' -H "Host: par$i" "$P/" >"$TAP_TMP/par.$i" &
    pids+=($!)
  done
  wait_bounded "${pids[@]}"
  cat "$TAP_TMP"/par.* | sort | uniq -c
  [ "$(cat "$TAP_TMP"/par.* | sort -u)" = 200 ] || return 1
  [ "$(pulls_of "$img")" = 1 ] || { cat "$TAP_TMP/skopeo.calls"; return 1; }
  # crun's middle processes, reparented to the worker (a subreaper), are reaped: no zombies
  local z i=0
  while [ $i -lt 60 ]; do
    z=$(ps -eo ppid=,stat= | awk -v p="$WK_PID" '$1 == p && $2 ~ /Z/' | grep -c .)
    [ "$z" = 0 ] && break
    sleep 0.05; i=$((i + 1))
  done
  [ "$z" = 0 ] || { echo "$z zombie children of the worker"; return 1; }
}
check "20 parallel cold starts of 20 functions of a new image: one pull, all succeed" t_parallel

t_worker_crash() {
  local n old
  old=$(crun --root "$RUN/crun" list -q | sort)
  n=$(grep -c . <<<"$old")
  [ "$n" -ge 20 ] || { echo "containers before the crash: $n"; return 1; }
  kill -9 "$WK_PID"
  wait_bounded "$WK_PID" 2>/dev/null
  start_worker "$TAP_TMP/w1b.log" || return 1
  # counted after the restart: none of the old containers, none of their sandbox mounts; the
  # namespaces and veths are the new pool's (4, filled in the background) plus one per new
  # container (the CP may already be replacing the lost sandboxes: they are new ones)
  local left i=0 c id stale
  while [ $i -lt 500 ]; do # 10 s at most: the pool refills while the CP re-creates
    c=$(crun --root "$RUN/crun" list -q | sort)
    stale=0
    for id in $old; do
      grep -qx "$id" <<<"$c" && stale=$((stale + 1))
      grep -q " $RUN/sandboxes/$id" /proc/self/mountinfo && stale=$((stale + 1))
    done
    local nc
    nc=$(grep -c . <<<"$c")
    left="$stale $(grep -c " $RUN/netns/" /proc/self/mountinfo) $(ls /sys/class/net | grep -c "^${VETH}[0-9]") $nc"
    [ "$left" = "0 $((4 + nc)) $((4 + nc)) $nc" ] && break
    sleep 0.02; i=$((i + 1))
  done
  [ "$left" = "0 $((4 + nc)) $((4 + nc)) $nc" ] || { echo "old containers+mounts, namespaces, veths, containers: $left"; return 1; }
  # the CP forgets the old sandboxes and creates again on demand
  [ "$(invoke victim)" = 200 ] || { cat "$TAP_TMP/inv.victim"; return 1; }
}
check "kill -9 of the worker, then a restart: its containers are removed, invocations work again" t_worker_crash

t_clean_stop() {
  kill -TERM "$WK_PID"
  for _ in $(seq 1 200); do kill -0 "$WK_PID" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "$WK_PID" 2>/dev/null || return 1
  [ "$(count_leftovers)" = "0 0 0 0" ] || { echo "left: $(count_leftovers) (containers mounts veths cgroups)"; return 1; }
  # its instance's cgroup parent and run directory are gone too; the bridge was configured
  # (not the instance's own), and it is removed as well
  ! ls -d /sys/fs/cgroup/*/"$CGROUP" 2>/dev/null || return 1
  [ ! -e "$RUN" ] || { ls -R "$RUN"; return 1; }
  [ ! -e "/sys/class/net/$BRIDGE" ] || return 1
}
check "SIGTERM of the worker: no container, mount, veth, cgroup, bridge or run directory left" t_clean_stop

# active_at_least ADDR N: the daemon at ADDR handles N requests or more now (its /metrics)
active_at_least() {
  curl -s -m 2 "http://$1/metrics" | awk -v want="$2" '$1 == "dg_http_active_requests" && $2 >= want {f = 1} END {exit !f}'
}
sandboxes_listed() {
  curl -s -m 2 "http://$1/v1/sandboxes" | /usr/bin/python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["sandboxes"] else 1)'
}
in_flight_or_listed() { active_at_least "$1" 2 || sandboxes_listed "$1"; }
t_stop_while_creating() {
  # SIGTERM while creates are in flight, five times: the worker always stops, nothing is left
  # (a closed pidfd's number once went to another handle and shutdown hung on it)
  local k i
  for k in 1 2 3 4 5; do
    bg_start "$TAP_TMP/ws$k.log" "$B/dirigent-worker" --port 0 --name oci-w1 --runtime oci --imageRoots "$TAP_TMP" \
      --controlPlaneAddress "" --runDir "$RUN" --dataDir "$DATA" --bridge "$BRIDGE" \
      --sandboxSubnet "$SUBNET" --netnsPool 4 --killGrace 100ms
    WK_PID=$BG_PID
    wait_for_log "$TAP_TMP/ws$k.log" 'oci-w1: listening on' 20 || return 1
    instance_names "$TAP_TMP/ws$k.log"
    local a=127.0.0.1:$(port_of "$TAP_TMP/ws$k.log" 'oci-w1: listening on') pids=()
    for i in 1 2 3; do
      curl -s -o /dev/null -m 10 -XPOST "http://$a/v1/sandboxes" \
        -d "{\"function\":\"s$i\",\"image\":\"$IMAGE\",\"cpuMilli\":100,\"memoryMiB\":64}" &
      pids+=($!)
    done
    # a create in flight (the worker's active requests, less the scrape asking) in odd rounds
    # (or, when all three were quicker than a poll, a sandbox listed); in even ones, later: a
    # sandbox it lists (being made or made)
    if [ $((k % 2)) = 1 ]; then
      poll_until 400 in_flight_or_listed "$a" || { echo "round $k: no create in flight or made"; return 1; }
    else
      poll_until 400 sandboxes_listed "$a" || { echo "round $k: no sandbox listed"; return 1; }
    fi
    kill -TERM "$WK_PID"
    for i in $(seq 1 100); do kill -0 "$WK_PID" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$WK_PID" 2>/dev/null && { echo "round $k: the worker did not stop"; tail -5 "$TAP_TMP/ws$k.log"; return 1; }
    wait_bounded "${pids[@]}" 2>/dev/null
    [ "$(count_leftovers)" = "0 0 0 0" ] || { echo "round $k left: $(count_leftovers)"; return 1; }
  done
}
check "SIGTERM while sandboxes are being created, five times: it stops, nothing left" t_stop_while_creating

t_bad_runtime_config() {
  local out
  # (runsc is installed here: a PATH without it stands for a machine without it)
  mkdir -p "$TAP_TMP/nobin"
  out=$(PATH="$TAP_TMP/nobin" "$B/dirigent-worker" --runtime oci --ociRuntime runsc --port 0 --controlPlaneAddress "" \
    --runDir "$TAP_TMP/run2" --dataDir "$TAP_TMP/data2" 2>&1)
  [ $? -ne 0 ] && grep -q "ociRuntime 'runsc' is not installed" <<<"$out" || { echo "$out"; return 1; }
}
check "a worker configured with a runtime that is not installed says so and exits" t_bad_runtime_config

tap_done
