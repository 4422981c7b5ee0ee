/*
 * function_json.h: a function's spec as the JSON form of POST /v1/functions (what the store
 * keeps), and back. Apart from function.h so that the control plane's core, which holds specs,
 * never sees JSON: only the adapters (api.c) and the CLI include this.
 */
#ifndef DIRIGENT_CP_FUNCTION_JSON_H
#define DIRIGENT_CP_FUNCTION_JSON_H

#include "dirigent/json.h"
#include "function.h"

/* The spec as a JSON object (arrays for repeated fields). */
json_t *cp_fn_spec_to_json(const struct cp_fn_spec *s);
/* A JSON object as a form for cp_fn_spec_from_form. */
int cp_fn_form_from_json(const json_t *j, struct dg_form *form, struct dg_err *err);

#endif
