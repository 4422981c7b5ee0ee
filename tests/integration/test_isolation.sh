#!/usr/bin/env bash
# One worker never harms another (issue 12): two dirigent-workers with the oci runtime, the
# same name ("iso", as two `dirigent up` both run "worker-local") but different dataDirs,
# standalone (no control plane), side by side. Each names everything it makes on the host
# from its own instance: run directory, crun root, namespaces, bridge, veths, subnet,
# cgroups. The second is killed and restarted (its start-up clean-up runs): the first's
# sandboxes still run and answer. A third worker on the first's dataDir refuses to start.
# Then SIGTERM (plus a SIGINT during the shutdown, as a terminal's Ctrl-C adds) and nothing
# of either is left. Root only: without root or the tools, every check is skipped.
set -u
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/tap.sh"
. "${DG_SOURCE_DIR:-$(dirname "$0")/../..}/tests/lib/oci.sh"
S=${DG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
B=${DG_BUILD_DIR:-build}
B=$(cd "$B" && pwd)
NCHECKS=6

plan $NCHECKS
oci_require $NCHECKS

declare -A PID ADDR RUN BRIDGE VETH CGROUP SUBNET

# what the worker of instance $1 (a or b) logged it uses (instance.c's start-up line)
names_of() {
  oci_names "$TAP_TMP/$1.log"
  RUN[$1]=$OCI_RUN BRIDGE[$1]=$OCI_BRIDGE VETH[$1]=$OCI_VETH SUBNET[$1]=$OCI_SUBNET CGROUP[$1]=$OCI_CGROUP
}

start() { # start a|b: a waits 120 s for a sandbox to stop (a second signal must hurry it)
  local log=$TAP_TMP/$1.log grace=1s
  [ "$1" = a ] && grace=120s
  bg_start "$log" "$B/dirigent-worker" --port 0 --name iso --runtime oci --imageRoots "$TAP_TMP" --controlPlaneAddress "" \
    --dataDir "$TAP_TMP/data-$1" --netnsPool 2 --killGrace $grace
  PID[$1]=$BG_PID
  wait_for_log "$log" 'iso: listening on' 20 || return 1
  ADDR[$1]=127.0.0.1:$(port_of "$log" 'iso: listening on')
  names_of "$1"
}

# everything of instance $1 on the host: containers in its crun root, mounts and netns files
# under its run directory, its bridge, veths and cgroups, the run directory itself
leftovers() {
  local r=${RUN[$1]}
  echo "containers=$(containers "$1" | grep -c .)" \
    "mounts=$(grep -c " $r/" /proc/self/mountinfo)" \
    "bridge=$(ls /sys/class/net | grep -cx "${BRIDGE[$1]}")" \
    "veths=$(ls /sys/class/net | grep -c "^${VETH[$1]}[0-9]")" \
    "cgroups=$(ls -d /sys/fs/cgroup/*/"${CGROUP[$1]}" /sys/fs/cgroup/"${CGROUP[$1]}" 2>/dev/null | grep -c .)" \
    "rundir=$([ -e "$r" ] && echo 1 || echo 0)"
}

cleanup_iso() {
  local k
  for k in a b; do
    [ -n "${PID[$k]:-}" ] && kill -TERM "${PID[$k]}" 2>/dev/null
  done
  for k in a b; do
    for _ in $(seq 1 100); do kill -0 "${PID[$k]:-0}" 2>/dev/null || break; sleep 0.05; done
  done
  for p in "${TAP_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for k in a b; do
    [ -n "${RUN[$k]:-}" ] || continue
    oci_remove "${RUN[$k]}" "${BRIDGE[$k]}" "${VETH[$k]}" "${CGROUP[$k]}"
    rm -rf "${RUN[$k]}"
  done
  rm -rf "$TAP_TMP"
}
trap cleanup_iso EXIT

oci_image
NFT_BEFORE=$(nft list tables 2>/dev/null)

create() { # create a|b FUNCTION [ARGS_JSON] -> the endpoint on stdout
  curl -sf -m 60 -XPOST "http://${ADDR[$1]}/v1/sandboxes" \
    -d "{\"function\":\"$2\",\"image\":\"$IMAGE\",\"cpuMilli\":100,\"memoryMiB\":64,\"args\":${3:-[]}}" |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["endpoint"])'
}
serves() { # serves ENDPOINT: the sandbox answers
  [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$1/")" = 200 ]
}
# (crun list makes its root if missing: only asked when there is one)
containers() { [ -d "${RUN[$1]}/crun" ] && crun --root "${RUN[$1]}/crun" list -q 2>/dev/null | sort; }

t_side_by_side() {
  start a && start b || return 1
  local k
  for k in a b; do
    echo "$k: run=${RUN[$k]} bridge=${BRIDGE[$k]} veths=${VETH[$k]} subnet=${SUBNET[$k]} cgroup=${CGROUP[$k]}"
  done
  # nothing shared: every name differs, every one carries the instance id
  [ "${RUN[a]}" != "${RUN[b]}" ] && [ "${BRIDGE[a]}" != "${BRIDGE[b]}" ] &&
    [ "${VETH[a]}" != "${VETH[b]}" ] && [ "${SUBNET[a]}" != "${SUBNET[b]}" ] &&
    [ "${CGROUP[a]}" != "${CGROUP[b]}" ] || return 1
  # a's second sandbox answers SIGTERM only after 120 s with a request in flight
  EP_A1=$(create a f1) && EP_A2=$(create a f2 '["--http.shutdownGrace","120s"]') && EP_B1=$(create b f1) && EP_B2=$(create b f2) || return 1
  echo "a: $EP_A1 $EP_A2  b: $EP_B1 $EP_B2"
  serves "$EP_A1" && serves "$EP_A2" && serves "$EP_B1" && serves "$EP_B2" || return 1
  [ "$(containers a | grep -c .)" = 2 ] && [ "$(containers b | grep -c .)" = 2 ] || return 1
}
check "two workers of one name, different dataDirs: their own run directory, bridge, veths, subnet and cgroups; each serves its sandboxes" t_side_by_side

t_restart_b() {
  local before_a netns_a
  before_a=$(containers a)
  netns_a=$(grep -c " ${RUN[a]}/netns/" /proc/self/mountinfo)
  kill -9 "${PID[b]}"
  for _ in $(seq 1 100); do kill -0 "${PID[b]}" 2>/dev/null || break; sleep 0.05; done
  start b || return 1
  # b's start-up clean-up removed its own predecessor's two containers...
  [ "$(containers b | grep -c .)" = 0 ] || { echo "b's containers: $(containers b | tr '\n' ' ')"; return 1; }
  # ...and nothing of a's: its containers, namespaces, bridge; its sandboxes answer
  [ "$(containers a)" = "$before_a" ] || { echo "a's containers: $(containers a | tr '\n' ' ')"; return 1; }
  [ "$(grep -c " ${RUN[a]}/netns/" /proc/self/mountinfo)" = "$netns_a" ] || return 1
  [ -e "/sys/class/net/${BRIDGE[a]}" ] || return 1
  serves "$EP_A1" && serves "$EP_A2" || return 1
  # b works again
  EP_B1=$(create b f1) && serves "$EP_B1"
}
check "the second worker killed and restarted: its clean-up removes its own leftovers, the first's sandboxes run on and answer" t_restart_b

t_lock() {
  local out rc
  out=$(timeout 20 "$B/dirigent-worker" --port 0 --name iso --runtime oci --imageRoots "$TAP_TMP" --controlPlaneAddress "" \
    --dataDir "$TAP_TMP/data-a" 2>&1)
  rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "already running (pid ${PID[a]})" <<<"$out" ||
    { echo "rc $rc: $out"; return 1; }
  serves "$EP_A1" && [ "$(containers a | grep -c .)" = 2 ]
}
check "a third worker on the first's dataDir: 'already running (pid N)', exits, changes nothing" t_lock

stop() { # stop a|b [second signal]: SIGTERM, optionally SIGINT during the shutdown
  kill -TERM "${PID[$1]}"
  [ -n "${2:-}" ] && { wait_for_log "$TAP_TMP/$1.log" 'shutting down' 10; kill -INT "${PID[$1]}"; }
  for _ in $(seq 1 200); do kill -0 "${PID[$1]}" 2>/dev/null || break; sleep 0.05; done
  ! kill -0 "${PID[$1]}" 2>/dev/null || { echo "$1 did not stop"; return 1; }
}

t_stop_a() {
  local pids
  pids=$(for id in $(containers a); do cat "${RUN[a]}/sandboxes/$id/pid"; done)
  # a request of 100 s of CPU in flight: that sandbox outlives SIGTERM by its 120 s grace,
  # and so would the worker (killGrace 120 s) without the SIGINT that hurries it
  curl -s -m 150 -o /dev/null -H 'requested_cpu: 100000' "http://$EP_A2/" &
  local slow=$! i=0
  while [ $i -lt 200 ] && ! ss -Htn state established dst "$EP_A2" | grep -q .; do sleep 0.05; i=$((i + 1)); done
  stop a second || { kill "$slow"; return 1; }
  kill "$slow" 2>/dev/null
  wait_bounded "$slow" 2>/dev/null
  # (it stopped within stop's bound, not after the 120 s grace: the SIGINT hurried it)
  local left
  left=$(leftovers a)
  [ "$left" = "containers=0 mounts=0 bridge=0 veths=0 cgroups=0 rundir=0" ] || { echo "a left: $left"; return 1; }
  for p in $pids; do ! kill -0 "$p" 2>/dev/null || { echo "sandbox process $p runs"; return 1; }; done
  # b is untouched by a's shutdown
  serves "$EP_B1"
}
check "SIGTERM, then SIGINT during the shutdown, of the first: nothing of it is left; the second still serves" t_stop_a

t_stop_b() {
  stop b || return 1
  local left
  left=$(leftovers b)
  [ "$left" = "containers=0 mounts=0 bridge=0 veths=0 cgroups=0 rundir=0" ] || { echo "b left: $left"; return 1; }
}
check "SIGTERM of the second: nothing of it is left" t_stop_b

t_nothing_shared() {
  # no process of either, no nftables object made, no instance lock
  local k
  for k in a b; do ! kill -0 "${PID[$k]}" 2>/dev/null || return 1; done
  [ "$(nft list tables 2>/dev/null)" = "$NFT_BEFORE" ] || return 1
  ! grep -q "${RUN[a]}\|${RUN[b]}" /proc/self/mountinfo
}
check "after both stopped: no worker process, no new nftables table, no mount of either" t_nothing_shared

tap_done
