/*
 * config.c: the schema-driven configuration of every program (config.h). One table of
 * dg_conf_field gives each key its type, offset in the program's config struct, default,
 * bounds and help; everything here is driven by that table.
 *
 * Every value, whatever its source (default, YAML file, environment, --set), is text turned
 * into a typed value by one function, parse_text(), so the same spelling works everywhere and
 * errors read the same: "CONTEXT: expected <what the type wants>, got '<text>'", where CONTEXT
 * is "PATH:LINE: KEY", "--set KEY", "environment VAR (key KEY)" or "default of KEY".
 *
 * Loading never half-applies: each source first collects its converted values in a list of
 * assignments and only commits them to the struct when all of them parsed, so a failed load
 * or --set leaves the config as it was.
 *
 * YAML is read with libyaml's event parser (not libcyaml) because errors must carry line
 * numbers. Nested mappings become dotted keys; only known key prefixes may open a mapping; a
 * sequence is only accepted for a list key; aliases are rejected (an anchor alone is harmless).
 * A dotted key written flat in a file ("redis.address: x") is accepted too. Duplicate keys are
 * an error rather than "the later wins", since a duplicate is almost always a mistake.
 *
 * The original's keys (config_compat.h, lib/config_compat.c) are looked up only where a key or a value
 * is not ours. Their values are converted at once (so errors still carry the line) but joined
 * to ours only after the whole file, where a key of ours for the same setting wins and the two
 * halves of a split IP:PORT meet; the warnings are then sorted into file order.
 */
#include "dirigent/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#define MS_PER_S 1000
#define MS_PER_M (60 * MS_PER_S)
#define MS_PER_H (60 * MS_PER_M)

/* One typed value; which member is live depends on the field's type. */
union conf_val {
    bool b;
    int64_t i;
    double d;
    char *s;             /* STRING, ENUM: owned */
    struct dg_strlist l; /* STRLIST: owned */
};

/* Converted values waiting to be committed to the config struct. */
struct assign {
    const struct dg_conf_field *f;
    union conf_val v;
};

struct assigns {
    struct assign *v;
    size_t n, cap;
};

/* ---- small helpers ---- */

static bool strlist_has(const struct dg_strlist *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

static struct dg_str trim(const char *s, size_t len)
{
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    return (struct dg_str){s, len};
}

/* "'text'" for error messages, cut to a readable length. Returns buf. */
static const char *quoted(const char *s, char *buf, size_t n)
{
    if (strlen(s) > 60)
        snprintf(buf, n, "'%.60s...'", s);
    else
        snprintf(buf, n, "'%s'", s);
    return buf;
}

static bool has_bounds(const struct dg_conf_field *f)
{
    return f->type == DG_CONF_DOUBLE ? !(f->dmin == 0 && f->dmax == 0)
                                     : !(f->min == 0 && f->max == 0);
}

static void val_free(const struct dg_conf_field *f, union conf_val *v)
{
    if (f->type == DG_CONF_STRING || f->type == DG_CONF_ENUM) {
        free(v->s);
        v->s = NULL;
    } else if (f->type == DG_CONF_STRLIST) {
        dg_strlist_free(&v->l);
    }
}

/* Bytes of the struct member behind a field of type `t` (all union members start at 0). */
static size_t val_size(enum dg_conf_type t)
{
    return t == DG_CONF_BOOL                          ? sizeof(bool)
           : t == DG_CONF_DOUBLE                      ? sizeof(double)
           : t == DG_CONF_STRING || t == DG_CONF_ENUM ? sizeof(char *)
           : t == DG_CONF_STRLIST                     ? sizeof(struct dg_strlist)
                                                      : sizeof(int64_t);
}

/* A borrowed copy of the value in the config struct. */
static union conf_val val_load(const struct dg_conf_field *f, const void *cfg)
{
    union conf_val v;
    memset(&v, 0, sizeof(v));
    memcpy(&v, (const char *)cfg + f->offset, val_size(f->type));
    return v;
}

/* Move `v` into the config struct, freeing the value it replaces. */
static void val_store(const struct dg_conf_field *f, void *cfg, const union conf_val *v)
{
    union conf_val old = val_load(f, cfg);
    val_free(f, &old);
    memcpy((char *)cfg + f->offset, v, val_size(f->type));
}

static void assigns_push(struct assigns *a, const struct dg_conf_field *f, union conf_val v)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 8;
        a->v = dg_xrealloc(a->v, a->cap * sizeof(*a->v));
    }
    a->v[a->n++] = (struct assign){f, v};
}

static bool assigns_has(const struct assigns *a, const struct dg_conf_field *f)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].f == f)
            return true;
    return false;
}

/* Commit the collected values in order to `cfg`, or drop them when `cfg` is NULL. */
static void assigns_end(struct assigns *a, void *cfg)
{
    for (size_t i = 0; i < a->n; i++) {
        if (cfg)
            val_store(a->v[i].f, cfg, &a->v[i].v);
        else
            val_free(a->v[i].f, &a->v[i].v);
    }
    free(a->v);
    *a = (struct assigns){0};
}

/* ---- text formats of durations and sizes ---- */

struct unit {
    const char *name;
    int64_t mul;
};

/* Largest first: the first unit that divides a value exactly is the one printed. Durations
 * count milliseconds; sizes are binary (K = KB = KiB = 1024, as --help says). */
static const struct unit duration_units[] = {
    {"h", MS_PER_H}, {"m", MS_PER_M}, {"s", MS_PER_S}, {"ms", 1}, {NULL, 0}};
static const struct unit size_units[] = {
    {"TiB", 1LL << 40}, {"T", 1LL << 40}, {"TB", 1LL << 40}, {"GiB", 1 << 30}, {"G", 1 << 30},
    {"GB", 1 << 30},    {"MiB", 1 << 20}, {"M", 1 << 20},    {"MB", 1 << 20},  {"KiB", 1024},
    {"K", 1024},        {"KB", 1024},     {"B", 1},          {NULL, 0}};

/* "<number><unit>", several in a row when `repeat` ("1h30m"); units are case-insensitive and
 * may follow a space. A bare number (base unit) must be the whole text. Fractions keep six
 * digits and round down ("1.5s" = 1500 ms). False on junk or overflow. */
static bool parse_units(struct dg_str t, const struct unit *units, bool repeat, int64_t *out)
{
    const char *p = t.ptr, *end = t.ptr + t.len;
    int64_t total = 0;
    if (p == end)
        return false;
    for (bool first = true; p < end; first = false) {
        int64_t ip = 0, fr = 0, sc = 1, mul = 0, part;
        int digits = 0;
        if (!first && !repeat)
            return false;
        for (; p < end && isdigit((unsigned char)*p); p++, digits++)
            if (__builtin_mul_overflow(ip, 10, &ip) || __builtin_add_overflow(ip, *p - '0', &ip))
                return false;
        if (p < end && *p == '.')
            for (p++; p < end && isdigit((unsigned char)*p); p++, digits++)
                if (sc < 1000000) {
                    fr = fr * 10 + (*p - '0');
                    sc *= 10;
                }
        while (p < end && *p == ' ')
            p++;
        struct dg_str name = {p, 0};
        while (p < end && isalpha((unsigned char)*p))
            p++, name.len++;
        if (name.len == 0 && first && p == end)
            mul = 1;
        for (size_t i = 0; units[i].name && !mul && name.len; i++)
            if (dg_str_caseeq(name, units[i].name))
                mul = units[i].mul;
        if (digits == 0 || mul == 0 || __builtin_mul_overflow(ip, mul, &part) ||
            __builtin_add_overflow(part, fr * mul / sc, &part) ||
            __builtin_add_overflow(total, part, &total))
            return false;
    }
    *out = total;
    return true;
}

/* The shortest %g spelling that reads back as the same double. */
static void fmt_double(double d, char *buf, size_t n)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* An INT, DURATION ("90s", "250ms", "0") or SIZE ("3MiB", "512") as text that parses back. */
static void fmt_i64(const struct dg_conf_field *f, int64_t v, char *buf, size_t n)
{
    const struct unit *u = f->type == DG_CONF_DURATION ? duration_units
                           : f->type == DG_CONF_SIZE   ? size_units
                                                       : NULL;
    for (size_t i = 0; u && u[i].name; i++) {
        if (v != 0 && u[i].mul > 1 && v % u[i].mul == 0) {
            snprintf(buf, n, "%" PRId64 "%s", v / u[i].mul, u[i].name);
            return;
        }
    }
    snprintf(buf, n, "%" PRId64 "%s", v, u == duration_units && v ? "ms" : "");
}

/* "1..65535", ">= 1", "0..1": the bounds of a field, empty when it has none. */
static void range_text(const struct dg_conf_field *f, char *buf, size_t n)
{
    char lo[40], hi[40];
    buf[0] = '\0';
    if (!has_bounds(f))
        return;
    if (f->type == DG_CONF_DOUBLE) {
        fmt_double(f->dmin, lo, sizeof(lo));
        fmt_double(f->dmax, hi, sizeof(hi));
        snprintf(buf, n, "%s..%s", lo, hi);
        return;
    }
    fmt_i64(f, f->min, lo, sizeof(lo));
    fmt_i64(f, f->max, hi, sizeof(hi));
    if (f->max == INT64_MAX)
        snprintf(buf, n, ">= %s", lo);
    else if (f->min == INT64_MIN)
        snprintf(buf, n, "<= %s", hi);
    else
        snprintf(buf, n, "%s..%s", lo, hi);
}

/* What a field accepts, as the object of "expected ...". */
static void expect_text(const struct dg_conf_field *f, char *buf, size_t n)
{
    static const char *const noun[] = {"a boolean (true or false)",
                                       "an integer",
                                       "a number",
                                       "a string",
                                       "one of ",
                                       "a duration",
                                       "a size",
                                       "a list of strings"};
    static const char *const like[] = {[DG_CONF_DURATION] = "like 250ms, 2s or 1m",
                                       [DG_CONF_SIZE] = "like 512, 16KiB or 10MiB",
                                       [DG_CONF_STRLIST] = NULL};
    char r[96];
    range_text(f, r, sizeof(r));
    const char *ex = like[f->type];
    if (f->type == DG_CONF_ENUM) {
        size_t len = (size_t)snprintf(buf, n, "%s", noun[f->type]);
        for (size_t i = 0; f->choices && f->choices[i] && len < n; i++)
            len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? "|" : "", f->choices[i]);
    } else if (ex && r[0]) {
        snprintf(buf, n, "%s %s (%s)", noun[f->type], r, ex);
    } else {
        snprintf(buf, n, "%s%s%s", noun[f->type], r[0] || ex ? " " : "", r[0] ? r : ex ? ex : "");
    }
}

/* ---- the one value parser ---- */

/* Turn `text` into a value of field `f` (numbers, booleans and units tolerate surrounding
 * blanks). True with *out set (owned by the caller), or false. */
static bool parse_text(const struct dg_conf_field *f, const char *text, union conf_val *out)
{
    static const char *const truthy[] = {"true", "yes", "on", "1"};
    static const char *const falsy[] = {"false", "no", "off", "0"};
    struct dg_str t = trim(text, strlen(text));
    memset(out, 0, sizeof(*out));
    switch (f->type) {
    case DG_CONF_BOOL:
        for (size_t i = 0; i < DG_ARRAY_LEN(truthy); i++) {
            if (dg_str_caseeq(t, truthy[i]) || dg_str_caseeq(t, falsy[i])) {
                out->b = dg_str_caseeq(t, truthy[i]);
                return true;
            }
        }
        return false;
    case DG_CONF_INT:
    case DG_CONF_DURATION:
    case DG_CONF_SIZE:
        if (f->type == DG_CONF_INT        ? !dg_str_to_i64(t, &out->i)
            : f->type == DG_CONF_DURATION ? !parse_units(t, duration_units, true, &out->i)
                                          : !parse_units(t, size_units, false, &out->i))
            return false;
        return !has_bounds(f) || (out->i >= f->min && out->i <= f->max);
    case DG_CONF_DOUBLE: {
        char *s = dg_str_dup(t), *end;
        out->d = strtod(s, &end);
        bool ok = t.len > 0 && *end == '\0' && isfinite(out->d);
        free(s);
        return ok && (!has_bounds(f) || (out->d >= f->dmin && out->d <= f->dmax));
    }
    case DG_CONF_STRING:
        out->s = dg_xstrdup(text);
        return true;
    case DG_CONF_ENUM:
        for (size_t i = 0; f->choices && f->choices[i]; i++) {
            if (dg_str_caseeq(t, f->choices[i])) {
                out->s = dg_xstrdup(f->choices[i]);
                return true;
            }
        }
        return false;
    case DG_CONF_STRLIST:
        for (const char *p = text;;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            struct dg_str item = trim(p, len);
            if (item.len > 0)
                dg_strlist_push(&out->l, dg_str_dup(item));
            if (!comma)
                break;
            p = comma + 1;
        }
        return true;
    }
    return false;
}

/* "CTX: expected <f's type>, got GOT" into err; returns the code. */
static int type_error(const struct dg_conf_field *f, const char *ctx, const char *got,
                      struct dg_err *err)
{
    char exp[160];
    expect_text(f, exp, sizeof(exp));
    return dg_err_set(err, DG_E_INVAL, "%s: expected %s, got %s", ctx, exp, got);
}

static int convert(const struct dg_conf_field *f, const char *text, union conf_val *out,
                   const char *ctx, struct dg_err *err)
{
    char q[80];
    if (parse_text(f, text, out))
        return 0;
    return type_error(f, ctx, quoted(text, q, sizeof(q)), err);
}

/* ---- keys ---- */

static const struct dg_conf_field *find_field(const struct dg_conf_schema *s, const char *key,
                                              size_t len)
{
    for (size_t i = 0; i < s->nfields; i++)
        if (strncmp(s->fields[i].key, key, len) == 0 && s->fields[i].key[len] == '\0')
            return &s->fields[i];
    return NULL;
}

/* True when `path` names a group: some key starts with "path.". */
static bool is_group(const struct dg_conf_schema *s, const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < s->nfields; i++)
        if (strncmp(s->fields[i].key, path, len) == 0 && s->fields[i].key[len] == '.')
            return true;
    return false;
}

/* Case-insensitive Levenshtein distance; long strings count as far apart. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    size_t row[65];
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            row[j] = DG_MIN(DG_MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
            diag = up;
        }
    }
    return row[lb];
}

/* The key or key group ("redis") closest to `key` within distance 2, or {NULL, 0}. */
static struct dg_str suggest(const struct dg_conf_schema *s, const char *key)
{
    struct dg_str best = {NULL, 0};
    size_t best_d = 3, klen = strlen(key);
    for (size_t i = 0; i < s->nfields; i++) {
        const char *k = s->fields[i].key;
        for (const char *end = k;; end++) {
            if (*end != '.' && *end != '\0')
                continue;
            size_t len = (size_t)(end - k), d = edit_distance(key, klen, k, len);
            bool same = len == klen && memcmp(key, k, len) == 0; /* a group used as a key */
            if (!same && d < best_d && d < klen) {
                best_d = d;
                best = (struct dg_str){k, len};
            }
            if (*end == '\0')
                break;
        }
    }
    return best;
}

/* "CTX: unknown key 'KEY' (did you mean 'port'?)" */
static int unknown_key(const struct dg_conf_schema *s, const char *ctx, const char *key,
                       struct dg_err *err)
{
    struct dg_str m = suggest(s, key);
    if (m.ptr)
        return dg_err_set(err, DG_E_INVAL, "%s: unknown key '%s' (did you mean '%.*s'?)", ctx, key,
                          (int)m.len, m.ptr);
    return dg_err_set(err, DG_E_INVAL, "%s: unknown key '%s'", ctx, key);
}

/* Convert and store one value; on error `cfg` is untouched. */
static int set_text(const struct dg_conf_field *f, void *cfg, const char *text, const char *ctx,
                    struct dg_err *err)
{
    union conf_val v;
    int rc = convert(f, text, &v, ctx, err);
    if (rc == 0)
        val_store(f, cfg, &v);
    return rc;
}

/* ---- YAML files ---- */

/* A warning about one of the original's keys, kept with its line to be sorted into file order. */
struct warning {
    size_t line, seq;
    char *text;
};

/* A value of one of the original's keys for our key `f`, committed after the file unless the
 * file also sets `f` itself (ours wins). */
struct compat_assign {
    const struct dg_conf_field *f;
    union conf_val v;
    size_t line;
    const char *key;                /* the original's key (the entry's, static) */
    char *warning;                  /* the text after "PATH:LINE: " */
    const struct dg_conf_field *to; /* our key (f is NULL for the second part of an address) */
};

/* The parts of one IP:PORT key given as the original's separate keys. */
struct hostport {
    const char *to;
    char *part[2]; /* [0] host, [1] port: owned, NULL when not in the file */
    size_t line[2];
    const struct dg_conf_compat *c[2];
};

struct loader {
    const struct dg_conf_schema *s;
    const char *path;
    yaml_parser_t parser;
    struct assigns out;
    struct dg_err *err;
    const struct dg_conf_compat *compat;
    size_t ncompat;
    struct warning *warn;
    size_t nwarn;
    struct compat_assign *cas;
    size_t ncas;
    struct hostport hp[4];
    size_t nhp;
};

static int load_mapping(struct loader *ld, const char *prefix);

static int next_event(struct loader *ld, yaml_event_t *ev)
{
    if (yaml_parser_parse(&ld->parser, ev))
        return 0;
    return dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: invalid YAML: %s", ld->path,
                      ld->parser.problem_mark.line + 1,
                      ld->parser.problem ? ld->parser.problem : "cannot parse");
}

/* A plain `~`, `null` or empty scalar. */
static bool is_null(const yaml_event_t *ev)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    for (size_t i = 0; i < DG_ARRAY_LEN(nulls); i++)
        if (strcmp((const char *)ev->data.scalar.value, nulls[i]) == 0)
            return true;
    return false;
}

static const char *node_kind(const yaml_event_t *ev)
{
    return ev->type == YAML_MAPPING_START_EVENT    ? "a mapping"
           : ev->type == YAML_SEQUENCE_START_EVENT ? "a list"
           : ev->type == YAML_ALIAS_EVENT          ? "an alias"
                                                   : "a scalar";
}

/* The items of a list key, after its SEQUENCE_START; plain null items are dropped. */
static int load_sequence(struct loader *ld, const char *key, struct dg_strlist *out)
{
    struct dg_strlist l = {0};
    yaml_event_t ev;
    int rc;
    for (;;) {
        if ((rc = next_event(ld, &ev)))
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            *out = l;
            return 0;
        }
        size_t line = ev.start_mark.line + 1;
        if (ev.type != YAML_SCALAR_EVENT) {
            rc = dg_err_set(ld->err, DG_E_INVAL,
                            "%s:%zu: %s: expected a list of strings, got %s item", ld->path, line,
                            key, node_kind(&ev));
            yaml_event_delete(&ev);
            break;
        }
        if (!is_null(&ev))
            dg_strlist_push(&l,
                            dg_xstrndup((const char *)ev.data.scalar.value, ev.data.scalar.length));
        yaml_event_delete(&ev);
    }
    dg_strlist_free(&l);
    return rc;
}

/* ---- the original's keys ---- */

static void add_warning(struct loader *ld, size_t line, char *text)
{
    ld->warn = dg_xrealloc(ld->warn, (ld->nwarn + 1) * sizeof(*ld->warn));
    ld->warn[ld->nwarn] = (struct warning){line, ld->nwarn, text};
    ld->nwarn++;
}

/* The entry for `path`: the exact key, else a "group.*" entry covering it. */
static const struct dg_conf_compat *find_compat(const struct loader *ld, const char *path)
{
    for (size_t i = 0; i < ld->ncompat; i++)
        if (strcmp(ld->compat[i].key, path) == 0)
            return &ld->compat[i];
    for (size_t i = 0; i < ld->ncompat; i++) {
        const char *k = ld->compat[i].key;
        size_t len = strlen(k);
        if (len >= 2 && strcmp(k + len - 2, ".*") == 0 && strncmp(path, k, len - 1) == 0)
            return &ld->compat[i];
    }
    return NULL;
}

/* True when some entry lies under "path." (so `path: {...}` is the original's group). */
static bool is_compat_group(const struct loader *ld, const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < ld->ncompat; i++)
        if (strncmp(ld->compat[i].key, path, len) == 0 && ld->compat[i].key[len] == '.')
            return true;
    return false;
}

/* Consume the rest of a node that started with `ev` (a mapping or a list: up to its end). */
static int skip_node(struct loader *ld, const yaml_event_t *ev)
{
    int depth = ev->type == YAML_MAPPING_START_EVENT || ev->type == YAML_SEQUENCE_START_EVENT;
    while (depth > 0) {
        yaml_event_t e;
        int rc = next_event(ld, &e);
        if (rc)
            return rc;
        if (e.type == YAML_MAPPING_START_EVENT || e.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (e.type == YAML_MAPPING_END_EVENT || e.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        yaml_event_delete(&e);
    }
    return 0;
}

static const struct dg_conf_field *compat_target(struct loader *ld, const struct dg_conf_compat *c,
                                                 size_t line)
{
    const struct dg_conf_field *f = c->to ? find_field(ld->s, c->to, strlen(c->to)) : NULL;
    if (!f)
        dg_err_set(ld->err, DG_E_INVAL,
                   "%s:%zu: %s: the original's key maps to '%s', which %s "
                   "does not have (a bug: please report it)",
                   ld->path, line, c->key, c->to ? c->to : "(none)", ld->s->prog);
    return f;
}

/* The scalar `vev` of the original's key `path` (entry `c`; `f` is our field of the same name,
 * if any). *native is set when the value is ours after all and must load as usual. */
static int load_compat(struct loader *ld, const struct dg_conf_compat *c,
                       const struct dg_conf_field *f, const char *path, const yaml_event_t *vev,
                       bool *native)
{
    size_t line = vev->start_mark.line + 1;
    const char *text = is_null(vev) ? "" : (const char *)vev->data.scalar.value;
    const char *note = NULL, *out = text;
    char buf[512], q[80];
    *native = false;
    if (c->kind == DG_COMPAT_IGNORE) {
        add_warning(ld, line, dg_xasprintf("%s: ignored: %s", path, c->why));
        return 0;
    }
    if (c->value) {
        struct dg_err e = {0};
        buf[0] = '\0';
        int r = c->value(text, buf, sizeof(buf), &note, &e);
        if (r < 0)
            return dg_err_set(ld->err, r, "%s:%zu: %s: %s", ld->path, line, path, e.msg);
        if (r == DG_COMPAT_SAME && f) {
            *native = true;
            return 0;
        }
        if (r == DG_COMPAT_DROP) {
            add_warning(ld, line,
                        dg_xasprintf("%s: ignored: %s", path,
                                     note     ? note
                                     : c->why ? c->why
                                              : ""));
            return 0;
        }
        if (r == DG_COMPAT_USE)
            out = buf;
    } else if (f) {
        *native = true;
        return 0;
    }
    const char *why = note ? note : c->why;
    if (c->kind == DG_COMPAT_HOST || c->kind == DG_COMPAT_PORT) {
        int part = c->kind == DG_COMPAT_PORT;
        struct hostport *hp = NULL;
        for (size_t i = 0; i < ld->nhp && !hp; i++)
            if (strcmp(ld->hp[i].to, c->to) == 0)
                hp = &ld->hp[i];
        if (!hp) {
            if (ld->nhp == DG_ARRAY_LEN(ld->hp))
                return dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: %s: too many split addresses",
                                  ld->path, line, path);
            hp = &ld->hp[ld->nhp++];
            *hp = (struct hostport){.to = c->to};
        }
        free(hp->part[part]);
        hp->part[part] = dg_xstrdup(out);
        hp->line[part] = line;
        hp->c[part] = c;
        return 0;
    }
    const struct dg_conf_field *t = compat_target(ld, c, line);
    if (!t)
        return ld->err->code;
    char ctx[512];
    snprintf(ctx, sizeof(ctx), "%s:%zu: %s (the original's key for %s)", ld->path, line, path,
             t->key);
    union conf_val v;
    int rc = convert(t, out, &v, ctx, ld->err);
    if (rc)
        return rc;
    char *w;
    if (strcmp(c->key, t->key) == 0)
        w = dg_xasprintf("%s: %s is the original's value; using %s: %s%s%s%s", path,
                         quoted(text, q, sizeof(q)), t->key, out, why ? " (" : "", why ? why : "",
                         why ? ")" : "");
    else
        w = dg_xasprintf("%s: the original's key; using %s: %s%s%s%s", path, t->key, out,
                         why ? " (" : "", why ? why : "", why ? ")" : "");
    ld->cas = dg_xrealloc(ld->cas, (ld->ncas + 1) * sizeof(*ld->cas));
    ld->cas[ld->ncas++] = (struct compat_assign){t, v, line, c->key, w, t};
    return 0;
}

/* After the file: the original's values join ours unless the file set the same key itself. */
static int compat_finish(struct loader *ld)
{
    for (size_t i = 0; i < ld->nhp; i++) {
        struct hostport *hp = &ld->hp[i];
        size_t line = hp->line[0] ? hp->line[0] : hp->line[1];
        const struct dg_conf_compat *c0 = hp->c[0] ? hp->c[0] : hp->c[1];
        const struct dg_conf_field *t = compat_target(ld, c0, line);
        if (!t)
            return ld->err->code;
        const char *host = hp->part[0]                 ? hp->part[0]
                           : hp->c[1] && hp->c[1]->def ? hp->c[1]->def
                                                       : "";
        const char *port = hp->part[1]                 ? hp->part[1]
                           : hp->c[0] && hp->c[0]->def ? hp->c[0]->def
                                                       : "";
        char *text = dg_xasprintf("%s:%s", host, port), ctx[512];
        snprintf(ctx, sizeof(ctx), "%s:%zu: %s (the original's key for %s)", ld->path, line,
                 c0->key, t->key);
        union conf_val v;
        int rc = convert(t, text, &v, ctx, ld->err);
        if (rc) {
            free(text);
            return rc;
        }
        /* one assignment (made by the first part present), a warning for each part */
        bool pushed = false;
        for (int p = 0; p < 2; p++) {
            if (!hp->c[p])
                continue;
            const struct dg_conf_compat *o = hp->c[1 - p];
            char *w = dg_xasprintf("%s: the original's key; using %s: %s%s%s%s", hp->c[p]->key,
                                   t->key, text, o ? " (with " : "", o ? o->key : "", o ? ")" : "");
            ld->cas = dg_xrealloc(ld->cas, (ld->ncas + 1) * sizeof(*ld->cas));
            ld->cas[ld->ncas++] =
                (struct compat_assign){pushed ? NULL : t, v, hp->line[p], hp->c[p]->key, w, t};
            pushed = true;
        }
        free(text);
    }
    /* ours wins over the original's; of two original keys for one of ours, the first wins */
    bool taken = false;
    for (size_t i = 0; i < ld->ncas; i++) {
        struct compat_assign *ca = &ld->cas[i];
        if (ca->f) /* else the second part of an address: the entry before it decided */
            taken = assigns_has(&ld->out, ca->to);
        if (!ca->f && !taken) {
            add_warning(ld, ca->line, ca->warning);
        } else if (taken) {
            add_warning(ld, ca->line,
                        dg_xasprintf("%s: ignored: %s is set already (by the file or by another "
                                     "of the original's keys)",
                                     ca->key, ca->to->key));
            free(ca->warning);
            if (ca->f)
                val_free(ca->f, &ca->v);
        } else {
            add_warning(ld, ca->line, ca->warning);
            assigns_push(&ld->out, ca->f, ca->v);
        }
        ca->warning = NULL;
        ca->f = NULL;
    }
    ld->ncas = 0;
    return 0;
}

static int warning_cmp(const void *a, const void *b)
{
    const struct warning *x = a, *y = b;
    return x->line != y->line ? (x->line < y->line ? -1 : 1) : (x->seq < y->seq ? -1 : 1);
}

/* Release what the compat handling holds; move the sorted warnings to `out` (NULL: drop). */
static void compat_end(struct loader *ld, struct dg_strlist *out)
{
    for (size_t i = 0; i < ld->ncas; i++) {
        free(ld->cas[i].warning);
        if (ld->cas[i].f)
            val_free(ld->cas[i].f, &ld->cas[i].v);
    }
    free(ld->cas);
    for (size_t i = 0; i < ld->nhp; i++) {
        free(ld->hp[i].part[0]);
        free(ld->hp[i].part[1]);
    }
    if (ld->nwarn)
        qsort(ld->warn, ld->nwarn, sizeof(*ld->warn), warning_cmp);
    for (size_t i = 0; i < ld->nwarn; i++) {
        char *w = dg_xasprintf("%s:%zu: %s", ld->path, ld->warn[i].line, ld->warn[i].text);
        free(ld->warn[i].text);
        if (out)
            dg_strlist_push(out, w);
        else
            free(w);
    }
    free(ld->warn);
}

/* The value event `vev` of key `path` (written at line `kline`). */
static int load_value(struct loader *ld, const char *path, size_t kline, const yaml_event_t *vev)
{
    const struct dg_conf_field *f = find_field(ld->s, path, strlen(path));
    const struct dg_conf_compat *c = find_compat(ld, path);
    char ctx[512], kctx[512];
    snprintf(ctx, sizeof(ctx), "%s:%zu: %s", ld->path, (size_t)vev->start_mark.line + 1, path);
    snprintf(kctx, sizeof(kctx), "%s:%zu", ld->path, kline);
    if (vev->type == YAML_ALIAS_EVENT) /* anchors alone are harmless */
        return dg_err_set(ld->err, DG_E_INVAL, "%s: aliases (*name) are not supported", ctx);
    if (vev->type == YAML_MAPPING_START_EVENT) {
        char *star = dg_xasprintf("%s.*", path);
        const struct dg_conf_compat *g = c ? c : find_compat(ld, star);
        free(star);
        /* a key of ours that the original also had as a group (async: a bool here, a section
         * in its later releases): the group is ignored with its reason */
        if (f && !(g && g->kind == DG_COMPAT_IGNORE))
            return type_error(f, ctx, "a mapping", ld->err);
        if (!f && is_group(ld->s, path))
            return load_mapping(ld, path);
        if (g && g->kind == DG_COMPAT_IGNORE) { /* a whole group of the original's: one warning */
            add_warning(ld, kline, dg_xasprintf("%s: ignored: %s", path, g->why));
            return skip_node(ld, vev);
        }
        if (is_compat_group(ld, path))
            return load_mapping(ld, path);
        if (c)
            return dg_err_set(ld->err, DG_E_INVAL, "%s: expected a single value, got a mapping",
                              ctx);
        return unknown_key(ld->s, kctx, path, ld->err);
    }
    if (c && (!f || vev->type == YAML_SCALAR_EVENT)) {
        bool native = false;
        if (vev->type != YAML_SCALAR_EVENT && c->kind == DG_COMPAT_IGNORE) {
            add_warning(ld, kline, dg_xasprintf("%s: ignored: %s", path, c->why));
            return skip_node(ld, vev);
        }
        if (vev->type != YAML_SCALAR_EVENT)
            return dg_err_set(ld->err, DG_E_INVAL, "%s: expected a single value, got %s", ctx,
                              node_kind(vev));
        int rc = load_compat(ld, c, f, path, vev, &native);
        if (rc || !native)
            return rc;
    }
    if (!f && is_group(ld->s, path))
        return dg_err_set(ld->err, DG_E_INVAL, "%s: expected a mapping of %s.* keys, got %s", ctx,
                          path, node_kind(vev));
    if (!f)
        return unknown_key(ld->s, kctx, path, ld->err);
    if (assigns_has(&ld->out, f))
        return dg_err_set(ld->err, DG_E_INVAL, "%s: %s: duplicate key", kctx, path);
    union conf_val v;
    int rc;
    if (vev->type == YAML_SEQUENCE_START_EVENT) {
        if (f->type != DG_CONF_STRLIST)
            return type_error(f, ctx, "a list", ld->err);
        memset(&v, 0, sizeof(v));
        rc = load_sequence(ld, path, &v.l);
    } else {
        const char *text = (const char *)vev->data.scalar.value;
        if (is_null(vev) && (f->type == DG_CONF_STRING || f->type == DG_CONF_STRLIST))
            text = "";
        rc = convert(f, text, &v, ctx, ld->err);
    }
    if (rc == 0)
        assigns_push(&ld->out, f, v);
    return rc;
}

/* The pairs of a mapping, after its MAPPING_START; `prefix` is the dotted path or NULL. */
static int load_mapping(struct loader *ld, const char *prefix)
{
    struct dg_strlist seen = {0};
    yaml_event_t ev;
    int rc;
    for (;;) {
        if ((rc = next_event(ld, &ev)))
            break;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        size_t kline = ev.start_mark.line + 1;
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            rc = dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: keys must be plain strings", ld->path,
                            kline);
            break;
        }
        const char *k = (const char *)ev.data.scalar.value;
        char *path = prefix ? dg_xasprintf("%s.%s", prefix, k) : dg_xstrdup(k);
        yaml_event_delete(&ev);
        if (strlist_has(&seen, path)) {
            rc =
                dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: %s: duplicate key", ld->path, kline, path);
        } else {
            dg_strlist_push(&seen, dg_xstrdup(path));
            if ((rc = next_event(ld, &ev)) == 0) {
                rc = load_value(ld, path, kline, &ev);
                yaml_event_delete(&ev);
            }
        }
        free(path);
        if (rc)
            break;
    }
    dg_strlist_free(&seen);
    return rc;
}

/* A whole stream: nothing, or one document whose root is a mapping (or empty). */
static int load_stream(struct loader *ld)
{
    yaml_event_t ev;
    int rc, docs = 0;
    if ((rc = next_event(ld, &ev)))
        return rc;
    yaml_event_delete(&ev); /* STREAM_START */
    for (;;) {
        if ((rc = next_event(ld, &ev))) /* DOCUMENT_START or STREAM_END */
            return rc;
        bool end = ev.type == YAML_STREAM_END_EVENT;
        size_t line = ev.start_mark.line + 1;
        yaml_event_delete(&ev);
        if (end)
            return 0;
        if (docs++)
            return dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: only one YAML document is allowed",
                              ld->path, line);
        if ((rc = next_event(ld, &ev)))
            return rc;
        if (ev.type == YAML_MAPPING_START_EVENT)
            rc = load_mapping(ld, NULL);
        else if (!is_null(&ev))
            rc = dg_err_set(ld->err, DG_E_INVAL, "%s:%zu: expected a mapping of keys, got %s",
                            ld->path, (size_t)ev.start_mark.line + 1, node_kind(&ev));
        yaml_event_delete(&ev);
        if (rc || (rc = next_event(ld, &ev))) /* DOCUMENT_END */
            return rc;
        yaml_event_delete(&ev);
    }
}

/* ---- public API ---- */

/* NULL default: "" for strings and lists, 0 / false for numbers, the first choice of an enum. */
static const char *default_text(const struct dg_conf_field *f)
{
    return f->def                                                   ? f->def
           : f->type == DG_CONF_BOOL                                ? "false"
           : f->type == DG_CONF_ENUM && f->choices && f->choices[0] ? f->choices[0]
           : f->type == DG_CONF_STRING || f->type == DG_CONF_ENUM || f->type == DG_CONF_STRLIST
               ? ""
               : "0";
}

/* Defaults (from_env false) or environment overrides of every field, all or nothing. */
static int apply_all(const struct dg_conf_schema *s, void *cfg, bool from_env, struct dg_err *err)
{
    struct assigns a = {0};
    for (size_t i = 0; i < s->nfields; i++) {
        const struct dg_conf_field *f = &s->fields[i];
        const char *text = !from_env ? default_text(f) : f->env ? getenv(f->env) : NULL;
        char ctx[200];
        union conf_val v;
        if (!text || (from_env && !*text))
            continue;
        if (from_env)
            snprintf(ctx, sizeof(ctx), "environment %s (key %s)", f->env, f->key);
        else
            snprintf(ctx, sizeof(ctx), "default of %s", f->key);
        int rc = convert(f, text, &v, ctx, err);
        if (rc) {
            assigns_end(&a, NULL);
            return rc;
        }
        assigns_push(&a, f, v);
    }
    assigns_end(&a, cfg);
    return 0;
}

/* Defaults are parsed like any other value, so a default outside its own bounds or choices
 * (a programming error) fails with "default of KEY: ...". `cfg` is unchanged on error. */
int dg_conf_defaults(const struct dg_conf_schema *s, void *cfg, struct dg_err *err)
{
    return apply_all(s, cfg, false, err);
}

/* `path` is borrowed. Errors: "PATH: cannot open: ...", "PATH:LINE: invalid YAML: ...",
 * "PATH:LINE: unknown key 'k' (did you mean 'x'?)", "PATH:LINE: KEY: duplicate key",
 * "PATH:LINE: KEY: expected ..., got '...'". All or nothing: `cfg` changes only on success. */
int dg_conf_load_file_warn(const struct dg_conf_schema *s, void *cfg, const char *path,
                           struct dg_strlist *warnings, struct dg_err *err)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        int e = errno;
        return dg_err_set(err, -e, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        return dg_err_set(err, -EISDIR, "%s: cannot open: %s", path, strerror(EISDIR));
    }
    struct loader ld = {
        .s = s, .path = path, .err = err, .compat = s->compat, .ncompat = s->ncompat};
    if (!ld.compat)
        ld.compat = dg_conf_compat_for(s->prog, &ld.ncompat);
    if (!yaml_parser_initialize(&ld.parser)) {
        fclose(fp);
        return dg_err_set(err, -ENOMEM, "%s: cannot start the YAML parser", path);
    }
    yaml_parser_set_input_file(&ld.parser, fp);
    int rc = load_stream(&ld);
    if (rc == 0)
        rc = compat_finish(&ld);
    yaml_parser_delete(&ld.parser);
    fclose(fp);
    compat_end(&ld, rc ? NULL : warnings);
    assigns_end(&ld.out, rc ? NULL : cfg);
    return rc;
}

static void print_warnings(const struct dg_conf_schema *s, struct dg_strlist *w)
{
    for (size_t i = 0; i < w->n; i++)
        fprintf(stderr, "%s: warning: %s\n", s->prog, w->v[i]);
    dg_strlist_free(w);
}

int dg_conf_load_file(const struct dg_conf_schema *s, void *cfg, const char *path,
                      struct dg_err *err)
{
    struct dg_strlist w = {0};
    int rc = dg_conf_load_file_warn(s, cfg, path, &w, err);
    print_warnings(s, &w);
    return rc;
}

/* `assignment` ("key=value", borrowed) splits at the first '='; the value may be empty. */
int dg_conf_set(const struct dg_conf_schema *s, void *cfg, const char *assignment,
                struct dg_err *err)
{
    const char *eq = strchr(assignment, '=');
    char q[80], ctx[160];
    if (!eq || eq == assignment)
        return dg_err_set(err, DG_E_INVAL, "--set: expected key=value, got %s",
                          quoted(assignment, q, sizeof(q)));
    const struct dg_conf_field *f = find_field(s, assignment, (size_t)(eq - assignment));
    if (!f) {
        char *key = dg_xstrndup(assignment, (size_t)(eq - assignment));
        int rc = unknown_key(s, "--set", key, err);
        free(key);
        return rc;
    }
    snprintf(ctx, sizeof(ctx), "--set %s", f->key);
    return set_text(f, cfg, eq + 1, ctx, err);
}

/* Reads getenv() for every field with `env`; empty variables count as unset. All or nothing:
 * errors read "environment VAR (key KEY): expected ..., got '...'". */
int dg_conf_apply_env(const struct dg_conf_schema *s, void *cfg, struct dg_err *err)
{
    return apply_all(s, cfg, true, err);
}

/* An option name ("port", "redis.db", or kebab-case "log-level" for "logLevel") to its field. */
static const struct dg_conf_field *find_option(const struct dg_conf_schema *s, const char *name,
                                               size_t len)
{
    const struct dg_conf_field *f = find_field(s, name, len);
    if (f || !memchr(name, '-', len) || len >= 128)
        return f;
    char camel[128];
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '-' && i + 1 < len && isalnum((unsigned char)name[i + 1]))
            camel[n++] = (char)toupper((unsigned char)name[++i]);
        else
            camel[n++] = name[i];
    }
    return find_field(s, camel, n);
}

/* A --set or --KEY from the command line, applied after the file and the environment. */
struct override {
    const struct dg_conf_field *f; /* NULL: `value` is a --set key=value */
    const char *value;             /* borrowed from argv */
    const char *name;              /* the option as typed, for messages */
    int name_len;
};

/* argv is borrowed. `cfg` must be zeroed. --KEY also takes kebab-case (--log-level for logLevel);
 * a bare --KEY sets a bool to true. The whole command line is checked before anything is
 * applied, and --help wins over everything else. On DG_CONF_RUN and after --print-config `cfg`
 * holds the effective config (release with dg_conf_free); after --help it is untouched; on error
 * whatever was loaded has already been freed. Nothing is printed except --help/--print-config. */
int dg_conf_parse_args(const struct dg_conf_schema *s, void *cfg, int argc, char **argv, FILE *out,
                       struct dg_err *err)
{
    struct override *ov = dg_xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(*ov));
    size_t nov = 0;
    const char *config = NULL;
    bool help = false, print = false;
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = true;
            continue;
        }
        if (strcmp(a, "--print-config") == 0) {
            print = true;
            continue;
        }
        if (a[0] != '-') {
            rc = dg_err_set(err, DG_E_INVAL, "unexpected argument '%s' (see --help)", a);
            break;
        }
        if (a[1] != '-') {
            rc = dg_err_set(err, DG_E_INVAL, "unknown option '%s' (see --help)", a);
            break;
        }
        const char *name = a + 2, *eq = strchr(a, '=');
        int nlen = eq ? (int)(eq - name) : (int)strlen(name);
        const char *val = eq ? eq + 1 : NULL;
        bool is_config = strncmp(a, "--config", 8) == 0 && (!a[8] || a[8] == '=');
        bool is_set = strncmp(a, "--set", 5) == 0 && (!a[5] || a[5] == '=');
        const struct dg_conf_field *f = NULL;
        if (nlen == 0 || (!is_config && !is_set && !(f = find_option(s, name, (size_t)nlen)))) {
            rc = dg_err_set(err, DG_E_INVAL, "unknown option '%.*s' (see --help)",
                            eq ? (int)(eq - a) : (int)strlen(a), a);
            break;
        }
        if (!val && f && f->type == DG_CONF_BOOL) {
            val = "true";
        } else if (!val) {
            if (i + 1 >= argc) {
                rc = dg_err_set(err, DG_E_INVAL, "--%.*s: missing %s", nlen, name,
                                is_config ? "FILE"
                                : is_set  ? "key=value"
                                          : "value");
                break;
            }
            val = argv[++i];
        }
        if (is_config) {
            if (!*val)
                rc = dg_err_set(err, DG_E_INVAL, "--config: missing FILE");
            else if (config)
                rc = dg_err_set(err, DG_E_INVAL, "--config given twice");
            config = val;
        } else {
            ov[nov++] = (struct override){f, val, name, nlen};
        }
    }
    if (rc == 0 && help) {
        dg_conf_print_help(s, out);
        rc = DG_CONF_EXIT;
    } else if (rc == 0) {
        rc = dg_conf_defaults(s, cfg, err);
        if (rc == 0 && config)
            rc = dg_conf_load_file(s, cfg, config, err); /* warnings go to stderr */
        if (rc == 0)
            rc = dg_conf_apply_env(s, cfg, err);
        for (size_t i = 0; i < nov && rc == 0; i++) {
            char ctx[160];
            snprintf(ctx, sizeof(ctx), "--%.*s", ov[i].name_len, ov[i].name);
            rc = ov[i].f ? set_text(ov[i].f, cfg, ov[i].value, ctx, err)
                         : dg_conf_set(s, cfg, ov[i].value, err);
        }
        if (rc)
            dg_conf_free(s, cfg);
        else if (print) {
            dg_conf_print(s, cfg, out);
            rc = DG_CONF_EXIT;
        }
    }
    free(ov);
    return rc;
}

static const char *type_name(enum dg_conf_type t)
{
    static const char *const names[] = {"bool", "int",      "number", "string",
                                        "enum", "duration", "size",   "list"};
    return (size_t)t < DG_ARRAY_LEN(names) ? names[t] : "?";
}

void dg_conf_print_help(const struct dg_conf_schema *s, FILE *out)
{
    int wkey = 3, wdef = 7;
    for (size_t i = 0; i < s->nfields; i++) {
        const char *d = default_text(&s->fields[i]);
        wkey = DG_MAX(wkey, (int)strlen(s->fields[i].key));
        wdef = DG_MAX(wdef, DG_MIN(20, (int)strlen(*d ? d : "\"\"")));
    }
    fprintf(out,
            "Usage: %s [--config FILE] [--set key=value]... [--KEY VALUE]... [--print-config] "
            "[--help]\n",
            s->prog);
    if (s->summary)
        fprintf(out, "%s\n", s->summary);
    fprintf(out,
            "\nKeys (YAML file keys, nested with dots; also --set key=value or --KEY VALUE):\n");
    fprintf(out, "  %-*s  %-8s  %-*s  %s\n", wkey, "KEY", "TYPE", wdef, "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < s->nfields; i++) {
        const struct dg_conf_field *f = &s->fields[i];
        const char *d = default_text(f);
        char extra[320], r[160];
        size_t n = 0;
        extra[0] = '\0';
        if (f->type == DG_CONF_ENUM)
            expect_text(f, r, sizeof(r));
        else
            range_text(f, r, sizeof(r));
        if (r[0])
            n += (size_t)snprintf(extra, sizeof(extra), "%s", r);
        if (f->env)
            snprintf(extra + n, sizeof(extra) - n, "%senv %s", n ? "; " : "", f->env);
        fprintf(out, "  %-*s  %-8s  %-*s  %s%s%s%s\n", wkey, f->key, type_name(f->type), wdef,
                *d ? d : "\"\"", f->help ? f->help : "", extra[0] ? " (" : "", extra,
                extra[0] ? ")" : "");
    }
    fprintf(out,
            "\nValues: bool is true|false|yes|no|on|off|1|0. duration is 250ms, 2s, 1.5s, 1m, 1h "
            "or 1h30m;\n"
            "a bare number is milliseconds. size is bytes or a binary unit: K, KB and KiB all "
            "mean 1024,\n"
            "likewise M/MB/MiB, G/GB/GiB, T/TB/TiB. list is a YAML sequence or a comma-separated "
            "string.\n"
            "Precedence: defaults < --config FILE < environment < --set/--KEY in command-line "
            "order.\n");
    size_t ncompat = s->ncompat;
    if ((s->compat ? s->compat : dg_conf_compat_for(s->prog, &ncompat)) && ncompat)
        fprintf(out, "Files may also use the original's keys (Go Dirigent's config*.yaml): each "
                     "loads with a\nwarning saying what it became (docs/operations.md, \"The "
                     "original's config files\").\n");
}

/* A YAML double-quoted scalar. */
static void put_quoted(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(out, "\\x%02x", *p);
        else if (p[0] == 0xc2 && p[1] == 0x85) { /* U+0085: YAML reads it as a line break */
            fputs("\\N", out);
            p += 1;
        } else if (p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9)) {
            fputs(p[2] == 0xa8 ? "\\L" : "\\P", out); /* U+2028, U+2029 likewise */
            p += 2;
        } else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
            fprintf(out, "\\x%02x", p[1]); /* C1 controls: not printable in YAML */
            p += 1;
        } else if (p[0] == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf)) {
            fprintf(out, "\\uFFF%c", p[2] == 0xbe ? 'E' : 'F'); /* noncharacters likewise */
            p += 2;
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void put_value(FILE *out, const struct dg_conf_field *f, const union conf_val *v)
{
    char tmp[64];
    if (f->type == DG_CONF_STRING || f->type == DG_CONF_ENUM) {
        put_quoted(out, v->s ? v->s : "");
    } else if (f->type == DG_CONF_STRLIST) {
        fputc('[', out);
        for (size_t i = 0; i < v->l.n; i++) {
            fputs(i ? ", " : "", out);
            put_quoted(out, v->l.v[i]);
        }
        fputc(']', out);
    } else {
        if (f->type == DG_CONF_BOOL)
            snprintf(tmp, sizeof(tmp), "%s", v->b ? "true" : "false");
        else if (f->type == DG_CONF_DOUBLE)
            fmt_double(v->d, tmp, sizeof(tmp));
        else
            fmt_i64(f, v->i, tmp, sizeof(tmp));
        fputs(tmp, out);
    }
}

/* The fields under `prefix` (which ends with '.' or is empty), groups opened where their first
 * key appears in the table, so keys of one group need not be contiguous. */
static void print_group(const struct dg_conf_schema *s, const void *cfg, const char *prefix,
                        size_t plen, int depth, FILE *out)
{
    for (size_t i = 0; i < s->nfields; i++) {
        const struct dg_conf_field *f = &s->fields[i];
        if (strncmp(f->key, prefix, plen) != 0)
            continue;
        const char *rest = f->key + plen, *dot = strchr(rest, '.');
        if (!dot) {
            union conf_val v = val_load(f, cfg);
            fprintf(out, "%*s%s: ", depth * 2, "", rest);
            put_value(out, f, &v);
            fputc('\n', out);
            continue;
        }
        size_t glen = (size_t)(dot - f->key) + 1;
        bool opened = false;
        for (size_t j = 0; j < i && !opened; j++)
            opened = strncmp(s->fields[j].key, f->key, glen) == 0;
        if (opened)
            continue;
        fprintf(out, "%*s%.*s:\n", depth * 2, "", (int)(dot - rest), rest);
        print_group(s, cfg, f->key, glen, depth + 1, out);
    }
}

void dg_conf_print(const struct dg_conf_schema *s, const void *cfg, FILE *out)
{
    fprintf(out, "# %s: effective configuration\n", s->prog);
    print_group(s, cfg, "", 0, 0, out);
}

void dg_conf_free(const struct dg_conf_schema *s, void *cfg)
{
    for (size_t i = 0; i < s->nfields; i++) {
        union conf_val v = val_load(&s->fields[i], cfg);
        val_free(&s->fields[i], &v); /* owned values become NULL / empty, others stay */
        memcpy((char *)cfg + s->fields[i].offset, &v, val_size(s->fields[i].type));
    }
}
