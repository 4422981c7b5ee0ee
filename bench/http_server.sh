#!/usr/bin/env bash
# http_server.sh: dirigent-fn's HTTP server against nginx, same machine, same run.
#
# Both servers answer `GET /` with a ~80-byte JSON body on 127.0.0.1 (dirigent-fn
# without requested_cpu answers at once; nginx with `return 200` and the very body
# dirigent-fn sent). Each runs on CPU 1, wrk -t1 -c64 on CPU 0. The rounds
# alternate (fn, nginx, fn, nginx, fn, nginx); each measurement is preceded by a warm-up
# wrk run that is discarded. Per server the best round (highest req/s) is
# reported, with that round's p50 and p99: noise on a shared machine only ever
# slows a run down, so the best run is the closest to the server's own cost.
#
# dirigent-fn comes from ./build (what `make` builds: debugoptimized, -O2 -g), or from
# --build DIR; --release builds --buildtype=release into build-bench/ at the repo root
# (gitignored) and measures that. Callgrind counts the same user-space instructions per
# request for both build types (within 1%), so the default measures what ships.
#
# Besides wrk's figures, each run reports the server's CPU use (utime+stime from /proc: the
# fn process, nginx's worker) as a percentage and in CPU microseconds per request, and the
# CPU use of wrk itself. On 2 CPUs both servers saturate the single wrk thread (~135-140k
# req/s here): with wrk near 100%, req/s only shows that fn keeps up, and CPU us/req (or
# callgrind, see bench/README.md) compares the servers' cost. "other load" is what other
# processes took of the server's CPU during the run (a shared machine): rounds with much of
# it are not comparable.
#
# Output: one line per run, a table, and a last machine-readable line
#   RESULT fn_rps=... nginx_rps=... ratio=... fn_p50_us=... nginx_p50_us=... p50_ratio=... ...
# Exit status: 0 on success; 1 if a server fails to start, a response is not 200,
# or wrk reports errors. Every process and temporary directory is removed on exit.
#
# Usage: bench/http_server.sh [--quick] [--duration S] [--warmup S] [--rounds N]
#                             [--connections N] [--build DIR | --release] [--wait-idle S]
#   defaults: 10 s measurements, 2 s warm-ups, 3 rounds, 64 connections (about 80 s)
#   --quick: 2 rounds of 3 s measurements after 1 s warm-ups (the whole script < 30 s)
#   --wait-idle S: first wait up to S s for CPUs 0 and 1 to be idle (shared machines)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=10
WARMUP=2
ROUNDS=3
CONNS=64
BUILD_DIR=""
RELEASE=0
WAIT_IDLE=0
SERVER_CPU=1
WRK_CPU=0

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case $1 in
    --quick) DURATION=3 WARMUP=1 ROUNDS=2 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --warmup) WARMUP=${2:?--warmup needs seconds}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a count}; shift ;;
    --connections) CONNS=${2:?--connections needs a count}; shift ;;
    --build) BUILD_DIR=${2:?--build needs a directory}; shift ;;
    --release) RELEASE=1 ;;
    --wait-idle) WAIT_IDLE=${2:?--wait-idle needs seconds}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "http_server.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
for v in DURATION WARMUP ROUNDS CONNS WAIT_IDLE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "http_server.sh: $v: expected an integer, got '${!v}'" >&2; exit 2; }
done
if [ "$DURATION" -lt 1 ] || [ "$ROUNDS" -lt 1 ] || [ "$CONNS" -lt 1 ]; then
    echo "http_server.sh: --duration, --rounds and --connections must be >= 1" >&2
    exit 2
fi

die() { echo "http_server.sh: $*" >&2; exit 1; }

for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install wrk util-linux curl)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found (apt-get install nginx-light)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server on CPU $SERVER_CPU, wrk on CPU $WRK_CPU)"

# ---- cleanup: every process we start is recorded here ---------------------------------------
if [ -n "$BUILD_DIR" ]; then
    BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || die "--build: no such directory"
fi
TMP=$(mktemp -d /tmp/dg-bench-http.XXXXXX)
cd "$TMP" # whatever a helper might write by accident lands here, not in the tree
FN_PID="" NGINX_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$FN_PID"
    stop_pid "$NGINX_PID"
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the dirigent-fn binary -----------------------------------------------------------------
# Default: ./build as `make` left it (debugoptimized, -O2 -g; `make bench` builds it first).
# The script does not run ninja there: other people's builds may be running in it.
# --release builds --buildtype=release into build-bench/ (our own directory) and uses that.
if [ "$RELEASE" = 1 ]; then
    BUILD_DIR=$ROOT/build-bench
    if [ ! -f "$BUILD_DIR/build.ninja" ]; then
        echo "# configuring $BUILD_DIR (--buildtype=release)"
        (cd "$ROOT" && timeout 120 meson setup "$BUILD_DIR" --buildtype=release >"$TMP/meson.log" 2>&1) ||
            { cat "$TMP/meson.log" >&2; die "meson setup $BUILD_DIR failed"; }
    fi
    timeout 300 ninja -C "$BUILD_DIR" dirigent-fn >"$TMP/ninja.log" 2>&1 ||
        { cat "$TMP/ninja.log" >&2; die "building dirigent-fn in $BUILD_DIR failed"; }
fi
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
FN_BIN=$BUILD_DIR/dirigent-fn
[ -x "$FN_BIN" ] || die "$FN_BIN not found (run 'make', pass --build DIR, or --release)"
BUILDTYPE=$(sed -n "s/^ *buildtype *= *//p" "$BUILD_DIR/meson-private/cmd_line.txt" 2>/dev/null | head -1)
if [ -z "$BUILDTYPE" ]; then
    BUILDTYPE=$(meson introspect "$BUILD_DIR" --buildoptions 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"]=="buildtype"))' 2>/dev/null ||
        echo unknown)
fi

# ---- helpers --------------------------------------------------------------------------------
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL PID: poll until URL answers 200 (at most 5 s) or PID dies.
wait_http() {
    local url=$1 pid=$2 code
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}


# run_wrk NAME URL SECONDS OUT: wrk pinned to the client CPU, bounded; fails loudly on errors.
run_wrk() {
    local name=$1 url=$2 secs=$3 out=$4
    if ! timeout $((secs + 15)) taskset -c $WRK_CPU wrk -t1 -c"$CONNS" -d"${secs}s" --latency \
        "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "$name: wrk failed"
    fi
    wrk_ok "$name" "$out" || die "$name: wrk's run failed"
}


# cpu_ticks CPU: busy (non-idle) ticks of one CPU so far.
cpu_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) if (i != 5 && i != 6) t += $i; print t }' /proc/stat
}

# children_ticks FILE: user+system CPU of the shell's waited-for children, in clock ticks,
# from the output of the `times` builtin saved in FILE (run `times` in the measuring shell
# itself: in a $(...) subshell it would see that subshell's children only).
children_ticks() {
    local line
    line=$(tail -1 "$1") # "0m1.234s 0m0.567s"
    awk -v l="$line" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        n = split(l, f, " "); t = 0
        for (i = 1; i <= n; i++) { split(f[i], ms, "m"); t += ms[1] * 60 + ms[2] }
        printf "%d\n", t * hz + 0.5 }'
}

# measure NAME URL PID...: warm-up, then one measurement; prints "rps p50_us p99_us
# server_cpu_pct server_cpu_us_per_req wrk_cpu_pct other_load_on_server_cpu_pct".
measure() {
    local name=$1 url=$2 out=$TMP/wrk-$1.txt rps p50 p99 t0 t1 c0 c1 w0 w1 s0 s1
    shift 2
    [ "$WARMUP" -gt 0 ] && run_wrk "$name" "$url" "$WARMUP" "$TMP/warmup-$name.txt"
    times >"$TMP/times0"
    t0=$(proc_ticks "$@") s0=$(cpu_ticks $SERVER_CPU) c0=$(date +%s%N)
    run_wrk "$name" "$url" "$DURATION" "$out"
    t1=$(proc_ticks "$@") s1=$(cpu_ticks $SERVER_CPU) c1=$(date +%s%N)
    times >"$TMP/times1"
    w0=$(children_ticks "$TMP/times0") w1=$(children_ticks "$TMP/times1")
    rps=$(awk '/^Requests\/sec:/ {printf "%d", $2 + 0.5}' "$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
    [ "$rps" -gt 0 ] || die "$name: 0 requests/s"
    awk -v r="$rps" -v a="$p50" -v b="$p99" -v dt=$((t1 - t0)) -v dw=$((w1 - w0)) \
        -v ds=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" -v ns=$((c1 - c0)) 'BEGIN {
        s = ns / 1e9; cpu = dt / hz; other = 100 * (ds - dt) / hz / s
        printf "%d %d %d %d %.1f %d %d\n", r, a, b, 100 * cpu / s + 0.5, 1e6 * cpu / (r * s),
            100 * dw / hz / s + 0.5, (other > 0) ? other + 0.5 : 0 }'
}

# cpu_busy: percent of CPU $WRK_CPU and $SERVER_CPU busy with other work over 1 s, e.g. "3 41".
cpu_busy() {
    local a b
    a=$(grep -E "^cpu($WRK_CPU|$SERVER_CPU) " /proc/stat)
    sleep 1
    b=$(grep -E "^cpu($WRK_CPU|$SERVER_CPU) " /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{
        idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
        if (NR <= 2) { i0[NR] = idle; t0[NR] = tot }
        else { k = NR - 2; dt = tot - t0[k]; printf "%d ", (dt > 0) ? 100 * (1 - (idle - i0[k]) / dt) + 0.5 : 0 }
    }'
}
BUSY=$(cpu_busy)
# --wait-idle S: on a shared machine, wait up to S seconds for both CPUs to be <= 10% busy.
waited=0
while [ "$waited" -lt "$WAIT_IDLE" ]; do
    read -r b0 b1 <<<"$BUSY"
    [ "${b0:-0}" -le 10 ] && [ "${b1:-0}" -le 10 ] && break
    BUSY=$(cpu_busy)
    waited=$((waited + 1))
done

# ---- start dirigent-fn ----------------------------------------------------------------------
taskset -c $SERVER_CPU "$FN_BIN" --host 127.0.0.1 --port 0 >"$TMP/fn.log" 2>&1 &
FN_PID=$!
FN_PORT=""
for _ in $(seq 100); do
    FN_PORT=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$TMP/fn.log" | head -1 | sed 's/.*://' || true)
    [ -n "$FN_PORT" ] && break
    kill -0 "$FN_PID" 2>/dev/null || break
    sleep 0.05
done
[ -n "$FN_PORT" ] || { cat "$TMP/fn.log" >&2; die "dirigent-fn did not start"; }
FN_URL=http://127.0.0.1:$FN_PORT/
wait_http "$FN_URL" "$FN_PID" || { cat "$TMP/fn.log" >&2; die "dirigent-fn does not answer 200 on $FN_URL"; }
BODY=$(curl -sf -m 2 "$FN_URL") || die "dirigent-fn: GET / failed"

# ---- start nginx: one worker, the same body -------------------------------------------------
# nginx's single-quoted string: escape backslashes and quotes.
NGX_BODY=$(printf '%s' "$BODY" | sed "s/\\\\/\\\\\\\\/g; s/'/\\\\'/g")
NGINX_PORT=""
for _ in 1 2 3; do # a free port may be taken between probe and bind: retry
    NGINX_PORT=$(free_port)
    mkdir -p "$TMP/nginx/logs"
    cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 100000;
    keepalive_timeout 65;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        default_type application/json;
        location / { return 200 '$NGX_BODY'; }
    }
}
EOF
    taskset -c $SERVER_CPU "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
        -e "$TMP/nginx/logs/error.log" >"$TMP/nginx/stdout.log" 2>&1 &
    NGINX_PID=$!
    if wait_http "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID"; then
        break
    fi
    stop_pid "$NGINX_PID"
    NGINX_PID=""
done
[ -n "$NGINX_PID" ] || { cat "$TMP/nginx/stdout.log" "$TMP/nginx/logs/error.log" >&2 2>/dev/null; die "nginx did not start"; }
NGINX_URL=http://127.0.0.1:$NGINX_PORT/
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[ -n "$NGINX_WORKERS" ] || die "nginx has no worker process"
NGINX_LEN=$(curl -sf -m 2 "$NGINX_URL" | wc -c)

# ---- measure --------------------------------------------------------------------------------
echo "# http_server: dirigent-fn ($BUILDTYPE build, $FN_BIN) vs nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
echo "# wrk -t1 -c$CONNS -d${DURATION}s --latency (CPU $WRK_CPU), servers on CPU $SERVER_CPU;" \
    "warm-up ${WARMUP}s; $ROUNDS round(s), fn and nginx alternating; best round reported"
echo "# body: fn ${#BODY} bytes, nginx $NGINX_LEN bytes; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
read -r busy0 busy1 <<<"$BUSY"
echo "# CPUs busy with other work before the run: CPU $WRK_CPU ${busy0}%, CPU $SERVER_CPU ${busy1}%"
if [ "${busy0:-0}" -gt 10 ] || [ "${busy1:-0}" -gt 10 ]; then
    echo "# WARNING: the machine is not idle; figures are lower and noisier than the servers' own cost"
fi

best_fn="0 0 0 0 0 0 0" best_ngx="0 0 0 0 0 0 0"
for r in $(seq "$ROUNDS"); do
    for srv in fn nginx; do
        if [ $srv = fn ]; then url=$FN_URL pids=$FN_PID; else url=$NGINX_URL pids=$NGINX_WORKERS; fi
        kill -0 "$FN_PID" 2>/dev/null || die "dirigent-fn died"
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx died"
        # shellcheck disable=SC2086 # $pids: one or more PIDs
        res=$(measure "$srv" "$url" $pids)
        read -r rps p50 p99 scpu sus ccpu other <<<"$res"
        [[ "$rps $p50 $p99" =~ ^[1-9][0-9]*\ [0-9]+\ [0-9]+$ ]] || die "$srv: cannot read wrk's figures: '$res'"
        printf 'run %d %-6s %7d req/s  p50 %5d us  p99 %6d us  server CPU %3d%% %5s us/req  wrk CPU %3d%%  other load on CPU %d: %d%%\n' \
            "$r" "$srv" "$rps" "$p50" "$p99" "$scpu" "$sus" "$ccpu" $SERVER_CPU "$other"
        if [ $srv = fn ]; then
            [ "$rps" -gt "${best_fn%% *}" ] && best_fn=$res
        else
            [ "$rps" -gt "${best_ngx%% *}" ] && best_ngx=$res
        fi
    done
done
kill -0 "$FN_PID" 2>/dev/null || die "dirigent-fn died during the run"

read -r fn_rps fn_p50 fn_p99 fn_cpu fn_us fn_wrk fn_other <<<"$best_fn"
read -r ngx_rps ngx_p50 ngx_p99 ngx_cpu ngx_us ngx_wrk ngx_other <<<"$best_ngx"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "NaN" }'; }
r_rps=$(ratio "$fn_rps" "$ngx_rps")
r_p50=$(ratio "$fn_p50" "$ngx_p50")
r_p99=$(ratio "$fn_p99" "$ngx_p99")
r_us=$(ratio "$fn_us" "$ngx_us")

echo
printf '%-12s %10s %9s %9s %11s %12s %8s\n' server 'req/s' 'p50 us' 'p99 us' 'server CPU' 'CPU us/req' 'wrk CPU'
printf '%-12s %10d %9d %9d %10d%% %12s %7d%%\n' dirigent-fn "$fn_rps" "$fn_p50" "$fn_p99" "$fn_cpu" "$fn_us" "$fn_wrk"
printf '%-12s %10d %9d %9d %10d%% %12s %7d%%\n' nginx "$ngx_rps" "$ngx_p50" "$ngx_p99" "$ngx_cpu" "$ngx_us" "$ngx_wrk"
printf '%-12s %9sx %8sx %8sx %11s %11sx\n' 'fn/nginx' "$r_rps" "$r_p50" "$r_p99" '' "$r_us"
echo "(req/s ratio > 1: dirigent-fn serves more; latency and CPU ratios < 1: dirigent-fn is faster."
echo " wrk CPU near 100%: the client limits req/s; compare CPU us/req, see bench/README.md)"
if [ "$fn_other" -gt 10 ] || [ "$ngx_other" -gt 10 ]; then
    echo "WARNING: other processes took ${fn_other}% (fn) / ${ngx_other}% (nginx) of CPU $SERVER_CPU in the" \
        "best rounds: the req/s ratio is not a fair comparison; rerun when the machine is quiet"
fi
echo "RESULT fn_rps=$fn_rps nginx_rps=$ngx_rps ratio=$r_rps fn_p50_us=$fn_p50 nginx_p50_us=$ngx_p50" \
    "p50_ratio=$r_p50 fn_p99_us=$fn_p99 nginx_p99_us=$ngx_p99 p99_ratio=$r_p99" \
    "fn_cpu_us_per_req=$fn_us nginx_cpu_us_per_req=$ngx_us cpu_ratio=$r_us" \
    "fn_other_load_pct=$fn_other nginx_other_load_pct=$ngx_other build=$BUILDTYPE" \
    "duration_s=$DURATION rounds=$ROUNDS connections=$CONNS"
