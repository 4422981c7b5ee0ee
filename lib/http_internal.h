/*
 * http_internal.h: pieces shared by the HTTP server and client: writing with
 * uv_try_write first (no allocation when the socket takes everything, which is
 * the common case), the cached Date header, and header storage that records
 * offsets while parsing (the buffer may move) and turns them into views once
 * the headers are complete.
 */
#ifndef DIRIGENT_HTTP_INTERNAL_H
#define DIRIGENT_HTTP_INTERNAL_H

#include <http_parser.h>

#include "dirigent/http.h"

/* Write `bufs` to `s`: first uv_try_write, then copy what is left into one allocation and
 * queue it with uv_write. `cb` (may be NULL) runs when a queued write completes with its
 * status; it is not called when everything was written at once (returns 1 then, 0 when
 * queued, negative on error). */
typedef void (*dg__write_cb)(void *ctx, int status);
int dg__http_write(uv_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, dg__write_cb cb,
                   void *ctx);

/* "Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n", formatted at most once per second. */
const char *dg__http_date_line(void);

/* Header storage: names and values appended as the parser hands out fragments. */
struct dg__hdr_span {
    uint32_t name_off, name_len, value_off, value_len;
};
struct dg__hdrs {
    struct dg_buf bytes;        /* url + header fragments, in order */
    struct dg__hdr_span *spans; /* one per header */
    unsigned n, cap;
    bool in_value; /* last fragment was a value */
    struct dg_http_header *views;
    unsigned views_cap;
};
void dg__hdrs_reset(struct dg__hdrs *h);
void dg__hdrs_free(struct dg__hdrs *h);
/* Append a fragment; returns false when the header count would exceed `max_headers`. */
bool dg__hdrs_field(struct dg__hdrs *h, const char *at, size_t len, unsigned max_headers);
void dg__hdrs_value(struct dg__hdrs *h, const char *at, size_t len);
/* Build h->views from the spans (call once the headers are complete). */
void dg__hdrs_finish(struct dg__hdrs *h);
struct dg_str dg__hdrs_get(const struct dg__hdrs *h, const char *name);

/* Strict framing (RFC 9112), checked on the raw bytes before http_parser sees them: the
 * packaged libhttp-parser is built without HTTP_PARSER_STRICT and accepts a bare LF or CR as a
 * line end, obs-fold (a header line starting with whitespace) and chunk data not followed by
 * CRLF. The scanner follows the message framing byte by byte: start line and header lines
 * (each ending in CRLF, none starting with SP or HTAB), then a body whose kind the caller
 * reads from the parser at the end of the headers (dg__frame_body), chunk size lines, chunk
 * data followed by CRLF, and the trailer section. */
enum dg__frame_kind { DG__BODY_NONE, DG__BODY_LENGTH, DG__BODY_CHUNKED, DG__BODY_EOF };
struct dg__frame {
    uint8_t st;
    bool trailer;    /* in the trailer section of a chunked body */
    unsigned digits; /* chunk size digits seen */
    uint64_t remain; /* body or chunk bytes still to skip */
    const char *err; /* what broke the framing; set once */
};
void dg__frame_init(struct dg__frame *f);
/* Scan `data`: returns how many bytes may be handed to the parser. Stops after the blank line
 * that ends a header section (dg__frame_at_body() is then true until dg__frame_body) and
 * before the first byte that breaks the framing (f->err says what). */
size_t dg__frame_scan(struct dg__frame *f, const char *data, size_t len);
bool dg__frame_at_body(const struct dg__frame *f);
void dg__frame_body(struct dg__frame *f, enum dg__frame_kind kind, uint64_t length);

/* ---- HTTP/2 client (http2_client.c) ---------------------------------------------------------
 * A pool made with opts.h2c keeps an h2 pool behind it and the public dg_http_* client calls
 * forward to these. Every request object starts with a dg__creq_tag, so the public calls tell
 * an HTTP/1.1 request (struct dg_http_creq, http_client.c) from a stream (http2_client.c). */
struct dg__creq_tag {
    bool h2;
};
struct dg__h2pool;
struct dg__h2pool *dg__h2_pool_new(uv_loop_t *loop, const struct sockaddr_storage *addr,
                                   const char *host, int port,
                                   const struct dg_http_pool_opts *opts);
void dg__h2_pool_close(struct dg__h2pool *p);
void dg__h2_pool_set_bearer(struct dg__h2pool *p, const char *bearer);
void dg__h2_pool_stats(const struct dg__h2pool *p, struct dg_http_pool_stats *out);
/* streaming false: `body` (len bytes) is the whole body; true: content_length (-1: unknown)
 * and the body comes through dg__h2_creq_write/end. NULL when it already ended. */
struct dg_http_creq *dg__h2_request(struct dg__h2pool *p, const char *method, const char *path,
                                    const struct dg_http_header *hdrs, size_t nhdrs,
                                    const void *body, size_t len, bool streaming,
                                    int64_t content_length, const struct dg_http_client_cbs *cbs,
                                    void *ud);
void dg__h2_creq_write(struct dg_http_creq *q, const void *data, size_t len);
void dg__h2_creq_end(struct dg_http_creq *q);
bool dg__h2_creq_sent(const struct dg_http_creq *q);
bool dg__h2_creq_stale(const struct dg_http_creq *q);
void dg__h2_creq_pause(struct dg_http_creq *q);
void dg__h2_creq_resume(struct dg_http_creq *q);
void dg__h2_creq_cancel(struct dg_http_creq *q);
#endif
