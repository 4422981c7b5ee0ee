/*
 * json.h: JSON over jansson with strict unpacking whose errors name the field
 * (`field 'name': expected string, got integer`), so an API can answer 400
 * with a message a user can act on.
 */
#ifndef DIRIGENT_JSON_H
#define DIRIGENT_JSON_H

#include <jansson.h>

#include "dirigent/common.h"

/* Parse a whole buffer (the top level must be an object or an array; duplicate keys and
 * trailing garbage are rejected). On success `*out` is a new reference the caller
 * json_decref's. Errors (DG_E_PROTO): "invalid JSON at line L column C: <jansson's text>". */
int dg_json_parse(const char *buf, size_t len, json_t **out, struct dg_err *err);

enum dg_json_type {
    DG_JSON_STRING, /* char * (malloc'd copy, caller frees) */
    DG_JSON_INT,    /* int64_t, bounded by [min, max] when min != max; rejects reals */
    DG_JSON_DOUBLE, /* double; accepts integers too */
    DG_JSON_BOOL,   /* bool */
    DG_JSON_STRLIST /* struct dg_strlist (common.h), all malloc'd */
};

struct dg_json_field {
    const char *name;
    enum dg_json_type type;
    bool required;
    size_t offset;    /* offsetof into the output struct */
    int64_t min, max; /* INT bounds, inclusive; min == max == 0: none */
};

enum { DG_JSON_ALLOW_UNKNOWN = 1 };

/* Unpack `obj` (must be an object: "expected a JSON object") into `out` by the table.
 * Missing optional fields (absent or JSON null) leave `out` untouched; a present field
 * overwrites its member without freeing what was there. Unknown fields fail with
 * "field 'x': unknown field" unless DG_JSON_ALLOW_UNKNOWN. Every field is checked before
 * any is stored, so on error (DG_E_INVAL) `out` is left exactly as it was and the caller
 * has nothing to clean up. */
int dg_json_unpack(const json_t *obj, const struct dg_json_field *fields, size_t nfields, void *out,
                   unsigned flags, struct dg_err *err);

/* One present (non-null) value `v` of field `f`, already looked up by the caller: checked and
 * stored into `out` as dg_json_unpack does (same messages; on error `out` is untouched). For
 * table walkers that hold the value (lib/wire.c): no second lookup of the key. */
int dg_json_unpack_value(const json_t *v, const struct dg_json_field *f, void *out,
                         struct dg_err *err);
/* Only the check of dg_json_unpack_value (for a walker that borrows what it accepts). */
int dg_json_check_value(const json_t *v, const struct dg_json_field *f, struct dg_err *err);

/* Single-field getters with the same messages; `*out` is borrowed from obj for strings.
 * An absent (or null) optional field returns 0 and leaves `*out` untouched. */
int dg_json_get_string(const json_t *obj, const char *name, bool required, const char **out,
                       struct dg_err *err);
int dg_json_get_int(const json_t *obj, const char *name, bool required, int64_t min, int64_t max,
                    int64_t *out, struct dg_err *err);
int dg_json_get_bool(const json_t *obj, const char *name, bool required, bool *out,
                     struct dg_err *err);

/* Answer `r` with `v` (taken over) as application/json. */
struct dg_http_req;
void dg_http_respond_json(struct dg_http_req *r, int status, json_t *v);

/* Compact serialisation (scalars too); malloc'd by jansson's allocator, which is malloc
 * unless json_set_alloc_funcs changed it, so the caller free()s it. NULL for a NULL `v`. */
char *dg_json_dumps(const json_t *v);
/* Name of a JSON value's type as the messages use it: "string", "integer", "object", ...;
 * a NULL pointer reads as "null". */
const char *dg_json_type_name(const json_t *v);

#endif
