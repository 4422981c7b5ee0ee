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

#endif
