/*
 * form.h: application/x-www-form-urlencoded bodies and URL query strings
 * (the registration server's input, as InVitro posts it): pairs split on '&',
 * key and value split on the first '=', '+' is a space, %XX decoded.
 */
#ifndef DIRIGENT_FORM_H
#define DIRIGENT_FORM_H

#include "dirigent/common.h"

struct dg_form_pair {
    char *key, *value; /* decoded, NUL-terminated, owned by the form */
};

struct dg_form {
    struct dg_form_pair *pairs;
    size_t n;
};

/* Decode `text` (borrowed). Errors: "form: field 'x': bad percent-encoding" or a NUL byte
 * in a key or value. On error `out` is left empty. */
int dg_form_parse(struct dg_str text, struct dg_form *out, struct dg_err *err);
void dg_form_free(struct dg_form *f);
/* The `idx`-th value of `key` (0 = first), or NULL. */
const char *dg_form_get(const struct dg_form *f, const char *key, size_t idx);
size_t dg_form_count(const struct dg_form *f, const char *key);

#endif
