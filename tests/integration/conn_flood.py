#!/usr/bin/env python3
"""conn_flood.py HOST PORT N [SRC_IP]: open N connections to HOST:PORT (from SRC_IP), send
nothing, and hold them. Once the server has answered or closed every connection it refuses
(the count stops changing for 1 s, at most 20 s), prints "open=K refused=R" and the first
refusal's answer, then holds the open ones (120 s, or until killed)."""
import select
import socket
import sys
import time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = sys.argv[4] if len(sys.argv) > 4 else None
socks = []
for _ in range(n):
    s = socket.socket()
    if src:
        s.bind((src, 0))
    s.settimeout(5)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        continue
    socks.append(s)
refused, answer = set(), ""
last, stable_since, start = -1, time.time(), time.time()
while time.time() - start < 20:
    live = [s for s in socks if s not in refused]
    r, _, _ = select.select(live, [], [], 0.2) if live else ([], [], [])
    for s in r:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not answer and data:
            answer = data.decode(errors="replace").splitlines()[0] + " | " + \
                data.decode(errors="replace").split("\r\n\r\n", 1)[-1].strip()
        refused.add(s)
    if len(refused) != last:
        last, stable_since = len(refused), time.time()
    elif time.time() - stable_since > 1:
        break
print(f"open={len(socks) - len(refused)} refused={len(refused) + n - len(socks)}", flush=True)
print(f"answer={answer}", flush=True)
time.sleep(120)  # held until killed (tap.sh kills it on exit)
