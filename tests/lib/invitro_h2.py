#!/usr/bin/python3
"""invitro_h2.py: the bytes InVitro's HTTP/2 (h2c) and gRPC invokers and its async mode send,
and the checks InVitro (with Go's net/http and grpc-go under it) makes on each answer.
No code of InVitro's, Go's or grpc-go's is here, only what they put on the wire, read from
vhive-serverless/invitro (pkg/driver/clients/http_client_factory.go, http_client.go,
grpc_client.go, invoker.go, pkg/driver/async_processing.go, pkg/workload/proto/faas.proto)
and from the Go client code it runs on; docs/load.md, "InVitro's bytes", lists them.

  http2  (InvokeProtocol "http2", every Dirigent config InVitro ships): Go's http.Transport
         with Protocols.SetUnencryptedHTTP2: h2c with prior knowledge, ONE connection per
         endpoint shared by all concurrent invocations (a stream each). Preface, SETTINGS
         ENABLE_PUSH=0 INITIAL_WINDOW_SIZE=4 MiB MAX_FRAME_SIZE=1 MiB MAX_HEADER_LIST_SIZE=10 MiB,
         WINDOW_UPDATE(0, 1 GiB); then per invocation HEADERS (END_STREAM: the body is empty)
         with :authority = the function's name, :method POST, :path /, :scheme http, the
         request's headers in Go's map order (random), content-length: 0, accept-encoding:
         gzip, user-agent: Go-http-client/2.0. Success: :status 200 and a non-empty body
         (which InVitro then json.Unmarshals into FunctionResponse).
  grpc   (InvokeProtocol "grpc"): grpc.NewClient per invocation with WithAuthority(name):
         a new connection each time; preface and an empty SETTINGS (grpc-go's defaults send
         no setting and no WINDOW_UPDATE), the RPC once the server's SETTINGS came; HEADERS
         :method POST, :scheme http, :path /faas.Executor/Execute, :authority = name,
         content-type application/grpc, user-agent grpc-go/VERSION, te: trailers,
         grpc-timeout (the 900 s GRPCFunctionTimeoutSeconds context); one DATA frame with
         END_STREAM: 5-byte prefix + FaasRequest{message "nothing", runtimeInMilliSec,
         memoryInMebiBytes}; a BDP PING on the first DATA received; GOAWAY on close.
         Success as grpc-go decides: :status 200, content-type application/grpc, exactly one
         uncompressed message that decodes as FaasReply, grpc-status 0 in the trailers.
  async  (AsyncMode): each invocation as above (http1 or http2); the body of the answer is
         the request's id. Later (AsyncWaitToCollectMin; here: polled until done) a Go
         HTTP/1.1 client GETs http://AsyncResponseURL with the id as the body: a non-empty
         body is the function's FunctionResponse, Duration-Microseconds its end-to-end time;
         an empty one means "not finished".

HPACK: requests use the encoder Go's and grpc-go's share (golang.org/x/net/http2/hpack):
indexed fields for exact matches in the static or dynamic table, else literals with
incremental indexing (name indexed when known), a 4096-byte dynamic table; strings are sent
without Huffman coding (Go uses it when shorter: the same header set and order, other bytes).
Answers are decoded with libnghttp2's inflater (ctypes): it only reads.

Usage: invitro_h2.py SPEC.json RESULTS.json; SPEC as invitro_http1.py's (cp, functions,
invocations, method) plus
  "protocol": "http1" | "http2" | "grpc"        (InvokeProtocol; an invocation may override it)
  "async": {"url": "host:port", "wait_s": N}     (AsyncMode, AsyncResponseURL)
Exit 0 when every registration and every invocation succeeded as InVitro judges them.
"""
import ctypes
import gzip
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import invitro_http1 as h1  # noqa: E402 (registration, HTTP/1.1, FunctionResponse)

TIMEOUT_S = 120
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
GRPC_UA = "grpc-go/1.63.0"  # grpc.NewClient appeared in grpc-go 1.63
GO_UA = "Go-http-client/2.0"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20

# RFC 7541 Appendix A
STATIC = [None, (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
          (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
          (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
          (":status", "404"), (":status", "500"), ("accept-charset", ""),
          ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
          ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
          ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
          ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
          ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
          ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
          ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
          ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
          ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
          ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
          ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
          ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", "")]
assert len(STATIC) == 62


def frame(ftype, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def hp_int(v, bits, first):
    lim = (1 << bits) - 1
    if v < lim:
        return bytes([first | v])
    out = [first | lim]
    v -= lim
    while v >= 128:
        out.append(v & 127 | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def hp_str(s):
    b = s.encode("latin-1")
    return hp_int(len(b), 7, 0) + b


class HpackEncoder:
    """The choices of x/net/http2/hpack's Encoder.WriteField (without Huffman)."""

    def __init__(self, limit=4096):
        self.dyn, self.size, self.max, self.limit = [], 0, limit, limit
        self.update = None

    def set_max(self, v):  # the peer's SETTINGS_HEADER_TABLE_SIZE, bounded by our limit
        v = min(v, self.limit)
        if v != self.max:
            self.max, self.update = v, v
            self._evict()

    def _evict(self):
        while self.size > self.max:
            n, v = self.dyn.pop()
            self.size -= len(n) + len(v) + 32

    def _search(self, name, value):
        name_idx = 0
        for i in range(1, 62):  # static: an exact match, else the last entry with the name
            if STATIC[i][0] == name:
                if STATIC[i][1] == value:
                    return i, True
                name_idx = i
        for j, (n, v) in enumerate(self.dyn):  # dynamic, newest first
            if n == name and v == value:
                return 62 + j, True
        if not name_idx:
            for j, (n, v) in enumerate(self.dyn):
                if n == name:
                    return 62 + j, False
        return name_idx, False

    def encode(self, fields):
        out = b""
        if self.update is not None:
            out += hp_int(self.update, 5, 0x20)
            self.update = None
        for name, value in fields:
            idx, exact = self._search(name, value)
            if exact:
                out += hp_int(idx, 7, 0x80)
                continue
            size = len(name) + len(value) + 32
            indexing = size <= self.max
            first, bits = (0x40, 6) if indexing else (0x00, 4)
            out += (hp_int(idx, bits, first) if idx else bytes([first]) + hp_str(name)) + hp_str(value)
            if indexing:
                self.dyn.insert(0, (name, value))
                self.size += size
                self._evict()
        return out


class _NV(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("value", ctypes.c_void_p), ("namelen", ctypes.c_size_t),
                ("valuelen", ctypes.c_size_t), ("flags", ctypes.c_uint8)]


_lib = None


def _nghttp2():
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL("libnghttp2.so.14")
        _lib.nghttp2_hd_inflate_new.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        _lib.nghttp2_hd_inflate_hd2.argtypes = [ctypes.c_void_p, ctypes.POINTER(_NV),
                                                ctypes.POINTER(ctypes.c_int), ctypes.c_void_p,
                                                ctypes.c_size_t, ctypes.c_int]
        _lib.nghttp2_hd_inflate_hd2.restype = ctypes.c_ssize_t
        _lib.nghttp2_hd_inflate_end_headers.argtypes = [ctypes.c_void_p]
        _lib.nghttp2_hd_inflate_del.argtypes = [ctypes.c_void_p]
    return _lib


class HpackDecoder:
    """One connection's HPACK decoding state (libnghttp2's inflater)."""

    def __init__(self):
        self.h = ctypes.c_void_p()
        if _nghttp2().nghttp2_hd_inflate_new(ctypes.byref(self.h)) != 0:
            raise MemoryError("nghttp2_hd_inflate_new")

    def decode(self, block):
        buf = ctypes.create_string_buffer(block, len(block))
        base, off, out = ctypes.addressof(buf), 0, []
        nv, fl = _NV(), ctypes.c_int()
        while True:
            fl.value = 0
            rv = _lib.nghttp2_hd_inflate_hd2(self.h, ctypes.byref(nv), ctypes.byref(fl), base + off,
                                             len(block) - off, 1)
            if rv < 0:
                raise ValueError("HPACK: the answer's header block does not decode (%d)" % rv)
            off += rv
            if fl.value & 2:  # EMIT
                out.append((ctypes.string_at(nv.name, nv.namelen).decode("latin-1"),
                            ctypes.string_at(nv.value, nv.valuelen).decode("latin-1")))
            if fl.value & 1:  # FINAL
                _lib.nghttp2_hd_inflate_end_headers(self.h)
                return out
            if rv == 0 and not fl.value & 2:
                raise ValueError("HPACK: a truncated header block")

    def __del__(self):
        if _lib is not None and self.h:
            _lib.nghttp2_hd_inflate_del(self.h)


class StreamError(Exception):
    pass


class Stream:
    def __init__(self):
        self.done = threading.Event()
        self.headers, self.trailers, self.body, self.error = None, None, b"", None


class H2Conn:
    """One client connection: writes under a lock (HPACK state follows the write order), a
    reader thread that hands frames to their streams, answers SETTINGS and PING."""
    serial = 0
    serial_lock = threading.Lock()

    def __init__(self, addr, settings, conn_window=0, wait_settings=False, bdp_ping=False):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with H2Conn.serial_lock:
            H2Conn.serial += 1
            self.id = H2Conn.serial
        self.enc, self.dec = HpackEncoder(), HpackDecoder()
        self.lock = threading.Lock()
        self.next_id, self.streams, self.dead, self.goaway = 1, {}, None, None
        self.peer_max_frame = 16384
        self.settings_seen = threading.Event()
        self.bdp_ping, self.pinged = bdp_ping, False
        out = PREFACE + frame(SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big")
                                                       for k, v in settings))
        if conn_window:
            out += frame(WINDOW_UPDATE, 0, 0, conn_window.to_bytes(4, "big"))
        self.sock.sendall(out)
        threading.Thread(target=self._read, daemon=True).start()
        if wait_settings and not self.settings_seen.wait(10):
            raise TimeoutError("no SETTINGS from the server within 10 s")
        if self.dead:
            raise ConnectionError(self.dead)

    def usable(self):
        return self.dead is None and self.goaway is None

    def _send(self, data):
        with self.lock:
            self.sock.sendall(data)

    def request(self, fields, data=None):
        st = Stream()
        with self.lock:
            if self.dead or self.goaway:
                raise ConnectionError(self.dead or "GOAWAY received")
            sid = self.next_id
            self.next_id += 2
            self.streams[sid] = st
            block, mf, out = self.enc.encode(fields), self.peer_max_frame, b""
            first, block = block[:mf], block[mf:]
            out += frame(HEADERS, (0 if block else END_HEADERS) | (END_STREAM if data is None else 0), sid, first)
            while block:
                part, block = block[:mf], block[mf:]
                out += frame(CONTINUATION, 0 if block else END_HEADERS, sid, part)
            if data is not None:
                while True:
                    part, data = data[:mf], data[mf:]
                    out += frame(DATA, 0 if data else END_STREAM, sid, part)
                    if not data:
                        break
            self.sock.sendall(out)
        if not st.done.wait(TIMEOUT_S):
            raise TimeoutError("no answer on stream %d within %d s" % (sid, TIMEOUT_S))
        if st.error:
            raise st.error
        return st

    def _fail_all(self, why, above=0):
        for sid, st in list(self.streams.items()):
            if sid > above and not st.done.is_set():
                st.error = StreamError(why)
                st.done.set()

    def _read(self):
        buf, hdr_sid, hdr_block, hdr_end = b"", 0, b"", False
        try:
            while True:
                while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
                    d = self.sock.recv(65536)
                    if not d:
                        if buf.startswith(b"HTTP/1."):  # an HTTP/1.x server refusing the preface
                            raise ConnectionError("not HTTP/2: the server answered %r" % buf.split(b"\r\n")[0])
                        raise ConnectionError("connection closed by the server")
                    buf += d
                n = int.from_bytes(buf[:3], "big")
                t, fl, sid, p = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n]
                buf = buf[9 + n:]
                if hdr_sid and t != CONTINUATION:
                    raise ConnectionError("PROTOCOL_ERROR: a frame inside a header block")
                if t in (DATA, HEADERS) and fl & PADDED:
                    p = p[1:len(p) - p[0]]
                if t == SETTINGS and not fl & ACK:
                    for i in range(0, len(p) - 5, 6):
                        k, v = int.from_bytes(p[i:i + 2], "big"), int.from_bytes(p[i + 2:i + 6], "big")
                        if k == 1:
                            with self.lock:
                                self.enc.set_max(v)
                        elif k == 5:
                            self.peer_max_frame = v
                    self._send(frame(SETTINGS, ACK, 0, b""))
                    self.settings_seen.set()
                elif t == PING and not fl & ACK:
                    self._send(frame(PING, ACK, 0, p))
                elif t == GOAWAY:
                    last = int.from_bytes(p[:4], "big") & 0x7FFFFFFF
                    self.goaway = (last, int.from_bytes(p[4:8], "big"), p[8:].decode(errors="replace"))
                    self._fail_all("GOAWAY last=%d code=%d %s" % self.goaway, above=last)
                elif t == RST_STREAM and sid in self.streams:
                    st = self.streams[sid]
                    st.error = StreamError("RST_STREAM code %d" % int.from_bytes(p[:4], "big"))
                    st.done.set()
                elif t in (HEADERS, CONTINUATION):
                    if t == HEADERS:
                        if fl & PRIORITY:
                            p = p[5:]
                        hdr_sid, hdr_block, hdr_end = sid, b"", bool(fl & END_STREAM)
                    elif sid != hdr_sid:
                        raise ConnectionError("PROTOCOL_ERROR: CONTINUATION without HEADERS")
                    hdr_block += p
                    if fl & END_HEADERS:
                        fields = self.dec.decode(hdr_block)  # always: the table is per connection
                        st, end = self.streams.get(hdr_sid), hdr_end
                        hdr_sid = 0
                        if st is None or st.done.is_set():
                            continue
                        if st.headers is None:
                            status = dict(fields).get(":status", "")
                            if status.startswith("1") and not end:
                                continue  # informational: the final answer follows
                            st.headers = fields
                        else:
                            st.trailers = fields
                        if end:
                            st.done.set()
                elif t == DATA:
                    st = self.streams.get(sid)
                    if self.bdp_ping and not self.pinged:  # grpc-go's first BDP estimate
                        self.pinged = True
                        self._send(frame(PING, 0, 0, bytes([2, 4, 16, 16, 9, 14, 7, 7])))
                    if st is not None and not st.done.is_set():
                        st.body += p
                        if fl & END_STREAM:
                            st.done.set()
        except Exception as e:  # noqa: BLE001 (every stream learns why)
            self.dead = repr(e)
            self._fail_all(self.dead)
            self.settings_seen.set()  # a wait for SETTINGS learns it too

    def close(self, goaway_debug=None):
        try:
            if goaway_debug is not None:
                self._send(frame(GOAWAY, 0, 0, (0).to_bytes(4, "big") + (0).to_bytes(4, "big") + goaway_debug))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def check_fields(fields, trailers=False):
    """What Go's Framer refuses in an answer's header block: upper-case names, pseudo-headers
    after regular ones or other than :status, pseudo-headers in trailers."""
    seen_regular = False
    for n, v in fields:
        if n != n.lower():
            raise ValueError("invalid header field name %r" % n)
        if n.startswith(":"):
            if seen_regular or trailers or n != ":status":
                raise ValueError("pseudo header field %r misplaced" % n)
        else:
            seen_regular = True
    return dict(fields)


class GoH2Transport:
    """http.Transport{Protocols: UnencryptedHTTP2}: one connection per endpoint, reused by
    every request while it has taken no GOAWAY (a new one then, as Go dials again)."""
    SETTINGS = [(2, 0), (4, 4 << 20), (5, 1 << 20), (6, 10 << 20)]

    def __init__(self):
        self.conns, self.lock, self.rnd = {}, threading.Lock(), random.Random(7)

    def conn(self, addr):
        with self.lock:
            c = self.conns.get(addr)
            if c is None or not c.usable():
                c = H2Conn(addr, self.SETTINGS, conn_window=1 << 30)
                self.conns[addr] = c
            return c

    def invoke(self, method, endpoint, fn, inv):
        hdrs = [("workload", fn["image"]), ("function", fn["name"]), ("requested_cpu", str(inv["runtime"])),
                ("requested_memory", str(inv["memory"])), ("multiplier", str(inv["multiplier"]))]
        if method == "POST":
            hdrs.append(("io_percentage", "0"))
        with self.lock:
            self.rnd.shuffle(hdrs)  # Go ranges over req.Header: a map, in random order
        fields = [(":authority", fn["name"]), (":method", method), (":path", "/"), (":scheme", "http")]
        fields += hdrs
        if method == "POST":
            fields.append(("content-length", "0"))
        fields += [("accept-encoding", "gzip"), ("user-agent", GO_UA)]
        c = self.conn(endpoint)
        st = c.request(fields)
        h = check_fields(st.headers)
        body = st.body
        if "content-length" in h and int(h["content-length"]) != len(body):
            raise ValueError("body of %d bytes, content-length %s" % (len(body), h["content-length"]))
        if h.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        return int(h.get(":status", "0")), h, body, c.id


def grpc_timeout(seconds):
    """grpcutil.EncodeDuration: the smallest unit whose count (rounded up) has <= 8 digits."""
    ns = int(seconds * 1e9)
    for unit, div in (("n", 1), ("u", 1000), ("m", 10 ** 6), ("S", 10 ** 9), ("M", 60 * 10 ** 9)):
        d = -(-ns // div)
        if d <= 10 ** 8 - 1:
            return "%d%s" % (d, unit)
    return "%dH" % -(-ns // (3600 * 10 ** 9))


def pb_varint(v):
    out = b""
    while v >= 128:
        out += bytes([v & 127 | 128])
        v >>= 7
    return out + bytes([v])


def faas_request(message, runtime_ms, memory_mib):
    """FaasRequest as Go's protobuf marshals it: fields in number order, proto3 zeros left out."""
    out = b""
    if message:
        m = message.encode()
        out += b"\x0a" + pb_varint(len(m)) + m
    if runtime_ms:
        out += b"\x10" + pb_varint(runtime_ms & 0xFFFFFFFF)
    if memory_mib:
        out += b"\x18" + pb_varint(memory_mib & 0xFFFFFFFF)
    return out


def faas_reply(data):
    """proto.Unmarshal into FaasReply: unknown fields and fields of another wire type are
    skipped; a string must be UTF-8; uint32 keeps the low 32 bits of the varint."""
    out, i = {"message": "", "durationInMicroSec": 0, "memoryUsageInKb": 0}, 0

    def varint():
        nonlocal i
        v, shift = 0, 0
        while True:
            if i >= len(data) or shift > 63:
                raise ValueError("FaasReply: a truncated varint")
            b = data[i]
            i += 1
            v |= (b & 127) << shift
            shift += 7
            if not b & 128:
                return v
    while i < len(data):
        key = varint()
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ValueError("FaasReply: field number 0")
        if wt == 0:
            v = varint()
            if field == 2:
                out["durationInMicroSec"] = v & 0xFFFFFFFF
            elif field == 3:
                out["memoryUsageInKb"] = v & 0xFFFFFFFF
        elif wt == 2:
            n = varint()
            if i + n > len(data):
                raise ValueError("FaasReply: a length-delimited field past the end")
            if field == 1:
                out["message"] = data[i:i + n].decode("utf-8")  # invalid UTF-8: an error in Go
            i += n
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError("FaasReply: wire type %d" % wt)
        if i > len(data):
            raise ValueError("FaasReply: truncated")
    return out


class GrpcError(Exception):
    def __init__(self, code, message, http_status=None):
        super().__init__("rpc error: code = %d desc = %s" % (code, message))
        self.code, self.message, self.http_status = code, message, http_status


# grpc-go's HTTPStatusConvTab: an answer that is not gRPC gets its code from the HTTP status
HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


def grpc_invoke(endpoint, fn, inv, timeout_s=900):
    """One InVitro gRPC invocation: its own connection, the RPC, grpc-go's verdict."""
    c = H2Conn(endpoint, [], wait_settings=True, bdp_ping=True)
    try:
        msg = faas_request("nothing", int(inv["runtime"]), int(inv["memory"]))
        fields = [(":method", "POST"), (":scheme", "http"), (":path", "/faas.Executor/Execute"),
                  (":authority", fn["name"]), ("content-type", "application/grpc"),
                  ("user-agent", GRPC_UA), ("te", "trailers"), ("grpc-timeout", grpc_timeout(timeout_s))]
        st = c.request(fields, b"\x00" + len(msg).to_bytes(4, "big") + msg)
    finally:
        c.close(b"client transport shutdown")
    h = check_fields(st.headers)
    http_status = int(h.get(":status", "0"))
    ctype = h.get("content-type", "")
    is_grpc = ctype == "application/grpc" or ctype.startswith("application/grpc+") or \
        ctype.startswith("application/grpc;")
    if http_status != 200 or not is_grpc:
        raise GrpcError(HTTP_TO_GRPC.get(http_status, 2),
                        "unexpected HTTP status code %d / content-type %r" % (http_status, ctype), http_status)
    tr = check_fields(st.trailers, trailers=True) if st.trailers is not None else h  # trailers-only
    if "grpc-status" not in tr:
        raise GrpcError(13, "server closed the stream without sending trailers", http_status)
    code = int(tr["grpc-status"])
    if code != 0:
        raise GrpcError(code, urllib.parse.unquote(tr.get("grpc-message", "")), http_status)
    body, msgs = st.body, []
    while body:
        if len(body) < 5:
            raise GrpcError(13, "a truncated message prefix")
        n = int.from_bytes(body[1:5], "big")
        if body[0] not in (0, 1) or (body[0] == 1 and "grpc-encoding" not in h):
            raise GrpcError(13, "compressed flag %d without grpc-encoding" % body[0])
        if len(body) < 5 + n:
            raise GrpcError(13, "a truncated message")
        msgs.append(body[5:5 + n])
        body = body[5 + n:]
    if len(msgs) != 1:
        raise GrpcError(13, "cardinality violation: %d response messages for a unary RPC" % len(msgs))
    return faas_reply(msgs[0]), tr, c.id


def async_fetch(pool, url, rid):
    """getAsyncResponseData: GET http://URL with the id as the body (Go's HTTP/1.1 client)."""
    body = rid.encode()
    raw = (f"GET / HTTP/1.1\r\nHost: {url}\r\nUser-Agent: Go-http-client/1.1\r\n"
           f"Content-Length: {len(body)}\r\nAccept-Encoding: gzip\r\n\r\n").encode() + body
    status, headers, resp = pool.do(url, raw)
    return status, headers, resp


def main():
    spec = json.load(open(sys.argv[1]))
    proto = spec.get("protocol", "http1")
    asy = spec.get("async")
    pool, h2t = h1.Pool(), GoH2Transport()
    endpoints = []
    for fn in spec["functions"]:
        try:
            endpoints.append(h1.register(pool, spec["cp"], fn))
        except Exception as e:  # noqa: BLE001
            print(f"registration failed: {e}")
            return 1
    results = [None] * len(spec["invocations"])
    t0 = time.monotonic()

    def fire(i, inv):
        fn, ep = spec["functions"][inv["function"]], endpoints[inv["function"]]
        delay = t0 + inv["at_ms"] / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p = inv.get("protocol", proto)
        method = inv.get("method", spec.get("method", "POST"))
        r = {"function": fn["name"], "protocol": p, "async": bool(asy), "ok": False}
        start = time.monotonic()
        try:
            if p == "grpc":
                rep, tr, cid = grpc_invoke(ep, fn, inv, spec.get("grpc_timeout_s", 900))
                r.update(reply=rep, grpc_status=int(tr["grpc-status"]), conn=cid, ok=True)
            else:
                if p == "http2":
                    status, _, body, cid = h2t.invoke(method, ep, fn, inv)
                    r["conn"] = cid
                else:
                    status, _, body = pool.do(ep, h1.invocation_bytes(method, ep, fn, inv))
                r.update(status=status, body=body.decode("utf-8", "replace")[:300])
                if status == 200 and len(body) > 0:  # InVitro's test of an HTTP answer
                    if asy:
                        r["async_id"] = body.decode("utf-8", "replace")
                    else:
                        r["response"] = h1.function_response(body)
                    r["ok"] = True
        except GrpcError as e:
            r.update(error=str(e), grpc_status=e.code, http_status=e.http_status)
        except Exception as e:  # noqa: BLE001
            r["error"] = repr(e)
        r["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
        results[i] = r

    threads = [threading.Thread(target=fire, args=(i, inv)) for i, inv in enumerate(spec["invocations"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    if asy:  # writeAsyncRecordsToLog, polled until every result is there or wait_s passed
        deadline = time.monotonic() + asy.get("wait_s", 60)
        fpool = h1.Pool()
        for r in results:
            if not r["ok"]:
                continue
            r["ok"] = False
            while True:
                try:
                    status, headers, body = async_fetch(fpool, asy["url"], r["async_id"])
                except Exception as e:  # noqa: BLE001
                    r["fetch_error"] = repr(e)
                    break
                r.update(fetch_status=status)
                if body:
                    try:
                        r["response"] = h1.function_response(body)
                        d = headers.get("duration-microseconds", "")
                        r["duration_us"] = int(d) if d.strip().lstrip("-").isdigit() else d
                        r["ok"] = True
                    except Exception as e:  # noqa: BLE001
                        r["fetch_error"] = "%r: %r" % (e, body[:200])
                    break
                if time.monotonic() > deadline:
                    r["fetch_error"] = "no result within %s s (the function has not completed)" % asy.get("wait_s", 60)
                    break
                time.sleep(0.1)

    failures = 0
    for r in results:
        if not r["ok"]:
            failures += 1
            print(f"failed: {r}")
    json.dump(results, open(sys.argv[2], "w"), indent=1)
    conns = sorted({r["conn"] for r in results if "conn" in r})
    print(f"{len(results) - failures}/{len(results)} invocations succeeded as InVitro parses them"
          f" ({proto}{', async' if asy else ''}; {len(conns)} HTTP/2 connection(s))")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
