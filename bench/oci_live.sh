#!/usr/bin/env bash
# What a create costs with many containers alive (issue 16, session 2): ONE standalone
# dirigent-worker (oci runtime, no CP), LIVE sandboxes created through its API and left
# running, then N probe creates one at a time, each deleted (and gone) before the next, 100 ms
# apart. Reported: the probes' create until the first HTTP answer (latencyUs.total) and its
# parts (start: `crun run`; rootfs; ready), and the CPU the worker and its children (crun, the
# containers it reaped) spent per probe create+delete (/proc/PID/stat utime+stime+cutime+cstime:
# a container is counted when the worker reaps it, so this is a per-operation cost, not a
# wall-clock one, and a shared machine disturbs it less). Run it with --live 0 and --live 300 to
# see what the live containers add. Writes nothing (prints only); scratch in /tmp.
# Root and crun; takes /tmp/dg-itest.lock (containers, a bridge) unless its caller holds it.
#   bench/oci_live.sh [--build DIR] [--live M] [--n N]
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if ! in_itest_lock; then exec flock /tmp/dg-itest.lock "$0" "$@"; fi
cd "$(dirname "$0")/.."
BUILD=build M=300 N=20
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift;;
    --live) M=$2; shift;;
    --n) N=$2; shift;;
    *) echo "usage: $0 [--build DIR] [--live M] [--n N]" >&2; exit 2;;
  esac
  shift
done
if [ "$(id -u)" != 0 ] || ! command -v crun >/dev/null; then
  echo "oci_live: needs root and crun: skipped"; exit 0
fi
B=$(cd "$BUILD" && pwd)
IMG=$B/images/dirigent-fn
[ -f "$IMG/index.json" ] || { echo "oci_live: no image at $IMG (make image)" >&2; exit 1; }
TMP=$(mktemp -d /tmp/dg-ocilive.XXXXXX)
PIDS=()
trap 'stop_pids; rm -rf "$TMP"' EXIT
"$B/dirigent-worker" --port 0 --name ocilive --runtime oci --controlPlaneAddress "" \
  --runDir "$TMP/run" --dataDir "$TMP/data" --netnsPool 16 --killGrace 200ms --bridge dgocl0 \
  --sandboxSubnet 100.119.0.0/20 --cpuMilli 1000000 --memoryMiB 1000000 \
  --prefetchImages "oci:$IMG:latest" >"$TMP/w.log" 2>&1 &
PIDS=($!)
wait_log "$TMP/w.log" "ocilive: listening on" 30
wait_log "$TMP/w.log" "image: oci:.*: ready" 60
A=127.0.0.1:$(port_of "$TMP/w.log" "ocilive: listening on")
spec() { echo "{\"function\":\"$1\",\"image\":\"oci:$IMG:latest\",\"cpuMilli\":100,\"memoryMiB\":64}"; }
export A IMG
seq 1 "$M" | xargs -r -P 4 -I{} curl -sf -m 120 -o /dev/null -XPOST "http://$A/v1/sandboxes" \
  -d "{\"function\":\"live{}\",\"image\":\"oci:$IMG:latest\",\"cpuMilli\":100,\"memoryMiB\":64}"
LIVE=$(curl -sf "http://$A/v1/sandboxes" | grep -o '"id"' | wc -l)
MOUNTS=$(wc -l </proc/self/mountinfo)
cpu() { awk '{print $14 + $15 + $16 + $17}' "/proc/${PIDS[0]}/stat"; }
: >"$TMP/lat"
C0=$(cpu)
for i in $(seq 1 "$N"); do
  out=$(curl -sf -m 60 -XPOST "http://$A/v1/sandboxes" -d "$(spec "p$i")")
  /usr/bin/python3 -c 'import json,sys; l=json.loads(sys.argv[1])["latencyUs"]; print(l["total"], l["start"], l["rootfs"], l["ready"])' "$out" >>"$TMP/lat"
  id=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$out")
  curl -sf -XDELETE "http://$A/v1/sandboxes/$id" >/dev/null
  for _ in $(seq 1 200); do curl -sf "http://$A/v1/sandboxes" | grep -q "\"$id\"" || break; sleep 0.02; done
  sleep 0.1
done
C1=$(cpu)
echo "# oci_live: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, crun $(crun --version | head -1 | awk '{print $3}'), load average $(awk '{print $1}' /proc/loadavg)"
echo "live sandboxes $LIVE, host mounts $MOUNTS, $N probe creates"
/usr/bin/python3 - "$TMP/lat" "$C0" "$C1" "$N" "$LIVE" "$(getconf CLK_TCK)" <<'PY'
import sys
rows = [tuple(int(x) for x in l.split()) for l in open(sys.argv[1]) if l.strip()]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p * len(v)))] / 1000
out = {}
for k, name in enumerate(["total", "start", "rootfs", "ready"]):
    col = [r[k] for r in rows]
    out[name] = (pct(col, .5), pct(col, .9))
    print(f"{name:7} p50 {out[name][0]:7.1f} ms  p90 {out[name][1]:7.1f} ms")
cpu_ms = (float(sys.argv[3]) - float(sys.argv[2])) * 1000 / int(sys.argv[6]) / int(sys.argv[4])
print(f"worker + children CPU per create+delete: {cpu_ms:.1f} ms")
print(f"RESULT oci_live live={sys.argv[5]} start_p50_ms={out['start'][0]:.1f} total_p50_ms={out['total'][0]:.1f} cpu_ms_per_create={cpu_ms:.1f}")
PY
