#!/usr/bin/env bash
# bench/cpu_limit.sh: what the worker's CPU limit policy (sandboxCpuLimit) does to a function
# InVitro registers with requested_cpu=100 (a tenth of a CPU) and then asks for 100 ms of
# work: for each policy, a fresh cluster (cp, dp, one oci worker) on ephemeral ports, one warm
# sandbox, N sequential invocations with requested_cpu: 100 and the machine's calibrated
# multiplier (dirigent-fn --calibrate: about 100 ms of CPU), p50 and max latency printed.
# `request` is what the worker did before issue 12 (a hard quota of max(request, 100m)).
#
#   sudo bench/cpu_limit.sh [--quick] [--build DIR] [-n N] [POLICY ...]  (default: none request 2x)
# Root, crun, skopeo and umoci (skipped otherwise). Prints one line per policy and a RESULT line.
set -u
S=$(cd "$(dirname "$0")/.." && pwd)
. "$S/bench/lib.sh"
B=$S/build
N=10
POLICIES=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) B=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    --quick) N=3; shift ;;
    --*) shift ;; # run_all.sh's other arguments
    *) POLICIES+=("$1"); shift ;;
    esac
done
[ ${#POLICIES[@]} -gt 0 ] || POLICIES=(none request 2x)
B=$(cd "$B" && pwd)
missing=""
[ "$(id -u)" = 0 ] || missing="root"
for t in crun skopeo umoci; do command -v $t >/dev/null || missing="$missing $t"; done
if [ -n "$missing" ]; then
    echo "cpu_limit.sh: skipped, needs:$missing"
    exit 0
fi
RESULT="RESULT"
T=$(mktemp -d /tmp/dg-cpulimit.XXXXXX)
PIDS=()
BRIDGE=dgcpul
cleanup() {
    stop_pids 20
    ip link del "$BRIDGE" 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

"$S/scripts/make-image.sh" "$B/dirigent-fn" "$T/image" >/dev/null || exit 1
MULT=$("$B/dirigent-fn" --calibrate)
echo "# multiplier $MULT iterations/ms (dirigent-fn --calibrate): requested_cpu 100 = ~100 ms of CPU"

for pol in "${POLICIES[@]}"; do
    PIDS=()
    rm -rf "$T/run" "$T/data"
    "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --dataDir "$T/cp-$pol" \
        --heartbeatInterval 300ms --traceOutputFolder "" >"$T/cp.log" 2>&1 &
    PIDS+=($!)
    wait_log "$T/cp.log" 'registration on' || exit 1
    CPI=127.0.0.1:$(port_of "$T/cp.log" 'internal api on')
    CPR=127.0.0.1:$(port_of "$T/cp.log" 'registration on')
    "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --name dp1 --controlPlaneAddress "$CPI" \
        --heartbeatInterval 300ms --traceOutputFolder "" >"$T/dp.log" 2>&1 &
    PIDS+=($!)
    wait_log "$T/dp.log" 'proxy on' || exit 1
    DP=127.0.0.1:$(port_of "$T/dp.log" 'proxy on')
    "$B/dirigent-worker" --port 0 --name cpul-w1 --runtime oci --imageRoots "$T" --controlPlaneAddress "$CPI" \
        --heartbeatInterval 300ms --runDir "$T/run" --dataDir "$T/data" --bridge "$BRIDGE" \
        --sandboxSubnet 100.124.0.0/24 --netnsPool 2 --sandboxCpuLimit "$pol" >"$T/w.log" 2>&1 &
    PIDS+=($!)
    wait_log "$T/w.log" 'cpul-w1: listening on' 30 || exit 1
    for _ in $(seq 100); do
        curl -sf "http://$CPR/v1/status" | grep -q cpul-w1 && break
        sleep 0.1
    done
    curl -sf -XPOST "http://$CPR/registerService" -d "cold_start_sweep=false&image=oci%3A${T//\//%2F}%2Fimage%3Alatest&name=f100&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=204&scaling_lower_bound=1&scaling_upper_bound=1" >/dev/null || exit 1
    inv() { curl -s -o /dev/null -w '%{time_total}\n' -m 60 -H 'Host: f100' -H 'Workload: trace' \
        -H 'Requested_cpu: 100' -H "Multiplier: $MULT" -H 'Requested_memory: 2048' "http://$DP/"; }
    inv >/dev/null # the cold start
    for _ in $(seq "$N"); do inv; done | sort -n >"$T/lat"
    awk -v pol="$pol" '{a[NR]=$1} END {printf "sandboxCpuLimit %-8s p50 %4.0f ms  max %4.0f ms  (%d invocations of 100 ms of work, requested_cpu=100)\n", pol, a[int((NR+1)/2)]*1000, a[NR]*1000, NR}' "$T/lat"
    RESULT="$RESULT p50_ms_$pol=$(awk '{a[NR]=$1} END {printf "%.0f", a[int((NR+1)/2)]*1000}' "$T/lat")"
    stop_pids 20
done
echo "$RESULT"
