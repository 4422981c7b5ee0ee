#!/usr/bin/python3
"""A minimal h2c client on raw bytes, for the tests (no HTTP/2 library): prior-knowledge
preface, SETTINGS, then requests as HEADERS frames (HPACK literals without indexing, no
Huffman), each on its own stream of ONE connection; prints one line per frame received:
"<type> <stream> <payload>" (DATA payloads as text, GOAWAY as "last=<id> code=<n> <debug>").

  h2raw.py PORT req PATH 'name: value'... [-- PATH 'name: value'...]   requests
  h2raw.py PORT raw HEX                                                preface + HEX bytes
  h2raw.py PORT junk HEX             the same, then EOF (so a frame left incomplete ends too)
"""
import socket
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + payload


def lit(name, value):
    name, value = name.encode(), value.encode()
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    out = PREFACE + frame(4, 0, 0, b"")
    want = 0
    if mode in ("raw", "junk"):
        out += bytes.fromhex(sys.argv[3])
    else:
        reqs, cur = [], []
        for a in sys.argv[3:]:
            if a == "--":
                reqs.append(cur)
                cur = []
            else:
                cur.append(a)
        reqs.append(cur)
        for i, r in enumerate(reqs):
            block = lit(":method", "GET") + lit(":scheme", "http") + lit(":path", r[0])
            block += lit(":authority", "127.0.0.1")
            for h in r[1:]:
                n, v = h.split(":", 1)
                block += lit(n.strip().lower(), v.strip())
            out += frame(1, 0x5, 1 + 2 * i, block)  # END_STREAM | END_HEADERS
        want = len(reqs)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(out)
    if mode == "junk":
        s.shutdown(socket.SHUT_WR)
    buf, ended = b"", 0
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            print("timeout")
            break
        except ConnectionResetError:
            print("reset")
            break
        if not d:
            print("closed")
            break
        buf += d
        while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
            n = int.from_bytes(buf[:3], "big")
            t, fl, sid, p = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF, buf[9:9 + n]
            buf = buf[9 + n:]
            if t == 4 and not fl & 1 and mode != "junk":
                s.sendall(frame(4, 1, 0, b""))  # ACK their SETTINGS
            if t == 0:
                print("DATA", sid, p.decode(errors="replace").strip())
                if fl & 1:
                    ended += 1
            elif t == 7:
                print("GOAWAY", sid, "last=%d code=%d %s" % (int.from_bytes(p[:4], "big"),
                      int.from_bytes(p[4:8], "big"), p[8:].decode(errors="replace")))
            else:
                print({1: "HEADERS", 3: "RST_STREAM", 4: "SETTINGS", 6: "PING", 8: "WINDOW_UPDATE"}
                      .get(t, "type%d" % t), sid, p.hex())
        if want and ended == want:
            break
    s.close()


main()
