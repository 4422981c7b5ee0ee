/*
 * fuzz_http2_client.c: libFuzzer target for the client pool over h2c (lib/http2_client.c):
 * fuzz_http_client.c's driver and checks with the pool made with opts.h2c, so the upstream's
 * bytes after the steering byte are what an HTTP/2 server sends back (its SETTINGS, HEADERS,
 * DATA, trailers, RST_STREAM, GOAWAY, garbage). Seeds: tests/fuzz/corpus/fuzz_http2_client,
 * made by tests/fuzz/h2_seeds.py.
 */
#define FUZZ_H2C 1
#include "fuzz_http_client.c"
