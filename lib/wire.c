/*
 * wire.c: the protocol between the daemons, spelled once (see wire.h). Each message is a
 * table of fields over its struct: a key, a kind (string, integer, number, boolean, string
 * list, array of sub-messages, sub-message), flags (required; sent as null when absent;
 * present only with a has_* flag; left out when empty) and bounds or a default. One generic
 * decoder and one generic encoder walk the tables, so a message's encoder and decoder cannot
 * disagree on a key, and the keys exist nowhere else. Scalars are checked and stored by the
 * JSON helpers (lib/json.c, dg_json_unpack one field at a time), so the errors read as every
 * other API error of the project.
 *
 * A decode zeroes its output first and frees what it stored on error, so a caller never cleans
 * up after a failed decode. Encoding order is the table's order: the order today's senders
 * used (receivers look keys up by name, so it matters only to a reader of the bytes).
 */
#include "dirigent/wire.h"

#include <arpa/inet.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/json.h"
#include "dirigent/strmap.h"

enum kind { K_STR, K_INT, K_DBL, K_BOOL, K_STRLIST, K_ARR, K_OBJ };

enum {
    F_REQ = 1u << 0,  /* decode: required */
    F_NULL = 1u << 1, /* encode: a NULL string is sent as null (else left out) */
    F_HAS = 1u << 2,  /* present only when the bool at `has` is true (decode sets it) */
    F_OMIT = 1u << 3, /* encode: an empty array, a zero integer, a false bool is left out */
    F_DEF = 1u << 4,  /* decode: `def` when absent */
};

struct msg;

/* What a string (or each item of a string list) must be, beyond its JSON type (see "checks"
 * below; the rules are in wire.h). */
enum chk {
    C_TEXT = 0, /* the default: at most DG_WIRE_TEXT_MAX bytes */
    C_FN,       /* a function name (a DNS label) */
    C_NODE,     /* a worker's or data plane's name */
    C_ID,       /* a sandbox id */
    C_TOKEN,    /* a short word: a boot id, a runtime's name, a state */
    C_ADDR,     /* HOST:PORT */
    C_EP,       /* a sandbox's endpoint: HOST:PORT, or unassigned (":0") */
    C_ENV,      /* NAME=value */
    C_ARG,      /* an image reference or a program argument: at most DG_WIRE_ARG_MAX bytes */
    C_SBSTATE,  /* one of DG_WIRE_SB_* */
    C_ROLE,     /* "leader" or "follower" */
    C_CIDR,     /* a worker's sandbox subnet: empty, or up to 64 of 0-9 A-F a-f . : / */
    C_AID,      /* an asynchronous request's id (dg_wire_async_id_ok) */
    C_HNAME,    /* a header name: 1..256 of HTTP's token characters */
    C_HVAL,     /* a header value: at most 8192 of printable ASCII and tab */
    C_URL,      /* a request target: '/' then at most DG_WIRE_ARG_MAX of printable ASCII */
    C_B64,      /* base64 of at most DG_WIRE_ASYNC_BODY_MAX bytes */
    C_ASTATE,   /* "pending" or "done" */
};

struct field {
    const char *name;
    enum kind kind;
    unsigned flags;
    size_t off;
    int64_t min, max;      /* K_INT bounds (inclusive); both 0: none */
    double def;            /* F_DEF: the value when absent */
    size_t has;            /* F_HAS: offset of the bool */
    size_t count;          /* K_ARR: offset of the size_t count; the array pointer is at off */
    const struct msg *sub; /* K_ARR items, K_OBJ */
    enum chk chk;          /* K_STR, K_STRLIST items */
    double dmin, dmax;     /* K_DBL bounds (inclusive); both 0: any finite number */
    size_t maxn;           /* K_ARR, K_STRLIST: most items; 0: DG_WIRE_LIST_MAX */
};

struct msg {
    const char *name;
    size_t size;
    bool strict; /* an unknown key is an error */
    const struct field *f;
    size_t n;
    /* rules across fields, after every field passed its own (NULL: none) */
    int (*check)(const void *p, struct dg_err *err);
};

#define AT(p, off) ((char *)(p) + (off))

/* ---- checks ------------------------------------------------------------------------------ */

#define WSTR_(x) #x
#define WSTR(x)  WSTR_(x)

/* A short, printable quote of what was refused: a 10 KB name or one with a newline is not
 * echoed whole into an error (nor into a log line). */
static const char *quote(const char *s, char *buf, size_t size)
{
    size_t n = strlen(s), k = 0, keep = size - 32;
    buf[0] = '\'';
    for (; k < n && k < keep; k++)
        buf[k + 1] = (unsigned char)s[k] < 0x20 || s[k] == 0x7f ? '?' : s[k];
    if (k < n)
        snprintf(buf + k + 1, size - k - 1, "...' (%zu bytes)", n);
    else
        snprintf(buf + k + 1, size - k - 1, "'");
    return buf;
}

static bool alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool dg_wire_fn_name_ok(const char *s)
{
    /* [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?: a DNS label, as the CP's registration (the name is
     * the Host header) */
    size_t n = strlen(s);
    if (n == 0 || n > DG_WIRE_FN_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* 1..max of [A-Za-z0-9._-], the first a letter or digit. */
static bool word_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max || !alnum(s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    return true;
}

bool dg_wire_node_name_ok(const char *s)
{
    return word_ok(s, DG_WIRE_NAME_MAX);
}

bool dg_wire_id_ok(const char *s)
{
    return word_ok(s, DG_WIRE_NAME_MAX);
}

/* A host name (RFC 1123: dot-separated labels of [A-Za-z0-9-], not starting or ending with
 * '-', at most 253 bytes, the last label not all digits) or an IPv4 address. */
static bool hostname_ok(const char *h, size_t n)
{
    char ip[INET_ADDRSTRLEN];
    struct in_addr a4;
    if (n < sizeof(ip)) {
        memcpy(ip, h, n);
        ip[n] = '\0';
        if (inet_pton(AF_INET, ip, &a4) == 1)
            return true;
    }
    if (n == 0 || n > 253)
        return false;
    size_t start = 0;
    bool digits = true;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || h[i] == '.') {
            size_t len = i - start;
            if (len == 0 || len > 63 || h[start] == '-' || h[i - 1] == '-')
                return false;
            if (i == n && digits)
                return false; /* "999.1.1.1": neither an IPv4 address nor a name */
            start = i + 1;
            digits = true;
        } else if (alnum(h[i]) || h[i] == '-') {
            digits = digits && h[i] >= '0' && h[i] <= '9';
        } else {
            return false;
        }
    }
    return true;
}

/* HOST:PORT; `port0`: a port 0 is accepted (with an empty host: unassigned). */
static bool address_ok(const char *s, bool port0)
{
    const char *colon = strrchr(s, ':');
    size_t n = strlen(s);
    if (!colon || n > 300)
        return false;
    const char *p = colon + 1;
    size_t plen = n - (size_t)(p - s);
    if (plen == 0 || plen > 5)
        return false;
    long port = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        port = port * 10 + (p[i] - '0');
    }
    if (port > 65535 || (port == 0 && !port0))
        return false;
    size_t hl = (size_t)(colon - s);
    if (port0 && port == 0 && hl == 0)
        return true; /* a sandbox without its network yet */
    char ip6[INET6_ADDRSTRLEN + 2];
    struct in6_addr a6;
    const char *h = s;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [IPv6]:PORT */
        h++;
        hl -= 2;
    } else if (!memchr(h, ':', hl)) {
        return hostname_ok(h, hl);
    } /* else IPv6:PORT without brackets: as dg_http_pool_new_addr reads it (the last ':') */
    if (hl == 0 || hl >= sizeof(ip6))
        return false;
    memcpy(ip6, h, hl);
    ip6[hl] = '\0';
    return inet_pton(AF_INET6, ip6, &a6) == 1;
}

bool dg_wire_address_ok(const char *s)
{
    return address_ok(s, false);
}

static bool env_ok(const char *s)
{
    /* NAME=value, NAME a C identifier (a shell reads it) */
    if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return false;
    size_t i = 1;
    while (alnum(s[i]) || s[i] == '_')
        i++;
    return s[i] == '=' && strlen(s) <= DG_WIRE_ARG_MAX;
}

static bool one_of(const char *s, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, set[i]) == 0)
            return true;
    return false;
}

static const char *const SB_STATES[] = {DG_WIRE_SB_CREATING, DG_WIRE_SB_READY, DG_WIRE_SB_EXITED,
                                        DG_WIRE_SB_DELETING};
static const char *const ROLES[] = {"leader", "follower"};

bool dg_wire_async_id_ok(const char *s, size_t n)
{
    if (n == 0 || n > DG_WIRE_ASYNC_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || s[i] == '-'))
            return false;
    return true;
}

static bool printable(const char *s, size_t max, bool tab)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || !((s[n] >= 0x20 && s[n] < 0x7f) || (tab && s[n] == '\t')))
            return false;
    return true;
}

static bool token_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 256 &&
           strspn(
               s,
               "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") ==
               n;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Canonical base64: length a multiple of 4, '=' only as the last one or two. */
static bool b64_ok(const char *s)
{
    size_t n = strlen(s);
    if (n % 4 || n / 4 * 3 > DG_WIRE_ASYNC_BODY_MAX + 2)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') {
            if (i < n - 2 || (i == n - 2 && s[n - 1] != '='))
                return false;
        } else if (b64_val(s[i]) < 0) {
            return false;
        }
    }
    if (n && s[n - 1] == '=') { /* the unused bits of the last symbol are zero: one encoding */
        int v = b64_val(s[n - 2] == '=' ? s[n - 3] : s[n - 2]);
        if (v < 0 || (s[n - 2] == '=' ? (v & 0xf) : (v & 0x3)) != 0)
            return false;
    }
    size_t dec = n / 4 * 3 - (n && s[n - 1] == '=') - (n > 1 && s[n - 2] == '=');
    return dec <= DG_WIRE_ASYNC_BODY_MAX;
}

char *dg_wire_b64_encode(const void *data, size_t len)
{
    const unsigned char *d = data;
    char *out = dg_xmalloc((len + 2) / 3 * 4 + 1), *o = out;
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < len ? (uint32_t)d[i + 1] << 8 : 0);
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < len ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return out;
}

int dg_wire_b64_decode(const char *s, char **out, size_t *len)
{
    size_t n = strlen(s);
    if (n % 4)
        return -1;
    char *buf = dg_xmalloc(n / 4 * 3 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 4) {
        int a = b64_val(s[i]), b = b64_val(s[i + 1]), c = s[i + 2] == '=' ? 0 : b64_val(s[i + 2]),
            e = s[i + 3] == '=' ? 0 : b64_val(s[i + 3]);
        if (a < 0 || b < 0 || c < 0 || e < 0) {
            free(buf);
            return -1;
        }
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)e;
        buf[k++] = (char)(v >> 16);
        if (s[i + 2] != '=')
            buf[k++] = (char)(v >> 8);
        if (s[i + 3] != '=')
            buf[k++] = (char)v;
    }
    buf[k] = '\0';
    *out = buf;
    *len = k;
    return 0;
}

/* NULL when `s` passes `c`, else what was expected. */
static const char *check_str(enum chk c, const char *s)
{
    switch (c) {
    case C_TEXT:
        return strlen(s) <= DG_WIRE_TEXT_MAX ? NULL
                                             : "expected at most " WSTR(DG_WIRE_TEXT_MAX) " bytes";
    case C_ARG:
        return strlen(s) <= DG_WIRE_ARG_MAX ? NULL
                                            : "expected at most " WSTR(DG_WIRE_ARG_MAX) " bytes";
    case C_FN:
        return dg_wire_fn_name_ok(s) ? NULL
                                     : "expected a function name (a DNS label: 1.." WSTR(
                                           DG_WIRE_FN_NAME_MAX) " of a-z 0-9 -, not starting or "
                                                                "ending with -)";
    case C_NODE:
        return dg_wire_node_name_ok(s)
                   ? NULL
                   : "expected a name (1.." WSTR(DG_WIRE_NAME_MAX) " of "
                                                                   "A-Z a-z 0-9 . _ -, "
                                                                   "starting with a letter "
                                                                   "or digit)";
    case C_ID:
        return dg_wire_id_ok(s)
                   ? NULL
                   : "expected a sandbox id (1.." WSTR(DG_WIRE_NAME_MAX) " of A-Z "
                                                                         "a-z 0-9 . _ -, "
                                                                         "starting with a "
                                                                         "letter or digit)";
    case C_TOKEN:
        return word_ok(s, 64) ? NULL : "expected a word (1..64 of A-Z a-z 0-9 . _ -)";
    case C_ADDR:
        return address_ok(s, false) ? NULL
                                    : "expected HOST:PORT (an IPv4 address, [IPv6] or a host "
                                      "name, and a port 1..65535)";
    case C_EP:
        return address_ok(s, true) ? NULL
                                   : "expected HOST:PORT (an IPv4 address, [IPv6] or a host "
                                     "name, and a port 1..65535)";
    case C_ENV:
        return env_ok(s) ? NULL
                         : "expected NAME=value (NAME of A-Z a-z 0-9 _, not starting "
                           "with a digit)";
    case C_SBSTATE:
        return one_of(s, SB_STATES, DG_ARRAY_LEN(SB_STATES))
                   ? NULL
                   : "expected one of creating, ready, exited, deleting";
    case C_ROLE:
        return one_of(s, ROLES, DG_ARRAY_LEN(ROLES)) ? NULL : "expected leader or follower";
    case C_CIDR:
        return strlen(s) <= 64 && strspn(s, "0123456789ABCDEFabcdef.:/") == strlen(s)
                   ? NULL
                   : "expected an address prefix (e.g. 10.200.0.0/16), or empty";
    case C_AID:
        return dg_wire_async_id_ok(s, strlen(s)) ? NULL
                                                 : "expected an asynchronous request id (1.." WSTR(
                                                       DG_WIRE_ASYNC_ID_MAX) " of 0-9 a-f -)";
    case C_HNAME:
        return token_ok(s) ? NULL : "expected a header name (1..256 of HTTP's token characters)";
    case C_HVAL:
        return printable(s, 8192, true) ? NULL
                                        : "expected a header value (at most 8192 of printable "
                                          "ASCII)";
    case C_URL:
        return s[0] == '/' && printable(s, DG_WIRE_ARG_MAX, false)
                   ? NULL
                   : "expected a request target ('/' then printable ASCII, at most " WSTR(
                         DG_WIRE_ARG_MAX) " bytes)";
    case C_B64:
        return b64_ok(s) ? NULL
                         : "expected base64 (RFC 4648, padded) of at most " WSTR(
                               DG_WIRE_ASYNC_BODY_MAX) " bytes";
    case C_ASTATE:
        return strcmp(s, "pending") == 0 || strcmp(s, "done") == 0 ? NULL
                                                                   : "expected pending or done";
    }
    return NULL;
}

/* The checks of field f beyond its JSON type, on its decoded value in `out`. */
static int check_field(const struct field *f, const void *out, struct dg_err *err)
{
    char q[80];
    size_t maxn = f->maxn ? f->maxn : DG_WIRE_LIST_MAX;
    switch (f->kind) {
    case K_STR: {
        const char *s = *(char *const *)AT(out, f->off), *why = check_str(f->chk, s);
        return why ? dg_err_set(err, DG_E_INVAL, "field '%s': %s, got %s", f->name, why,
                                quote(s, q, sizeof(q)))
                   : 0;
    }
    case K_STRLIST: {
        const struct dg_strlist *l = (const struct dg_strlist *)AT(out, f->off);
        if (l->n > maxn)
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected at most %zu items, got %zu",
                              f->name, maxn, l->n);
        for (size_t i = 0; i < l->n; i++) {
            const char *why = check_str(f->chk, l->v[i]);
            if (why)
                return dg_err_set(err, DG_E_INVAL, "field '%s': item %zu: %s, got %s", f->name, i,
                                  why, quote(l->v[i], q, sizeof(q)));
        }
        return 0;
    }
    case K_ARR: {
        size_t n = *(const size_t *)AT(out, f->count);
        return n > maxn
                   ? dg_err_set(err, DG_E_INVAL, "field '%s': expected at most %zu items, got %zu",
                                f->name, maxn, n)
                   : 0;
    }
    case K_DBL: {
        double d;
        memcpy(&d, AT(out, f->off), sizeof(d));
        if (!isfinite(d))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected a finite number", f->name);
        if ((f->dmin != 0 || f->dmax != 0) && (d < f->dmin || d > f->dmax))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected %g..%g, got %g", f->name,
                              f->dmin, f->dmax, d);
        return 0;
    }
    default:
        return 0;
    }
}

/* ---- decode ------------------------------------------------------------------------------ */

/* `view`: the strings of a decoded message are borrowed from its JSON (dg_wire_fn_update_view),
 * only its arrays are its own. */
static void msg_free_as(const struct msg *m, void *p, bool view);
static int decode_as(const struct msg *m, const json_t *j, void *out, bool view,
                     struct dg_err *err);

static int decode(const struct msg *m, const json_t *j, void *out, struct dg_err *err)
{
    return decode_as(m, j, out, false, err);
}

static void msg_free(const struct msg *m, void *p)
{
    msg_free_as(m, p, false);
}

static enum dg_json_type json_type_of(enum kind k)
{
    switch (k) {
    case K_INT:
        return DG_JSON_INT;
    case K_DBL:
        return DG_JSON_DOUBLE;
    case K_BOOL:
        return DG_JSON_BOOL;
    case K_STRLIST:
        return DG_JSON_STRLIST;
    default:
        return DG_JSON_STRING;
    }
}

static int decode_field(const struct field *f, const json_t *v, void *out, bool view,
                        struct dg_err *err)
{
    switch (f->kind) {
    case K_ARR: {
        if (!json_is_array(v))
            return dg_err_set(err, DG_E_INVAL, "field '%s': expected an array, got %s", f->name,
                              dg_json_type_name(v));
        size_t n = json_array_size(v);
        char *items = n ? dg_xcalloc(n, f->sub->size) : NULL;
        /* stored at once: on error msg_free frees what was decoded (the rest is zeroed) */
        memcpy(AT(out, f->off), &items, sizeof(items));
        memcpy(AT(out, f->count), &n, sizeof(n));
        for (size_t i = 0; i < n; i++) {
            int rc = decode_as(f->sub, json_array_get(v, i), items + i * f->sub->size, view, err);
            if (rc < 0)
                return dg_err_wrap(err, "field '%s': item %zu", f->name, i);
        }
        return 0;
    }
    case K_OBJ: {
        int rc = decode_as(f->sub, v, AT(out, f->off), view, err);
        return rc < 0 ? dg_err_wrap(err, "field '%s'", f->name) : 0;
    }
    default: {
        const struct dg_json_field jf = {.name = f->name,
                                         .type = json_type_of(f->kind),
                                         .required = true,
                                         .offset = f->off,
                                         .min = f->min,
                                         .max = f->max};
        if (!view || (f->kind != K_STR && f->kind != K_STRLIST))
            return dg_json_unpack_value(v, &jf, out, err); /* v: no second lookup of the key */
        int rc = dg_json_check_value(v, &jf, err);
        if (rc < 0)
            return rc;
        if (f->kind == K_STR) { /* borrowed from v */
            const char *str = json_string_value(v);
            memcpy(AT(out, f->off), &str, sizeof(str));
            return 0;
        }
        struct dg_strlist l = {NULL, json_array_size(v)};
        if (l.n > 0) {
            l.v = dg_xcalloc(l.n, sizeof(*l.v));
            for (size_t i = 0; i < l.n; i++)
                l.v[i] = (char *)json_string_value(json_array_get(v, i)); /* borrowed */
        }
        memcpy(AT(out, f->off), &l, sizeof(l));
        return 0;
    }
    }
}

static int decode_as(const struct msg *m, const json_t *j, void *out, bool view, struct dg_err *err)
{
    memset(out, 0, m->size);
    if (!json_is_object(j))
        return dg_err_set(err, DG_E_INVAL, "expected a JSON object, got %s", dg_json_type_name(j));
    if (m->strict) {
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)j, key, v)
        {
            size_t i = 0;
            while (i < m->n && strcmp(m->f[i].name, key) != 0)
                i++;
            if (i == m->n)
                return dg_err_set(err, DG_E_INVAL, "field '%s': unknown field", key);
        }
    }
    for (size_t i = 0; i < m->n; i++) {
        const struct field *f = &m->f[i];
        const json_t *v = json_object_get(j, f->name);
        if (v && json_is_null(v))
            v = NULL; /* null is absent, as in the JSON helpers */
        if (!v) {
            if (f->flags & F_REQ) {
                msg_free_as(m, out, view);
                return dg_err_set(err, DG_E_INVAL, "field '%s': required", f->name);
            }
            if ((f->flags & F_DEF) && f->kind == K_INT) {
                int64_t d = (int64_t)f->def;
                memcpy(AT(out, f->off), &d, sizeof(d));
            } else if (f->flags & F_DEF) {
                memcpy(AT(out, f->off), &f->def, sizeof(f->def));
            }
            continue;
        }
        int rc = decode_field(f, v, out, view, err);
        if (rc == 0)
            rc = check_field(f, out, err);
        if (rc < 0) {
            msg_free_as(m, out, view);
            return rc;
        }
        if (f->flags & F_HAS)
            *(bool *)AT(out, f->has) = true;
    }
    int rc = m->check ? m->check(out, err) : 0;
    if (rc < 0) {
        msg_free_as(m, out, view);
        return rc;
    }
    return 0;
}

static void msg_free_as(const struct msg *m, void *p, bool view)
{
    for (size_t i = 0; i < m->n; i++) {
        const struct field *f = &m->f[i];
        switch (f->kind) {
        case K_STR:
            if (!view)
                free(*(char **)AT(p, f->off));
            break;
        case K_STRLIST:
            if (view)
                free(((struct dg_strlist *)AT(p, f->off))->v);
            else
                dg_strlist_free((struct dg_strlist *)AT(p, f->off));
            break;
        case K_ARR: {
            char *items = *(char **)AT(p, f->off);
            size_t n = *(size_t *)AT(p, f->count);
            for (size_t k = 0; k < n; k++)
                msg_free_as(f->sub, items + k * f->sub->size, view);
            free(items);
            break;
        }
        case K_OBJ:
            msg_free_as(f->sub, AT(p, f->off), view);
            break;
        default:
            break;
        }
    }
    memset(p, 0, m->size);
}

/* ---- encode ------------------------------------------------------------------------------ */

/* A JSON string of `s`; bytes that are not UTF-8 (a reason read from a process) become '?'
 * rather than dropping the key. */
static json_t *jstring(const char *s)
{
    json_t *v = json_string(s);
    if (v)
        return v;
    char *c = dg_xstrdup(s);
    for (char *p = c; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(c);
    free(c);
    return v ? v : json_string("");
}

static json_t *encode(const struct msg *m, const void *p)
{
    json_t *o = json_object();
    for (size_t i = 0; i < m->n; i++) {
        const struct field *f = &m->f[i];
        const char *at = (const char *)p + f->off;
        if ((f->flags & F_HAS) && !*(const bool *)((const char *)p + f->has))
            continue;
        json_t *v = NULL;
        switch (f->kind) {
        case K_STR: {
            const char *s = *(char *const *)at;
            v = s ? jstring(s) : (f->flags & F_NULL) ? json_null() : NULL;
            break;
        }
        case K_INT:
            if (*(const int64_t *)at != 0 || !(f->flags & F_OMIT))
                v = json_integer((json_int_t) * (const int64_t *)at);
            break;
        case K_DBL: {
            double d;
            memcpy(&d, at, sizeof(d)); /* `at` points into the struct: a double's bytes */
            v = json_real(d);
            break;
        }
        case K_BOOL:
            if (*(const bool *)at || !(f->flags & F_OMIT))
                v = json_boolean(*(const bool *)at);
            break;
        case K_STRLIST: {
            const struct dg_strlist *l = (const struct dg_strlist *)at;
            v = json_array();
            for (size_t k = 0; k < l->n; k++)
                json_array_append_new(v, jstring(l->v[k]));
            break;
        }
        case K_ARR: {
            const char *items = *(char *const *)at;
            size_t n = *(const size_t *)((const char *)p + f->count);
            if (n == 0 && (f->flags & F_OMIT))
                break;
            v = json_array();
            for (size_t k = 0; k < n; k++)
                json_array_append_new(v, encode(f->sub, items + k * f->sub->size));
            break;
        }
        case K_OBJ:
            v = encode(f->sub, at);
            break;
        }
        if (v)
            json_object_set_new(o, f->name, v);
    }
    return o;
}

/* ---- a fast path for the common case ------------------------------------------------------ */

/* Nearly every message is what a daemon of this project wrote: compact JSON, ASCII strings
 * without escapes, integers. Those are decoded here without a JSON tree (jansson's tree was
 * most of the cost of the CP's metric reports and the DP's endpoint pushes, thousands a
 * second): the body is copied once and parsed in place into a flat array of values, each
 * string NUL-terminated where its closing quote was; the same tables decode that array with
 * the same rules (check_field, the message's check). Anything else (an escape, a byte that is
 * not printable ASCII, a real number, a leading zero, a duplicate key, more than FAST_KEYS keys
 * in an object, nesting deeper than FAST_DEPTH, not JSON at all, a value a field refuses) is
 * not handled here: fast_decode returns -1 and the caller decodes through jansson, which gives
 * the error when there is one. So this path accepts only what the other accepts, and decodes
 * it the same (fuzz_wire checks both agree on every input). */

enum fk { FK_OBJ, FK_ARR, FK_STR, FK_INT, FK_TRUE, FK_FALSE, FK_NULL };
#define FAST_DEPTH 16
#define FAST_KEYS  64

struct fnode {
    uint8_t k;
    uint32_t n;   /* FK_OBJ: pairs (key node, value); FK_ARR: items */
    uint32_t end; /* the index after this value and everything in it */
    const char *s;
    int64_t i;
};

struct fparse {
    char *p, *e;
    struct fnode *v, *stack; /* v starts as the caller's `stack` (a small message: no malloc) */
    size_t n, cap;
};

static void fws(struct fparse *f)
{
    while (f->p < f->e && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
        f->p++;
}

static size_t fnew(struct fparse *f, uint8_t k)
{
    if (f->n == f->cap) {
        f->cap *= 2;
        if (f->v == f->stack) {
            f->v = dg_xmalloc(f->cap * sizeof(*f->v));
            memcpy(f->v, f->stack, f->n * sizeof(*f->v));
        } else {
            f->v = dg_xrealloc(f->v, f->cap * sizeof(*f->v));
        }
    }
    f->v[f->n] = (struct fnode){.k = k, .end = (uint32_t)f->n + 1};
    return f->n++;
}

/* At '"': a string of printable ASCII without escapes, NUL-terminated in place. */
static bool fstr(struct fparse *f, size_t at)
{
    char *s = ++f->p;
    for (; f->p < f->e; f->p++) {
        unsigned char c = (unsigned char)*f->p;
        if (c == '"') {
            *f->p++ = '\0';
            f->v[at].s = s;
            return true;
        }
        if (c == '\\' || c < 0x20 || c >= 0x7f)
            return false;
    }
    return false;
}

static bool flit(struct fparse *f, const char *lit, uint8_t k)
{
    size_t n = strlen(lit);
    if ((size_t)(f->e - f->p) < n || memcmp(f->p, lit, n) != 0)
        return false;
    f->p += n;
    fnew(f, k);
    return true;
}

/* An integer of at most 18 digits (always an int64), no leading zero, not followed by what
 * would make it a real or a longer number. */
static bool fint(struct fparse *f)
{
    bool neg = *f->p == '-';
    if (neg)
        f->p++;
    char *d = f->p;
    int64_t x = 0;
    while (f->p < f->e && *f->p >= '0' && *f->p <= '9' && f->p - d < 18)
        x = x * 10 + (*f->p++ - '0');
    size_t nd = (size_t)(f->p - d);
    if (nd == 0 || (nd > 1 && d[0] == '0'))
        return false;
    if (f->p < f->e &&
        ((*f->p >= '0' && *f->p <= '9') || *f->p == '.' || *f->p == 'e' || *f->p == 'E'))
        return false;
    size_t at = fnew(f, FK_INT);
    f->v[at].i = neg ? -x : x;
    return true;
}

static bool fvalue(struct fparse *f, int depth)
{
    fws(f);
    if (f->p >= f->e || depth > FAST_DEPTH)
        return false;
    char c = *f->p;
    if (c == '{' || c == '[') {
        bool obj = c == '{';
        size_t at = fnew(f, obj ? FK_OBJ : FK_ARR);
        f->p++;
        fws(f);
        if (f->p < f->e && *f->p == (obj ? '}' : ']')) {
            f->p++;
            return true;
        }
        for (;;) {
            if (obj) {
                fws(f);
                if (f->p >= f->e || *f->p != '"' || f->v[at].n >= FAST_KEYS)
                    return false;
                size_t key = fnew(f, FK_STR);
                if (!fstr(f, key))
                    return false;
                for (size_t j = at + 1; j < key; j = f->v[j + 1].end) /* the keys before */
                    if (strcmp(f->v[j].s, f->v[key].s) == 0)
                        return false;
                fws(f);
                if (f->p >= f->e || *f->p != ':')
                    return false;
                f->p++;
            }
            if (!fvalue(f, depth + 1))
                return false;
            f->v[at].n++;
            fws(f);
            if (f->p < f->e && *f->p == ',') {
                f->p++;
                continue;
            }
            if (f->p < f->e && *f->p == (obj ? '}' : ']')) {
                f->p++;
                f->v[at].end = (uint32_t)f->n;
                return true;
            }
            return false;
        }
    }
    if (c == '"')
        return fstr(f, fnew(f, FK_STR));
    if (c == 't')
        return flit(f, "true", FK_TRUE);
    if (c == 'f')
        return flit(f, "false", FK_FALSE);
    if (c == 'n')
        return flit(f, "null", FK_NULL);
    if (c == '-' || (c >= '0' && c <= '9'))
        return fint(f);
    return false;
}

/* The value of `key` in object o; 0 when absent (index 0 is the top object, never a value). */
static size_t fget(const struct fnode *v, size_t o, const char *key)
{
    size_t j = o + 1;
    for (uint32_t k = 0; k < v[o].n; k++, j = v[j + 1].end)
        if (strcmp(v[j].s, key) == 0)
            return j + 1;
    return 0;
}

static int fdecode(const struct msg *m, const struct fnode *v, size_t o, void *out, bool view);

static int ffield(const struct field *f, const struct fnode *v, size_t x, void *out, bool view)
{
    switch (f->kind) {
    case K_ARR: {
        if (v[x].k != FK_ARR)
            return -1;
        size_t n = v[x].n;
        char *items = n ? dg_xcalloc(n, f->sub->size) : NULL;
        memcpy(AT(out, f->off), &items, sizeof(items)); /* as decode_field: freed on error */
        memcpy(AT(out, f->count), &n, sizeof(n));
        for (size_t i = 0, j = x + 1; i < n; i++, j = v[j].end)
            if (fdecode(f->sub, v, j, items + i * f->sub->size, view) < 0)
                return -1;
        return 0;
    }
    case K_OBJ:
        return fdecode(f->sub, v, x, AT(out, f->off), view);
    case K_STR: {
        if (v[x].k != FK_STR)
            return -1;
        const char *s = view ? v[x].s : dg_xstrdup(v[x].s);
        memcpy(AT(out, f->off), &s, sizeof(s));
        return 0;
    }
    case K_INT: {
        if (v[x].k != FK_INT || ((f->min || f->max) && (v[x].i < f->min || v[x].i > f->max)))
            return -1;
        memcpy(AT(out, f->off), &v[x].i, sizeof(v[x].i));
        return 0;
    }
    case K_DBL: {
        if (v[x].k != FK_INT)
            return -1;
        double d = (double)v[x].i;
        memcpy(AT(out, f->off), &d, sizeof(d));
        return 0;
    }
    case K_BOOL: {
        if (v[x].k != FK_TRUE && v[x].k != FK_FALSE)
            return -1;
        bool b = v[x].k == FK_TRUE;
        memcpy(AT(out, f->off), &b, sizeof(b));
        return 0;
    }
    case K_STRLIST: {
        if (v[x].k != FK_ARR)
            return -1;
        for (size_t j = x + 1; j < v[x].end; j++)
            if (v[j].k != FK_STR)
                return -1;
        struct dg_strlist l = {NULL, v[x].n};
        if (l.n > 0) {
            l.v = dg_xcalloc(l.n, sizeof(*l.v));
            for (size_t i = 0; i < l.n; i++)
                l.v[i] = view ? (char *)v[x + 1 + i].s : dg_xstrdup(v[x + 1 + i].s);
        }
        memcpy(AT(out, f->off), &l, sizeof(l));
        return 0;
    }
    }
    return -1;
}

/* decode_as over the flat array; -1 (out freed and zeroed) wherever decode_as would fail. */
static int fdecode(const struct msg *m, const struct fnode *v, size_t o, void *out, bool view)
{
    memset(out, 0, m->size);
    if (v[o].k != FK_OBJ)
        return -1;
    if (m->strict) {
        size_t j = o + 1;
        for (uint32_t k = 0; k < v[o].n; k++, j = v[j + 1].end) {
            size_t i = 0;
            while (i < m->n && strcmp(m->f[i].name, v[j].s) != 0)
                i++;
            if (i == m->n)
                return -1;
        }
    }
    struct dg_err err;
    for (size_t i = 0; i < m->n; i++) {
        const struct field *f = &m->f[i];
        size_t x = fget(v, o, f->name);
        if (x && v[x].k == FK_NULL)
            x = 0; /* null is absent */
        if (!x) {
            if (f->flags & F_REQ) {
                msg_free_as(m, out, view);
                return -1;
            }
            if ((f->flags & F_DEF) && f->kind == K_INT) {
                int64_t d = (int64_t)f->def;
                memcpy(AT(out, f->off), &d, sizeof(d));
            } else if (f->flags & F_DEF) {
                memcpy(AT(out, f->off), &f->def, sizeof(f->def));
            }
            continue;
        }
        if (ffield(f, v, x, out, view) < 0 || check_field(f, out, &err) < 0) {
            msg_free_as(m, out, view);
            return -1;
        }
        if (f->flags & F_HAS)
            *(bool *)AT(out, f->has) = true;
    }
    if (m->check && m->check(out, &err) < 0) {
        msg_free_as(m, out, view);
        return -1;
    }
    return 0;
}

/* Decode buf as m on the fast path; 0 with *store the copy the view's strings point into
 * (view) or NULL, -1 (nothing to free, out zeroed) when it is not the common case. */
static int fast_decode(const struct msg *m, const char *buf, size_t len, void *out, bool view,
                       char **store)
{
    memset(out, 0, m->size);
    *store = NULL;
    if (!buf || len == 0 || len >= UINT32_MAX / 2)
        return -1;
    /* a small message (a metric report, a create's answer) needs no malloc but its own when
     * copied (a view keeps the copy: it is the strings' storage) */
    struct fnode nodes[48];
    char small[1024];
    char *copy = !view && len < sizeof(small) ? small : dg_xmalloc(len + 1);
    memcpy(copy, buf, len);
    copy[len] = '\0';
    struct fparse f = {
        .p = copy, .e = copy + len, .v = nodes, .stack = nodes, .cap = DG_ARRAY_LEN(nodes)};
    fws(&f);
    bool ok = f.p < f.e && *f.p == '{' && fvalue(&f, 0);
    if (ok) {
        fws(&f);
        ok = f.p == f.e;
    }
    int rc = ok ? fdecode(m, f.v, 0, out, view) : -1;
    if (f.v != nodes)
        free(f.v);
    if (rc < 0 || !view) {
        if (copy != small)
            free(copy);
        return rc;
    }
    *store = copy;
    return 0;
}

static int parse(const struct msg *m, const char *buf, size_t len, void *out, struct dg_err *err)
{
    json_t *j;
    char *store;
    if (fast_decode(m, buf, len, out, false, &store) == 0)
        return 0;
    memset(out, 0, m->size);
    int rc = dg_json_parse(buf, len, &j, err);
    if (rc < 0)
        return rc; /* DG_E_PROTO: not JSON */
    rc = decode(m, j, out, err);
    json_decref(j);
    return rc;
}

/* encode and dg_json_dumps in one pass, without a tree (the CP writes a push item and a
 * create per cold start): the same text as jansson's compact dump, keys in the table's order
 * (fuzz_wire compares the two on every input). false (b to be dropped) for what jansson's own
 * rules decide: a string with a byte over 0x7f (its UTF-8 check), a real number (its format). */
static bool text_str(struct dg_buf *b, const char *s)
{
    dg_buf_append(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x80)
            return false;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        dg_buf_append(b, run, (size_t)(s - run));
        run = s + 1;
        switch (c) {
        case '"':
            dg_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            dg_buf_append(b, "\\\\", 2);
            break;
        case '\b':
            dg_buf_append(b, "\\b", 2);
            break;
        case '\f':
            dg_buf_append(b, "\\f", 2);
            break;
        case '\n':
            dg_buf_append(b, "\\n", 2);
            break;
        case '\r':
            dg_buf_append(b, "\\r", 2);
            break;
        case '\t':
            dg_buf_append(b, "\\t", 2);
            break;
        default:
            dg_buf_printf(b, "\\u%04X", (unsigned)c);
        }
    }
    dg_buf_append(b, run, (size_t)(s - run));
    dg_buf_append(b, "\"", 1);
    return true;
}

static void text_key(struct dg_buf *b, const char *name, bool *first)
{
    if (!*first)
        dg_buf_append(b, ",", 1);
    dg_buf_append(b, "\"", 1);
    dg_buf_append(b, name, strlen(name)); /* names are plain words */
    dg_buf_append(b, "\":", 2);
    *first = false;
}

/* "%lld" without the printf machinery (a push item and a create hold several integers). */
static void text_int(struct dg_buf *b, int64_t v)
{
    char d[24], *e = d + sizeof(d), *p = e;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do
        *--p = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0)
        *--p = '-';
    dg_buf_append(b, p, (size_t)(e - p));
}

static bool text_enc(const struct msg *m, const void *p, struct dg_buf *b)
{
    bool first = true;
    dg_buf_append(b, "{", 1);
    for (size_t i = 0; i < m->n; i++) {
        const struct field *f = &m->f[i];
        const char *at = (const char *)p + f->off;
        if ((f->flags & F_HAS) && !*(const bool *)((const char *)p + f->has))
            continue;
        switch (f->kind) {
        case K_STR: {
            const char *s = *(char *const *)at;
            if (!s && !(f->flags & F_NULL))
                break;
            text_key(b, f->name, &first);
            if (!s)
                dg_buf_append(b, "null", 4);
            else if (!text_str(b, s))
                return false;
            break;
        }
        case K_INT: {
            int64_t v = *(const int64_t *)at;
            if (v == 0 && (f->flags & F_OMIT))
                break;
            text_key(b, f->name, &first);
            text_int(b, v);
            break;
        }
        case K_DBL:
            return false;
        case K_BOOL: {
            bool v = *(const bool *)at;
            if (!v && (f->flags & F_OMIT))
                break;
            text_key(b, f->name, &first);
            dg_buf_append(b, v ? "true" : "false", v ? 4 : 5);
            break;
        }
        case K_STRLIST: {
            const struct dg_strlist *l = (const struct dg_strlist *)at;
            text_key(b, f->name, &first);
            dg_buf_append(b, "[", 1);
            for (size_t k = 0; k < l->n; k++) {
                if (k)
                    dg_buf_append(b, ",", 1);
                if (!text_str(b, l->v[k]))
                    return false;
            }
            dg_buf_append(b, "]", 1);
            break;
        }
        case K_ARR: {
            const char *items = *(char *const *)at;
            size_t n = *(const size_t *)((const char *)p + f->count);
            if (n == 0 && (f->flags & F_OMIT))
                break;
            text_key(b, f->name, &first);
            dg_buf_append(b, "[", 1);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    dg_buf_append(b, ",", 1);
                if (!text_enc(f->sub, items + k * f->sub->size, b))
                    return false;
            }
            dg_buf_append(b, "]", 1);
            break;
        }
        case K_OBJ:
            text_key(b, f->name, &first);
            if (!text_enc(f->sub, at, b))
                return false;
            break;
        }
    }
    dg_buf_append(b, "}", 1);
    return true;
}

static char *dumps(const struct msg *m, const void *p)
{
    struct dg_buf b = {0};
    if (text_enc(m, p, &b))
        return b.data; /* NUL-terminated */
    dg_buf_free(&b);
    json_t *j = encode(m, p);
    char *s = dg_json_dumps(j);
    json_decref(j);
    return s;
}

/* ---- the tables -------------------------------------------------------------------------- */

#define STR(T, m, key, ...)                                                                        \
    {                                                                                              \
        .name = key, .kind = K_STR, .off = offsetof(T, m), __VA_ARGS__                             \
    }
#define INT(T, m, key, ...)                                                                        \
    {                                                                                              \
        .name = key, .kind = K_INT, .off = offsetof(T, m), __VA_ARGS__                             \
    }
#define DBL(T, m, key, ...)                                                                        \
    {                                                                                              \
        .name = key, .kind = K_DBL, .off = offsetof(T, m), __VA_ARGS__                             \
    }
#define BOOL(T, m, key, ...)                                                                       \
    {                                                                                              \
        .name = key, .kind = K_BOOL, .off = offsetof(T, m), __VA_ARGS__                            \
    }
#define STRLIST(T, m, key, ...)                                                                    \
    {                                                                                              \
        .name = key, .kind = K_STRLIST, .off = offsetof(T, m), __VA_ARGS__                         \
    }
#define ARR(T, m, cnt, key, item, ...)                                                             \
    {                                                                                              \
        .name = key, .kind = K_ARR, .off = offsetof(T, m), .count = offsetof(T, cnt),              \
        .sub = &M_##item, __VA_ARGS__                                                              \
    }
#define OBJ(T, m, key, sub_, ...)                                                                  \
    {                                                                                              \
        .name = key, .kind = K_OBJ, .off = offsetof(T, m), .sub = &M_##sub_, __VA_ARGS__           \
    }
#define HAS(T, m) .flags = F_HAS, .has = offsetof(T, m)

#define MSG(x, strict_)                                                                            \
    static const struct msg M_##x = {#x,    sizeof(struct dg_wire_##x), strict_,                   \
                                     F_##x, DG_ARRAY_LEN(F_##x),        NULL}
#define MSG_AS(x, type, strict_)                                                                   \
    static const struct msg M_##x = {#x,    sizeof(struct dg_wire_##type), strict_,                \
                                     F_##x, DG_ARRAY_LEN(F_##x),           NULL}

static const char K_RESYNC[] = "resync";
#define CPU_MAX      1099511627776 /* millicores, MiB: what the worker's cpuMilli and */
#define MEM_MAX      1099511627776 /* memoryMiB keys allow (2^40) */
#define INFLIGHT_MAX 1000000000
#define NONNEG       .min = 0, .max = INT64_MAX

/* worker -> CP */
#define T struct dg_wire_sandbox_ref
static const struct field F_sandbox_ref[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, function, "function", .flags = F_REQ, .chk = C_FN),
    STR(T, endpoint, "endpoint", .flags = F_REQ, .chk = C_ADDR),
};
MSG(sandbox_ref, false);
#undef T

#define T struct dg_wire_worker_beat
static const struct field F_worker_beat[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_NODE),
    STR(T, address, "address", .flags = F_REQ, .chk = C_ADDR),
    STR(T, boot, "boot", .chk = C_TOKEN),
    INT(T, cpu_milli, "cpuMilli", .min = 0, .max = CPU_MAX),
    INT(T, memory_mib, "memoryMiB", .min = 0, .max = MEM_MAX),
    DBL(T, cpu_overcommit, "cpuOvercommit", .flags = F_DEF, .def = 1.0, .dmin = 0, .dmax = 1000),
    INT(T, min_cpu_milli, "sandboxMinCpuMilli", .min = 0, .max = CPU_MAX),
    INT(T, min_memory_mib, "sandboxMinMemoryMiB", .min = 0, .max = MEM_MAX),
    ARR(T, sandboxes, nsandboxes, "sandboxes", sandbox_ref, HAS(T, has_sandboxes)),
    BOOL(T, resync, K_RESYNC),
    INT(T, sandbox_count, "sandboxCount", HAS(T, has_sandbox_count), .min = 0,
        .max = DG_WIRE_LIST_MAX),
    STR(T, sandbox_subnet, "sandboxSubnet", .chk = C_CIDR),
    INT(T, listing, "listing", .flags = F_OMIT, NONNEG),
    INT(T, listing_part, "listingPart", .flags = F_OMIT, .min = 0, .max = DG_WIRE_LIST_MAX),
    INT(T, listing_parts, "listingParts", .flags = F_OMIT, .min = 0, .max = DG_WIRE_LIST_MAX),
    BOOL(T, saturated, "saturated", .flags = F_OMIT),
};
/* A listing in parts: all three fields or none, and only with "sandboxes". */
static int worker_beat_check(const void *p, struct dg_err *err)
{
    const T *m = p;
    if (!m->listing && !m->listing_part && !m->listing_parts)
        return 0;
    if (!m->has_sandboxes)
        return dg_err_set(err, DG_E_INVAL, "field 'listing': only with 'sandboxes'");
    if (m->listing < 1)
        return dg_err_set(err, DG_E_INVAL, "field 'listing': expected 1.., got %lld",
                          (long long)m->listing);
    if (m->listing_parts < 1 || m->listing_part >= m->listing_parts)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'listingPart': expected 0..listingParts-1 with listingParts >= "
                          "1, got part %lld of %lld",
                          (long long)m->listing_part, (long long)m->listing_parts);
    return 0;
}
static const struct msg M_worker_beat = {
    "worker_beat", sizeof(T), false, F_worker_beat, DG_ARRAY_LEN(F_worker_beat), worker_beat_check};
#undef T

#define T struct dg_wire_sibling_beat
static const struct field F_sibling_beat[] = {
    STR(T, sender, "sender", .flags = F_REQ, .chk = C_NODE),
    STR(T, address, "address", .flags = F_REQ, .chk = C_ADDR),
    STR(T, boot, "boot", .flags = F_REQ, .chk = C_TOKEN),
    INT(T, cpu_milli, "cpuMilli", .min = 0, .max = CPU_MAX),
    INT(T, memory_mib, "memoryMiB", .min = 0, .max = MEM_MAX),
    DBL(T, cpu_overcommit, "cpuOvercommit", .flags = F_DEF, .def = 1.0, .dmin = 0, .dmax = 1000),
    INT(T, min_cpu_milli, "sandboxMinCpuMilli", .min = 0, .max = CPU_MAX),
    INT(T, min_memory_mib, "sandboxMinMemoryMiB", .min = 0, .max = MEM_MAX),
    STR(T, sandbox_subnet, "sandboxSubnet", .chk = C_CIDR),
    BOOL(T, saturated, "saturated", .flags = F_OMIT),
    STRLIST(T, nodes, "nodes", .flags = F_REQ, .chk = C_NODE, .maxn = DG_WIRE_SIBLINGS_MAX),
};
/* At least one node, and not the sender: it beats on its own (its listing, its count). */
static int sibling_beat_check(const void *p, struct dg_err *err)
{
    const T *m = p;
    if (m->nodes.n == 0)
        return dg_err_set(err, DG_E_INVAL, "field 'nodes': expected 1..%d names, got none",
                          DG_WIRE_SIBLINGS_MAX);
    for (size_t i = 0; i < m->nodes.n; i++)
        if (strcmp(m->nodes.v[i], m->sender) == 0)
            return dg_err_set(err, DG_E_INVAL,
                              "field 'nodes': item %zu is the sender '%s': it beats on its own "
                              "(POST " DG_WIRE_PATH_WORKERS ")",
                              i, m->sender);
    return 0;
}
static const struct msg M_sibling_beat = {
    "sibling_beat",    sizeof(T), false, F_sibling_beat, DG_ARRAY_LEN(F_sibling_beat),
    sibling_beat_check};
#undef T

#define T struct dg_wire_sibling_answer
static const struct field F_sibling_answer[] = {
    STRLIST(T, refused, "refused", .chk = C_NODE, .maxn = DG_WIRE_SIBLINGS_MAX),
};
MSG(sibling_answer, false);
#undef T

#define T struct dg_wire_sandbox_exit
static const struct field F_sandbox_exit[] = {
    STR(T, worker, "worker", .chk = C_NODE),
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, function, "function", .flags = F_REQ, .chk = C_FN),
    INT(T, status, "status", .min = -255, .max = 255), /* a status, or -signal */
    STR(T, reason, "reason"),
};
MSG(sandbox_exit, false);
#undef T

/* data plane -> CP */
#define T struct dg_wire_dp_beat
static const struct field F_dp_beat[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_NODE),
    STR(T, api, "api", .flags = F_REQ, .chk = C_ADDR),
    STR(T, proxy, "proxy", .flags = F_REQ, .chk = C_ADDR),
    BOOL(T, resync, K_RESYNC),
};
MSG(dp_beat, false);
#undef T

#define T struct dg_wire_fn_load
static const struct field F_fn_load[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_FN),
    INT(T, inflight, "inflight", .flags = F_REQ, .min = 0, .max = INFLIGHT_MAX),
};
MSG(fn_load, false);
#undef T

#define T struct dg_wire_metrics
static const struct field F_metrics[] = {
    STR(T, dataplane, "dataplane", .flags = F_REQ, .chk = C_NODE),
    ARR(T, functions, nfunctions, "functions", fn_load),
};
MSG(metrics, false);
#undef T

/* CP -> worker */
#define T struct dg_wire_create
static const struct field F_create[] = {
    STR(T, function, "function", .flags = F_REQ, .chk = C_FN),
    STR(T, image, "image", .chk = C_ARG),
    INT(T, port, "port", .flags = F_OMIT, .min = 1, .max = 65535), /* 0: absent */
    BOOL(T, no_init, "noInit", .flags = F_OMIT),
    STRLIST(T, env, "env", .chk = C_ENV, .maxn = DG_WIRE_ARGS_MAX),
    STRLIST(T, args, "args", .chk = C_ARG, .maxn = DG_WIRE_ARGS_MAX),
    INT(T, cpu_milli, "cpuMilli", .min = 0, .max = 100000000),
    INT(T, memory_mib, "memoryMiB", .min = 0, .max = 1 << 24),
};
MSG(create, true);
#undef T

/* PUT /v1/prewarm: a create's keys and how many to keep; no function twice in a table */
#define T struct dg_wire_pool_item
static const struct field F_pool_item[] = {
    STR(T, spec.function, "function", .flags = F_REQ, .chk = C_FN),
    STR(T, spec.image, "image", .chk = C_ARG),
    INT(T, spec.port, "port", .flags = F_OMIT, .min = 1, .max = 65535),
    STRLIST(T, spec.env, "env", .chk = C_ENV, .maxn = DG_WIRE_ARGS_MAX),
    STRLIST(T, spec.args, "args", .chk = C_ARG, .maxn = DG_WIRE_ARGS_MAX),
    INT(T, spec.cpu_milli, "cpuMilli", .min = 0, .max = 100000000),
    INT(T, spec.memory_mib, "memoryMiB", .min = 0, .max = 1 << 24),
    BOOL(T, spec.no_init, "noInit", .flags = F_OMIT),
    INT(T, count, "count", .flags = F_REQ, .min = 0, .max = DG_WIRE_POOL_MAX),
};
MSG(pool_item, true);
#undef T

#define T struct dg_wire_pool
static const struct field F_pool[] = {
    ARR(T, items, nitems, "items", pool_item, .flags = F_REQ, .maxn = DG_WIRE_POOL_ITEMS_MAX),
};
static int pool_check(const void *p, struct dg_err *err)
{
    const T *m = p;
    struct dg_strmap seen = {0};
    int rc = 0;
    for (size_t i = 0; i < m->nitems && rc == 0; i++) {
        struct dg_str name = dg_str_c(m->items[i].spec.function);
        if (dg_strmap_get(&seen, name))
            rc = dg_err_set(err, DG_E_INVAL,
                            "field 'items': function '%s' given twice (one item per function)",
                            m->items[i].spec.function);
        dg_strmap_put(&seen, name, (void *)1);
    }
    dg_strmap_free(&seen);
    return rc;
}
static const struct msg M_pool = {"pool",    sizeof(T), true, F_pool, DG_ARRAY_LEN(F_pool),
                                  pool_check};
#undef T

#define T struct dg_wire_latency
static const struct field F_latency[] = {
    INT(T, image, "image", NONNEG),     INT(T, rootfs, "rootfs", NONNEG),
    INT(T, network, "network", NONNEG), INT(T, start, "start", NONNEG),
    INT(T, ready, "ready", NONNEG),     INT(T, total, "total", NONNEG),
};
MSG(latency, false);
#undef T

#define T struct dg_wire_created
static const struct field F_created[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, function, "function", .chk = C_FN),
    STR(T, endpoint, "endpoint", .flags = F_REQ, .chk = C_ADDR),
    OBJ(T, latency, "latencyUs", latency, HAS(T, has_latency)),
};
MSG(created, false);
#undef T

#define T struct dg_wire_sandbox_state
static const struct field F_sandbox_state[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, function, "function", .flags = F_REQ, .chk = C_FN),
    STR(T, endpoint, "endpoint", .flags = F_REQ, .chk = C_EP),
    STR(T, state, "state", .flags = F_REQ, .chk = C_SBSTATE),
    STR(T, exit_reason, "exitReason"),
};
/* A sandbox still creating has no address yet (":0"); a ready one has one. */
static int sandbox_state_check(const void *p, struct dg_err *err)
{
    const T *m = p;
    char q[80];
    if (strcmp(m->state, DG_WIRE_SB_READY) == 0 && !address_ok(m->endpoint, false))
        return dg_err_set(err, DG_E_INVAL,
                          "field 'endpoint': expected HOST:PORT for a ready sandbox, got %s",
                          quote(m->endpoint, q, sizeof(q)));
    return 0;
}
static const struct msg M_sandbox_state = {
    "sandbox_state",    sizeof(T), false, F_sandbox_state, DG_ARRAY_LEN(F_sandbox_state),
    sandbox_state_check};
#undef T

#define T struct dg_wire_sandbox_list
static const struct field F_sandbox_list[] = {
    STR(T, name, "name", .chk = C_NODE),
    STR(T, runtime, "runtime", .chk = C_TOKEN),
    ARR(T, sandboxes, nsandboxes, "sandboxes", sandbox_state, .flags = F_REQ),
};
MSG(sandbox_list, false);
#undef T

/* CP -> data plane */
#define T struct dg_wire_endpoint
static const struct field F_endpoint[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, address, "address", .flags = F_REQ, .chk = C_ADDR),
};
MSG(endpoint, false);
#undef T

#define T struct dg_wire_exit_note
static const struct field F_exit_note[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, reason, "reason", .flags = F_REQ),
};
MSG(exit_note, false);
#undef T

#define T struct dg_wire_fn_update
static const struct field F_fn_update[] = {
    ARR(T, endpoints, nendpoints, "endpoints", endpoint, .flags = F_REQ),
    STR(T, name, "name", .flags = F_REQ, .chk = C_FN),
    INT(T, concurrency, "concurrency", .flags = F_DEF, .def = 1, .min = 0, .max = 100000),
    BOOL(T, h2c, "h2c", .flags = F_OMIT),
    STR(T, error, "error"),
    ARR(T, exited, nexited, "exited", exit_note, .flags = F_OMIT),
};
MSG(fn_update, false);
/* PUT /v1/functions/NAME/endpoints: the name is in the path */
static const struct field F_fn_endpoints[] = {
    ARR(T, endpoints, nendpoints, "endpoints", endpoint, .flags = F_REQ),
    STR(T, error, "error"),
    ARR(T, exited, nexited, "exited", exit_note, .flags = F_OMIT),
};
MSG_AS(fn_endpoints, fn_update, false);
#undef T

#define T struct dg_wire_push
#define PUSH_PART_FIELDS                                                                           \
    BOOL(T, full, "full", .flags = F_OMIT), INT(T, sync, "sync", .flags = F_OMIT, NONNEG),         \
        INT(T, part, "part", .flags = F_OMIT, .min = 0, .max = DG_WIRE_LIST_MAX),                  \
        INT(T, parts, "parts", .flags = F_OMIT, .min = 0, .max = DG_WIRE_LIST_MAX)
/* A resync in parts: all three part fields or none, and only on a full push. */
static int push_check(const void *p, struct dg_err *err)
{
    const T *m = p;
    if (!m->sync && !m->part && !m->parts)
        return 0;
    if (!m->full)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'parts': only a full push (\"full\": true) comes in parts");
    if (m->sync < 1)
        return dg_err_set(err, DG_E_INVAL, "field 'sync': expected 1.., got %lld",
                          (long long)m->sync);
    if (m->parts < 1 || m->part >= m->parts)
        return dg_err_set(err, DG_E_INVAL,
                          "field 'part': expected 0..parts-1 with parts >= 1, got part %lld of "
                          "%lld",
                          (long long)m->part, (long long)m->parts);
    return 0;
}
static const struct field F_push[] = {
    ARR(T, functions, nfunctions, "functions", fn_update, .flags = F_REQ),
    PUSH_PART_FIELDS,
};
static const struct msg M_push = {"push",    sizeof(T), false, F_push, DG_ARRAY_LEN(F_push),
                                  push_check};
/* the flags and part fields alone, for a receiver that takes the items one by one */
static const struct field F_push_part[] = {PUSH_PART_FIELDS};
static const struct msg M_push_part = {
    "push", sizeof(T), false, F_push_part, DG_ARRAY_LEN(F_push_part), push_check};
#undef PUSH_PART_FIELDS
#undef T

#define T struct dg_wire_drain
static const struct field F_drain[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_FN),
    STRLIST(T, ids, "ids", .flags = F_REQ, .chk = C_ID),
};
MSG(drain, false);
/* POST /v1/drain, a batch of drains decoded whole (dg_wire_drains_view_fast): the batch's
 * non-empty "items" (dg_wire_batch_items), each a drain */
struct drain_batch {
    struct dg_wire_drain *items;
    size_t nitems;
};
static int drain_batch_check(const void *p, struct dg_err *err)
{
    return ((const struct drain_batch *)p)->nitems
               ? 0
               : dg_err_set(err, DG_E_INVAL, "field 'items': expected a non-empty array");
}
static const struct field F_drain_batch[] = {
    ARR(struct drain_batch, items, nitems, "items", drain, .flags = F_REQ),
};
static const struct msg M_drain_batch = {
    "drain_batch", sizeof(struct drain_batch),  false,
    F_drain_batch, DG_ARRAY_LEN(F_drain_batch), drain_batch_check};
/* POST /v1/functions/NAME/drain: the name is in the path */
static const struct field F_drain_ids[] = {
    STRLIST(T, ids, "ids", .flags = F_REQ, .chk = C_ID),
};
MSG_AS(drain_ids, drain, true);
#undef T

#define T struct dg_wire_dp_fn
static const struct field F_dp_fn[] = {
    INT(T, concurrency, "concurrency", .flags = F_DEF, .def = 1, .min = 0, .max = 100000),
    BOOL(T, h2c, "h2c", .flags = F_OMIT),
};
MSG(dp_fn, false);
#undef T

#define T struct dg_wire_dp_endpoint_view
static const struct field F_dp_endpoint_view[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_ID),
    STR(T, address, "address", .chk = C_ADDR),
    INT(T, in_flight, "inFlight", NONNEG),
};
MSG(dp_endpoint_view, false);
#undef T

#define T struct dg_wire_dp_fn_view
static const struct field F_dp_fn_view[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_FN),
    INT(T, concurrency, "concurrency", NONNEG),
    INT(T, queued, "queued", NONNEG),
    INT(T, in_flight, "inFlight", NONNEG),
    ARR(T, endpoints, nendpoints, "endpoints", dp_endpoint_view),
    STR(T, error, "error", .flags = F_NULL),
    BOOL(T, h2c, "h2c", .flags = F_OMIT),
};
MSG(dp_fn_view, false);
#undef T

/* store records */
#define T struct dg_wire_worker_rec
static const struct field F_worker_rec[] = {
    STR(T, address, "address", .flags = F_REQ, .chk = C_ADDR),
    STR(T, sandbox_subnet, "sandboxSubnet", .chk = C_CIDR),
};
MSG(worker_rec, false);
#undef T

#define T struct dg_wire_dp_rec
static const struct field F_dp_rec[] = {
    STR(T, api, "api", .flags = F_REQ, .chk = C_ADDR),
    STR(T, proxy, "proxy", .flags = F_REQ, .chk = C_ADDR),
};
MSG(dp_rec, false);
#undef T

/* GET /v1/status */
#define T struct dg_wire_worker_view
static const struct field F_worker_view[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_NODE),
    STR(T, address, "address", .chk = C_ADDR),
    BOOL(T, schedulable, "schedulable"),
    INT(T, sandboxes, "sandboxes", NONNEG),
    INT(T, cpu_milli, "cpuMilli", NONNEG),
    INT(T, memory_mib, "memoryMiB", NONNEG),
    INT(T, cpu_used_milli, "cpuUsedMilli", NONNEG),
    INT(T, memory_used_mib, "memoryUsedMiB", NONNEG),
    INT(T, cpu_schedulable_milli, "cpuSchedulableMilli", NONNEG),
    DBL(T, cpu_overcommit, "cpuOvercommit", .flags = F_DEF, .def = 1.0, .dmin = 0, .dmax = 1000),
    INT(T, min_cpu_milli, "sandboxMinCpuMilli", NONNEG),
    INT(T, min_memory_mib, "sandboxMinMemoryMiB", NONNEG),
};
MSG(worker_view, false);
#undef T

#define T struct dg_wire_dp_view
static const struct field F_dp_view[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_NODE),
    STR(T, api, "api", .chk = C_ADDR),
    STR(T, proxy, "proxy", .chk = C_ADDR),
};
MSG(dp_view, false);
#undef T

#define T struct dg_wire_fn_view
static const struct field F_fn_view[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_FN),
    STR(T, image, "image", .chk = C_ARG),
    INT(T, port, "port", .min = 0, .max = 65535),
    STR(T, state, "state", .chk = C_TOKEN),
    INT(T, ready, "ready", NONNEG),
    INT(T, desired, "desired", NONNEG),
    INT(T, creating, "creating", NONNEG),
    INT(T, lower_bound, "scaling_lower_bound", NONNEG),
    INT(T, upper_bound, "scaling_upper_bound", NONNEG),
    INT(T, requested_cpu, "requested_cpu", NONNEG),
    INT(T, requested_memory, "requested_memory", NONNEG),
    BOOL(T, cold_start_sweep, "cold_start_sweep"),
    INT(T, container_concurrency, "container_concurrency", NONNEG),
    INT(T, prewarm, "prewarm", .flags = F_OMIT, .min = 0, .max = DG_WIRE_POOL_MAX),
    STR(T, error, "error", .flags = F_NULL),
    STR(T, error_worker, "error_worker", .flags = F_HAS | F_NULL, .has = offsetof(T, has_error),
        .chk = C_NODE),
    INT(T, error_at_ms, "error_at_ms", HAS(T, has_error)),
    INT(T, error_age_ms, "error_age_ms", HAS(T, has_error)),
    STR(T, error_kind, "error_kind", HAS(T, has_error), .chk = C_TOKEN),
};
MSG(fn_view, false);
#undef T

#define T struct dg_wire_replica
static const struct field F_replica[] = {
    INT(T, id, "id", NONNEG),
    STR(T, api, "api", .flags = F_REQ, .chk = C_ADDR),
    BOOL(T, self, "self"),
    BOOL(T, leader, "leader"),
};
MSG(replica, false);
#undef T

#define T struct dg_wire_status
static const struct field F_status[] = {
    ARR(T, workers, nworkers, "workers", worker_view, .flags = F_REQ),
    ARR(T, dataplanes, ndataplanes, "dataplanes", dp_view, .flags = F_REQ),
    ARR(T, functions, nfunctions, "functions", fn_view, .flags = F_REQ),
    STR(T, role, "role", .flags = F_REQ, .chk = C_ROLE),
    STR(T, leader, "leader", .flags = F_NULL, .chk = C_ADDR),
    ARR(T, replicas, nreplicas, "replicas", replica, HAS(T, has_replicas)),
};
MSG(status, false);
#undef T

/* asynchronous invocations: DP <-> CP */
#define T struct dg_wire_async_header
static const struct field F_async_header[] = {
    STR(T, name, "name", .flags = F_REQ, .chk = C_HNAME),
    STR(T, value, "value", .flags = F_REQ, .chk = C_HVAL),
};
MSG(async_header, true);
#undef T

#define T struct dg_wire_async_req
static const struct field F_async_req[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_AID),
    STR(T, dataplane, "dataplane", .flags = F_REQ, .chk = C_NODE),
    STR(T, function, "function", .flags = F_REQ, .chk = C_FN),
    STR(T, method, "method", .flags = F_REQ, .chk = C_HNAME),
    STR(T, url, "url", .flags = F_REQ, .chk = C_URL),
    ARR(T, headers, nheaders, "headers", async_header, .maxn = DG_WIRE_ASYNC_HEADERS_MAX),
    STR(T, body, "body", .flags = F_REQ, .chk = C_B64),
    INT(T, accepted_ms, "acceptedMs", NONNEG),
    INT(T, tries, "tries", .min = 0, .max = 1000),
};
MSG(async_req, true);
#undef T

#define T struct dg_wire_async_result
static const struct field F_async_result[] = {
    STR(T, id, "id", .flags = F_REQ, .chk = C_AID),
    INT(T, status, "status", .flags = F_REQ, .min = 100, .max = 599),
    STR(T, content_type, "contentType", .chk = C_HVAL),
    STR(T, body, "body", .flags = F_REQ, .chk = C_B64),
    INT(T, duration_us, "durationUs", NONNEG),
    INT(T, tries, "tries", .min = 0, .max = 1000),
};
MSG(async_result, true);
#undef T

#define T struct dg_wire_async_claim
static const struct field F_async_claim[] = {
    STR(T, dataplane, "dataplane", .flags = F_REQ, .chk = C_NODE),
    BOOL(T, orphans_only, "orphansOnly", .flags = F_OMIT),
    INT(T, boot, "boot", .min = 0, .max = (1ll << 53)),
    INT(T, page, "page", .min = 0, .max = (1ll << 31)),
    INT(T, max_orphans, "maxOrphans", .min = 0, .max = (1ll << 31)),
};
MSG(async_claim, true);
#undef T

#define T struct dg_wire_async_batch
static const struct field F_async_batch[] = {
    ARR(T, requests, nrequests, "requests", async_req, .flags = F_REQ),
    BOOL(T, more, "more", .flags = F_OMIT),
};
MSG(async_batch, true);
#undef T

static int async_state_check(const void *p, struct dg_err *err)
{
    const struct dg_wire_async_state *m = p;
    bool done = strcmp(m->state, "done") == 0;
    if (done ? !m->has_result : !m->has_request)
        return dg_err_set(err, DG_E_INVAL, "field '%s': required when state is %s",
                          done ? "result" : "request", m->state);
    return 0;
}

#define T struct dg_wire_async_state
static const struct field F_async_state[] = {
    STR(T, state, "state", .flags = F_REQ, .chk = C_ASTATE),
    OBJ(T, request, "request", async_req, HAS(T, has_request)),
    OBJ(T, result, "result", async_result, HAS(T, has_result)),
    INT(T, expires_ms, "expiresMs", NONNEG),
};
static const struct msg M_async_state = {
    "async_state", sizeof(struct dg_wire_async_state), true,
    F_async_state, DG_ARRAY_LEN(F_async_state),        async_state_check};
#undef T

/* ---- the public functions ---------------------------------------------------------------- */

#define DEFINE(x)                                                                                  \
    json_t *dg_wire_##x##_encode(const struct dg_wire_##x *m)                                      \
    {                                                                                              \
        return encode(&M_##x, m);                                                                  \
    }                                                                                              \
    char *dg_wire_##x##_dumps(const struct dg_wire_##x *m)                                         \
    {                                                                                              \
        return dumps(&M_##x, m);                                                                   \
    }                                                                                              \
    int dg_wire_##x##_decode(const json_t *j, struct dg_wire_##x *out, struct dg_err *err)         \
    {                                                                                              \
        return decode(&M_##x, j, out, err);                                                        \
    }                                                                                              \
    int dg_wire_##x##_parse(const char *buf, size_t len, struct dg_wire_##x *out,                  \
                            struct dg_err *err)                                                    \
    {                                                                                              \
        return parse(&M_##x, buf, len, out, err);                                                  \
    }                                                                                              \
    void dg_wire_##x##_free(struct dg_wire_##x *m)                                                 \
    {                                                                                              \
        if (m)                                                                                     \
            msg_free(&M_##x, m);                                                                   \
    }
DG_WIRE_MESSAGES(DEFINE)

int dg_wire_fn_endpoints_decode(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err)
{
    return decode(&M_fn_endpoints, j, out, err);
}

int dg_wire_fn_update_view(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err)
{
    return decode_as(&M_fn_update, j, out, true, err);
}

int dg_wire_fn_endpoints_view(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err)
{
    return decode_as(&M_fn_endpoints, j, out, true, err);
}

void dg_wire_fn_update_view_free(struct dg_wire_fn_update *m)
{
    if (m)
        msg_free_as(&M_fn_update, m, true);
}

int dg_wire_drain_ids_decode(const json_t *j, struct dg_wire_drain *out, struct dg_err *err)
{
    return decode(&M_drain_ids, j, out, err);
}

const json_t *dg_wire_push_items(const json_t *root, struct dg_err *err)
{
    const json_t *v = json_object_get(root, M_push.f[0].name);
    if (!json_is_array(v)) {
        dg_err_set(err, DG_E_INVAL, "field '%s': expected an array, got %s", M_push.f[0].name,
                   dg_json_type_name(v));
        return NULL;
    }
    return v;
}

bool dg_wire_push_is_full(const json_t *root)
{
    return json_is_true(json_object_get(root, M_push.f[1].name));
}

int dg_wire_push_part(const json_t *root, struct dg_wire_push *out, struct dg_err *err)
{
    return decode(&M_push_part, root, out, err);
}

int dg_wire_push_view_fast(const char *buf, size_t len, struct dg_wire_push *out, char **store)
{
    return fast_decode(&M_push, buf, len, out, true, store);
}

void dg_wire_push_view_free(struct dg_wire_push *m, char *store)
{
    if (m)
        msg_free_as(&M_push, m, true);
    free(store);
}

int dg_wire_drains_view_fast(const char *buf, size_t len, struct dg_wire_drain **items, size_t *n,
                             char **store)
{
    struct drain_batch b;
    int rc = fast_decode(&M_drain_batch, buf, len, &b, true, store);
    *items = b.items;
    *n = b.nitems;
    return rc;
}

void dg_wire_drains_view_free(struct dg_wire_drain *items, size_t n, char *store)
{
    struct drain_batch b = {items, n};
    msg_free_as(&M_drain_batch, &b, true);
    free(store);
}

char *dg_wire_push_join(const struct dg_str *items, size_t n, const struct dg_wire_push *m,
                        size_t *len)
{
    struct dg_buf b = {0};
    dg_buf_printf(&b, "{\"%s\":[", M_push.f[0].name);
    for (size_t k = 0; k < n; k++) {
        if (k)
            dg_buf_append(&b, ",", 1);
        dg_buf_append(&b, items[k].ptr, items[k].len);
    }
    dg_buf_append(&b, "]", 1);
    /* the envelope's fields as the table encodes them (at most DG_WIRE_ENVELOPE_MAX bytes) */
    json_t *rest = encode(&M_push_part, m);
    const char *key;
    json_t *v;
    json_object_foreach(rest, key, v)
    {
        if (json_is_boolean(v))
            dg_buf_printf(&b, ",\"%s\":%s", key, json_is_true(v) ? "true" : "false");
        else
            dg_buf_printf(&b, ",\"%s\":%lld", key, (long long)json_integer_value(v));
    }
    json_decref(rest);
    dg_buf_append(&b, "}", 1);
    *len = b.len;
    return b.data;
}

/* ---- parts ------------------------------------------------------------------------------- */

void dg_wire_parts_init(struct dg_wire_parts *p, size_t max)
{
    *p = (struct dg_wire_parts){.max = max};
}

int dg_wire_parts_add(struct dg_wire_parts *p, size_t len, struct dg_err *err)
{
    size_t room = p->max > DG_WIRE_ENVELOPE_MAX ? p->max - DG_WIRE_ENVELOPE_MAX : 0;
    if (len > room)
        return dg_err_set(err, DG_E_LIMIT,
                          "an item of %zu bytes is more than a part holds (%zu bytes with the "
                          "envelope): not sent",
                          len, p->max);
    if (p->parts && p->used + 1 + len <= room) {
        p->used += 1 + len;
        p->items++;
        return DG_WIRE_PART_SAME;
    }
    p->parts++;
    p->used = len;
    p->items = 1;
    return DG_WIRE_PART_NEW;
}

json_t *dg_wire_delete_item_encode(const char *id)
{
    return jstring(id);
}

/* One batch item that is a checked string (a sandbox id, a function name). */
static int string_item_decode(const json_t *j, const char *what, enum chk chk, const char **out,
                              struct dg_err *err)
{
    char q[80];
    if (!json_is_string(j) || strlen(json_string_value(j)) != json_string_length(j))
        return dg_err_set(err, DG_E_INVAL, "expected %s (string), got %s", what,
                          json_is_string(j) ? "a string with a NUL" : dg_json_type_name(j));
    const char *bad = check_str(chk, json_string_value(j));
    if (bad)
        return dg_err_set(err, DG_E_INVAL, "%s, got %s", bad,
                          quote(json_string_value(j), q, sizeof(q)));
    *out = json_string_value(j);
    return 0;
}

int dg_wire_delete_item_decode(const json_t *j, const char **id, struct dg_err *err)
{
    return string_item_decode(j, "a sandbox id", C_ID, id, err);
}

json_t *dg_wire_forget_item_encode(const char *name)
{
    return jstring(name);
}

int dg_wire_forget_item_decode(const json_t *j, const char **name, struct dg_err *err)
{
    return string_item_decode(j, "a function name", C_FN, name, err);
}

/* ---- batches ----------------------------------------------------------------------------- */

static const char K_ITEMS[] = "items", K_I[] = "i", K_STATUS[] = "status", K_BODY[] = "body",
                  K_JSON[] = "json";

json_t *dg_wire_batch_encode(json_t *items)
{
    json_t *o = json_object();
    json_object_set_new(o, K_ITEMS, items);
    return o;
}

void dg_wire_batch_open(struct dg_buf *b)
{
    dg_buf_printf(b, "{\"%s\":[", K_ITEMS);
}

void dg_wire_batch_append(struct dg_buf *b, size_t k, const char *item, size_t len)
{
    if (k)
        dg_buf_append(b, ",", 1);
    dg_buf_append(b, item, len);
}

void dg_wire_batch_close(struct dg_buf *b)
{
    dg_buf_append(b, "]}", 2);
}

json_t *dg_wire_batch_items(const json_t *root, struct dg_err *err)
{
    json_t *items = json_object_get(root, K_ITEMS);
    if (!json_is_array(items) || json_array_size(items) == 0) {
        dg_err_set(err, DG_E_INVAL, "field '%s': expected a non-empty array", K_ITEMS);
        return NULL;
    }
    return items;
}

/* True when `s` needs no escaping in a JSON string: printable ASCII but '"' and '\\'. */
static bool plain_text(const char *s, size_t len)
{
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)s[k];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            return false;
    }
    return true;
}

char *dg_wire_batch_line_dumps(size_t i, int status, const char *body, size_t len)
{
    if (!body || plain_text(body, len)) { /* the usual answer: what the encoder would write */
        struct dg_buf b = {0};
        dg_buf_reserve(&b, len + 48);
        dg_buf_printf(&b, "{\"%s\":%zu,\"%s\":%d,\"%s\":\"", K_I, i, K_STATUS, status, K_BODY);
        dg_buf_append(&b, body ? body : "", body ? len : 0);
        dg_buf_append(&b, "\"}", 2);
        return b.data;
    }
    json_t *o = json_object();
    json_object_set_new(o, K_I, json_integer((json_int_t)i));
    json_object_set_new(o, K_STATUS, json_integer(status));
    json_t *b = json_stringn(body ? body : "", body ? len : 0);
    if (!b && body) { /* not UTF-8: keep the length, lose the odd bytes */
        char *c = dg_xmalloc(len + 1);
        for (size_t k = 0; k < len; k++)
            c[k] = (unsigned char)body[k] >= 0x80 ? '?' : body[k];
        b = json_stringn(c, len);
        free(c);
    }
    json_object_set_new(o, K_BODY, b);
    char *s = dg_json_dumps(o);
    json_decref(o);
    return s;
}

char *dg_wire_batch_line_json(size_t i, int status, const char *json, size_t len)
{
    struct dg_buf b = {0};
    dg_buf_reserve(&b, len + 48);
    dg_buf_printf(&b, "{\"%s\":%zu,\"%s\":%d,\"%s\":", K_I, i, K_STATUS, status, K_JSON);
    dg_buf_append(&b, json, len);
    dg_buf_append(&b, "}", 1);
    return b.data;
}

/* The digits of a JSON integer at *p (no sign, no leading zero, at most `maxd` digits): its
 * value, *p moved past them; -1 when there are none or too many. */
static int64_t line_uint(const char **p, const char *end, int maxd)
{
    const char *s = *p;
    int64_t v = 0;
    int n = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (++n > maxd) /* 18 digits at most: no overflow */
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (n == 0 || (n > 1 && **p == '0'))
        return -1;
    *p = s;
    return v;
}

static bool line_lit(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* The two compact lines, read without a JSON parser: {"i":N,"status":S, then "json": and an
 * object that ends the line (the object is the body, for its receiver to decode: the one
 * parse it gets), or "body":"TEXT"} with TEXT printable ASCII but '"' and '\\' (what needs no
 * unescaping). 1: read; 0: not one of these forms (the full parser reads it, or refuses). */
static int line_compact(const char *buf, size_t len, struct dg_wire_batch_line *out)
{
    const char *p = buf, *end = buf + len;
    int64_t i, st;
    if (!line_lit(&p, end, "{\"i\":") || (i = line_uint(&p, end, 18)) < 0 ||
        !line_lit(&p, end, ",\"status\":") || (st = line_uint(&p, end, 3)) < 0)
        return 0;
    if (line_lit(&p, end, ",\"json\":{")) {
        if (end - p < 2 || end[-1] != '}' || end[-2] != '}' || memchr(p, '\0', (size_t)(end - p)))
            return 0; /* a NUL is never JSON text: the full parser refuses it */
        out->body = (struct dg_str){p - 1, (size_t)(end - 1 - (p - 1))};
        out->json = true;
    } else if (line_lit(&p, end, ",\"body\":\"")) {
        if (end - p < 2 || end[-1] != '}' || end[-2] != '"' ||
            !plain_text(p, (size_t)(end - 2 - p)))
            return 0;
        out->body = (struct dg_str){p, (size_t)(end - 2 - p)};
    } else {
        return 0;
    }
    out->i = i;
    out->status = st;
    return 1;
}

int dg_wire_batch_line_parse(const char *buf, size_t len, struct dg_wire_batch_line *out,
                             struct dg_err *err)
{
    memset(out, 0, sizeof(*out));
    if (buf && line_compact(buf, len, out))
        return 0;
    json_error_t je;
    /* as dg_json_parse, but a body may hold a NUL (\u0000) */
    out->root_ =
        json_loadb(buf ? buf : "", buf ? len : 0, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!out->root_)
        return dg_err_set(err, DG_E_PROTO, "invalid JSON at line %d column %d: %s", je.line,
                          je.column, je.text);
    int rc;
    const json_t *b = json_object_get(out->root_, K_BODY);
    if ((rc = dg_json_get_int(out->root_, K_I, true, 0, INT64_MAX, &out->i, err)) < 0 ||
        (rc = dg_json_get_int(out->root_, K_STATUS, true, 0, 999, &out->status, err)) < 0)
        goto bad;
    if (b && !json_is_string(b)) {
        rc = dg_err_set(err, DG_E_INVAL, "field '%s': expected string, got %s", K_BODY,
                        dg_json_type_name(b));
        goto bad;
    }
    /* a body may hold any byte (NUL too): a view with its length */
    out->body =
        b ? (struct dg_str){json_string_value(b), json_string_length(b)} : (struct dg_str){"", 0};
    return 0;
bad:
    dg_wire_batch_line_free(out);
    return rc;
}

void dg_wire_batch_line_free(struct dg_wire_batch_line *l)
{
    json_decref(l->root_);
    memset(l, 0, sizeof(*l));
}

bool dg_wire_beat_answer_is_resync(const char *body, size_t len)
{
    size_t n = sizeof(K_RESYNC) - 1;
    return body && len >= n && memcmp(body, K_RESYNC, n) == 0;
}

void dg_wire_beat_set_resync(json_t *beat, bool resync)
{
    json_object_set_new(beat, K_RESYNC, json_boolean(resync));
}

/* ---- round trips (tests, fuzzing) -------------------------------------------------------- */

#define LIST_MSG(x) &M_##x,
static const struct msg *const all[] = {DG_WIRE_MESSAGES(LIST_MSG) & M_fn_endpoints, &M_drain_ids,
                                        &M_drain_batch};

/* Decode `j` as `m`; on success encode, decode the encoding and encode again: both encodings
 * must be the same text (what a decode accepts, an encode reproduces). The view decode (its
 * strings borrowed) must accept and refuse the same, with the same encoding or error. */
static int roundtrip(const struct msg *m, const json_t *j, struct dg_err *err)
{
    void *a = dg_xmalloc(m->size), *b = dg_xmalloc(m->size), *c = dg_xmalloc(m->size);
    int rc = decode(m, j, a, err);
    struct dg_err e3 = {0};
    int rc_view = decode_as(m, j, c, true, &e3);
    if (rc != rc_view || (rc < 0 && strcmp(err->msg, e3.msg) != 0))
        abort(); /* the view decode judges otherwise */
    if (rc == 0) {
        json_t *e1 = encode(m, a);
        struct dg_err e2 = {0};
        if (decode(m, e1, b, &e2) < 0)
            abort(); /* an encoding its own decoder refuses */
        char *s1 = dg_json_dumps(e1), *s2 = dumps(m, b), *s3 = dumps(m, c);
        if (strcmp(s1, s2) != 0 || strcmp(s1, s3) != 0)
            abort(); /* the encoding changed in a round trip, or from the view */
        free(s1);
        free(s2);
        free(s3);
        json_decref(e1);
        msg_free(m, a);
        msg_free(m, b);
        msg_free_as(m, c, true);
    }
    free(a);
    free(b);
    free(c);
    return rc;
}

/* The fast path (fast_decode) accepts only what jansson and the tables accept, and decodes it
 * the same, copied and viewed (aborts otherwise). */
static void fast_agrees(const struct msg *m, const char *buf, size_t len)
{
    void *a = dg_xmalloc(m->size), *b = dg_xmalloc(m->size), *c = dg_xmalloc(m->size);
    char *none, *store;
    int rc = fast_decode(m, buf, len, a, false, &none);
    if (rc != fast_decode(m, buf, len, c, true, &store) || none)
        abort(); /* the view judges otherwise, or kept a copy it does not need */
    if (rc == 0) {
        json_t *j;
        struct dg_err e = {0};
        if (dg_json_parse(buf, len, &j, &e) < 0)
            abort(); /* accepted what is not JSON to jansson */
        if (decode(m, j, b, &e) < 0)
            abort(); /* accepted what the tables refuse */
        char *s1 = dumps(m, a), *s2 = dumps(m, b), *s3 = dumps(m, c);
        if (strcmp(s1, s2) != 0 || strcmp(s1, s3) != 0)
            abort(); /* decoded otherwise */
        free(s1);
        free(s2);
        free(s3);
        json_decref(j);
        msg_free(m, a);
        msg_free(m, b);
        msg_free_as(m, c, true);
        free(store);
    }
    free(a);
    free(b);
    free(c);
}

int dg_wire_roundtrip_nth(size_t i, const char *buf, size_t len, const char **name,
                          struct dg_err *err)
{
    size_t nall = DG_ARRAY_LEN(all);
    if (i > nall + 1)
        return -1;
    if (name)
        *name = i < nall ? all[i]->name : i == nall ? "delete_item" : "batch_line";
    if (i == nall + 1) { /* a line of a batch's answer, and back */
        struct dg_wire_batch_line l, l2;
        int rc = dg_wire_batch_line_parse(buf, len, &l, err);
        if (rc < 0)
            return rc;
        char *s =
            l.json ? dg_wire_batch_line_json((size_t)l.i, (int)l.status, l.body.ptr, l.body.len)
                   : dg_wire_batch_line_dumps((size_t)l.i, (int)l.status, l.body.ptr, l.body.len);
        struct dg_err e2 = {0};
        if (dg_wire_batch_line_parse(s, strlen(s), &l2, &e2) < 0 || l2.i != l.i ||
            l2.status != l.status || l2.json != l.json || l2.body.len != l.body.len ||
            (l.body.len && memcmp(l2.body.ptr, l.body.ptr, l.body.len) != 0))
            abort(); /* a line its own parser reads otherwise */
        dg_wire_batch_line_free(&l2);
        dg_wire_batch_line_free(&l);
        free(s);
        return 0;
    }
    if (i < nall)
        fast_agrees(all[i], buf, len);
    json_t *j;
    int rc = dg_json_parse(buf, len, &j, err);
    if (rc < 0)
        return rc;
    if (i < nall) {
        rc = roundtrip(all[i], j, err);
    } else { /* the batch body of deletes: {"items":[id, ...]} is the batch's; here one item */
        const char *id = NULL;
        rc = json_is_array(j) && json_array_size(j)
                 ? dg_wire_delete_item_decode(json_array_get(j, 0), &id, err)
                 : dg_err_set(err, DG_E_INVAL, "expected an array");
        if (rc == 0) {
            json_t *e = dg_wire_delete_item_encode(id);
            if (!json_equal(e, json_array_get(j, 0)))
                abort();
            json_decref(e);
        }
    }
    json_decref(j);
    return rc;
}
