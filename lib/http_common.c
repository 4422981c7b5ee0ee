/*
 * http_common.c: status texts, limits defaults, the write helper and header
 * storage used by both http_server.c and http_client.c.
 */
#include "http_internal.h"

#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void dg_http_limits_default(struct dg_http_limits *l)
{
    l->max_header_bytes = 16 * 1024;
    l->max_headers = 100;
    l->max_body_bytes = 1024 * 1024;
    l->header_timeout_ms = 10 * 1000;
    l->body_timeout_ms = 30 * 1000;
    l->idle_timeout_ms = 60 * 1000;
    l->body_min_rate = 4096;
    l->max_conns = 0;
    l->max_conns_per_client = 0;
    l->h2_max_streams = 100;
}

void dg_http_pool_opts_default(struct dg_http_pool_opts *o)
{
    o->max_conns = 64;
    o->max_idle = 16;
    o->connect_timeout_ms = 5 * 1000;
    o->request_timeout_ms = 30 * 1000;
    o->idle_timeout_ms = 60 * 1000;
    o->max_header_bytes = 64 * 1024;
    o->h2c = false;
    o->bearer = NULL;
}

const char *dg_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300   ? "OK"
               : status < 400 ? "Redirect"
               : status < 500 ? "Client Error"
                              : "Server Error";
    }
}

struct queued_write {
    uv_write_t req;
    dg__write_cb cb;
    void *ctx;
    char data[];
};

static void queued_write_done(uv_write_t *w, int status)
{
    struct queued_write *q = DG_CONTAINER_OF(w, struct queued_write, req);
    if (q->cb)
        q->cb(q->ctx, status);
    free(q);
}

int dg__http_write(uv_stream_t *s, const uv_buf_t *bufs, unsigned nbufs, dg__write_cb cb, void *ctx)
{
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    size_t done = 0;
    if (uv_stream_get_write_queue_size(s) == 0) {
        int n = uv_try_write(s, bufs, nbufs);
        if (n >= 0)
            done = (size_t)n;
        else if (n != UV_EAGAIN && n != UV_ENOSYS)
            return n;
        if (done == total)
            return 1;
    }
    struct queued_write *q = dg_xmalloc(sizeof(*q) + (total - done));
    q->cb = cb;
    q->ctx = ctx;
    size_t off = 0, skip = done;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        const char *p = bufs[i].base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        p += skip;
        len -= skip;
        skip = 0;
        memcpy(q->data + off, p, len);
        off += len;
    }
    uv_buf_t b = uv_buf_init(q->data, (unsigned)off);
    int rc = uv_write(&q->req, s, &b, 1, queued_write_done);
    if (rc < 0) {
        free(q);
        return rc;
    }
    return 0;
}

const char *dg__http_date_line(void)
{
    static __thread char line[64]; /* per thread: tests run several loops in threads */
    static __thread time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        last = now;
    }
    return line;
}

void dg__hdrs_reset(struct dg__hdrs *h)
{
    dg_buf_reset(&h->bytes);
    h->n = 0;
    h->in_value = false;
}

void dg__hdrs_free(struct dg__hdrs *h)
{
    dg_buf_free(&h->bytes);
    free(h->spans);
    free(h->views);
    memset(h, 0, sizeof(*h));
}

#define HDRS_FIRST_BYTES 512

bool dg__hdrs_field(struct dg__hdrs *h, const char *at, size_t len, unsigned max_headers)
{
    if (h->n == 0 || h->in_value) {
        if (h->n >= max_headers)
            return false;
        if (!h->bytes.cap) /* one allocation for a usual head, not a chain of 64, 128, 256 */
            dg_buf_reserve(&h->bytes, HDRS_FIRST_BYTES - 1);
        if (h->n == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 16;
            h->spans = dg_xrealloc(h->spans, h->cap * sizeof(*h->spans));
        }
        struct dg__hdr_span *sp = &h->spans[h->n++];
        sp->name_off = (uint32_t)h->bytes.len;
        sp->name_len = 0;
        sp->value_off = 0;
        sp->value_len = 0;
        h->in_value = false;
    }
    struct dg__hdr_span *sp = &h->spans[h->n - 1];
    dg_buf_append(&h->bytes, at, len);
    sp->name_len += (uint32_t)len;
    return true;
}

void dg__hdrs_value(struct dg__hdrs *h, const char *at, size_t len)
{
    if (h->n == 0)
        return;
    struct dg__hdr_span *sp = &h->spans[h->n - 1];
    if (!h->in_value) {
        sp->value_off = (uint32_t)h->bytes.len;
        sp->value_len = 0;
        h->in_value = true;
    }
    dg_buf_append(&h->bytes, at, len);
    sp->value_len += (uint32_t)len;
}

void dg__hdrs_finish(struct dg__hdrs *h)
{
    if (h->n > h->views_cap) {
        h->views_cap = h->cap;
        h->views = dg_xrealloc(h->views, h->views_cap * sizeof(*h->views));
    }
    for (unsigned i = 0; i < h->n; i++) {
        const struct dg__hdr_span *sp = &h->spans[i];
        h->views[i].name = (struct dg_str){h->bytes.data + sp->name_off, sp->name_len};
        h->views[i].value = (struct dg_str){h->bytes.data + sp->value_off, sp->value_len};
    }
}

struct dg_str dg__hdrs_get(const struct dg__hdrs *h, const char *name)
{
    for (unsigned i = 0; i < h->n; i++)
        if (dg_str_caseeq(h->views[i].name, name))
            return h->views[i].value;
    return (struct dg_str){NULL, 0};
}

/* ---- strict framing --------------------------------------------------------------------- */

enum {
    FR_START,      /* before a start line (empty lines allowed, RFC 9112 2.2) */
    FR_START_CR,   /* an empty line's CR */
    FR_LINE,       /* in a start line or a field line */
    FR_LINE_CR,    /* a line's CR */
    FR_FIELD,      /* at the start of a field line, or of the blank line ending the section */
    FR_END_CR,     /* the blank line's CR */
    FR_AT_BODY,    /* the header section ended: waiting for dg__frame_body */
    FR_SKIP,       /* Content-Length body */
    FR_EOF,        /* a body that ends with the connection */
    FR_CHUNK_SIZE, /* chunk size digits */
    FR_CHUNK_EXT,  /* chunk extensions, after the digits */
    FR_CHUNK_CR,   /* the size line's CR */
    FR_DATA,       /* chunk data */
    FR_DATA_CR,    /* the CRLF after chunk data */
    FR_DATA_LF,
};

void dg__frame_init(struct dg__frame *f)
{
    memset(f, 0, sizeof(*f));
    f->st = FR_START;
}

bool dg__frame_at_body(const struct dg__frame *f)
{
    return f->st == FR_AT_BODY;
}

void dg__frame_body(struct dg__frame *f, enum dg__frame_kind kind, uint64_t length)
{
    f->trailer = false;
    f->remain = length;
    if (kind == DG__BODY_CHUNKED) {
        f->st = FR_CHUNK_SIZE;
        f->digits = 0;
        f->remain = 0;
    } else if (kind == DG__BODY_EOF) {
        f->st = FR_EOF;
    } else {
        f->st = kind == DG__BODY_LENGTH && length > 0 ? FR_SKIP : FR_START;
    }
}

size_t dg__frame_scan(struct dg__frame *f, const char *data, size_t len)
{
    size_t i = 0;
    if (f->err)
        return 0;
#define FAIL(msg)                                                                                  \
    do {                                                                                           \
        f->err = msg;                                                                              \
        return i;                                                                                  \
    } while (0)
    while (i < len) {
        unsigned char ch = (unsigned char)data[i];
        switch (f->st) {
        case FR_START:
            if (ch == '\r')
                f->st = FR_START_CR;
            else if (ch == '\n')
                FAIL("bare LF: lines must end with CRLF");
            else
                f->st = FR_LINE;
            break;
        case FR_START_CR:
            if (ch != '\n')
                FAIL("bare CR: lines must end with CRLF");
            f->st = FR_START;
            break;
        case FR_LINE: {
            /* the common case: skip to the line's end */
            const char *p = data + i, *e = data + len;
            while (p < e && *p != '\r' && *p != '\n')
                p++;
            i = (size_t)(p - data);
            if (i == len)
                return len;
            if (*p == '\n')
                FAIL("bare LF: lines must end with CRLF");
            f->st = FR_LINE_CR;
            break;
        }
        case FR_LINE_CR:
            if (ch != '\n')
                FAIL("bare CR: lines must end with CRLF");
            f->st = FR_FIELD;
            break;
        case FR_FIELD:
            if (ch == '\r')
                f->st = FR_END_CR;
            else if (ch == '\n')
                FAIL("bare LF: lines must end with CRLF");
            else if (ch == ' ' || ch == '\t')
                FAIL("obs-fold: a header line starts with whitespace (line folding is not "
                     "accepted, RFC 9112 5.2)");
            else
                f->st = FR_LINE;
            break;
        case FR_END_CR:
            if (ch != '\n')
                FAIL("bare CR: lines must end with CRLF");
            i++;
            if (f->trailer) { /* the end of a chunked message */
                f->trailer = false;
                f->st = FR_START;
                continue;
            }
            f->st = FR_AT_BODY;
            return i;
        case FR_AT_BODY:
            return i;
        case FR_SKIP: {
            uint64_t n = DG_MIN(f->remain, (uint64_t)(len - i));
            f->remain -= n;
            i += (size_t)n;
            if (f->remain == 0)
                f->st = FR_START;
            continue;
        }
        case FR_EOF:
            return len;
        case FR_CHUNK_SIZE: {
            int v = dg_hex_digit((unsigned char)ch);
            if (v >= 0) {
                if (f->remain >> 56)
                    FAIL("chunk size too large");
                f->remain = f->remain * 16 + (uint64_t)v;
                f->digits++;
                break;
            }
            if (f->digits == 0)
                FAIL("chunk size missing");
            if (ch == '\r')
                f->st = FR_CHUNK_CR;
            else if (ch == '\n')
                FAIL("bare LF: lines must end with CRLF");
            else
                f->st = FR_CHUNK_EXT;
            break;
        }
        case FR_CHUNK_EXT:
            if (ch == '\r')
                f->st = FR_CHUNK_CR;
            else if (ch == '\n')
                FAIL("bare LF: lines must end with CRLF");
            break;
        case FR_CHUNK_CR:
            if (ch != '\n')
                FAIL("bare CR: lines must end with CRLF");
            f->digits = 0;
            if (f->remain == 0) {
                f->trailer = true;
                f->st = FR_FIELD;
            } else {
                f->st = FR_DATA;
            }
            break;
        case FR_DATA: {
            uint64_t n = DG_MIN(f->remain, (uint64_t)(len - i));
            f->remain -= n;
            i += (size_t)n;
            if (f->remain == 0)
                f->st = FR_DATA_CR;
            continue;
        }
        case FR_DATA_CR:
            if (ch != '\r')
                FAIL("chunk data longer than its size, or not followed by CRLF");
            f->st = FR_DATA_LF;
            break;
        case FR_DATA_LF:
            if (ch != '\n')
                FAIL("chunk data not followed by CRLF");
            f->st = FR_CHUNK_SIZE;
            break;
        default:
            FAIL("framing state lost");
        }
        i++;
    }
#undef FAIL
    return len;
}

/* ---- nghttp2's allocator ------------------------------------------------------------------- */

/* nghttp2 allocates and frees several small blocks per stream (the stream, its frames, the
 * header lists it hands over); with the C library's allocator that was a sixth of the DP's CPU
 * per h2c request. These blocks come from per-thread free lists of a few size classes instead
 * (bounded: H2_MEM_KEEP blocks a class; larger ones go straight to malloc). Each block has a
 * 16-byte header with its class (or its size when large), so free needs no size. */
#define H2_MEM_CLASSES 7 /* 64 .. 4096 bytes */
#define H2_MEM_KEEP    256
#define H2_MEM_BIG     UINT32_MAX

struct h2_mem_hdr {
    uint32_t cls; /* H2_MEM_BIG: size holds the size */
    uint32_t pad;
    size_t size;
};

struct h2_mem_cache {
    struct h2_mem_hdr *head[H2_MEM_CLASSES]; /* free blocks, linked through their payload */
    unsigned n[H2_MEM_CLASSES];
};

static _Thread_local struct h2_mem_cache h2_cache;

static size_t h2_mem_class_size(uint32_t cls)
{
    return (size_t)64 << cls;
}

static void *h2_mem_malloc(size_t size, void *ud)
{
    (void)ud;
    uint32_t cls = 0;
    while (cls < H2_MEM_CLASSES && h2_mem_class_size(cls) < size)
        cls++;
    struct h2_mem_hdr *h;
    if (cls == H2_MEM_CLASSES) {
        if (size > SIZE_MAX - sizeof(*h))
            return NULL;
        h = malloc(sizeof(*h) + size);
        if (!h)
            return NULL;
        h->cls = H2_MEM_BIG;
        h->size = size;
        return h + 1;
    }
    struct h2_mem_cache *c = &h2_cache;
    h = c->head[cls];
    if (h) {
        c->head[cls] = *(struct h2_mem_hdr **)(void *)(h + 1); /* the next free block */
        c->n[cls]--;
    } else {
        h = malloc(sizeof(*h) + h2_mem_class_size(cls));
        if (!h)
            return NULL;
    }
    h->cls = cls;
    h->size = size;
    return h + 1;
}

static void h2_mem_free(void *ptr, void *ud)
{
    (void)ud;
    if (!ptr)
        return;
    struct h2_mem_hdr *h = (struct h2_mem_hdr *)ptr - 1;
    struct h2_mem_cache *c = &h2_cache;
    if (h->cls == H2_MEM_BIG || c->n[h->cls] >= H2_MEM_KEEP) {
        free(h);
        return;
    }
    *(struct h2_mem_hdr **)ptr = c->head[h->cls]; /* payloads are 16-byte aligned */
    c->head[h->cls] = h;
    c->n[h->cls]++;
}

static void *h2_mem_calloc(size_t n, size_t size, void *ud)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = h2_mem_malloc(n * size, ud);
    if (p)
        memset(p, 0, n * size);
    return p;
}

static void *h2_mem_realloc(void *ptr, size_t size, void *ud)
{
    if (!ptr)
        return h2_mem_malloc(size, ud);
    struct h2_mem_hdr *h = (struct h2_mem_hdr *)ptr - 1;
    if (h->cls != H2_MEM_BIG && size <= h2_mem_class_size(h->cls)) {
        h->size = size;
        return ptr;
    }
    void *p = h2_mem_malloc(size, ud);
    if (!p)
        return NULL;
    memcpy(p, ptr, DG_MIN(h->size, size));
    h2_mem_free(ptr, ud);
    return p;
}

/* Under AddressSanitizer nghttp2 gets the C library's allocator (NULL: its default): ASan then
 * sees every block's use after free, and a thread's kept blocks are not reported as leaks
 * when the thread ends (the tests run servers in threads). */
#if defined(__SANITIZE_ADDRESS__)
#define H2_MEM_PLAIN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2_MEM_PLAIN 1
#endif
#endif

nghttp2_mem *dg__h2_mem(void)
{
    static nghttp2_mem mem = {NULL, h2_mem_malloc, h2_mem_free, h2_mem_calloc, h2_mem_realloc};
#ifdef H2_MEM_PLAIN
    return mem.malloc == NULL ? &mem : NULL; /* always NULL: mem stays referenced */
#else
    return &mem;
#endif
}
