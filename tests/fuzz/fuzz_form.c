/*
 * fuzz_form.c: libFuzzer target for the registration form (lib/form.c and the
 * form path of src/cp/function.c): the body InVitro posts to the registration
 * server, which anyone who reaches that port can send.
 *
 * Each input is a form body: dg_form_parse, then cp_fn_spec_from_form. When it
 * is also a JSON object, the JSON path too (cp_fn_form_from_json, then the same
 * spec reader). Checked besides memory safety: a failed parse leaves the form
 * empty and says why; every pair's key and value are NUL-free strings and
 * dg_form_get/dg_form_count agree with the pairs; a failed spec says which
 * field ("field '...'"); an accepted spec has a valid name, an image the image
 * check accepts, bounds with lower <= upper, and non-negative resources.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dirigent/form.h"
#include "function.h"
#include "function_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_form: %s: %s\n", what, detail);
    abort();
}

static void check_spec(const struct dg_form *f, const char *how)
{
    struct cp_fn_spec spec;
    struct dg_err err = {0};
    if (cp_fn_spec_from_form(f, &spec, &err) != 0) {
        if (!strstr(err.msg, "field '") && !strstr(err.msg, "name"))
            die("a refused form does not name the field", err.msg);
        return;
    }
    if (!cp_fn_name_valid(spec.name))
        die(how, "accepted a function name cp_fn_name_valid refuses");
    struct dg_err ierr = {0};
    if (!spec.image || cp_fn_image_check(spec.image, &ierr) != 0)
        die(how, "accepted an image the image check refuses");
    if (spec.lower_bound < 0 || spec.upper_bound < 0 || spec.lower_bound > spec.upper_bound)
        die(how, "accepted scaling bounds out of order");
    if (spec.cpu_milli < 0 || spec.memory_mib < 0 || spec.port < 0 || spec.port > 65535)
        die(how, "accepted a negative resource or a bad port");
    cp_fn_spec_free(&spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dg_form f = {0};
    struct dg_err err = {0};
    if (dg_form_parse((struct dg_str){(const char *)data, size}, &f, &err) != 0) {
        if (f.n != 0 || f.pairs != NULL || err.msg[0] == '\0')
            die("a failed parse", "left pairs or gave no reason");
    } else {
        for (size_t i = 0; i < f.n; i++) {
            const char *k = f.pairs[i].key, *v = f.pairs[i].value;
            if (!k || !v)
                die("pair", "NULL key or value");
            size_t before = 0;
            for (size_t j = 0; j < i; j++)
                before += strcmp(f.pairs[j].key, k) == 0;
            if (dg_form_get(&f, k, before) != v)
                die("dg_form_get", "does not return the pair's value in order");
            if (dg_form_count(&f, k) <= before)
                die("dg_form_count", "counts fewer than there are");
        }
        check_spec(&f, "form");
        dg_form_free(&f);
    }
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (j && json_is_object(j)) {
        struct dg_form jf = {0};
        err = (struct dg_err){0};
        if (cp_fn_form_from_json(j, &jf, &err) == 0) {
            check_spec(&jf, "json");
            dg_form_free(&jf);
        } else if (err.msg[0] == '\0') {
            die("cp_fn_form_from_json", "failed without a reason");
        }
    }
    json_decref(j);
    return 0;
}
