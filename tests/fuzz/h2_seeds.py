#!/usr/bin/python3
"""Seeds for fuzz_http2_client: a steering byte (fuzz_http_client.c) then an HTTP/2 server's
frames (HPACK: indexed :status, literals without indexing, no Huffman).
  h2_seeds.py DIR"""
import os
import sys


def frame(ftype, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def lit(name, value):
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


SETTINGS = frame(4, 0, 0, (3).to_bytes(2, "big") + (2).to_bytes(4, "big"))  # max streams 2
ACK = frame(4, 1, 0)
OK = b"\x88"  # :status 200
seeds = {
    "get": b" " + SETTINGS + ACK + frame(1, 4, 1, OK + lit(b"x-a", b"1")) + frame(0, 1, 1, b"hello"),
    "trailers": b"$" + SETTINGS + frame(1, 4, 1, OK + lit(b"content-type", b"application/grpc"))
    + frame(0, 0, 1, b"\x00\x00\x00\x00\x02hi") + frame(1, 5, 1, lit(b"grpc-status", b"0")),
    "trailers_only": b" " + SETTINGS + frame(1, 5, 1, OK + lit(b"grpc-status", b"14")),
    "rst": b"$" + SETTINGS + frame(3, 0, 1, (2).to_bytes(4, "big")),
    "refused": b"@" + SETTINGS + frame(3, 0, 1, (7).to_bytes(4, "big")),
    "goaway": b"p" + SETTINGS + frame(7, 0, 0, (0).to_bytes(4, "big") + (0).to_bytes(4, "big")),
    "head": b"(" + SETTINGS + frame(1, 5, 1, OK),
    "continue": b"," + SETTINGS + frame(1, 4, 1, b"\x08\x03100") + frame(1, 4, 1, OK)
    + frame(0, 1, 1, b"x"),
    "pieces": b"\xa3" + SETTINGS + frame(1, 4, 1, OK) + frame(0, 0, 1, b"a" * 300)
    + frame(0, 1, 1, b"b"),
    "window": b"$" + SETTINGS + frame(8, 0, 0, (65535).to_bytes(4, "big"))
    + frame(6, 0, 0, b"12345678") + frame(1, 5, 1, OK),
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(data)
