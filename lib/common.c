/*
 * common.c: errors, aborting allocation, string views, byte buffers, clocks.
 */
#include "dirigent/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

int dg_err_set(struct dg_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int dg_err_wrap(struct dg_err *err, const char *fmt, ...)
{
    if (!err)
        return DG_E_INVAL;
    char prefix[sizeof(err->msg)], old[sizeof(err->msg)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    size_t cap = sizeof(err->msg) - 1;
    size_t pl = DG_MIN(strlen(prefix), cap);
    memcpy(err->msg, prefix, pl);
    size_t n = pl;
    if (n + 2 <= cap) {
        memcpy(err->msg + n, ": ", 2);
        n += 2;
    }
    size_t ol = DG_MIN(strnlen(old, sizeof(old)), cap - n);
    memcpy(err->msg + n, old, ol);
    err->msg[n + ol] = '\0';
    return err->code;
}

void dg_err_clear(struct dg_err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
}

static void oom(size_t n)
{
    fprintf(stderr, "fatal: out of memory allocating %zu bytes\n", n);
    abort();
}

void *dg_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom(n);
    return p;
}

void *dg_xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (!p)
        oom(nmemb * size);
    return p;
}

void *dg_xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        oom(n);
    return q;
}

char *dg_xstrdup(const char *s)
{
    return dg_xstrndup(s, strlen(s));
}

char *dg_xstrndup(const char *s, size_t n)
{
    char *p = dg_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *dg_xasprintf(const char *fmt, ...)
{
    struct dg_buf b = {0};
    va_list ap;
    va_start(ap, fmt);
    dg_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.data)
        return dg_xstrdup("");
    return b.data;
}

bool dg__mem_caseeq(const char *a, const char *b, size_t n)
{
    return strncasecmp(a, b, n) == 0;
}

char *dg_str_dup(struct dg_str s)
{
    return dg_xstrndup(s.ptr ? s.ptr : "", s.len);
}

int dg_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

bool dg_str_to_u64(struct dg_str s, uint64_t *out)
{
    if (!s.ptr || s.len == 0 || s.len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.ptr[i] - '0';
        if (d > 9)
            return false;
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool dg_str_to_i64(struct dg_str s, int64_t *out)
{
    bool neg = false;
    if (s.ptr && s.len > 0 && (s.ptr[0] == '-' || s.ptr[0] == '+')) {
        neg = s.ptr[0] == '-';
        s.ptr++;
        s.len--;
    }
    uint64_t v;
    if (!dg_str_to_u64(s, &v))
        return false;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > INT64_MAX)
            return false;
        *out = (int64_t)v;
    }
    return true;
}

void dg_buf_reserve(struct dg_buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    b->data = dg_xrealloc(b->data, cap);
    b->cap = cap;
}

void dg_buf_append(struct dg_buf *b, const void *p, size_t n)
{
    dg_buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void dg_buf_puts(struct dg_buf *b, const char *s)
{
    dg_buf_append(b, s, strlen(s));
}

void dg_buf_vprintf(struct dg_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    dg_buf_reserve(b, 128);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    if (n >= 0 && (size_t)n >= b->cap - b->len) {
        dg_buf_reserve(b, (size_t)n);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap2);
    }
    va_end(ap2);
    if (n > 0)
        b->len += (size_t)n;
}

void dg_buf_printf(struct dg_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dg_buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void dg_buf_reset(struct dg_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void dg_buf_free(struct dg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void dg_strlist_push(struct dg_strlist *l, char *s)
{
    l->v = dg_xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
    l->v[l->n++] = s;
}

void dg_strlist_free(struct dg_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

size_t dg_fmt_u64(char out[20], uint64_t v)
{
    char tmp[20];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, tmp + i, sizeof(tmp) - i);
    return sizeof(tmp) - i;
}

uint64_t dg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t dg_now_ms(void)
{
    return dg_now_us() / 1000u;
}

uint64_t dg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int dg_mkdir_p(const char *path, unsigned mode, struct dg_err *err)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return dg_err_set(err, DG_E_INVAL, "bad directory '%s'", path);
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, (mode_t)mode) == -1 && errno != EEXIST)
            return dg_err_set(err, -errno, "cannot create directory %s: %s", buf, strerror(errno));
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
}
