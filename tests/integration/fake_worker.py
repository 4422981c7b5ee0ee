#!/usr/bin/env python3
"""fake_worker.py LOG [LISTING_JSON]: an impostor worker API on 127.0.0.1:0 (test_adoption.sh).

Prints "fake worker on 127.0.0.1:PORT" once listening, then appends one line per request to
LOG ("METHOD PATH BODY"). GET /v1/sandboxes answers LISTING_JSON (default: no sandboxes);
everything else answers 200 with an empty JSON array (a batch of deletes answered).
"""
import http.server
import sys

LOG = sys.argv[1]
LISTING = sys.argv[2] if len(sys.argv) > 2 else '{"sandboxes":[]}'


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode(errors="replace") if n else ""
        with open(LOG, "a") as f:
            f.write(f"{self.command} {self.path} {body}\n")
        out = (LISTING if self.command == "GET" and self.path == "/v1/sandboxes" else "[]").encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_DELETE = do_PUT = handle_one


s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(f"fake worker on 127.0.0.1:{s.server_address[1]}", flush=True)
s.serve_forever()
