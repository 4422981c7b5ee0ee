#!/usr/bin/python3
"""invitro_http1.py: the bytes InVitro's HTTP/1 invoker and Dirigent deployer send, and the
checks InVitro makes on each answer (test_invitro.sh drives it; no code of InVitro's is here,
only what it puts on the wire, read from vhive-serverless/invitro).

Registration (pkg/driver/deployment/dirigent.go): http.Client.PostForm to
http://CP/registerService with url.Values{name, image, port_forwarding (port, protocol),
scaling_upper_bound, scaling_lower_bound, requested_cpu, requested_memory, cold_start_sweep}
plus iteration_multiplier and cold_start_busy_loop_ms when BusyLoopOnSandboxStartup is set.
Go's Values.Encode sorts the keys and QueryEscapes keys and values. The answer's body is the
data planes' addresses joined by ';'; InVitro picks one at random as the function's endpoint.

Invocation (pkg/driver/clients/http_client.go): http.NewRequest("POST", "http://"+endpoint,
empty body) on main ("GET" on the rps_mode branch, which also sends no io_percentage),
req.Host = function name, and req.Header.Set of workload (the image), function,
requested_cpu (runtime ms), requested_memory (MiB), multiplier, io_percentage: Go
canonicalises the keys (Workload, Requested_cpu, ...) and writes them sorted, after Host,
User-Agent and (POST) Content-Length: 0, and before the transport's Accept-Encoding: gzip.
An answer counts as a success when the status is 200, the body is not empty, and the body
unmarshals into FunctionResponse{Status, Function, MachineName string; ExecutionTime int64}.

Usage: invitro_http1.py SPEC.json RESULTS.json, where SPEC is
  {"cp": "host:port", "method": "POST"|"GET",
   "functions": [{"name", "image", "port", "protocol", "upper", "lower", "cpu", "memory",
                  "sweep", "multiplier"?, "busy_loop_ms"?}],
   "invocations": [{"at_ms", "function" (index), "runtime", "memory", "multiplier",
                    "method"? (overrides the spec's)}]}
Exit 0 when every registration and every invocation succeeded as InVitro judges them.
"""
import gzip
import json
import random
import socket
import sys
import threading
import time
import urllib.parse

TIMEOUT_S = 120


def go_query_escape(s):
    # Go's url.QueryEscape: unreserved characters stay, space is '+', the rest %XX (upper)
    return urllib.parse.quote_plus(str(s), safe="-_.~")


def go_encode(values):
    # url.Values.Encode: keys sorted, each key's values in order
    return "&".join(go_query_escape(k) + "=" + go_query_escape(v)
                    for k in sorted(values) for v in values[k])


def canonical_key(k):
    # textproto.CanonicalMIMEHeaderKey for keys of token characters: upper-case the first
    # letter and each letter after '-', lower-case the rest ('_' is a token character)
    out, upper = [], True
    for ch in k:
        out.append(ch.upper() if upper else ch.lower())
        upper = ch == "-"
    return "".join(out)


class Conn:
    """One keep-alive HTTP/1.1 connection, as Go's transport keeps them."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def roundtrip(self, raw, head_request=False):
        self.sock.sendall(raw)
        status_line = self._line().decode("latin-1")
        status = int(status_line.split(" ")[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers[k.strip().lower()] = v.strip()
        body = b""
        if status in (204, 304) or 100 <= status < 200:  # no body, whatever the headers say
            pass
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # until close
            try:
                while True:
                    self._fill()
            except ConnectionError:
                pass
            body, self.buf = self.buf, b""
            headers["connection"] = "close"
        if headers.get("content-encoding", "").lower() == "gzip":  # Go decompresses for it
            body = gzip.decompress(body)
        keep = headers.get("connection", "").lower() != "close"
        return status, headers, body, keep

    def close(self):
        self.sock.close()


class Pool:
    """Idle connections per address (Go's Transport reuses them; a busy one is not shared)."""

    def __init__(self):
        self.idle = {}
        self.lock = threading.Lock()

    def do(self, addr, raw):
        with self.lock:
            conns = self.idle.setdefault(addr, [])
            c = conns.pop() if conns else None
        if c is None:
            c = Conn(addr)
        try:
            status, headers, body, keep = c.roundtrip(raw)
        except Exception:
            c.close()
            raise
        if keep:
            with self.lock:
                self.idle[addr].append(c)
        else:
            c.close()
        return status, headers, body


def register(pool, cp, fn):
    values = {
        "name": [fn["name"]],
        "image": [fn["image"]],
        "port_forwarding": [str(fn["port"]), fn["protocol"]],
        "scaling_upper_bound": [str(fn["upper"])],
        "scaling_lower_bound": [str(fn["lower"])],
        "requested_cpu": [str(fn["cpu"])],
        "requested_memory": [str(fn["memory"])],
        "cold_start_sweep": ["true" if fn["sweep"] else "false"],
    }
    if "busy_loop_ms" in fn:  # BusyLoopOnSandboxStartup
        values["iteration_multiplier"] = [str(fn["multiplier"])]
        values["cold_start_busy_loop_ms"] = [str(fn["busy_loop_ms"])]
    body = go_encode(values).encode()
    raw = (f"POST /registerService HTTP/1.1\r\nHost: {cp}\r\nUser-Agent: Go-http-client/1.1\r\n"
           f"Content-Length: {len(body)}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
           f"Accept-Encoding: gzip\r\n\r\n").encode() + body
    status, _, resp = pool.do(cp, raw)
    if status != 200:
        raise RuntimeError(f"registration of {fn['name']}: {status} {resp[:300]!r}")
    endpoints = resp.decode().split(";")
    return random.choice(endpoints)


def invocation_bytes(method, endpoint, fn, inv):
    headers = {
        "workload": fn["image"],
        "function": fn["name"],
        "requested_cpu": str(inv["runtime"]),
        "requested_memory": str(inv["memory"]),
        "multiplier": str(inv["multiplier"]),
    }
    if method == "POST":
        headers["io_percentage"] = "0"
    lines = [f"{method} / HTTP/1.1", f"Host: {fn['name']}", "User-Agent: Go-http-client/1.1"]
    if method == "POST":
        lines.append("Content-Length: 0")  # an empty body on a POST: Go sends the length
    lines += [f"{k}: {v}" for k, v in sorted((canonical_key(k), v) for k, v in headers.items())]
    lines.append("Accept-Encoding: gzip")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def function_response(body):
    """json.Unmarshal(body, &FunctionResponse): the fields InVitro reads, with Go's types."""
    v = json.loads(body)
    if not isinstance(v, dict):
        raise ValueError("not a JSON object")
    out = {}
    for field, typ in (("Status", str), ("Function", str), ("MachineName", str),
                       ("ExecutionTime", int)):
        # encoding/json matches keys case-insensitively; a wrong type is an error
        hits = [x for k, x in v.items() if k.lower() == field.lower()]
        x = hits[0] if hits else typ()
        if x is not None and (not isinstance(x, typ) or isinstance(x, bool)):
            raise ValueError(f"{field}: cannot unmarshal {type(x).__name__} into {typ.__name__}")
        if typ is int and x is not None and not -2**63 <= x < 2**63:
            raise ValueError(f"{field}: overflows int64")
        out[field] = x
    return out


def main():
    spec = json.load(open(sys.argv[1]))
    pool = Pool()
    failures = 0
    endpoints = []
    for fn in spec["functions"]:
        try:
            endpoints.append(register(pool, spec["cp"], fn))
        except Exception as e:
            print(f"registration failed: {e}")
            return 1
    results = [None] * len(spec["invocations"])
    t0 = time.monotonic()

    def fire(i, inv):
        fn = spec["functions"][inv["function"]]
        delay = t0 + inv["at_ms"] / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        start = time.monotonic()
        r = {"function": fn["name"], "ok": False}
        try:
            method = inv.get("method", spec["method"])
            status, _, body = pool.do(endpoints[inv["function"]],
                                      invocation_bytes(method, endpoints[inv["function"]], fn,
                                                       inv))
            r.update(status=status, body=body.decode("utf-8", "replace")[:300])
            if status == 200 and len(body) > 0:
                r["response"] = function_response(body)
                r["ok"] = True
        except Exception as e:
            r["error"] = repr(e)
        r["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
        results[i] = r

    threads = [threading.Thread(target=fire, args=(i, inv)) for i, inv in
               enumerate(spec["invocations"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if not r["ok"]:
            failures += 1
            print(f"failed: {r}")
    json.dump(results, open(sys.argv[2], "w"), indent=1)
    print(f"{len(results) - failures}/{len(results)} invocations succeeded as InVitro parses them")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
