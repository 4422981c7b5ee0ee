# bench/lib.sh: what the benchmark scripts share (sourced, not run).

# port_of LOG WORDS: the port a daemon logged after WORDS ("proxy on 127.0.0.1:PORT").
port_of() { grep -oE "$2 [0-9.]+:[0-9]+" "$1" | head -1 | sed 's/.*://'; }

# wait_log LOG REGEX [SECONDS]: until LOG has a line matching REGEX (default 20 s); on timeout
# the end of LOG goes to stderr and it returns 1.
wait_log() {
    local i n=$((${3:-20} * 20))
    for ((i = 0; i < n; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    echo "no '$2' in $1" >&2
    tail -20 "$1" >&2
    return 1
}

# stop_pids [SECONDS]: SIGTERM to every pid in the PIDS array, SIGKILL to those still there
# after SECONDS (default 20: an oci worker deletes its containers on the way out).
stop_pids() {
    local p alive i n=$((${1:-20} * 20))
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < n; i++)); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.05
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}

# stop_pid PID: SIGTERM, up to 2 s, then SIGKILL to it and the children it had.
stop_pid() {
    local pid=$1 kids
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    wait "$pid" 2>/dev/null || true
}

# to_us "436.00us" | "1.71ms" | "1.02s" -> microseconds (integer), as wrk prints latencies
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1000000;
        else if (u == "m") m = 60000000; else { print "NaN"; exit }
        printf "%d\n", n * m + 0.5 }'
}

# wrk_ok NAME OUT: wrk's output OUT has a rate and no errors (else it says so and returns 1).
wrk_ok() {
    if grep -qE 'Non-2xx or 3xx responses|Socket errors' "$2"; then
        cat "$2" >&2
        echo "$1: wrk reports errors (see above): every response must be 200" >&2
        return 1
    fi
    grep -q '^Requests/sec:' "$2" || { cat "$2" >&2; echo "$1: no Requests/sec in wrk output" >&2; return 1; }
}

# proc_ticks PID...: user+system CPU time of the processes (all threads), in clock ticks.
proc_ticks() {
    local t=0 pid f
    for pid in "$@"; do
        f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        f=${f##*) } # fields after "(comm) "; utime and stime are fields 14 and 15
        read -r _ _ _ _ _ _ _ _ _ _ _ u st _ <<<"$f"
        t=$((t + u + st))
    done
    echo "$t"
}

# crun_floor DIR IMG N SERIAL: the bare-crun floor (bench/crun_floor.py) of the OCI image layout
# IMG (dirigent-fn) in the scratch directory DIR (made by the caller; its own bridge dgb0,
# namespaces dgbench0..cores-1, 100.125.0.0/24): with SERIAL=1, N containers one at a time
# (floor_serial_p50_ms, floor_serial_p99_ms), then N with as many at a time as cores
# (floor_parallel_per_s), to the first HTTP 200 each. Prints "key value" lines; removes what it
# made on every path (crun_floor_cleanup DIR also does, for the caller's EXIT trap).
crun_floor() {
    local dir=$1 img=$2 n=$3 serial=$4 slots s rc=0
    slots=$(nproc)
    crun_floor_cleanup "$dir"
    umoci unpack --image "$img:latest" "$dir/unpacked" >/dev/null || return 1
    ip link add dgb0 type bridge && ip addr add 100.125.0.1/24 dev dgb0 && ip link set dgb0 up || return 1
    for ((s = 0; s < slots; s++)); do
        ip netns add "dgbench$s" &&
            ip link add "dgb0f$s" type veth peer name eth0 netns "dgbench$s" &&
            ip link set "dgb0f$s" master dgb0 up &&
            ip -n "dgbench$s" addr add "100.125.0.$((10 + s))/24" dev eth0 &&
            ip -n "dgbench$s" link set eth0 up && ip -n "dgbench$s" link set lo up || { rc=1; break; }
    done
    if [ $rc = 0 ]; then
        /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/crun_floor.py" "$dir" "$n" "$slots" "$serial" 100.125.0 || rc=1
    fi
    crun_floor_cleanup "$dir"
    return $rc
}
crun_floor_cleanup() {
    local dir=$1 id l
    for id in $(crun --root "$dir/crun" list -q 2>/dev/null); do crun --root "$dir/crun" delete -f "$id" >/dev/null 2>&1; done
    { grep -o " $dir/floor/[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r l; do umount -l "$l" 2>/dev/null; done; } || true
    rm -rf "$dir/floor" "$dir/unpacked" "$dir/crun"
    for l in $(ls /sys/class/net | grep '^dgb0'); do ip link del "$l" 2>/dev/null || true; done
    for l in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^dgbench'); do ip netns del "$l" 2>/dev/null || true; done
    rmdir /sys/fs/cgroup/*/dirigent-bench/* /sys/fs/cgroup/*/dirigent-bench 2>/dev/null || true
    return 0
}

# in_itest_lock: true when this process or an ancestor holds /tmp/dg-itest.lock (flock), so
# a script that takes the lock itself does not wait for its own caller (`flock
# /tmp/dg-itest.lock make bench`); from /proc/locks and the parent chain.
in_itest_lock() {
    local ino holders p
    ino=$(stat -c %i /tmp/dg-itest.lock 2>/dev/null) || return 1
    holders=" $(awk -v ino="$ino" '$2 == "FLOCK" { n = split($6, a, ":"); if (a[n] == ino) printf "%s ", $5 }' /proc/locks) "
    p=$$
    while [ -n "$p" ] && [ "$p" -gt 1 ]; do
        case "$holders" in *" $p "*) return 0 ;; esac
        p=$(awk '{print $4}' "/proc/$p/stat" 2>/dev/null) || return 1
    done
    return 1
}
