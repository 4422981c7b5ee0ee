/*
 * fuzz_trace.c: libFuzzer target for the trace CSV readers (lib/invitro_trace.c):
 * the Azure Functions traces `dirigent load --trace` and `dirigent-sim` read,
 * files an operator downloads from elsewhere.
 *
 * Input: the first byte steers, the rest are the files.
 *   bit 0     0: one 2021 CSV file (app,func,end_timestamp,duration);
 *             1: a 2019 directory: the rest split at NUL bytes into
 *             invocations.csv, durations.csv, memory.csv and dirigent.json
 *             (the files the input has no part for are absent)
 *   bits 1-2  the 2019 arrivals within a minute (equidistant, uniform, exponential)
 *   bits 3-7  the seed
 * The files are written into a directory of the fuzzer's own under /dev/shm
 * (or $TMPDIR), replaced for every input; the 2019 format is read for its
 * first 2 minutes. Checked besides memory safety: a refusal names the file; a
 * trace that loads has invocations sorted by arrival, each of a function in
 * its table, none arriving after the trace's end, and functions sorted by
 * name.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/invitro_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static const char *const files[] = {"invocations.csv", "durations.csv", "memory.csv",
                                    "dirigent.json"};

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_trace: %s: %s\n", what, detail);
    abort();
}

static void put(const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0)
        die(path, strerror(errno));
}

static void clear(void)
{
    char path[512];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/t.csv", dir);
    unlink(path);
}

static void cleanup(void)
{
    clear();
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/fuzz_trace.XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(dir))
            die("mkdtemp", strerror(errno));
        atexit(cleanup);
    }
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    clear();
    char path[512];
    if (ctl & 1) {
        for (size_t i = 0; i < 4 && p <= end; i++) {
            const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
            const uint8_t *e = nul ? nul : end;
            put(files[i], p, (size_t)(e - p));
            if (!nul)
                break;
            p = nul + 1;
        }
        snprintf(path, sizeof(path), "%s", dir);
    } else {
        put("t.csv", p, (size_t)(end - p));
        snprintf(path, sizeof(path), "%s/t.csv", dir);
    }
    struct dg_invitro_trace_opts o = {
        .minutes = 2,
        .iat = (enum dg_invitro_iat)((ctl >> 1) & 3) % 3,
        .seed = ctl >> 3,
        .cpu_milli = 100,
        .memory_mib = 128,
        .cpu_per_mib = (ctl & 8) ? 0.565 : 0,
    };
    struct dg_invitro_trace t;
    struct dg_err err = {0};
    if (dg_invitro_trace_load(path, &o, &t, &err) != 0) {
        if (!strstr(err.msg, dir))
            die("a refusal does not name the file", err.msg);
        if (t.invs || t.fns || t.ninvs || t.nfns)
            die("a refusal", "left something in the trace");
        return 0;
    }
    for (size_t i = 0; i < t.ninvs; i++) {
        const struct dg_invitro_invocation *v = &t.invs[i];
        if (v->fn >= t.nfns)
            die("invocation", "of a function not in the table");
        if (v->arrival_us > t.end_us)
            die("invocation", "arrives after the trace's end");
        if (i && (v->arrival_us < t.invs[i - 1].arrival_us ||
                  (v->arrival_us == t.invs[i - 1].arrival_us && v->fn < t.invs[i - 1].fn)))
            die("invocations", "not sorted by arrival, then function");
    }
    for (size_t i = 1; i < t.nfns; i++)
        if (strcmp(t.fns[i - 1].name, t.fns[i].name) > 0)
            die("functions", "not sorted by name");
    dg_invitro_trace_free(&t);
    return 0;
}
