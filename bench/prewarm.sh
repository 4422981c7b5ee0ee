#!/usr/bin/env bash
# Pre-created sandboxes (issue 16), side by side in one run, one cold start at a time:
#   floor     bare `crun run --detach` of the dirigent-fn image until its first HTTP 200, the
#             bundle (overlay rootfs, config.json) and network namespace made beforehand
#   cold      dirigent-cp + dirigent-dp + an oci dirigent-worker: a request to a function at
#             zero until its response, without a pool (every step of the create on the path)
#   pooled    the same with `prewarm 1` per function: the worker made the container ahead
#             (`crun create`), the cold start only starts it and probes it
# and what a pooled sandbox costs: the memory it holds while it waits (its cgroup's, and the
# RSS of its waiting process), the time to make one, and the worker's CPU per one (crun
# included: the worker reaps it).
# Root only (crun, mounts, namespaces). Addresses: 100.124.0.0/22 on the bench's own bridge.
#   bench/prewarm.sh [--quick] [--build DIR] [--n N] [--out FILE]
# Results go to FILE (default bench/results/prewarm.txt); --quick: 15 of each, into a scratch
# directory (never over bench/results/).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(dirname "$0")/.."
BUILD=build
N=60
QUICK=0
OUTF=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) N=15; QUICK=1;;
    --build) BUILD=$2; shift;;
    --n) N=$2; shift;;
    --out) OUTF=$2; shift;;
    *) echo "usage: $0 [--quick] [--build DIR] [--n N] [--out FILE]" >&2; exit 2;;
  esac
  shift
done
if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; then
  echo "prewarm: needs root and crun: skipped"; exit 0
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
[ -f "$IMG/index.json" ] || { echo "prewarm: no image at $IMG (make image)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/dg-bench-prewarm.XXXXXX)
chmod 711 "$TMP" # searchable by others: the worker's sandboxes run in a user namespace
if [ -z "$OUTF" ]; then
  if [ "$QUICK" = 1 ]; then OUTF=$(mktemp -d /tmp/dg-prewarm-quick.XXXXXX)/prewarm.txt
  else OUTF=bench/results/prewarm.txt; fi
fi
BR=dgpb
PIDS=()
cleanup() {
  stop_pids
  for id in $(crun --root "$TMP/crun" list -q 2>/dev/null); do crun --root "$TMP/crun" delete -f "$id" >/dev/null 2>&1; done
  for id in $(crun --root "$TMP/run/crun" list -q 2>/dev/null); do crun --root "$TMP/run/crun" delete -f "$id" >/dev/null 2>&1; done
  grep -o " $TMP/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for l in $(ls /sys/class/net | grep "^${BR}"); do ip link del "$l" 2>/dev/null; done
  crun_floor_cleanup "$TMP"
  rm -rf "$TMP"
}
trap cleanup EXIT
if [ -d /sys/fs/cgroup/unified ] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  mkdir -p /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ), machine: $(nproc) cores, $(uname -r), crun $(crun --version | head -1 | awk '{print $3}')"
  echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$TMP/head.txt"

# ---- the floor: bare crun run, everything prepared but the container itself (bench/lib.sh) ---
crun_floor "$TMP" "$IMG" "$N" 1 >"$TMP/floor.txt"

# ---- dirigent --------------------------------------------------------------------------------
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
"$B/dirigent-worker" --port 0 --name bench-pw --runtime oci --controlPlaneAddress "$CPI" \
  --heartbeatInterval 1s --runDir "$TMP/run" --dataDir "$TMP/data" --bridge "$BR" \
  --sandboxSubnet 100.124.0.0/22 --netnsPool 64 --killGrace 200ms --logLevel warn \
  --cpuMilli 1000000 --memoryMiB 1000000 \
  --prefetchImages "oci:$IMG:latest" >"$TMP/w.log" 2>&1 &
WPID=$!
PIDS+=($WPID)
wait_log "$TMP/w.log" 'listening on'
WKA=127.0.0.1:$(port_of "$TMP/w.log" 'listening on')
for _ in $(seq 1 200); do
  curl -sf "$REG/v1/status" | grep -q '"dataplanes":\[{' && curl -sf "$REG/v1/status" | grep -q '"workers":\[{' && break
  sleep 0.05
done
sleep 1 # the prefetch and the namespace pool fill
metric() { curl -sf "http://$WKA/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
# worker CPU with its reaped children (crun): utime stime cutime cstime, clock ticks
wticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$WPID/stat"; }
register() { # NAME PREWARM
  curl -sf -o /dev/null -XPOST "$REG/registerService" \
    -d "name=$1&image=oci:$IMG:latest&port_forwarding=80&port_forwarding=tcp&requested_cpu=100&requested_memory=128&scaling_upper_bound=1&prewarm=$2"
}
cold() { # cold PREFIX FILE: one cold start at a time of PREFIX1..N
  : >"$2"
  for i in $(seq 1 "$N"); do
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -m 60 -H "Host: $1$i" "$P/" >>"$2"
  done
}
# without a pool
for i in $(seq 1 "$N"); do register "c$i" 0; done
pa0=$(metric dg_worker_probe_attempts_total); pp0=$(metric dg_worker_probes_total)
cold c "$TMP/cold.txt"
pa1=$(metric dg_worker_probe_attempts_total); pp1=$(metric dg_worker_probes_total)
# with a pool: N functions, prewarm 1 each; wait until every one is made
t0=$(date +%s%N)
k0=$(wticks)
for i in $(seq 1 "$N"); do register "p$i" 1; done
for _ in $(seq 1 2400); do
  [ "$(metric dg_worker_prewarm_ready)" = "$N" ] && break
  sleep 0.05
done
t1=$(date +%s%N)
k1=$(wticks)
sleep 2 # a quiet moment: what the pooled ones hold while they wait
held=$(metric dg_worker_prewarm_held_bytes)
ready=$(metric dg_worker_prewarm_ready)
made=$(metric dg_worker_prewarm_made_total)
make_s=$(metric dg_worker_prewarm_make_seconds_total)
rss_kb=0
for pid in $(crun --root "$TMP/run/crun" list 2>/dev/null | awk 'NR > 1 && $3 == "created" {print $2}'); do
  r=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  rss_kb=$((rss_kb + ${r:-0}))
done
pa2=$(metric dg_worker_probe_attempts_total); pp2=$(metric dg_worker_probes_total)
cold p "$TMP/pooled.txt"
pa3=$(metric dg_worker_probe_attempts_total); pp3=$(metric dg_worker_probes_total)
hits=$(metric dg_worker_prewarm_hits_total)
sleep 0.5 # the trace's last rows
HZ=$(getconf CLK_TCK)
/usr/bin/python3 - "$TMP" "$N" "$held" "$ready" "$made" "$make_s" "$rss_kb" "$hits" \
  "$(( (t1 - t0) / 1000 ))" "$((k1 - k0))" "$HZ" \
  "${pa0:-0} ${pp0:-0} ${pa1:-0} ${pp1:-0} ${pa2:-0} ${pp2:-0} ${pa3:-0} ${pp3:-0}" <<'EOF' | tee "$TMP/result.txt"
import sys
tmp, n = sys.argv[1], int(sys.argv[2])
held, ready, made, make_s = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
rss_kb, hits, fill_us, ticks, hz = int(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")
floor = dict(l.split() for l in open(f"{tmp}/floor.txt"))
def lat(f):
    rows = [l.split() for l in open(f)]
    return [float(t) * 1000 for c, t in rows if c == "200"], len(rows)
cold, nc = lat(f"{tmp}/cold.txt")
pooled, npo = lat(f"{tmp}/pooled.txt")
fp50, fp99 = float(floor["floor_serial_p50_ms"]), float(floor["floor_serial_p99_ms"])
print()
print(f"{'one cold start at a time':40} {'p50 ms':>8} {'p99 ms':>8} {'x floor':>8}")
print(f"{'bare crun run to first 200 (floor)':40} {fp50:8.2f} {fp99:8.2f} {1:8.2f}")
print(f"{'dirigent, no pool':40} {pct(cold, 50):8.2f} {pct(cold, 99):8.2f} {pct(cold, 50) / fp50:8.2f}")
print(f"{'dirigent, pre-created (prewarm 1)':40} {pct(pooled, 50):8.2f} {pct(pooled, 99):8.2f} {pct(pooled, 50) / fp50:8.2f}")
print(f"ok: no pool {len(cold)}/{nc}, pooled {len(pooled)}/{npo}; pooled starts (hits) {hits:.0f} of {npo}")
per = held / ready if ready else float("nan")
print(f"a pooled sandbox holds {per / 1024:.0f} KiB (its memory cgroup, {ready:.0f} waiting), "
      f"its waiting process {rss_kb / max(ready, 1):.0f} KiB RSS")
print(f"making one: {make_s / made * 1000 if made else float('nan'):.1f} ms from start to `crun create` done (2 at a time), "
      f"{n} made in {fill_us / 1e6:.2f} s ({n / (fill_us / 1e6):.1f}/s), worker CPU with crun "
      f"{ticks / hz * 1000 / n:.1f} ms each")
import csv
rows = [r for r in csv.DictReader(open(f"{tmp}/trace/cold_start_trace.csv")) if r["success"] == "true"]
for name, pre in (("no pool", "c"), ("pre-created", "p")):
    rs = [r for r in rows if r["service_name"].startswith(pre) and r["service_name"][1:].isdigit()]
    col = lambda k: pct([int(r[k]) / 1000 for r in rs], 50)
    print(f"worker's breakdown, {name}, p50 ms: image {col('image_fetch'):.2f}, rootfs {col('sandbox_create'):.2f}, "
          f"network {col('network_setup'):.2f}, start {col('sandbox_start'):.2f}, readiness {col('readiness_probe'):.2f}, "
          f"to every DP {col('data_plane_propagation'):.2f} ({len(rs)} rows)")
pa = [float(x) for x in sys.argv[12].split()]
for name, a, b in (("no pool", 0, 2), ("pre-created", 4, 6)):
    probes = pa[b + 1] - pa[a + 1]
    if probes > 0:
        print(f"readiness probe attempts (connects), {name}: {(pa[b] - pa[a]) / probes:.1f} per probe "
              f"({probes:.0f} probes)")
saved = pct(cold, 50) - pct(pooled, 50)
print(f"saved per cold start (p50): {saved:.2f} ms; goal pooled p50 <= 0.5x floor: "
      f"{'met' if pct(pooled, 50) <= 0.5 * fp50 else 'NOT met'}")
EOF
cat "$TMP/head.txt" "$TMP/result.txt" >"$OUTF"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUTF"
echo "written to $OUTF"
