#!/usr/bin/env bash
# A multi-host Dirigent cluster on one machine (issue 6): every host is a network namespace
# joined to the others by a Linux bridge in the root namespace, each with its own address.
#
#   scripts/netns-cluster.sh up|down|status [--state-dir DIR] [--build DIR]
#                                           [--runtime process|emulated]
#   scripts/netns-cluster.sh start HOST [same options]   (one host's daemon again, after a kill)
#
#   host     namespace   address (NET=100.64.0)   runs
#   -        (root)      NET.1  bridge PREFIX0    the bridge, curl, tests
#   redis    PREFIX-redis NET.10                  redis-server :6379 (appendonly)
#   cp1..3   PREFIX-cpN  NET.11..13               dirigent-cp :9090 (internal), :9091 (registration), :9095 (raft)
#   dp1..2   PREFIX-dpN  NET.21..22               dirigent-dp :8080 (proxy), :8081 (API)
#   lb       PREFIX-lb   NET.30                   haproxy: :8079 invocations, :9092 registrations
#   w1..3    PREFIX-wN   NET.41..43               dirigent-worker :10010
#
# Defaults: --state-dir data/netns, --build build, --runtime process (paths are relative to
# the current directory; the defaults to the repository). Logs: STATE/logs/HOST.log, pids:
# STATE/pids/HOST.pid. Environment: DGC_PREFIX (default dgc; names of the bridge, namespaces
# and veths), DGC_NET (default 100.64.0; the /24 inside 100.64.0.0/10).
# Every internal API needs a credential (docs/security.md): `up` makes STATE/cluster.key (the
# daemons' authTokenFile) and STATE/operator.token (an operator credential for curl and the
# CLI: -H "Authorization: Bearer $(cat STATE/operator.token)", or DIRIGENT_TOKEN), both 0600.
# `down` stops everything by its pid files (SIGTERM, SIGKILL after a grace), kills whatever
# else runs in the namespaces (orphaned sandboxes), deletes namespaces, veths and bridge; it
# works after a failed or partial `up` and is idempotent. Nothing is routed out of the
# machine: the root namespace does not forward from or to the bridge.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() {
  echo "usage: $0 up|down|status|start HOST [--state-dir DIR] [--build DIR] [--runtime process|emulated]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
CMD=$1
shift
START_HOST=
if [ "$CMD" = start ]; then
  [ $# -ge 1 ] || usage
  START_HOST=$1
  shift
fi
STATE=$ROOT/data/netns
BUILD=
RUNTIME=
while [ $# -gt 0 ]; do
  case $1 in
  --state-dir) [ $# -ge 2 ] || usage; STATE=$2; shift 2 ;;
  --build) [ $# -ge 2 ] || usage; BUILD=$2; shift 2 ;;
  --runtime) [ $# -ge 2 ] || usage; RUNTIME=$2; shift 2 ;;
  -h | --help) usage ;;
  *) echo "$0: unknown argument '$1'" >&2; usage ;;
  esac
done
case $CMD in up | down | status | start) ;; *) usage ;; esac
need_root() {
  die() { echo "netns-cluster: $*" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || die "$CMD needs root (network namespaces, veths, a bridge): run it as root or with sudo"
  ip netns list >/dev/null 2>&1 || die "'ip netns' does not work here (iproute2 missing or no permission)"
}
need_root
if [ "$CMD" = up ]; then
  mkdir -p "$STATE" 2>/dev/null && STATE=$(cd "$STATE" && pwd) || { echo "$0: cannot use state dir '$STATE'" >&2; exit 1; }
elif [ -d "$STATE" ]; then
  STATE=$(cd "$STATE" && pwd)
fi
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac
KEY=$STATE/cluster.key

# down, status, start: what `up` used (unless the options or the environment say otherwise)
if [ "$CMD" != up ] && [ -f "$STATE/cluster.env" ]; then
  # shellcheck disable=SC1091
  . "$STATE/cluster.env"
fi
BUILD=${BUILD:-${SAVED_BUILD:-$ROOT/build}}
RUNTIME=${RUNTIME:-${SAVED_RUNTIME:-process}}
case $RUNTIME in process | emulated) ;; *) echo "$0: --runtime: process or emulated, not '$RUNTIME'" >&2; exit 2 ;; esac
PREFIX=${DGC_PREFIX:-${SAVED_PREFIX:-dgc}}
NET=${DGC_NET:-${SAVED_NET:-100.64.0}}
if ! [[ $PREFIX =~ ^[a-z][a-z0-9]{0,8}$ ]]; then
  echo "$0: DGC_PREFIX '$PREFIX': 1-9 lower-case letters and digits (interface names <= 15 chars)" >&2
  exit 2
fi
if ! [[ $NET =~ ^100\.([0-9]+)\.([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -lt 64 ] ||
  [ "${BASH_REMATCH[1]}" -gt 127 ] || [ "${BASH_REMATCH[2]}" -gt 255 ]; then
  echo "$0: DGC_NET '$NET': the first three octets of a /24 inside 100.64.0.0/10 (e.g. 100.64.0)" >&2
  exit 2
fi
BR=${PREFIX}0
GW=$NET.1
HOSTS=(redis cp1 cp2 cp3 dp1 dp2 lb w1 w2 w3)
declare -A ADDR=([redis]=$NET.10 [cp1]=$NET.11 [cp2]=$NET.12 [cp3]=$NET.13 [dp1]=$NET.21
  [dp2]=$NET.22 [lb]=$NET.30 [w1]=$NET.41 [w2]=$NET.42 [w3]=$NET.43)
CPS="${ADDR[cp1]}:9090,${ADDR[cp2]}:9090,${ADDR[cp3]}:9090"
RAFT="${ADDR[cp1]}:9095,${ADDR[cp2]}:9095,${ADDR[cp3]}:9095"
REDIS=${ADDR[redis]}:6379
INVOKE=${ADDR[lb]}:8079
REGISTER=${ADDR[lb]}:9092
SOCK=$STATE/haproxy.sock
NFT_TABLE=${PREFIX}_isolate
PY=/usr/bin/python3
[ -x $PY ] || PY=python3

ns() { echo "$PREFIX-$1"; }
log() { echo "netns-cluster: $*"; }
die() { echo "netns-cluster: $*" >&2; exit 1; }


# ---- HAProxy's config: the CP leader adds the data planes at run time (haproxy.api)
haproxy_cfg() {
  "$B/dirigent" haproxy-config --socket "$SOCK" --invocations "$INVOKE" --registration "$REGISTER" \
    --cp "${ADDR[cp1]}:9091,${ADDR[cp2]}:9091,${ADDR[cp3]}:9091"
}

# haproxy_cmd "COMMAND": one command on HAProxy's runtime API, its answer on stdout
haproxy_cmd() {
  $PY - "$SOCK" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
sys.stdout.write(out.decode(errors="replace"))
EOF
}

# pid of a host's daemon if it runs (and is what the pid file says it is)
host_pid() {
  local f=$STATE/pids/$1.pid p
  [ -f "$f" ] || return 1
  p=$(cat "$f" 2>/dev/null)
  [[ $p =~ ^[0-9]+$ ]] && [ -d "/proc/$p" ] || return 1
  # the pid must still be one of ours (not a pid reused after a reboot)
  case $1 in
  redis) grep -qa redis-server "/proc/$p/cmdline" ;;
  lb) grep -qa haproxy "/proc/$p/cmdline" ;;
  cp*) grep -qa dirigent-cp "/proc/$p/cmdline" ;;
  dp*) grep -qa dirigent-dp "/proc/$p/cmdline" ;;
  w*) grep -qa dirigent-worker "/proc/$p/cmdline" ;;
  esac || return 1
  echo "$p"
}

# ---- down ---------------------------------------------------------------------------------
stop_pids() { # stop_pids TENTHS PID...: SIGTERM, then SIGKILL to those alive after TENTHS x 100 ms
  local t=$1 p i alive
  shift
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null
  for i in $(seq 1 "$t"); do
    alive=0
    for p in "$@"; do [ -d "/proc/$p" ] && alive=1 && break; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for p in "$@"; do [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null; done
  return 0
}

cmd_down() {
  local h p i pids=()
  # the daemons first (a worker stops its own sandboxes on SIGTERM, 2 s grace) ...
  for h in "${HOSTS[@]}"; do
    p=$(host_pid "$h") && pids+=("$p")
  done
  stop_pids 80 "${pids[@]}"
  # ... then whatever else still runs in the namespaces (sandboxes a killed worker left)
  pids=()
  for h in "${HOSTS[@]}"; do
    [ -e "/run/netns/$(ns "$h")" ] || continue
    for p in $(ip netns pids "$(ns "$h")" 2>/dev/null); do pids+=("$p"); done
  done
  stop_pids 30 "${pids[@]}"
  for h in "${HOSTS[@]}"; do
    # a process still inside keeps the namespace (and its eth0) alive: wait for the kills
    for i in $(seq 1 50); do
      [ -z "$(ip netns pids "$(ns "$h")" 2>/dev/null)" ] && break
      sleep 0.1
    done
    ip netns del "$(ns "$h")" 2>/dev/null
    ip link del "$(ns "$h")" 2>/dev/null
    rm -f "$STATE/pids/$h.pid"
  done
  ip link del "$BR" 2>/dev/null
  command -v nft >/dev/null && nft delete table inet "$NFT_TABLE" 2>/dev/null
  rm -f "$SOCK"
  local left=""
  for h in "${HOSTS[@]}"; do
    [ -e "/run/netns/$(ns "$h")" ] && left="$left netns:$(ns "$h")"
    [ -e "/sys/class/net/$(ns "$h")" ] && left="$left link:$(ns "$h")"
  done
  [ -e "/sys/class/net/$BR" ] && left="$left link:$BR"
  [ -z "$left" ] || die "down: could not remove:$left"
  log "down: $PREFIX cluster ($NET.0/24) stopped and removed (logs kept in $STATE/logs)"
}

# ---- up -----------------------------------------------------------------------------------
find_build() { # B: the build directory; HAP: the CP's flag naming HAProxy's runtime API
  local t
  B=$(cd "$BUILD" 2>/dev/null && pwd) || die "no build directory '$BUILD' (meson setup $BUILD && ninja -C $BUILD)"
  for t in dirigent dirigent-cp dirigent-dp dirigent-worker dirigent-fn; do
    [ -x "$B/$t" ] || die "$B/$t is missing: ninja -C $B"
  done
  HAP=(--set "haproxy.api=$SOCK")
}

# host_cmd HOST: the daemon's command line in CMDLINE
host_cmd() {
  local h=$1 i=${1#??}
  case $h in
  # redis: protected mode and a password generated per `up` (STATE/redis.conf and
  # STATE/redis.pass, 0600; never on a command line), the CPs AUTH with it (redis.passwordFile)
  redis) CMDLINE=(redis-server "$STATE/redis.conf" --bind "${ADDR[redis]}" --port 6379 --protected-mode yes
    --appendonly yes --dir "$STATE/redis" --save "") ;;
  lb) CMDLINE=(haproxy -db -f "$STATE/haproxy.cfg") ;;
  cp[123]) CMDLINE=("$B/dirigent-cp" --host "${ADDR[$h]}" --port 9090
    --registrationServer "${ADDR[$h]}:9091" --persistence redis --redis.address "$REDIS" --redis.passwordFile "$STATE/redis.pass"
    --replicas "$CPS" --raftAddresses "$RAFT" --replicaId "$i" --dataDir "$STATE/$h"
    --heartbeatInterval 1s --traceOutputFolder "" --loadBalancerAddress "$INVOKE" "${HAP[@]}"
    --authTokenFile "$KEY") ;;
  dp[12]) CMDLINE=("$B/dirigent-dp" --dataPlaneIp "${ADDR[$h]}" --portProxy 8080 --portGRPC 8081
    --name "$h" --controlPlaneAddress "$CPS" --heartbeatInterval 1s --traceOutputFolder ""
    --authTokenFile "$KEY") ;;
  w[123]) CMDLINE=("$B/dirigent-worker" --workerNodeIp "${ADDR[$h]}" --port 10010 --name "$h"
    --authTokenFile "$KEY"
    --controlPlaneAddress "$CPS" --heartbeatInterval 1s --runtime "$RUNTIME"
    --fnBinary "$B/dirigent-fn" --dataDir "$STATE/$h/data" --runDir "$STATE/$h/run"
    --processUser "$([ "$(id -u)" = 0 ] && echo nobody)") ;;
  *) die "unknown host '$h' (one of: ${HOSTS[*]})" ;;
  esac
}

start_host() { # start_host HOST: in the host's namespace, pid into STATE/pids/HOST.pid
  local h=$1
  host_cmd "$h"
  [ "$h" = redis ] && mkdir -p "$STATE/redis"
  echo "---- $(date '+%F %T') start: ${CMDLINE[*]}" >>"$STATE/logs/$h.log"
  ip netns exec "$(ns "$h")" setsid "${CMDLINE[@]}" </dev/null >>"$STATE/logs/$h.log" 2>&1 &
  echo $! >"$STATE/pids/$h.pid"
}

host_answers() { # host_answers HOST: its service answers
  case $1 in
  redis) [ "$(REDISCLI_AUTH=$(cat "$STATE/redis.pass") redis-cli -h "${ADDR[redis]}" -p 6379 ping 2>/dev/null)" = PONG ] ;;
  lb) [ -S "$SOCK" ] && haproxy_cmd "show servers state registration" >/dev/null 2>&1 ;;
  cp*) curl -sf -m 1 -o /dev/null "http://${ADDR[$1]}:9090/health" ;;
  dp*) curl -sf -m 1 -o /dev/null "http://${ADDR[$1]}:8081/health" ;;
  w*) curl -sf -m 1 -o /dev/null "http://${ADDR[$1]}:10010/health" ;;
  esac
}

wait_host() { # wait_host HOST SECONDS: until it answers; fails early if it exited
  local i
  for i in $(seq 1 $(($2 * 10))); do
    host_answers "$1" && return 0
    host_pid "$1" >/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# `start HOST`: start one host's daemon again (after a kill), in the namespace `up` made
cmd_start() {
  local h=$1
  find_build
  host_cmd "$h"
  [ -e "/run/netns/$(ns "$h")" ] || die "namespace $(ns "$h") does not exist (up first)"
  host_pid "$h" >/dev/null && die "$h runs already (pid $(host_pid "$h"))"
  start_host "$h"
  wait_host "$h" 20 || { tail -n 20 "$STATE/logs/$h.log" >&2; die "$h did not come up"; }
  log "started $h (pid $(host_pid "$h")) at ${ADDR[$h]}"
}


fail_up() {
  echo "netns-cluster: up failed: $*" >&2
  local h
  for h in "${HOSTS[@]}"; do
    [ -s "$STATE/logs/$h.log" ] || continue
    echo "---- $STATE/logs/$h.log (last 15 lines)" >&2
    tail -n 15 "$STATE/logs/$h.log" >&2
  done
  echo "netns-cluster: removing what was started (logs stay in $STATE/logs)" >&2
  cmd_down >&2
  exit 1
}

alive_or_fail() { # alive_or_fail HOST...
  local h
  for h in "$@"; do host_pid "$h" >/dev/null || fail_up "$h exited (see $STATE/logs/$h.log)"; done
}

cp_status() { curl -s -m 1 -H "Authorization: Bearer $(cat "$STATE/operator.token")" "http://$1:9090/v1/status"; }

leader_status() { # the leader's /v1/status JSON (any replica naming itself leader)
  local h j
  for h in cp1 cp2 cp3; do
    j=$(cp_status "${ADDR[$h]}") || continue
    echo "$j" | $PY -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("role")=="leader" else 1)' 2>/dev/null &&
      { echo "$j"; return 0; }
  done
  return 1
}

cmd_up() {
  local t h i
  find_build
  for t in redis-server haproxy curl setsid; do
    command -v $t >/dev/null || die "$t is not installed (scripts/deps.sh installs what is missing)"
  done
  [ -e "/sys/class/net/$BR" ] && die "bridge $BR exists: a cluster with prefix $PREFIX is up (down first)"
  for h in "${HOSTS[@]}"; do
    [ -e "/run/netns/$(ns "$h")" ] && die "namespace $(ns "$h") exists: run '$0 down' first"
  done
  if ip -4 route show | grep -qE "^$NET\.0/24|^$NET\.[0-9]+ "; then
    die "$NET.0/24 is already routed in the root namespace (another cluster? choose DGC_NET)"
  fi
  mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/redis" || die "cannot write $STATE"
  for h in "${HOSTS[@]}"; do : >"$STATE/logs/$h.log"; done
  # the cluster key and the operator's credential (kept across ups of this state directory)
  [ -f "$KEY" ] || "$B/dirigent" token init --key "$KEY" 2>/dev/null || die "cannot make $KEY"
  rm -f "$STATE/operator.token"
  "$B/dirigent" token create --key "$KEY" --role operator --name admin --out "$STATE/operator.token" ||
    die "cannot make $STATE/operator.token"
  printf 'SAVED_PREFIX=%q\nSAVED_NET=%q\nSAVED_BUILD=%q\nSAVED_RUNTIME=%q\n' "$PREFIX" "$NET" "$B" "$RUNTIME" >"$STATE/cluster.env"

  # ---- the network: a bridge, one namespace per host with a veth to it
  ip link add "$BR" type bridge || fail_up "cannot create bridge $BR"
  ip addr add "$GW/24" dev "$BR" && ip link set "$BR" up || fail_up "cannot configure bridge $BR"
  for h in "${HOSTS[@]}"; do
    local n
    n=$(ns "$h")
    { ip netns add "$n" &&
      ip link add "$n" type veth peer name eth0 netns "$n" &&
      ip link set "$n" master "$BR" &&
      ip link set "$n" up &&
      ip -n "$n" link set lo up &&
      ip -n "$n" addr add "${ADDR[$h]}/24" dev eth0 &&
      ip -n "$n" link set eth0 up &&
      ip -n "$n" route add default via "$GW"; } || fail_up "cannot set up namespace $n"
  done
  # traffic stays inside the machine: nothing is forwarded between the bridge and other links
  if command -v nft >/dev/null; then
    nft -f - <<EOF || log "warning: nft could not add table $NFT_TABLE (forwarding is $(cat /proc/sys/net/ipv4/ip_forward))"
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority -10; policy accept;
    iifname "$BR" oifname != "$BR" drop
    oifname "$BR" iifname != "$BR" drop
  }
}
EOF
  fi

  # ---- the daemons, in dependency order
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/redis.pass" &&
    printf 'requirepass %s\n' "$(cat "$STATE/redis.pass")" >"$STATE/redis.conf") ||
    fail_up "cannot write the redis password into $STATE"
  start_host redis
  wait_host redis 10 || fail_up "redis does not answer at $REDIS"
  haproxy_cfg >"$STATE/haproxy.cfg"
  haproxy -c -q -f "$STATE/haproxy.cfg" >>"$STATE/logs/lb.log" 2>&1 || fail_up "haproxy rejects $STATE/haproxy.cfg"
  rm -f "$SOCK"
  start_host lb
  for h in cp1 cp2 cp3 dp1 dp2 w1 w2 w3; do start_host "$h"; done

  # ---- ready: a leader that knows 3 workers and 2 data planes
  local j="" ok=0 why
  for i in $(seq 1 600); do # 60 s
    alive_or_fail "${HOSTS[@]}"
    if j=$(leader_status) && echo "$j" | $PY -c '
import json,sys
j=json.load(sys.stdin)
sys.exit(0 if len(j["workers"])==3 and all(w["schedulable"] for w in j["workers"]) and len(j["dataplanes"])==2 else 1)' 2>/dev/null; then
      ok=1
      break
    fi
    sleep 0.1
  done
  if [ $ok != 1 ]; then
    why="no leader with 3 workers and 2 data planes after 60 s"
    [ -n "$j" ] && why="$why; the leader says: $j"
    fail_up "$why"
  fi
  local leader
  leader=$(echo "$j" | $PY -c 'import json,sys; print(json.load(sys.stdin)["leader"])')
  # HAProxy: the listeners, and the data planes the leader added, up
  wait_host lb 10 || fail_up "HAProxy's runtime API does not answer at $SOCK"
  local up=0
  for i in $(seq 1 100); do # 10 s
    up=$(haproxy_dp_up | wc -l)
    [ "$up" -ge 2 ] && break
    sleep 0.1
  done
  [ "$up" -ge 2 ] || log "warning: HAProxy's dataplanes backend has $up of 2 data planes up"
  log "ready: leader $leader, 3 workers, 2 data planes ($RUNTIME runtime); invocations: curl -H 'Host: NAME' http://$INVOKE/ ; registrations: http://$REGISTER/registerService ; haproxy dataplanes up: $up ; state $STATE"
}

# names of the servers in HAProxy's dataplanes backend that are up (operational state 2)
haproxy_dp_up() {
  haproxy_cmd "show servers state dataplanes" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ && NF > 10 && $6 == 2 {print $4}'
}

# ---- status -------------------------------------------------------------------------------
cmd_status() {
  local h p n running=0
  echo "cluster $PREFIX ($NET.0/24, bridge $BR$([ -e "/sys/class/net/$BR" ] || echo ": absent")), state $STATE"
  for h in "${HOSTS[@]}"; do
    n=$(ns "$h")
    local link="-" netns="absent" proc="not running" extra=""
    [ -e "/run/netns/$n" ] && netns="present"
    [ -e "/sys/class/net/$n" ] && link=$(cat "/sys/class/net/$n/operstate")
    if p=$(host_pid "$h"); then
      proc="pid $p"
      running=$((running + 1))
    fi
    if [ "$netns" = present ]; then
      extra=$(ip netns pids "$n" 2>/dev/null | grep -vcx "${p:-x}")
      extra="; other processes: $extra"
    fi
    printf '  %-6s %-14s %-15s netns %-7s link %-5s %s%s\n' "$h" "$n" "${ADDR[$h]}" "$netns" "$link" "$proc" "$extra"
  done
  [ $running -gt 0 ] || { echo "nothing running"; return 0; }
  for h in cp1 cp2 cp3; do
    local j
    j=$(cp_status "${ADDR[$h]}") || { echo "  $h: no answer"; continue; }
    echo "$j" | $PY -c '
import json,sys
j=json.load(sys.stdin); name=sys.argv[1]
print("  %s: %s (leader %s)" % (name, j["role"], j["leader"]))
if j["role"] == "leader":
    for w in j["workers"]:
        print("    worker %s %s schedulable=%s sandboxes=%d" % (w["name"], w["address"], w["schedulable"], w["sandboxes"]))
    for d in j["dataplanes"]:
        print("    dataplane %s proxy %s api %s" % (d["name"], d["proxy"], d["api"]))
    for f in j["functions"]:
        print("    function %s state=%s ready=%s" % (f["name"], f.get("state"), f.get("ready")))' "$h" 2>/dev/null
  done
  if [ -S "$SOCK" ]; then
    echo "  haproxy (invocations $INVOKE, registrations $REGISTER):"
    haproxy_cmd "show servers state" 2>/dev/null | awk '$1 ~ /^[0-9]+$/ && NF > 10 {
      st = ($6 == 2 ? "UP" : ($6 == 0 ? "DOWN" : "state " $6)); printf "    %s/%s %s %s\n", $2, $4, $5, st }'
  fi
}

case $CMD in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
start) cmd_start "$START_HOST" ;;
esac
