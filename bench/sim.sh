#!/usr/bin/env bash
# dirigent-sim (issue 5): the placement policies and both autoscaler modes on
#   1. InVitro's example trace (tests/data/invitro-example, Azure 2019 format: 4 functions),
#      the first 20 minutes with 5 of warm-up, as the paper's replays
#   2. a larger synthetic trace in the same format (seeded): 400 functions whose per-minute
#      counts follow the example's functions, scaled, on a cluster small enough that placement
#      matters (capacity binds)
# and the simulator's own speed (simulated invocations per second of wall time).
#   bench/sim.sh [--quick] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build
FUNCS=400
MINUTES=120
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) FUNCS=200; MINUTES=30;;
    --build) BUILD=$2; shift;;
    *) echo "usage: $0 [--quick] [--build DIR]" >&2; exit 2;;
  esac
  shift
done
B=$(cd "$BUILD" && pwd)
SIM=$B/dirigent-sim
EX=tests/data/invitro-example
TMP=$(mktemp -d /tmp/dg-bench-sim.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
CMP='placementPolicy=random|round-robin|kubernetes|chbl,autoscaler=dirigent|knative'

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%d)"
echo
echo "== 1. InVitro example trace, 20 minutes (5 warm-up), 20 workers, create 20 ms"
"$SIM" "$EX" --minutes 20 --warmupMinutes 5 --compare "$CMP" 2>"$TMP/speed1"

# a larger trace: each synthetic function copies one example function's minutes, scaled
/usr/bin/python3 - "$EX" "$TMP/synth" "$FUNCS" <<'EOF'
import csv, os, random, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
random.seed(42)
os.makedirs(dst)
def rows(name):
    with open(os.path.join(src, name)) as f:
        r = list(csv.reader(f))
    return r[0], r[1:]
ih, inv = rows("invocations.csv")
dh, dur = rows("durations.csv")
mh, mem = rows("memory.csv")
with open(f"{dst}/invocations.csv", "w", newline="") as fi, \
     open(f"{dst}/durations.csv", "w", newline="") as fd, \
     open(f"{dst}/memory.csv", "w", newline="") as fm:
    wi, wd, wm = csv.writer(fi), csv.writer(fd), csv.writer(fm)
    wi.writerow(ih); wd.writerow(dh); wm.writerow(mh)
    for k in range(n):
        j = k % len(inv)
        h = f"{k:064x}"
        scale = random.choice([0, 0, 1, 1, 1, 2, 5, 20])
        wi.writerow(inv[j][:2] + [h] + inv[j][3:4] + [str(int(c) * scale // 2) for c in inv[j][4:]])
        d = dur[j][:2] + [h] + dur[j][3:]
        m = mem[j][:2] + [h] + mem[j][3:]
        wd.writerow(d); wm.writerow(m)
EOF
echo
echo "== 2. synthetic: $FUNCS functions, $MINUTES minutes (10 warm-up), 10 workers x 4000m/8192MiB, cpu 0.565m/MiB, create 20 ms + 300 ms for an image a worker has not pulled"
"$SIM" "$TMP/synth" --minutes "$MINUTES" --warmupMinutes 10 --workers 10 --workerCpuMilli 4000 \
  --workerMemoryMiB 8192 --cpuPerMiB 0.565 --imagePull 300ms --compare "$CMP" 2>"$TMP/speed2"
echo
echo "== simulator speed (one run each)"
cat "$TMP/speed1" "$TMP/speed2" | sed 's/^dirigent-sim: //'
best=$(cat "$TMP/speed2" | awk '{print $(NF-2)}' | tr -d '(' | sort -n | tail -1)
echo "RESULT synthetic_invocations_per_wall_second=$best"
