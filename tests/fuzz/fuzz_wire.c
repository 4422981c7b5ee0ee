/*
 * fuzz_wire.c: libFuzzer target for lib/wire.c, the decoders of every message between the
 * daemons: each sees bytes from the network (a worker's heartbeat, a DP's metrics, the CP's
 * pushes and creates, a create's answer, /v1/status in the CLI).
 *
 * Every input goes through every decoder (dg_wire_roundtrip_nth). Besides memory safety
 * (ASan, UBSan, LeakSanitizer: a decode that fails half-way must free what it made) the
 * round trip checks what wire.h promises: what a decoder accepts, its encoder writes in a
 * form the decoder accepts again, and a second round gives the same text (it aborts
 * otherwise). A failed decode returns DG_E_INVAL (DG_E_PROTO: not JSON) with a message.
 *
 * The input as one string also goes through the field rules (wire.h "validation rules"),
 * with properties they promise: an accepted address ends in ":PORT" with PORT 1..65535 and
 * holds no byte a log line or a header could be split by; a function name is a valid node
 * name and sandbox id.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void rules(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    if (dg_wire_address_ok(s)) {
        const char *colon = strrchr(s, ':');
        char *end;
        long port = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || *end || port < 1 || port > 65535 || strpbrk(s, " \t\r\n;,/\\\"'"))
            abort();
    }
    if (dg_wire_fn_name_ok(s) && (!dg_wire_node_name_ok(s) || !dg_wire_id_ok(s)))
        abort();
    if ((dg_wire_node_name_ok(s) || dg_wire_id_ok(s)) && strpbrk(s, " \t\r\n:;/\\\"'"))
        abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rules(data, size);
    const char *name;
    struct dg_err err;
    for (size_t i = 0;; i++) {
        err = (struct dg_err){0};
        int rc = dg_wire_roundtrip_nth(i, (const char *)data, size, &name, &err);
        if (rc == -1)
            break;
        if (rc < 0 && ((rc != DG_E_INVAL && rc != DG_E_PROTO) || err.msg[0] == '\0')) {
            fprintf(stderr, "fuzz_wire: %s: error %d without a message or of another kind: %s\n",
                    name, rc, err.msg);
            abort();
        }
    }
    return 0;
}
