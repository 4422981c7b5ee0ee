#!/usr/bin/env bash
# Cold starts with real containers (issue 4, DESIGN.md §10), side by side in one run:
#   floor     bare `crun run --detach` of the dirigent-fn image, bundle (overlay rootfs,
#             config.json) and network namespace made beforehand, until its first HTTP 200:
#             serially (p50/p99) and with 2 at a time (the cores), containers/s
#   dirigent  dirigent-cp + dirigent-dp + a dirigent-worker with the oci runtime: a request to a
#             function at zero until its response (p50/p99), one at a time; then many functions
#             at once (creations/s when cold starts arrive faster than the worker serves them);
#             with the worker's breakdown of each create from the CP's cold-start trace
# Root only (crun, mounts, namespaces). Addresses: 100.125.0.0/24 on the bench's own bridge.
#   bench/sandbox_oci.sh [--quick] [--build DIR] [--n N] [--burst M]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
BUILD=build
N=100
BURST=40
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) N=20; BURST=16;;
    --build) BUILD=$2; shift;;
    --n) N=$2; shift;;
    --burst) BURST=$2; shift;;
    *) echo "usage: $0 [--quick] [--build DIR] [--n N] [--burst M]" >&2; exit 2;;
  esac
  shift
done
if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; then
  echo "sandbox_oci: needs root and crun: skipped"; exit 0
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
[ -f "$IMG/index.json" ] || { echo "sandbox_oci: no image at $IMG (make image)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/dg-bench-oci.XXXXXX)
chmod 711 "$TMP" # searchable by others: the worker's sandboxes run in a user namespace
BR=dgb0
PIDS=()
cleanup() {
  stop_pids
  crun_floor_cleanup "$TMP"
  for id in $(crun --root "$TMP/run/crun" list -q 2>/dev/null); do crun --root "$TMP/run/crun" delete -f "$id" >/dev/null 2>&1 || true; done
  { grep -o " $TMP/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done; } || true
  for l in $(ls /sys/class/net | grep "^${BR}"); do ip link del "$l" 2>/dev/null || true; done
  [ -n "${KEEP_TRACE:-}" ] && cp "$TMP/trace/cold_start_trace.csv" "$KEEP_TRACE" 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
if [ -d /sys/fs/cgroup/unified ] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

echo "machine: $(nproc) cores, $(uname -r), crun $(crun --version | head -1 | awk '{print $3}'), $(date -u +%Y-%m-%d)"

# ---- the floor: bare crun, everything prepared but the container itself (bench/lib.sh) -------
crun_floor "$TMP" "$IMG" "$N" 1 >"$TMP/floor.txt"
cat "$TMP/floor.txt"

# ---- dirigent: the whole path --------------------------------------------------------------
"$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 --heartbeatInterval 1s --dataDir "$TMP/cp" \
  --traceOutputFolder "$TMP/trace" --logLevel warn >"$TMP/cp.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/cp.log" 'registration on'
CPI=127.0.0.1:$(port_of "$TMP/cp.log" 'internal api on')
REG=http://127.0.0.1:$(port_of "$TMP/cp.log" 'registration on')
"$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" --heartbeatInterval 1s \
  --coldStartTimeout 60s --logLevel warn >"$TMP/dp.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/dp.log" 'proxy on'
P=http://127.0.0.1:$(port_of "$TMP/dp.log" 'proxy on')
"$B/dirigent-worker" --port 0 --name bench-oci --runtime oci --controlPlaneAddress "$CPI" \
  --heartbeatInterval 1s --runDir "$TMP/run" --dataDir "$TMP/data" --bridge "$BR" \
  --sandboxSubnet 100.125.0.0/22 --netnsPool 64 --killGrace 200ms --logLevel warn \
  --cpuMilli 1000000 --memoryMiB 1000000 \
  --prefetchImages "oci:$IMG:latest" >"$TMP/w.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/w.log" 'listening on'
for _ in $(seq 1 100); do curl -sf "$REG/v1/status" | grep -q '"dataplanes":\[{' && curl -sf "$REG/v1/status" | grep -q '"workers":\[{' && break; sleep 0.05; done
sleep 1 # the prefetch and the namespace pool fill
register() {
  curl -sf -o /dev/null -XPOST "$REG/registerService" \
    -d "name=$1&image=oci:$IMG:latest&port_forwarding=80&port_forwarding=tcp&requested_cpu=1000&requested_memory=128&scaling_upper_bound=1"
}
for i in $(seq 1 $((N + BURST))); do register "f$i"; done
# serial: one cold start at a time
: >"$TMP/serial.txt"
for i in $(seq 1 "$N"); do
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -H "Host: f$i" "$P/" >>"$TMP/serial.txt"
done
# burst: BURST functions at zero at once
t0=$(date +%s%N)
CURLS=()
for i in $(seq $((N + 1)) $((N + BURST))); do
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -m 60 -H "Host: f$i" "$P/" >"$TMP/burst.$i" &
  CURLS+=($!)
done
wait "${CURLS[@]}" || true
t1=$(date +%s%N)
cat "$TMP"/burst.* >"$TMP/burst.txt"
sleep 0.5
/usr/bin/python3 - "$TMP" "$N" "$BURST" "$(( (t1 - t0) / 1000 ))" <<'EOF'
import csv, sys
tmp, n, burst, burst_us = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
floor = dict(l.split() for l in open(f"{tmp}/floor.txt"))
serial = [l.split() for l in open(f"{tmp}/serial.txt")]
ok = [float(t) * 1000 for c, t in serial if c == "200"]
bursts = [l.split() for l in open(f"{tmp}/burst.txt")]
bok = sum(1 for c, t in bursts if c == "200")
rows = [r for r in csv.DictReader(open(f"{tmp}/trace/cold_start_trace.csv")) if r["success"] == "true"]
def col(k): return pct([int(r[k]) / 1000 for r in rows], 50)
p50, p99 = pct(ok, 50), pct(ok, 99)
fp50 = float(floor["floor_serial_p50_ms"])
rate = burst / (burst_us / 1e6)
frate = float(floor["floor_parallel_per_s"])
print()
print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8} {'per s':>8}")
print(f"{'bare crun run (floor)':34} {fp50:8.1f} {float(floor['floor_serial_p99_ms']):8.1f} {frate:8.1f}")
print(f"{'dirigent cold start, end to end':34} {p50:8.1f} {p99:8.1f} {rate:8.1f}")
print(f"{'ratio dirigent / floor':34} {p50 / fp50:8.2f} {'':>8} {rate / frate:8.2f}")
print(f"serial: {len(ok)}/{len(serial)} ok; burst of {burst}: {bok} ok in {burst_us / 1e6:.2f} s")
print("worker's breakdown of a create, p50 ms: image %.2f, rootfs %.2f, network %.2f, runtime start %.2f, readiness %.2f"
      % (col("image_fetch"), col("sandbox_create"), col("network_setup"), col("sandbox_start"), col("readiness_probe")))
print(f"goals: cold-start p50 <= 1.5x floor ({'met' if p50 <= 1.5 * fp50 else 'NOT met'}) and <= 30 ms "
      f"({'met' if p50 <= 30 else 'NOT met'}); creation rate >= 0.9x bare crun ({'met' if rate >= 0.9 * frate else 'NOT met'})")
print(f"RESULT floor_p50_ms={fp50:.1f} floor_per_s={frate:.1f} p50_ms={p50:.1f} p99_ms={p99:.1f} "
      f"per_s={rate:.1f} p50_ratio={p50 / fp50:.2f} rate_ratio={rate / frate:.2f}")
sys.exit(0 if len(ok) == len(serial) and bok == burst else 1)
EOF
