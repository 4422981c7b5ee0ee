#!/usr/bin/env bash
# warm_proxy.sh: warm invocations through dirigent-dp against HAProxy and nginx in front of the
# same backend, and the backend alone (DESIGN.md §10, "warm invocation through the DP").
#
# One cluster on 127.0.0.1: dirigent-cp, dirigent-dp and a dirigent-worker with the emulated
# runtime (0 ms create delay). The worker starts one shared dirigent-fn; the function `warm` is
# registered with scaling bounds 1..1 and container_concurrency 0 (no per-sandbox limit, like
# HAProxy's and nginx's server without maxconn), so one sandbox is warm and its endpoint is that
# dirigent-fn. The four contenders, all with the same backend (that dirigent-fn, whose address
# is read from the DP's endpoint list and checked against the worker's sandbox list):
#   direct    wrk -> dirigent-fn (the limit)
#   dp        wrk -> dirigent-dp (Host: warm) -> dirigent-fn
#   haproxy   wrk -> HAProxy 2.6 (mode http, nbthread 1, http-reuse always) -> dirigent-fn
#   nginx     wrk -> nginx (1 worker, upstream keepalive 64, HTTP/1.1) -> dirigent-fn
# Every request is `GET /` with `Host: warm` and `workload: empty` (dirigent-fn answers at
# once with a 78-byte JSON body); the script checks that all four return the same body.
#
# Pinning (2 CPUs): wrk on CPU 0 (with the idle CP and worker), the proxy and dirigent-fn on
# CPU 1. So each proxy competes with the same backend for one CPU and wrk has a CPU of its own:
# req/s measures proxy + backend cost per request, and the backend's share is the same for all.
# dirigent-dp is single-threaded, so HAProxy runs `nbthread 1` and nginx `worker_processes 1`.
#
# Per contender and round: a warm-up wrk run (discarded), then `wrk -t1 -cN --latency` (req/s,
# p50, p99 under load), then `wrk -t1 -c1` (p50/p99 of one request at a time: the latency a
# proxy adds, without queueing). Rounds are interleaved (direct, dp, haproxy, nginx, direct,
# ...); the table shows the median of the rounds of each figure. Besides wrk's figures, per
# request: the CPU time of the proxy process, of dirigent-fn and of the CP + worker
# (/proc/PID/stat; the DP reports in-flight counts to the CP), and the TCP segments sent on
# loopback (/proc/net/snmp OutSegs, all processes); and "other load": what other processes
# took of CPU 0 and of CPU 1 (a shared machine; > 10% while a proxy runs prints a WARNING).
#
# h2c round (issue 15; after the HTTP/1.1 rounds, which it leaves as they were): h2load
# (nghttp2-client) with prior knowledge, -c CONNS -m STREAMS, on CPU 0, against
#   h2direct   h2load -> dirigent-fn's h2c (the limit)
#   h2dp       h2load -> dirigent-dp's h2c on its proxy port -> dirigent-fn over h2c (the
#              function `warmh2`, registered with upstream_protocol=h2c, same bounds)
#   h2dp1      the same to `warm` (no upstream_protocol, as InVitro registers): each stream
#              goes to dirigent-fn as an HTTP/1.1 request on the DP's pool
#   h2haproxy  h2load -> HAProxy 2.6 (`bind ... proto h2`, nbthread 1) -> dirigent-fn over h2c
#              (`server ... proto h2`)
# with the same headers (:authority warmh2; h2dp1 warm), connections and streams; the emulated
# worker points both functions at its one dirigent-fn. A warm-up, then req/s (h2load's), p50 and
# p99 of every request (h2load --log-file) and the proxy's CPU per request; rounds
# interleaved, medians. A DP without h2c is reported as NOT MEASURED (its figures NaN).
#
# Output: one line per measurement, the table, the ratios dp/haproxy and dp/nginx, the goal
# (dp req/s >= 1.0x HAProxy's and dp p50 <= HAProxy's), and a last machine-readable line
#   RESULT dp_rps=... haproxy_rps=... rps_ratio_haproxy=... p50_ratio_haproxy=... ...
# Exit status 0 on success (also when the goal is not met), 1 if something fails to start,
# a response is not 200 or differs, or wrk reports errors; 2 on bad arguments. Every process
# and the temporary directory are removed on exit.
#
# Usage: bench/warm_proxy.sh [--quick] [--build DIR] [--duration S] [--connections N]
#                            [--rounds N] [--warmup S] [--lat-duration S] [--wait-idle S]
#   defaults: 3 rounds of 10 s (-c64) + 3 s (-c1) per contender, 2 s warm-ups (about 3 min)
#   --quick: 3 rounds of 1 s (-c64; the median drops a cold first round), -c1 for 1 s in the
#            first two, no warm-ups (about 25 s)
#   --build DIR: the build directory (default ./build, what `make` builds)
#   --wait-idle S: first wait up to S s for CPUs 0 and 1 to be idle (shared machines)
#   --h2c on|off|only: the h2c round after the HTTP/1.1 ones (on), none, or only it
#   --h2c-conns N, --h2c-streams M: h2load's -c and -m (default 8 x 8: 64 streams in flight,
#            as wrk's 64 connections)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=10
LAT_DURATION=3
WARMUP=2
ROUNDS=3
LAT_ROUNDS=0 # rounds with a -c1 run (0: all)
PROBE=1     # seconds of the idle probe before the run
CONNS=64
BUILD_DIR=$ROOT/build
WAIT_IDLE=0
SERVER_CPU=1
WRK_CPU=0
FN_NAME=warm
CONTENDERS="direct dp haproxy nginx"
H2C=on
H2_CONNS=8
H2_STREAMS=8
H2_CONTENDERS="h2direct h2dp h2dp1 h2haproxy"
H2_FN=warmh2

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case $1 in
    --quick) DURATION=1 LAT_DURATION=1 LAT_ROUNDS=2 WARMUP=0 ROUNDS=3 PROBE=0.5 ;;
    --duration) DURATION=${2:?--duration needs seconds}; shift ;;
    --lat-duration) LAT_DURATION=${2:?--lat-duration needs seconds}; shift ;;
    --warmup) WARMUP=${2:?--warmup needs seconds}; shift ;;
    --rounds) ROUNDS=${2:?--rounds needs a count}; shift ;;
    --connections) CONNS=${2:?--connections needs a count}; shift ;;
    --build) BUILD_DIR=${2:?--build needs a directory}; shift ;;
    --wait-idle) WAIT_IDLE=${2:?--wait-idle needs seconds}; shift ;;
    --h2c) H2C=${2:?--h2c needs on, off or only}; shift ;;
    --h2c-conns) H2_CONNS=${2:?--h2c-conns needs a count}; shift ;;
    --h2c-streams) H2_STREAMS=${2:?--h2c-streams needs a count}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "warm_proxy.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
case $H2C in on | off | only) ;; *) echo "warm_proxy.sh: --h2c: expected on, off or only, got '$H2C'" >&2; exit 2 ;; esac
for v in DURATION LAT_DURATION WARMUP ROUNDS CONNS WAIT_IDLE H2_CONNS H2_STREAMS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "warm_proxy.sh: $v: expected an integer, got '${!v}'" >&2; exit 2; }
done
if [ "$DURATION" -lt 1 ] || [ "$ROUNDS" -lt 1 ] || [ "$CONNS" -lt 1 ]; then
    echo "warm_proxy.sh: --duration, --rounds and --connections must be >= 1" >&2
    exit 2
fi

die() { echo "warm_proxy.sh: $*" >&2; exit 1; }

for tool in wrk taskset curl; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install wrk util-linux curl)"
done
[ "$H2C" = off ] || command -v h2load >/dev/null || die "'h2load' not found (apt-get install nghttp2-client; or --h2c off)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found (apt-get install nginx-light)"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || die "haproxy not found (apt-get install haproxy)"
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxies on CPU $SERVER_CPU, wrk on CPU $WRK_CPU)"
BUILD_DIR=$(cd "$BUILD_DIR" 2>/dev/null && pwd) || die "--build: no such directory"
B=$BUILD_DIR
for bin in dirigent-cp dirigent-dp dirigent-worker dirigent-fn; do
    [ -x "$B/$bin" ] || die "$B/$bin not found (run 'make' or pass --build DIR)"
done
BUILDTYPE=$(sed -n "s/^ *buildtype *= *//p" "$B/meson-private/cmd_line.txt" 2>/dev/null | head -1)
BUILDTYPE=${BUILDTYPE:-unknown}

# ---- cleanup: every process we start is recorded here ---------------------------------------
TMP=$(mktemp -d /tmp/dg-bench-warm.XXXXXX)
cd "$TMP" # whatever a helper might write by accident lands here, not in the tree
CP_PID="" DP_PID="" WK_PID="" FN_PID="" HAP_PID="" NGINX_PID="" HAP2_PID=""
T_START=$(date +%s%N)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$NGINX_PID"
    stop_pid "$HAP2_PID"
    stop_pid "$HAP_PID"
    stop_pid "$DP_PID"
    stop_pid "$WK_PID" # stops its shared dirigent-fn
    stop_pid "$FN_PID"
    stop_pid "$CP_PID"
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- helpers (as in http_server.sh) ---------------------------------------------------------
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_log FILE REGEX PID: until FILE matches (at most 10 s) or PID dies.
wait_log() {
    for _ in $(seq 200); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.05
    done
    cat "$1" >&2 2>/dev/null
    die "no '$2' in $1"
}

# get URL: the body of a GET with the benchmark's headers (fails unless 200).
get() { curl -sf -m 2 -H "Host: $FN_NAME" -H 'workload: empty' "$1"; }

# wait_http URL PID: poll until URL answers 200 to the benchmark's request (at most 5 s).
wait_http() {
    local url=$1 pid=$2 code
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 1
        code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' -H "Host: $FN_NAME" -H 'workload: empty' "$url" || true)
        [ "$code" = 200 ] && return 0
        sleep 0.05
    done
    return 1
}


# run_wrk NAME URL SECONDS CONNS OUT: wrk pinned to the client CPU, bounded; fails on errors.
run_wrk() {
    local name=$1 url=$2 secs=$3 conns=$4 out=$5
    if ! timeout $((secs + 15)) taskset -c $WRK_CPU wrk -t1 -c"$conns" -d"${secs}s" --latency \
        -H "Host: $FN_NAME" -H 'workload: empty' "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "$name: wrk failed"
    fi
    wrk_ok "$name" "$out" || die "$name: wrk's run failed"
}


# cpu_ticks CPU: user+nice+system ticks of one CPU so far (processes; not irq/softirq, where
# the kernel delivers loopback packets whatever process runs, nor steal).
cpu_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 }' /proc/stat
}

# cpu_busy: percent of CPU $WRK_CPU and $SERVER_CPU busy over 1 s, e.g. "3 41".
cpu_busy() {
    local a b
    a=$(grep -E "^cpu($WRK_CPU|$SERVER_CPU) " /proc/stat)
    sleep "$PROBE"
    b=$(grep -E "^cpu($WRK_CPU|$SERVER_CPU) " /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{
        idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
        if (NR <= 2) { i0[NR] = idle; t0[NR] = tot }
        else { k = NR - 2; dt = tot - t0[k]; printf "%d ", (dt > 0) ? 100 * (1 - (idle - i0[k]) / dt) + 0.5 : 0 }
    }'
}

# out_segs: TCP segments sent so far in this network namespace (every process on loopback).
out_segs() { awk '$1 == "Tcp:" { if (h) print $12; h = 1 }' /proc/net/snmp; }

# children_ticks FILE: user+system CPU of the shell's waited-for children (wrk), in ticks,
# from the output of the `times` builtin saved in FILE (as in http_server.sh).
children_ticks() {
    local line
    line=$(tail -1 "$1") # "0m1.234s 0m0.567s"
    awk -v l="$line" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        n = split(l, f, " "); t = 0
        for (i = 1; i <= n; i++) { split(f[i], ms, "m"); t += ms[1] * 60 + ms[2] }
        printf "%d\n", t * hz + 0.5 }'
}

# measure NAME URL WARMUP_S "PROXY_PIDS" LAT_S: warm-up, a -c$CONNS run and a -c1 run of LAT_S
# seconds (0: none, its figures are printed as "-"). Prints
# "rps p50_us p99_us proxy_us/req fn_us/req cp_us/req tcp_segs/req other1_pct c1_p50_us
# c1_p99_us other0_pct" (cp: the CP and the worker, on the client CPU: what the DP's reports
# cost them; other1/other0: what other processes took of CPU 1 / of the client CPU 0).
measure() {
    local name=$1 url=$2 warm=$3 ppids=$4 latd=$5 out=$TMP/wrk-$1.txt lat=$TMP/wrk1-$1.txt
    local rps p50 p99 l50 l99 p0 p1 f0 f1 k0 k1 g0 g1 s0 s1 w0 w1 t0 t1 c0 c1
    [ "$warm" -gt 0 ] && run_wrk "$name" "$url" "$warm" "$CONNS" "$TMP/warmup-$name.txt"
    # shellcheck disable=SC2086 # $ppids: zero or more PIDs
    p0=$(proc_ticks $ppids) f0=$(proc_ticks "$FN_PID") k0=$(proc_ticks "$CP_PID" "$WK_PID")
    g0=$(out_segs) s0=$(cpu_ticks $SERVER_CPU) w0=$(cpu_ticks $WRK_CPU) c0=$(date +%s%N)
    times >"$TMP/times0"
    run_wrk "$name" "$url" "$DURATION" "$CONNS" "$out"
    times >"$TMP/times1"
    # shellcheck disable=SC2086
    p1=$(proc_ticks $ppids) f1=$(proc_ticks "$FN_PID") k1=$(proc_ticks "$CP_PID" "$WK_PID")
    g1=$(out_segs) s1=$(cpu_ticks $SERVER_CPU) w1=$(cpu_ticks $WRK_CPU) c1=$(date +%s%N)
    t0=$(children_ticks "$TMP/times0") t1=$(children_ticks "$TMP/times1")
    rps=$(awk '/^Requests\/sec:/ {printf "%d", $2 + 0.5}' "$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' "$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' "$out")")
    [ "$rps" -gt 0 ] || die "$name: 0 requests/s"
    l50=- l99=-
    if [ "$latd" -gt 0 ]; then
        run_wrk "$name" "$url" "$latd" 1 "$lat"
        l50=$(to_us "$(awk '$1 == "50%" {print $2}' "$lat")")
        l99=$(to_us "$(awk '$1 == "99%" {print $2}' "$lat")")
    fi
    awk -v r="$rps" -v a="$p50" -v b="$p99" -v dp=$((p1 - p0)) -v df=$((f1 - f0)) \
        -v dk=$((k1 - k0)) -v dg=$((g1 - g0)) -v ds=$((s1 - s0)) -v hz="$(getconf CLK_TCK)" \
        -v ns=$((c1 - c0)) -v l50="$l50" -v l99="$l99" -v dw=$((w1 - w0)) -v dt=$((t1 - t0)) 'BEGIN {
        s = ns / 1e9; n = r * s; other = 100 * (ds - dp - df) / hz / s
        other0 = 100 * (dw - dt - dk) / hz / s
        printf "%d %d %d %.2f %.2f %.2f %.2f %d %s %s %d\n", r, a, b, 1e6 * dp / hz / n,
            1e6 * df / hz / n, 1e6 * dk / hz / n, dg / n, (other > 0) ? other + 0.5 : 0, l50, l99,
            (other0 > 0) ? other0 + 0.5 : 0 }'
}

# median of the numbers on stdin (one per line)
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

BUSY=$(cpu_busy)
wait_until=$((SECONDS + WAIT_IDLE))
while [ "$SECONDS" -lt "$wait_until" ]; do
    read -r b0 b1 <<<"$BUSY"
    [ "${b0:-0}" -le 10 ] && [ "${b1:-0}" -le 10 ] && break
    BUSY=$(cpu_busy)
done

# ---- the cluster: CP and worker on the client CPU (idle during the runs), DP on CPU 1 ---------
taskset -c $WRK_CPU "$B/dirigent-cp" --port 0 --registrationServer 127.0.0.1:0 \
    --traceOutputFolder "" --dataDir "$TMP/cp" 2>"$TMP/cp.log" &
CP_PID=$!
wait_log "$TMP/cp.log" 'registration on' "$CP_PID"
CPI=127.0.0.1:$(port_of "$TMP/cp.log" 'internal api on')
REG=127.0.0.1:$(port_of "$TMP/cp.log" 'registration on')
taskset -c $SERVER_CPU "$B/dirigent-dp" --portProxy 0 --portGRPC 0 --controlPlaneAddress "$CPI" \
    --traceOutputFolder "" --logLevel warn 2>"$TMP/dp.log" &
DP_PID=$!
taskset -c $WRK_CPU "$B/dirigent-worker" --port 0 --runtime emulated --emulatedCreateDelayMs 0 \
    --name warmbench --controlPlaneAddress "$CPI" --dataDir "$TMP/wk" --runDir "$TMP/wk-run" \
    2>"$TMP/wk.log" &
WK_PID=$!
wait_log "$TMP/dp.log" 'proxy on' "$DP_PID"
wait_log "$TMP/wk.log" 'listening on .*runtime' "$WK_PID"
DP=127.0.0.1:$(port_of "$TMP/dp.log" 'proxy on')
DP_API=$(grep -oE 'api on [0-9.]+:[0-9]+' "$TMP/dp.log" | head -1 | sed 's/.*on //')
WK=127.0.0.1:$(port_of "$TMP/wk.log" 'warmbench: listening on')
ok=0
for _ in $(seq 100); do
    st=$(curl -s -m 1 "http://$REG/v1/status" | /usr/bin/python3 -c 'import json,sys; s=json.load(sys.stdin); print(len(s["workers"]), len(s["dataplanes"]))' 2>/dev/null || true)
    [ "$st" = "1 1" ] && { ok=1; break; }
    sleep 0.1
done
[ "$ok" = 1 ] || { cat "$TMP"/*.log >&2; die "the worker and the DP did not register with the CP"; }

code=$(curl -s -o "$TMP/reg.out" -w '%{http_code}' -m 5 -X POST "http://$REG/registerService" \
    -d name=$FN_NAME -d image=emulated -d port_forwarding=80 -d port_forwarding=tcp \
    -d scaling_lower_bound=1 -d scaling_upper_bound=1 -d container_concurrency=0)
[ "$code" = 200 ] || { cat "$TMP/reg.out" >&2; die "registering $FN_NAME: HTTP $code"; }
# the sandbox's endpoint as the DP sees it (what it proxies to)
EP=""
for _ in $(seq 100); do
    EP=$(curl -s -m 1 "http://$DP_API/v1/functions" | /usr/bin/python3 -c '
import json, sys
for f in json.load(sys.stdin):
    if f["name"] == sys.argv[1] and f["endpoints"]:
        print(f["endpoints"][0]["address"])' "$FN_NAME" 2>/dev/null || true)
    [ -n "$EP" ] && break
    sleep 0.05
done
[ -n "$EP" ] || { cat "$TMP"/*.log >&2; die "no endpoint for $FN_NAME at the DP"; }
WK_EP=$(curl -s -m 1 "http://$WK/v1/sandboxes" | tee "$TMP/sandboxes.json" | /usr/bin/python3 -c '
import json, sys
print(" ".join(s["endpoint"] for s in json.load(sys.stdin)["sandboxes"] if s["function"] == sys.argv[1]))' "$FN_NAME" 2>/dev/null || { cat "$TMP/sandboxes.json" >&2; die "worker: GET /v1/sandboxes: unexpected answer"; })
[ "$WK_EP" = "$EP" ] || die "the DP proxies $FN_NAME to '$EP' but the worker lists '$WK_EP'"
FN_PORT=${EP##*:}
# the worker's shared dirigent-fn (the process listening on that port); move it to CPU 1
FN_PID=$(ss -ltnpH "sport = :$FN_PORT" 2>/dev/null | grep -oE 'pid=[0-9]+' | head -1 | cut -d= -f2 || true)
[ -n "$FN_PID" ] || die "cannot find the process listening on $EP"
[ "$(readlink "/proc/$FN_PID/exe")" = "$(readlink -f "$B/dirigent-fn")" ] ||
    die "$EP is served by $(readlink "/proc/$FN_PID/exe"), not $B/dirigent-fn"
[ "$(awk '{print $4}' "/proc/$FN_PID/stat")" = "$WK_PID" ] || die "$EP: not the worker's dirigent-fn"
taskset -a -p -c $SERVER_CPU "$FN_PID" >/dev/null

# ---- HAProxy: one thread, keep-alive and reuse to the one server ----------------------------
start_haproxy() {
    local port
    for _ in 1 2 3; do
        port=$(free_port)
        cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
    server fn $EP
EOF
        taskset -c $SERVER_CPU "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
        HAP_PID=$!
        if wait_http "http://127.0.0.1:$port/" "$HAP_PID"; then
            HAP_URL=http://127.0.0.1:$port/
            return 0
        fi
        stop_pid "$HAP_PID"
        HAP_PID=""
    done
    cat "$TMP/haproxy.log" >&2
    die "haproxy did not start"
}

# ---- nginx: one worker, upstream keep-alive ------------------------------------------------
start_nginx() {
    local port
    mkdir -p "$TMP/nginx/logs"
    for _ in 1 2 3; do
        port=$(free_port)
        cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/client_body;
    proxy_temp_path $TMP/nginx/proxy;
    fastcgi_temp_path $TMP/nginx/fastcgi;
    uwsgi_temp_path $TMP/nginx/uwsgi;
    scgi_temp_path $TMP/nginx/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    upstream fn {
        server $EP;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
        }
    }
}
EOF
        taskset -c $SERVER_CPU "$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
            -e "$TMP/nginx/logs/error.log" >"$TMP/nginx/stdout.log" 2>&1 &
        NGINX_PID=$!
        if wait_http "http://127.0.0.1:$port/" "$NGINX_PID"; then
            NGINX_URL=http://127.0.0.1:$port/
            return 0
        fi
        stop_pid "$NGINX_PID"
        NGINX_PID=""
    done
    cat "$TMP/nginx/stdout.log" "$TMP/nginx/logs/error.log" >&2 2>/dev/null
    die "nginx did not start"
}

start_haproxy
start_nginx
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[ -n "$NGINX_WORKERS" ] || die "nginx has no worker process"
DIRECT_URL=http://$EP/
DP_URL=http://$DP/
wait_http "$DP_URL" "$DP_PID" || die "dirigent-dp does not answer 200 for $FN_NAME"

# the same body from all four
BODY=$(get "$DIRECT_URL") || die "direct: GET / failed"
case $BODY in *'"Status":"OK - EMPTY"'*) ;; *) die "direct: unexpected body '$BODY'" ;; esac
for c in dp haproxy nginx; do
    case $c in dp) u=$DP_URL ;; haproxy) u=$HAP_URL ;; nginx) u=$NGINX_URL ;; esac
    b=$(get "$u") || die "$c: GET / failed"
    [ "$b" = "$BODY" ] || die "$c: body '$b' differs from the backend's '$BODY'"
done

url_of() {
    case $1 in direct) echo "$DIRECT_URL" ;; dp) echo "$DP_URL" ;; haproxy) echo "$HAP_URL" ;; nginx) echo "$NGINX_URL" ;; esac
}
pids_of() {
    case $1 in direct) echo "" ;; dp) echo "$DP_PID" ;; haproxy) echo "$HAP_PID" ;; nginx) echo "$NGINX_WORKERS" ;; esac
}

# ---- measure --------------------------------------------------------------------------------
T_SETUP=$(date +%s%N)
echo "# warm_proxy: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), build $B ($BUILDTYPE)"
echo "# backend: the worker's shared dirigent-fn at $EP (pid $FN_PID), function '$FN_NAME'" \
    "(bounds 1..1, container_concurrency 0); body ${#BODY} bytes"
echo "# haproxy $("$HAPROXY" -v | sed -n '1s/HAProxy version \([^ ]*\).*/\1/p') nbthread 1;" \
    "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') worker_processes 1; dirigent-dp single-threaded"
echo "# wrk -t1 -c$CONNS -d${DURATION}s --latency, then -c1 -d${LAT_DURATION}s, on CPU $WRK_CPU;" \
    "proxies and dirigent-fn on CPU $SERVER_CPU; warm-up ${WARMUP}s before each;" \
    "$ROUNDS interleaved round(s), medians reported"
read -r busy0 busy1 <<<"$BUSY"
echo "# CPUs busy before the run: CPU $WRK_CPU ${busy0}%, CPU $SERVER_CPU ${busy1}%; load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${busy0:-0}" -gt 10 ] || [ "${busy1:-0}" -gt 10 ]; then
    echo "# WARNING: the machine is not idle; figures are lower and noisier than the proxies' own cost"
fi

if [ "$H2C" != only ]; then # the HTTP/1.1 rounds (as before issue 15), up to their RESULT line
for r in $(seq "$ROUNDS"); do
    for c in $CONTENDERS; do
        for p in "$CP_PID" "$DP_PID" "$WK_PID" "$FN_PID" "$HAP_PID" "$NGINX_PID"; do
            kill -0 "$p" 2>/dev/null || die "a server died (pid $p); logs in $TMP are removed on exit"
        done
        latd=$LAT_DURATION
        [ "$LAT_ROUNDS" -gt 0 ] && [ "$r" -gt "$LAT_ROUNDS" ] && latd=0
        res=$(measure "$c" "$(url_of "$c")" "$WARMUP" "$(pids_of "$c")" "$latd")
        read -r rps p50 p99 pus fus kus segs other l50 l99 other0 <<<"$res"
        [[ "$rps $p50 $p99" =~ ^[1-9][0-9]*\ [0-9]+\ [0-9]+$ ]] || die "$c: cannot read wrk's figures: '$res'"
        echo "$res" >>"$TMP/res-$c"
        printf 'run %d %-8s %7d req/s  p50 %5d us  p99 %6d us  proxy %5s fn %5s cp %4s us/req  %4s segs/req  other %2d%%/%2d%%  | c1 p50 %4s us  p99 %5s us\n' \
            "$r" "$c" "$rps" "$p50" "$p99" "$pus" "$fus" "$kus" "$segs" "$other0" "$other" "$l50" "$l99"
    done
done

# col N CONTENDER: median of column N over the rounds
col() { awk -v n="$1" '$n != "-" { print $n }' "$TMP/res-$2" | median; }
declare -A M
for c in $CONTENDERS; do
    for k in 1:rps 2:p50 3:p99 4:pus 5:fus 6:kus 7:segs 8:other 9:l50 10:l99 11:other0; do
        M[$c.${k#*:}]=$(col "${k%%:*}" "$c")
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "NaN" }'; }
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", a - b }'; }

echo
printf '%-10s %8s %7s %7s %7s %7s %7s %6s %8s %7s %7s %8s\n' '' '' '' '' 'proxy' 'fn' 'cp+wk' '' 'other' '' '' 'c1 p50'
printf '%-10s %8s %7s %7s %7s %7s %7s %6s %8s %7s %7s %8s\n' contender 'req/s' 'p50 us' 'p99 us' \
    'us/req' 'us/req' 'us/req' 'segs' 'CPU0/1' 'c1 p50' 'c1 p99' 'added'
for c in $CONTENDERS; do
    pus=- l50add=-
    if [ "$c" != direct ]; then
        pus=${M[$c.pus]}
        l50add=$(added "${M[$c.l50]}" "${M[direct.l50]}")
    fi
    printf '%-10s %8.0f %7.0f %7.0f %7s %7s %7s %6s %3.0f%%/%2.0f%% %7.0f %7.0f %8s\n' "$c" "${M[$c.rps]}" \
        "${M[$c.p50]}" "${M[$c.p99]}" "$pus" "${M[$c.fus]}" "${M[$c.kus]}" "${M[$c.segs]}" \
        "${M[$c.other0]}" "${M[$c.other]}" "${M[$c.l50]}" "${M[$c.l99]}" "$l50add"
done
for o in haproxy nginx; do
    printf '%-10s %7sx %6sx %6sx %6sx %7s %7s %5sx %8s %6sx %6sx %7sx\n' "dp/$o" \
        "$(ratio "${M[dp.rps]}" "${M[$o.rps]}")" "$(ratio "${M[dp.p50]}" "${M[$o.p50]}")" \
        "$(ratio "${M[dp.p99]}" "${M[$o.p99]}")" "$(ratio "${M[dp.pus]}" "${M[$o.pus]}")" '' '' \
        "$(ratio "${M[dp.segs]}" "${M[$o.segs]}")" '' \
        "$(ratio "${M[dp.l50]}" "${M[$o.l50]}")" "$(ratio "${M[dp.l99]}" "${M[$o.l99]}")" \
        "$(ratio "$(added "${M[dp.l50]}" "${M[direct.l50]}")" "$(added "${M[$o.l50]}" "${M[direct.l50]}")")"
done
echo "(medians of $ROUNDS rounds. us/req: CPU time per request of the proxy process, of dirigent-fn,"
echo " and of the CP + worker (CPU $WRK_CPU); segs: TCP segments sent per request, all of loopback;"
echo " other: what other processes took of CPU $WRK_CPU (wrk's) / CPU $SERVER_CPU (for direct, CPU $SERVER_CPU is not"
echo " the bottleneck);"
echo " c1: one connection, one request at a time; c1 p50 added: minus direct's c1 p50)"
r_rps=$(ratio "${M[dp.rps]}" "${M[haproxy.rps]}")
r_p50=$(ratio "${M[dp.p50]}" "${M[haproxy.p50]}")
g1=$(awk -v a="${M[dp.rps]}" -v b="${M[haproxy.rps]}" 'BEGIN { print (a >= b) ? "met" : "NOT met" }')
g2=$(awk -v a="${M[dp.p50]}" -v b="${M[haproxy.p50]}" 'BEGIN { print (a <= b) ? "met" : "NOT met" }')
echo "goal: dp req/s >= 1.0x HAProxy's: ${r_rps}x ($g1); dp p50 <= HAProxy's: ${r_p50}x ($g2)"
maxother=$(for c in dp haproxy nginx; do echo "${M[$c.other]}"; echo "${M[$c.other0]}"; done | sort -g | tail -1)
if awk -v m="$maxother" 'BEGIN { exit !(m > 10) }'; then
    echo "WARNING: other processes took up to ${maxother}% of CPU $WRK_CPU or $SERVER_CPU (median) while a proxy ran:" \
        "the ratios are suspect; rerun when the machine is quiet (--wait-idle S)"
fi
echo "RESULT direct_rps=${M[direct.rps]} dp_rps=${M[dp.rps]} haproxy_rps=${M[haproxy.rps]} nginx_rps=${M[nginx.rps]}" \
    "direct_p50_us=${M[direct.p50]} dp_p50_us=${M[dp.p50]} haproxy_p50_us=${M[haproxy.p50]} nginx_p50_us=${M[nginx.p50]}" \
    "dp_p99_us=${M[dp.p99]} haproxy_p99_us=${M[haproxy.p99]} nginx_p99_us=${M[nginx.p99]}" \
    "rps_ratio_haproxy=$r_rps p50_ratio_haproxy=$r_p50" \
    "rps_ratio_nginx=$(ratio "${M[dp.rps]}" "${M[nginx.rps]}") p50_ratio_nginx=$(ratio "${M[dp.p50]}" "${M[nginx.p50]}")" \
    "dp_cpu_us_per_req=${M[dp.pus]} haproxy_cpu_us_per_req=${M[haproxy.pus]} nginx_cpu_us_per_req=${M[nginx.pus]}" \
    "dp_cp_cpu_us_per_req=${M[dp.kus]} dp_segs_per_req=${M[dp.segs]} haproxy_segs_per_req=${M[haproxy.segs]} nginx_segs_per_req=${M[nginx.segs]}" \
    "c1_p50_us_direct=${M[direct.l50]} c1_p50_us_dp=${M[dp.l50]} c1_p50_us_haproxy=${M[haproxy.l50]} c1_p50_us_nginx=${M[nginx.l50]}" \
    "build=$BUILDTYPE duration_s=$DURATION rounds=$ROUNDS connections=$CONNS"
fi

# ---- h2c round --------------------------------------------------------------------------------
# get_h2 URL [FUNCTION]: the body of the benchmark's request over h2c with prior knowledge
# (fails unless 200)
get_h2() { curl -sf -m 2 --http2-prior-knowledge -H "Host: ${2:-$H2_FN}" -H 'workload: empty' "$1"; }

# HAProxy with an h2c frontend and an h2c server line to the same dirigent-fn
start_haproxy_h2() {
    local port
    for _ in 1 2 3; do
        port=$(free_port)
        cat >"$TMP/haproxy-h2.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    http-reuse always
frontend fe
    bind 127.0.0.1:$port proto h2
    default_backend be
backend be
    server fn $EP proto h2
EOF
        taskset -c $SERVER_CPU "$HAPROXY" -db -f "$TMP/haproxy-h2.cfg" >"$TMP/haproxy-h2.log" 2>&1 &
        HAP2_PID=$!
        for _ in $(seq 100); do
            get_h2 "http://127.0.0.1:$port/" >/dev/null 2>&1 && { H2HAP_URL=http://127.0.0.1:$port/; return 0; }
            kill -0 "$HAP2_PID" 2>/dev/null || break
            sleep 0.05
        done
        stop_pid "$HAP2_PID"
        HAP2_PID=""
    done
    cat "$TMP/haproxy-h2.log" >&2
    die "haproxy (h2c) did not start"
}

# run_h2load NAME URL SECONDS OUT [LOG]: h2load pinned to the client CPU, bounded; fails unless
# every request was answered, 2xx
run_h2load() {
    local name=$1 url=$2 secs=$3 out=$4 log=${5:-} fn=$H2_FN
    [ "$name" = h2dp1 ] && fn=$FN_NAME
    local args=(-t 1 -c "$H2_CONNS" -m "$H2_STREAMS" -D "$secs" -H ":authority: $fn" -H 'workload: empty')
    [ -n "$log" ] && args+=(--log-file="$log")
    if ! timeout $((secs + 15)) taskset -c $WRK_CPU h2load "${args[@]}" "$url" >"$out" 2>&1; then
        cat "$out" >&2
        die "$name: h2load failed"
    fi
    # "requests: N total, N started, N done, N succeeded, 0 failed, 0 errored, 0 timeout"
    awk '/^requests:/ { ok = ($8 == $6 && $6 > 0 && $10 == 0 && $12 == 0 && $14 == 0) } END { exit !ok }' "$out" &&
        grep -qE '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" ||
        { cat "$out" >&2; die "$name: h2load saw failed or non-2xx requests"; }
}

# measure_h2 NAME URL "PROXY_PIDS": warm-up, then a run: "rps p50_us p99_us proxy_us/req"
# (p50/p99 over every request of the run, from h2load's per-request log)
measure_h2() {
    local name=$1 url=$2 ppids=$3 out=$TMP/h2load-$1.txt log=$TMP/h2load-$1.log p0 p1 rps n
    [ "$WARMUP" -gt 0 ] && run_h2load "$name" "$url" "$WARMUP" "$TMP/h2warm-$name.txt"
    rm -f "$log"
    # shellcheck disable=SC2086 # $ppids: zero or more PIDs
    p0=$(proc_ticks $ppids)
    run_h2load "$name" "$url" "$DURATION" "$out" "$log"
    # shellcheck disable=SC2086
    p1=$(proc_ticks $ppids)
    rps=$(awk '/^finished in/ { for (i = 1; i < NF; i++) if ($(i + 1) == "req/s,") printf "%d", $i + 0.5 }' "$out")
    n=$(wc -l <"$log")
    [ "${rps:-0}" -gt 0 ] && [ "$n" -gt 0 ] || die "$name: no requests"
    sort -n -k3,3 "$log" | awk -v n="$n" -v r="$rps" -v dp=$((p1 - p0)) -v hz="$(getconf CLK_TCK)" -v secs="$DURATION" '
        { v[NR] = $3 }
        END {
            i50 = int(0.50 * n + 0.5); if (i50 < 1) i50 = 1
            i99 = int(0.99 * n + 0.5); if (i99 < 1) i99 = 1; if (i99 > n) i99 = n
            printf "%d %d %d %.2f\n", r, v[i50], v[i99], 1e6 * dp / hz / (r * secs)
        }'
}

if [ "$H2C" != off ]; then
    H2DIRECT_URL=http://$EP/
    H2DP_URL=http://$DP/
    start_haproxy_h2
    b=$(get_h2 "$H2DIRECT_URL" "$FN_NAME") || die "h2direct: dirigent-fn does not answer h2c"
    [ "$b" = "$BODY" ] || die "h2direct: body '$b' differs from HTTP/1.1's '$BODY'"
    H2BODY=$(get_h2 "$H2DIRECT_URL") || die "h2direct: dirigent-fn does not answer h2c"
    b=$(get_h2 "$H2HAP_URL") || die "h2haproxy: GET / over h2c failed"
    [ "$b" = "$H2BODY" ] || die "h2haproxy: body '$b' differs from the backend's '$H2BODY'"
    H2_RUN=$H2_CONTENDERS
    # warmh2: the same function, reached over h2c by the DP (upstream_protocol=h2c); a DP that
    # does not know the field refuses it (400): then h2dp is not measured
    code=$(curl -s -o "$TMP/reg2.out" -w '%{http_code}' -m 5 -X POST "http://$REG/registerService" \
        -d name=$H2_FN -d image=emulated -d port_forwarding=80 -d port_forwarding=tcp \
        -d scaling_lower_bound=1 -d scaling_upper_bound=1 -d container_concurrency=0 -d upstream_protocol=h2c)
    EP2=""
    if [ "$code" = 200 ]; then
        for _ in $(seq 100); do
            EP2=$(curl -s -m 1 "http://$DP_API/v1/functions" | /usr/bin/python3 -c '
import json, sys
for f in json.load(sys.stdin):
    if f["name"] == sys.argv[1] and f["endpoints"]:
        print(f["endpoints"][0]["address"])' "$H2_FN" 2>/dev/null || true)
            [ -n "$EP2" ] && break
            sleep 0.05
        done
        [ -z "$EP2" ] || [ "$EP2" = "$EP" ] || die "$H2_FN's endpoint $EP2 is not the backend $EP"
    fi
    if [ -z "$EP2" ] || ! b=$(get_h2 "$H2DP_URL" 2>&1) || [ "$b" != "$H2BODY" ]; then
        echo "# h2dp: NOT MEASURED: $H2_FN (upstream_protocol=h2c) not served over h2c (registration $code; got '${b:-}')" | cut -c1-200
        H2_RUN=${H2_RUN/h2dp /}
    fi
    if ! b=$(get_h2 "$H2DP_URL" "$FN_NAME" 2>&1) || [ "$b" != "$BODY" ]; then
        echo "# h2dp1: NOT MEASURED: dirigent-dp does not answer the benchmark's request over h2c (got '${b:0:120}')"
        H2_RUN=${H2_RUN/h2dp1 /}
    fi
    echo "# h2c: h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D${DURATION}s (prior knowledge) on CPU $WRK_CPU;" \
        "haproxy 'bind ... proto h2' + 'server ... proto h2', nbthread 1; warm-up ${WARMUP}s before each;" \
        "$ROUNDS interleaved round(s), medians reported"
    for r in $(seq "$ROUNDS"); do
        for c in $H2_RUN; do
            for p in "$DP_PID" "$FN_PID" "$HAP2_PID"; do
                kill -0 "$p" 2>/dev/null || die "a server died (pid $p)"
            done
            case $c in
            h2direct) u=$H2DIRECT_URL pp="" ;;
            h2dp | h2dp1) u=$H2DP_URL pp=$DP_PID ;;
            h2haproxy) u=$H2HAP_URL pp=$HAP2_PID ;;
            esac
            res=$(measure_h2 "$c" "$u" "$pp")
            read -r rps p50 p99 pus <<<"$res"
            echo "$res" >>"$TMP/res-$c"
            printf 'run %d %-9s %7d req/s  p50 %5d us  p99 %6d us  proxy %5s us/req\n' "$r" "$c" "$rps" "$p50" "$p99" "$pus"
        done
    done
    h2col() { if [ -s "$TMP/res-$2" ]; then awk -v n="$1" '{ print $n }' "$TMP/res-$2" | median; else echo NaN; fi; }
    declare -A H
    for c in $H2_CONTENDERS; do
        for k in 1:rps 2:p50 3:p99 4:pus; do H[$c.${k#*:}]=$(h2col "${k%%:*}" "$c"); done
    done
    h2ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "NaN" && b != "NaN" && b > 0) printf "%.2f", a / b; else print "NaN" }'; }
    echo
    printf '%-12s %8s %7s %7s %9s\n' 'h2c' 'req/s' 'p50 us' 'p99 us' 'proxy us'
    for c in $H2_CONTENDERS; do
        pus=${H[$c.pus]}
        [ "$c" = h2direct ] && pus=-
        printf '%-12s %8s %7s %7s %9s\n' "$c" "${H[$c.rps]}" "${H[$c.p50]}" "${H[$c.p99]}" "$pus"
    done
    h2r_rps=$(h2ratio "${H[h2dp.rps]}" "${H[h2haproxy.rps]}")
    h2r_p50=$(h2ratio "${H[h2dp.p50]}" "${H[h2haproxy.p50]}")
    printf '%-12s %7sx %6sx %6sx %8sx\n' 'dp/haproxy' "$h2r_rps" "$h2r_p50" \
        "$(h2ratio "${H[h2dp.p99]}" "${H[h2haproxy.p99]}")" "$(h2ratio "${H[h2dp.pus]}" "${H[h2haproxy.pus]}")"
    printf '%-12s %7sx %6sx %6sx %8sx\n' 'dp1/haproxy' "$(h2ratio "${H[h2dp1.rps]}" "${H[h2haproxy.rps]}")" \
        "$(h2ratio "${H[h2dp1.p50]}" "${H[h2haproxy.p50]}")" "$(h2ratio "${H[h2dp1.p99]}" "${H[h2haproxy.p99]}")" \
        "$(h2ratio "${H[h2dp1.pus]}" "${H[h2haproxy.pus]}")"
    g1=$(awk -v a="$h2r_rps" 'BEGIN { print (a != "NaN" && a >= 1.0) ? "met" : "NOT met" }')
    g2=$(awk -v a="$h2r_p50" 'BEGIN { print (a != "NaN" && a <= 1.0) ? "met" : "NOT met" }')
    echo "goal (h2c): dp req/s >= 1.0x HAProxy's: ${h2r_rps}x ($g1); dp p50 <= HAProxy's: ${h2r_p50}x ($g2)"
    echo "RESULT_H2C h2direct_rps=${H[h2direct.rps]} h2dp_rps=${H[h2dp.rps]} h2dp1_rps=${H[h2dp1.rps]} h2haproxy_rps=${H[h2haproxy.rps]}" \
        "h2direct_p50_us=${H[h2direct.p50]} h2dp_p50_us=${H[h2dp.p50]} h2dp1_p50_us=${H[h2dp1.p50]} h2haproxy_p50_us=${H[h2haproxy.p50]}" \
        "h2dp_p99_us=${H[h2dp.p99]} h2dp1_p99_us=${H[h2dp1.p99]} h2haproxy_p99_us=${H[h2haproxy.p99]}" \
        "h2dp_cpu_us_per_req=${H[h2dp.pus]} h2dp1_cpu_us_per_req=${H[h2dp1.pus]} h2haproxy_cpu_us_per_req=${H[h2haproxy.pus]}" \
        "rps_ratio_haproxy=$h2r_rps p50_ratio_haproxy=$h2r_p50 conns=$H2_CONNS streams=$H2_STREAMS duration_s=$DURATION rounds=$ROUNDS"
fi
T_END=$(date +%s%N)
echo "# took $(((T_END - T_START) / 1000000000)) s (setup $(((T_SETUP - T_START) / 1000000)) ms)"
