# bench/crun_floor.py: the bare-crun floor (sandbox_oci.sh, oci_floor.sh; run by crun_floor in
# bench/lib.sh, which makes the bridge and the namespaces dgbench0..SLOTS-1 beforehand).
# `crun run --detach` of the image's bundle (overlay rootfs, config.json made beforehand),
# until the container's first HTTP 200, then `crun delete --force`:
#   SERIAL=1: N containers one at a time in namespace 0 (p50/p99)
#   then N containers with SLOTS at a time, each stream in its own namespace (containers/s)
#   python3 crun_floor.py TMP N SLOTS SERIAL NET    (NET: "100.125.0", addresses NET.10+slot)
import json, os, socket, subprocess, sys, time, threading
tmp, n, slots, serial, net = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
base = json.load(open(f"{tmp}/unpacked/config.json"))
def bundle(i, slot):
    d = f"{tmp}/floor/{i}"
    os.makedirs(f"{d}/rootfs"); os.makedirs(f"{d}/scratch")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", f"{d}/scratch"], check=True)
    os.makedirs(f"{d}/scratch/u"); os.makedirs(f"{d}/scratch/w")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp}/unpacked/rootfs,upperdir={d}/scratch/u,workdir={d}/scratch/w",
                    f"{d}/rootfs"], check=True)
    c = json.loads(json.dumps(base))
    c["process"]["terminal"] = False
    c["root"] = {"path": "rootfs", "readonly": False}
    c["hostname"] = f"floor{i}"
    c["linux"]["namespaces"] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                                {"type": "network", "path": f"/var/run/netns/dgbench{slot}"}]
    c["linux"]["cgroupsPath"] = f"/dirigent-bench/floor{i}"
    c["linux"]["resources"] = {"memory": {"limit": 128 << 20}, "cpu": {"quota": 100000, "period": 100000},
                               "pids": {"limit": 1024}}
    json.dump(c, open(f"{d}/config.json", "w"))
    return d
def until_200(ip):
    # the worker's probe schedule (src/worker/probe.c): every 250 us for 2 ms, every 500 us to
    # 10 ms, then 1 ms doubling to 50 ms
    t0 = time.monotonic(); delay = 0
    while True:
        try:
            s = socket.create_connection((ip, 80), timeout=1)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                s.close(); return
            s.close()
        except OSError:
            pass
        since = time.monotonic() - t0
        if since < 0.002: time.sleep(0.00025)
        elif since < 0.010: time.sleep(0.0005)
        else: delay = min(delay * 2 if delay else 0.001, 0.05); time.sleep(delay)
def run(i, slot):
    d = f"{tmp}/floor/{i}"
    t0 = time.monotonic()
    subprocess.run(["crun", "--root", f"{tmp}/crun", "run", "--detach", "--bundle", d, f"floor{i}"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until_200(f"{net}.{10 + slot}")
    t = time.monotonic() - t0
    subprocess.run(["crun", "--root", f"{tmp}/crun", "delete", "--force", f"floor{i}"], check=True)
    return t
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
if serial:  # one container at a time in namespace 0
    dirs = [bundle(i, 0) for i in range(n)]
    lat = [run(i, 0) for i in range(n)]
    print(f"floor_serial_p50_ms {pct(lat, 50) * 1000:.1f}")
    print(f"floor_serial_p99_ms {pct(lat, 99) * 1000:.1f}")
# parallel: `slots` streams, each in its own namespace
dirs = [bundle(n + i, i % slots) for i in range(n)]
t0 = time.monotonic()
def stream(slot):
    for i in range(slot, n, slots):
        run(n + i, slot)
th = [threading.Thread(target=stream, args=(s,)) for s in range(slots)]
[t.start() for t in th]; [t.join() for t in th]
print(f"floor_parallel_per_s {n / (time.monotonic() - t0):.1f}")
print(f"floor_parallel_n {n}")
print(f"floor_slots {slots}")
