/*
 * daemon.h: what every daemon's main does the same way. SIGPIPE is ignored
 * (libraft followers and any socket write would die otherwise); SIGTERM and
 * SIGINT are watched on the loop (libuv turns them into loop callbacks, so no
 * work happens in a signal handler) and start a clean shutdown; a second
 * signal during shutdown exits at once with status 1. Also: GET /health and
 * GET /metrics on any API server.
 */
#ifndef DIRIGENT_DAEMON_H
#define DIRIGENT_DAEMON_H

#include <uv.h>

#include "dirigent/config.h"
#include "dirigent/http.h"
#include "dirigent/metrics.h"

struct dg_daemon {
    uv_loop_t *loop;
    uv_signal_t sigterm, sigint;
    void (*on_stop)(void *ud);
    void *ud;
    bool stopping;
    const char *name;
};

/* Ignore SIGPIPE and start watching SIGTERM/SIGINT on `loop`: the first one calls
 * `on_stop(ud)` (stop accepting, finish in-flight work, close handles). The watchers do not
 * keep the loop alive. `name` (borrowed) is used in the log line. */
int dg_daemon_init(struct dg_daemon *d, uv_loop_t *loop, const char *name,
                   void (*on_stop)(void *ud), void *ud, struct dg_err *err);
/* A daemon's command line: parse it into `cfg` (dg_conf_parse_args), then set the log level
 * from the string `*log_level` points at (a field of cfg, read after parsing). Returns -1 to
 * go on, or the exit status to leave main with: 0 after --help / --print-config, 2 after a
 * config error (printed as "PROG: error"); cfg is freed then. */
int dg_daemon_configure(const struct dg_conf_schema *s, void *cfg, char *const *log_level, int argc,
                        char **argv);
/* Close the signal watchers (call from on_stop or before leaving main). */
void dg_daemon_deinit(struct dg_daemon *d);

/* Close every handle still open on `loop` and run it until they are closed; then
 * uv_loop_close. For the end of main. Returns uv_loop_close's result. */
int dg_loop_close_all(uv_loop_t *loop);

/* GET /health -> 200 "ok"; GET /metrics -> the registry `m` (borrowed, must outlive s) in the
 * Prometheus text format, plus the server's own connection and request counters. */
void dg_daemon_mount_health_metrics(struct dg_http_server *s, struct dg_metrics *m);

/* The HTTP server settings every daemon's config has, under "http." keys. Put
 * `struct dg_http_conf http;` in the program's config struct and DG_CONF_HTTP_FIELDS(type,
 * http) in its schema table. */
struct dg_http_conf {
    int64_t max_header_bytes, max_headers, max_body_bytes;
    int64_t header_timeout_ms, body_timeout_ms, idle_timeout_ms, shutdown_grace_ms;
    int64_t body_min_rate, max_conns, internal_conns, max_conns_per_client;
    int64_t h2_max_streams;
};
#define DG_CONF_HTTP_FIELDS(T, M)                                                                  \
    {.key = "http.maxHeaderBytes",                                                                 \
     .type = DG_CONF_SIZE,                                                                         \
     .offset = offsetof(T, M.max_header_bytes),                                                    \
     .def = "16KiB",                                                                               \
     .min = 1024,                                                                                  \
     .max = 1024 * 1024,                                                                           \
     .help = "request line + headers at most; larger: 431"},                                       \
        {.key = "http.maxHeaders",                                                                 \
         .type = DG_CONF_INT,                                                                      \
         .offset = offsetof(T, M.max_headers),                                                     \
         .def = "100",                                                                             \
         .min = 1,                                                                                 \
         .max = 10000,                                                                             \
         .help = "header fields at most; more: 431"},                                              \
        {.key = "http.maxBodyBytes",                                                               \
         .type = DG_CONF_SIZE,                                                                     \
         .offset = offsetof(T, M.max_body_bytes),                                                  \
         .def = "1MiB",                                                                            \
         .min = 0,                                                                                 \
         .max = INT64_MAX,                                                                         \
         .help = "request body at most; larger: 413"},                                             \
        {.key = "http.headerTimeout",                                                              \
         .type = DG_CONF_DURATION,                                                                 \
         .offset = offsetof(T, M.header_timeout_ms),                                               \
         .def = "10s",                                                                             \
         .min = 1,                                                                                 \
         .max = 3600000,                                                                           \
         .help = "time to receive a request's headers; slower: 408"},                              \
        {.key = "http.bodyTimeout",                                                                \
         .type = DG_CONF_DURATION,                                                                 \
         .offset = offsetof(T, M.body_timeout_ms),                                                 \
         .def = "30s",                                                                             \
         .min = 1,                                                                                 \
         .max = 3600000,                                                                           \
         .help = "longest silence while receiving a body; longer: 408"},                           \
        {.key = "http.bodyMinRate",                                                                \
         .type = DG_CONF_SIZE,                                                                     \
         .offset = offsetof(T, M.body_min_rate),                                                   \
         .def = "4KiB",                                                                            \
         .min = 0,                                                                                 \
         .max = INT64_MAX,                                                                         \
         .help = "bytes per second: a whole body must arrive within bodyTimeout plus 1 s per "     \
                 "this many bytes (reading time only); later: 408. 0: within bodyTimeout"},        \
        {.key = "http.maxConns",                                                                   \
         .type = DG_CONF_INT,                                                                      \
         .offset = offsetof(T, M.max_conns),                                                       \
         .def = "0",                                                                               \
         .min = 0,                                                                                 \
         .max = 10000000,                                                                          \
         .help = "open connections of each public listener (CP registration, DP ingress, worker, " \
                 "function server); more: 503 and close. 0: auto, a third of RLIMIT_NOFILE"},      \
        {.key = "http.internalConns",                                                              \
         .type = DG_CONF_INT,                                                                      \
         .offset = offsetof(T, M.internal_conns),                                                  \
         .def = "0",                                                                               \
         .min = 0,                                                                                 \
         .max = 10000000,                                                                          \
         .help = "open connections of the internal listener (CP internal API, DP API), a budget "  \
                 "of its own; more: 503 and close. 0: auto, an eighth of RLIMIT_NOFILE"},          \
        {.key = "http.maxConnsPerClient",                                                          \
         .type = DG_CONF_INT,                                                                      \
         .offset = offsetof(T, M.max_conns_per_client),                                            \
         .def = "0",                                                                               \
         .min = 0,                                                                                 \
         .max = 10000000,                                                                          \
         .help = "open connections from one IP address to one listener; more: 503 and close. "     \
                 "0: auto, half the listener's cap"},                                              \
        {.key = "http.idleTimeout",                                                                \
         .type = DG_CONF_DURATION,                                                                 \
         .offset = offsetof(T, M.idle_timeout_ms),                                                 \
         .def = "60s",                                                                             \
         .min = 1,                                                                                 \
         .max = 86400000,                                                                          \
         .help = "keep-alive connection without a request is closed after"},                       \
        {.key = "http.shutdownGrace",                                                              \
         .type = DG_CONF_DURATION,                                                                 \
         .offset = offsetof(T, M.shutdown_grace_ms),                                               \
         .def = "5s",                                                                              \
         .min = 0,                                                                                 \
         .max = 600000,                                                                            \
         .help = "on SIGTERM, time given to requests in flight"},                                  \
    {                                                                                              \
        .key = "http.h2MaxStreams", .type = DG_CONF_INT, .offset = offsetof(T, M.h2_max_streams),  \
        .def = "100", .min = 1, .max = 100000,                                                     \
        .help = "HTTP/2 streams open at once on one h2c connection "                               \
                "(SETTINGS_MAX_CONCURRENT_STREAMS); more: RST_STREAM REFUSED_STREAM"               \
    }

/* Limits for dg_http_server_new from the config: for a public listener (maxConns), and for
 * an internal one (internalConns), each with maxConnsPerClient. The automatic caps (0) come
 * from RLIMIT_NOFILE, whose soft limit is raised to the hard limit on the first call:
 * B = limit - 256 (files, pools, children), a public listener B/3, an internal one B/8
 * (at least 64 each), a client half its listener's cap. */
void dg_http_conf_limits(const struct dg_http_conf *c, struct dg_http_limits *out);
void dg_http_conf_internal_limits(const struct dg_http_conf *c, struct dg_http_limits *out);
/* RLIMIT_NOFILE's soft limit, raised to the hard limit the first time (logged). */
uint64_t dg_nofile_limit(void);

#endif
