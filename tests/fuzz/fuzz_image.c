/*
 * fuzz_image.c: libFuzzer target for image references (lib/image.c): the
 * `image` field of a registration, checked by the CP and turned into skopeo's
 * source argument by the worker.
 *
 * The input, cut at its first NUL, is parsed with dg_image_ref_parse. Checked
 * besides memory safety: a refusal says why; an accepted reference has a
 * NUL-terminated, non-empty source and registry within their arrays, no
 * control characters in the source (it becomes a command-line argument), and
 * its source parses again to the same kind and source (what the worker hands
 * to skopeo is what the CP accepted).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *what, const char *in, const char *detail)
{
    fprintf(stderr, "fuzz_image: %s: input '%s': %s\n", what, in, detail);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    struct dg_image_ref ref, again;
    struct dg_err err = {0};
    if (dg_image_ref_parse(s, &ref, &err) != 0) {
        if (err.msg[0] == '\0')
            die("refused", s, "without a reason");
        free(s);
        return 0;
    }
    if (!memchr(ref.source, '\0', sizeof(ref.source)) ||
        !memchr(ref.registry, '\0', sizeof(ref.registry)))
        die("accepted", s, "source or registry not NUL-terminated");
    if (ref.source[0] == '\0')
        die("accepted", s, "empty source");
    for (const unsigned char *p = (const unsigned char *)ref.source; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            die("accepted", s, "a control character in the source");
    err = (struct dg_err){0};
    if (dg_image_ref_parse(ref.source, &again, &err) != 0)
        die("the source of an accepted reference", ref.source, err.msg);
    if (again.kind != ref.kind || strcmp(again.source, ref.source) != 0)
        die("the source of an accepted reference", ref.source, "parses to another reference");
    free(s);
    return 0;
}
