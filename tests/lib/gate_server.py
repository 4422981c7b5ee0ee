#!/usr/bin/env python3
"""gate_server.py DIR: an HTTP/1.1 upstream that holds each request until the test lets it go,
so a test can look at the state of a cluster while requests are in a known place (no sleeps).

Listens on 127.0.0.1, an ephemeral port, written to DIR/port. Request number N (1, 2, ...,
in order of arrival; GET or POST) appends "N" to DIR/arrived, waits until the file DIR/open.N
or DIR/open.all exists (at most 60 s: a bound, then 504), answers 200 with body "N", and
appends "N" to DIR/done.
"""
import http.server
import os
import sys
import threading
import time

D = sys.argv[1]
lock = threading.Lock()
count = 0


def append(name, line):
    with lock, open(os.path.join(D, name), "a") as f:
        f.write(line + "\n")


class Gate(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        global count
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with lock:
            count += 1
            n = count
        append("arrived", str(n))
        ok = False
        for _ in range(1200):
            if os.path.exists(os.path.join(D, "open.%d" % n)) or \
                    os.path.exists(os.path.join(D, "open.all")):
                ok = True
                break
            time.sleep(0.05)
        body = str(n).encode()
        self.send_response(200 if ok else 504)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        append("done", str(n))

    do_POST = do_GET


srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gate)
srv.daemon_threads = True
with open(os.path.join(D, "port.tmp"), "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(os.path.join(D, "port.tmp"), os.path.join(D, "port"))
srv.serve_forever()
