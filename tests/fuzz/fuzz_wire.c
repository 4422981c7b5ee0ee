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
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "dirigent/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
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
