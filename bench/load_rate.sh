#!/usr/bin/env bash
# load_rate.sh: how closely `dirigent load rps` keeps its open-loop schedule. It sends
# --rate R for --duration S seconds to a dirigent-fn on 127.0.0.1 (answers at once) and
# reports the sends per second and how late each send was against its slot (i x 1000/R ms),
# from the load's own CSV (start_ms). This was a test's wall-clock check (400/s +- 10 %);
# the test now checks the open loop by state (tests/integration/test_load.sh) and the timing
# lives here, measured and not judged.
#
# Output: a line per second, then
#   RESULT rate=R sent=N per_second_min=.. per_second_max=.. late_p50_ms=.. late_p99_ms=..
# Exit status: 0 when every request was answered 200.
#
# Usage: bench/load_rate.sh [--quick] [--rate R] [--duration S] [--build DIR]
#   defaults 400/s for 5 s with ./build; --quick: 2 s (a few seconds in all)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=400
DURATION=5
BUILD=$ROOT/build
while [ $# -gt 0 ]; do
    case $1 in
    --rate) RATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --quick) DURATION=2; shift ;;
    *) echo "usage: $0 [--quick] [--rate R] [--duration S] [--build DIR]" >&2; exit 2 ;;
    esac
done

TMP=$(mktemp -d /tmp/dg-load-rate.XXXXXX)
PIDS=()
trap 'stop_pids 5; rm -rf "$TMP"' EXIT
"$BUILD/dirigent-fn" --host 127.0.0.1 --port 0 >"$TMP/fn.log" 2>&1 &
PIDS+=($!)
wait_log "$TMP/fn.log" 'listening on'
FNA=127.0.0.1:$(port_of "$TMP/fn.log" 'listening on')

"$BUILD/dirigent" --json --dp "$FNA" load rps --rate "$RATE" --duration "$DURATION" anyfn \
    --csv "$TMP/rps.csv" >"$TMP/rps.json"

/usr/bin/python3 - "$TMP/rps.csv" "$RATE" "$DURATION" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
rate, duration = float(sys.argv[2]), int(sys.argv[3])
starts = sorted(float(r["start_ms"]) for r in rows)
bins = [0] * duration
for s in starts:
    bins[min(duration - 1, int(s // 1000))] += 1
for i, b in enumerate(bins):
    print(f"second {i}: {b} sends")
late = sorted(max(0.0, s - i * 1000 / rate) for i, s in enumerate(starts))
p = lambda q: late[min(len(late) - 1, int(q * len(late)))]
print(f"RESULT rate={rate:g} sent={len(rows)} per_second_min={min(bins)} per_second_max={max(bins)} "
      f"late_p50_ms={p(0.5):.2f} late_p99_ms={p(0.99):.2f}")
sys.exit(0 if all(r["status"] == "200" for r in rows) else 1)
EOF
