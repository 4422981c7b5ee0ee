/*
 * common.h: the small things every module uses. Errors (struct dg_err, the
 * convention of STYLE.md: a fallible function returns 0 or a negative code and
 * takes `struct dg_err *err` last), allocation that aborts on out-of-memory,
 * string views, a growable byte buffer and monotonic time.
 */
#ifndef DIRIGENT_COMMON_H
#define DIRIGENT_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DG_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define DG_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define DG_MAX(a, b)                       ((a) > (b) ? (a) : (b))
#define DG_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define DG_PRINTF(f, a)                    __attribute__((format(printf, f, a)))

/* Error codes beyond negative errno / libuv codes (which are negative errno on Linux). */
enum {
    DG_E_INVAL = -22,     /* bad input: the message names the field and the fix */
    DG_E_PROTO = -10001,  /* peer spoke bad HTTP or bad JSON */
    DG_E_LIMIT = -10002,  /* a configured limit was exceeded */
    DG_E_CLOSED = -10003, /* the object was closed while the operation was pending */
    DG_E_REFUSED = -10004 /* the peer answered, with a refusal (an HTTP status >= 300) */
};

/* An error with context. No allocation: the message is truncated at 255 bytes. */
struct dg_err {
    int code;
    char msg[256];
};

/* Set `err` (may be NULL) to `code` (negative) with a formatted message; returns `code`. */
int dg_err_set(struct dg_err *err, int code, const char *fmt, ...) DG_PRINTF(3, 4);
/* Prefix the message already in `err` with context ("loading x.yaml: <old>"); returns err->code. */
int dg_err_wrap(struct dg_err *err, const char *fmt, ...) DG_PRINTF(2, 3);
/* Reset to no error. */
void dg_err_clear(struct dg_err *err);

/* Allocation that never returns NULL: out of memory aborts with a message. */
void *dg_xmalloc(size_t n);
void *dg_xcalloc(size_t nmemb, size_t size);
void *dg_xrealloc(void *p, size_t n);
char *dg_xstrdup(const char *s);
char *dg_xstrndup(const char *s, size_t n);
char *dg_xasprintf(const char *fmt, ...) DG_PRINTF(1, 2);

/* A borrowed string view; not NUL-terminated in general. {NULL, 0} means absent. */
struct dg_str {
    const char *ptr;
    size_t len;
};
#define DG_STR(lit) ((struct dg_str){(lit), sizeof(lit) - 1})
static inline struct dg_str dg_str_c(const char *s);
/* exact, b is NUL-terminated; inline so that b's length is a constant for a literal and the
 * usual mismatch (another length) costs no call: these run on every header of every request */
static inline bool dg_str_eq(struct dg_str a, const char *b);
static inline bool dg_str_caseeq(struct dg_str a, const char *b); /* ASCII case-insensitive */
bool dg__mem_caseeq(const char *a, const char *b, size_t n);      /* (for dg_str_caseeq) */
char *dg_str_dup(struct dg_str s); /* malloc'd, NUL-terminated copy */
/* Parse a whole view as a decimal integer; false on junk, sign where not allowed, overflow. */
bool dg_str_to_i64(struct dg_str s, int64_t *out);
bool dg_str_to_u64(struct dg_str s, uint64_t *out);
/* The value of one hex digit (either case), or -1. */
int dg_hex_digit(int c);

/* A growable byte buffer. Zero-initialise to use; dg_buf_free releases. data is kept
 * NUL-terminated (after len) for convenience. */
struct dg_buf {
    char *data;
    size_t len, cap;
};
void dg_buf_reserve(struct dg_buf *b, size_t extra);
void dg_buf_append(struct dg_buf *b, const void *p, size_t n);
void dg_buf_puts(struct dg_buf *b, const char *s);
void dg_buf_printf(struct dg_buf *b, const char *fmt, ...) DG_PRINTF(2, 3);
void dg_buf_vprintf(struct dg_buf *b, const char *fmt, va_list ap) DG_PRINTF(2, 0);
void dg_buf_reset(struct dg_buf *b); /* len = 0, keeps the memory */
void dg_buf_free(struct dg_buf *b);

/* A list of owned strings (config lists, JSON string arrays, form repeats). */
struct dg_strlist {
    char **v; /* each malloc'd, owned */
    size_t n;
};
/* Append `s`, taking ownership of it. */
void dg_strlist_push(struct dg_strlist *l, char *s);
/* Free every string and the array; the list is empty afterwards. */
void dg_strlist_free(struct dg_strlist *l);

/* Decimal digits of `v` into `out` (no NUL); returns how many (1..20). No printf: hot paths. */
size_t dg_fmt_u64(char out[20], uint64_t v);

/* mkdir -p: `path` and its missing parents with `mode` (an existing directory is fine). Returns 0
 * or a negative errno with "cannot create directory X: why" (the first part that failed).
 * Blocking: start-up, the CLI, thread-pool jobs. */
int dg_mkdir_p(const char *path, unsigned mode, struct dg_err *err);

/* Monotonic clock. */
uint64_t dg_now_us(void);
uint64_t dg_now_ms(void);
/* Wall clock in milliseconds since the epoch (for logs and traces only). */
uint64_t dg_wall_ms(void);

/* xorshift64*: a small seeded generator, the same sequence for the same seed everywhere
 * (placement, load balancing, the simulator). A state of 0 is replaced by a fixed seed. */
static inline uint64_t dg_rand_next(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9E3779B97F4A7C15ULL;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static inline bool dg_str_eq(struct dg_str a, const char *b)
{
    size_t n = __builtin_strlen(b);
    return a.ptr && a.len == n && __builtin_memcmp(a.ptr, b, n) == 0;
}

static inline bool dg_str_caseeq(struct dg_str a, const char *b)
{
    size_t n = __builtin_strlen(b);
    return a.ptr && a.len == n && dg__mem_caseeq(a.ptr, b, n);
}

static inline struct dg_str dg_str_c(const char *s)
{
    struct dg_str r = {s, 0};
    if (s)
        while (s[r.len])
            r.len++;
    return r;
}

#endif
