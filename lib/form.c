/*
 * form.c: see form.h.
 */
#include "dirigent/form.h"

#include <stdlib.h>
#include <string.h>

/* Decode one component into a new string; false on bad encoding or an embedded NUL. */
static bool decode(const char *p, size_t n, char **out)
{
    char *s = dg_xmalloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 1 < n ? dg_hex_digit((unsigned char)p[i + 1]) : -1;
            int lo = i + 2 < n ? dg_hex_digit((unsigned char)p[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free(s);
                return false;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') {
            free(s);
            return false;
        }
        s[j++] = c;
    }
    s[j] = '\0';
    *out = s;
    return true;
}

int dg_form_parse(struct dg_str text, struct dg_form *out, struct dg_err *err)
{
    out->pairs = NULL;
    out->n = 0;
    const char *p = text.ptr ? text.ptr : "", *end = p + text.len;
    size_t cap = 0;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *pe = amp ? amp : end;
        if (pe > p) {
            const char *eq = memchr(p, '=', (size_t)(pe - p));
            const char *ke = eq ? eq : pe;
            char *k, *v;
            if (!decode(p, (size_t)(ke - p), &k)) {
                dg_form_free(out);
                return dg_err_set(err, DG_E_INVAL, "form: bad percent-encoding in a field name");
            }
            if (!decode(eq ? eq + 1 : pe, eq ? (size_t)(pe - eq - 1) : 0, &v)) {
                dg_err_set(err, DG_E_INVAL, "form: field '%.64s': bad percent-encoding", k);
                free(k);
                dg_form_free(out);
                return DG_E_INVAL;
            }
            if (out->n == cap) {
                cap = cap ? cap * 2 : 16;
                out->pairs = dg_xrealloc(out->pairs, cap * sizeof(*out->pairs));
            }
            out->pairs[out->n++] = (struct dg_form_pair){k, v};
        }
        p = pe + 1;
    }
    return 0;
}

void dg_form_free(struct dg_form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->pairs[i].key);
        free(f->pairs[i].value);
    }
    free(f->pairs);
    f->pairs = NULL;
    f->n = 0;
}

const char *dg_form_get(const struct dg_form *f, const char *key, size_t idx)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->pairs[i].key, key) == 0 && idx-- == 0)
            return f->pairs[i].value;
    return NULL;
}

size_t dg_form_count(const struct dg_form *f, const char *key)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->pairs[i].key, key) == 0)
            n++;
    return n;
}
