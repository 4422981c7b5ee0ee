/*
 * fuzz_config.c: libFuzzer target for lib/config.c. Config files are written by
 * operators, not attackers, but the reader must still never crash on a typo,
 * and its promises are easy to state and check.
 *
 * Each input is used twice, with a schema that has every field type, bounds
 * of every shape (none, a..b, >= a, <= b, negative), enums, and keys nested two
 * levels deep in groups whose keys are not contiguous in the table:
 *   1. as a YAML file given to dg_conf_load_file (written to a memfd and read
 *      through /proc/self/fd/N, so no file touches the disk);
 *   2. as a NUL-terminated "key=value" string given to dg_conf_set.
 * Checked besides memory safety: a failed load or set leaves the config as it
 * was ("all or nothing", config.h); a file error starts with the file's path;
 * and after a success the effective config printed by dg_conf_print loads
 * again (config.h: "loadable by dg_conf_load_file") into the same config.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirigent/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct cfg {
    bool enabled;
    int64_t port, offset, floor_, timeout, grace, max_body, chunk;
    double ratio, scale;
    char *name, *mode;
    struct dg_strlist tags;
    char *redis_address, *redis_tls_ca;
    int64_t redis_db;
    bool redis_tls_enabled;
    struct dg_strlist redis_hosts;
    int64_t limits_idle;
    double limits_ratio;
    char *limits_level;
};

static const char *const modes[] = {"local", "oci", "emulated", NULL};
static const char *const levels[] = {"debug", "info", "warn", NULL};

#define O(m) offsetof(struct cfg, m)

static const struct dg_conf_field fields[] = {
    {.key = "enabled", .type = DG_CONF_BOOL, .offset = O(enabled), .def = "true"},
    {.key = "port", .type = DG_CONF_INT, .offset = O(port), .def = "8080", .min = 1, .max = 65535},
    {.key = "offset", .type = DG_CONF_INT, .offset = O(offset), .def = "-3"},
    {.key = "floor", .type = DG_CONF_INT, .offset = O(floor_), .min = INT64_MIN, .max = 0},
    {.key = "ratio", .type = DG_CONF_DOUBLE, .offset = O(ratio), .def = "0.5", .dmax = 1},
    {.key = "scale", .type = DG_CONF_DOUBLE, .offset = O(scale)},
    {.key = "name", .type = DG_CONF_STRING, .offset = O(name), .def = "fn"},
    {.key = "mode", .type = DG_CONF_ENUM, .offset = O(mode), .choices = modes},
    {.key = "timeout",
     .type = DG_CONF_DURATION,
     .offset = O(timeout),
     .def = "2s",
     .min = 1,
     .max = 3600000},
    {.key = "grace", .type = DG_CONF_DURATION, .offset = O(grace)},
    {.key = "maxBody",
     .type = DG_CONF_SIZE,
     .offset = O(max_body),
     .def = "1MiB",
     .min = 1,
     .max = INT64_MAX},
    {.key = "chunk", .type = DG_CONF_SIZE, .offset = O(chunk)},
    {.key = "tags", .type = DG_CONF_STRLIST, .offset = O(tags), .def = "a, b"},
    {.key = "redis.address",
     .type = DG_CONF_STRING,
     .offset = O(redis_address),
     .def = "127.0.0.1:6379"},
    /* a group opened, left and re-entered: printing must still nest it once */
    {.key = "limits.idle", .type = DG_CONF_DURATION, .offset = O(limits_idle), .def = "1m"},
    {.key = "redis.db", .type = DG_CONF_INT, .offset = O(redis_db), .min = 0, .max = 15},
    {.key = "redis.tls.enabled", .type = DG_CONF_BOOL, .offset = O(redis_tls_enabled)},
    {.key = "redis.tls.ca", .type = DG_CONF_STRING, .offset = O(redis_tls_ca)},
    {.key = "redis.hosts", .type = DG_CONF_STRLIST, .offset = O(redis_hosts)},
    {.key = "limits.ratio",
     .type = DG_CONF_DOUBLE,
     .offset = O(limits_ratio),
     .dmin = -1,
     .dmax = 1},
    {.key = "limits.level",
     .type = DG_CONF_ENUM,
     .offset = O(limits_level),
     .def = "info",
     .choices = levels},
};

/* The original's keys (config.h): mapped, translated, ignored (a key and a group) and split
 * into an IP:PORT, so the fuzzer reaches every path of the compat loader. */
static int old_level(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (!strcmp(t, "bad"))
        return dg_err_set(err, DG_E_INVAL, "a translator's error");
    if (!strcmp(t, "same"))
        return DG_COMPAT_SAME;
    if (!strcmp(t, "drop"))
        return DG_COMPAT_DROP;
    snprintf(buf, n, "%s", !strcmp(t, "trace") ? "debug" : t);
    return DG_COMPAT_USE;
}

static const struct dg_conf_compat compat[] = {
    {.key = "verbosity", .kind = DG_COMPAT_MAP, .to = "limits.level", .value = old_level},
    {.key = "port", .kind = DG_COMPAT_MAP, .to = "port", .value = old_level},
    {.key = "oldName", .kind = DG_COMPAT_MAP, .to = "name"},
    {.key = "oldTags", .kind = DG_COMPAT_MAP, .to = "tags"},
    {.key = "vm.*", .kind = DG_COMPAT_IGNORE, .why = "no VMs"},
    {.key = "vmKernel", .kind = DG_COMPAT_IGNORE, .why = "no VMs"},
    {.key = "prof.enable", .kind = DG_COMPAT_IGNORE, .why = "pprof"},
    {.key = "redis.password", .kind = DG_COMPAT_MAP, .value = old_level},
    {.key = "redisHost", .kind = DG_COMPAT_HOST, .to = "redis.address", .def = "6379"},
    {.key = "redisPort", .kind = DG_COMPAT_PORT, .to = "redis.address", .def = "127.0.0.1"},
    {.key = "broken", .kind = DG_COMPAT_MAP, .to = "noSuchKey"},
};

static const struct dg_conf_schema schema = {
    .prog = "fuzz_config",
    .summary = "config reader fuzz target",
    .fields = fields,
    .nfields = DG_ARRAY_LEN(fields),
    .compat = compat,
    .ncompat = DG_ARRAY_LEN(compat),
};

static int memfd = -1;
static char memfd_path[64];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
    abort();
}

/* Make the memfd hold exactly `len` bytes of `data`. */
static void memfd_put(const void *data, size_t len)
{
    if (memfd < 0) {
        memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
        if (memfd == -1)
            die("memfd_create", strerror(errno));
        snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) == -1)
        die("ftruncate", strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t n = pwrite(memfd, (const char *)data + off, len - off, (off_t)off);
        if (n == -1)
            die("pwrite", strerror(errno));
        off += (size_t)n;
    }
}

/* The effective config as dg_conf_print writes it; malloc'd. */
static char *print_cfg(const struct cfg *c, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        die("open_memstream", strerror(errno));
    dg_conf_print(&schema, c, f);
    fclose(f);
    if (len)
        *len = n;
    return buf;
}

static void cfg_defaults(struct cfg *c)
{
    struct dg_err err = {0};
    memset(c, 0, sizeof(*c));
    if (dg_conf_defaults(&schema, c, &err) != 0)
        die("defaults", err.msg);
}

/* A config that loaded or was set must survive print -> load -> print unchanged. */
static void check_round_trip(const struct cfg *c, const char *how)
{
    size_t len;
    char *printed = print_cfg(c, &len);
    memfd_put(printed, len);
    struct cfg again;
    cfg_defaults(&again);
    struct dg_err err = {0};
    if (dg_conf_load_file(&schema, &again, memfd_path, &err) != 0) {
        fprintf(stderr, "fuzz_config: printed config (after %s):\n%s", how, printed);
        die("printed config does not load", err.msg);
    }
    char *reprinted = print_cfg(&again, NULL);
    if (strcmp(printed, reprinted) != 0) {
        fprintf(stderr, "fuzz_config: printed (after %s):\n%s\nreloaded:\n%s", how, printed,
                reprinted);
        die("printed config loads as another config", how);
    }
    free(reprinted);
    free(printed);
    dg_conf_free(&schema, &again);
}

static void fuzz_file(const uint8_t *data, size_t size)
{
    struct cfg c;
    cfg_defaults(&c);
    char *before = print_cfg(&c, NULL);
    memfd_put(data, size);
    struct dg_err err = {0};
    struct dg_strlist warnings = {0};
    int rc = dg_conf_load_file_warn(&schema, &c, memfd_path, &warnings, &err);
    for (size_t i = 0; i < warnings.n; i++)
        if (strncmp(warnings.v[i], memfd_path, strlen(memfd_path)) != 0)
            die("a warning that does not start with the path", warnings.v[i]);
    if (rc < 0 && warnings.n)
        die("a failed load warned", warnings.v[0]);
    dg_strlist_free(&warnings);
    if (rc < 0) {
        if (strncmp(err.msg, memfd_path, strlen(memfd_path)) != 0)
            die("a file error that does not start with the path", err.msg);
        char *after = print_cfg(&c, NULL);
        if (strcmp(before, after) != 0)
            die("a failed load changed the config", err.msg);
        free(after);
    } else if (rc > 0) {
        die("load", "a positive return code");
    } else {
        check_round_trip(&c, "load");
    }
    free(before);
    dg_conf_free(&schema, &c);
}

/* True when libyaml's reader accepts `s` inside a quoted scalar: valid UTF-8 whose code
 * points above ASCII are "printable" (yaml_parser_update_buffer). Control characters below
 * 0x80 do not count: dg_conf_print escapes them. */
static bool yaml_readable(const unsigned char *s)
{
    static const uint32_t min_cp[] = {0, 0x80, 0x800, 0x10000};
    while (*s) {
        uint32_t cp;
        unsigned n;
        if (*s < 0x80) {
            s++;
            continue;
        }
        if ((*s & 0xe0) == 0xc0)
            cp = *s & 0x1f, n = 1;
        else if ((*s & 0xf0) == 0xe0)
            cp = *s & 0x0f, n = 2;
        else if ((*s & 0xf8) == 0xf0)
            cp = *s & 0x07, n = 3;
        else
            return false;
        s++;
        for (unsigned i = 0; i < n; i++, s++) {
            if ((*s & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (*s & 0x3f);
        }
        if (cp < min_cp[n] || cp > 0x10ffff)
            return false;
        if (!(cp == 0x85 || (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
              cp >= 0x10000))
            return false;
    }
    return true;
}

static void fuzz_set(const uint8_t *data, size_t size)
{
    char *assignment = malloc(size + 1);
    if (!assignment)
        abort();
    memcpy(assignment, data, size);
    assignment[size] = '\0';
    struct cfg c;
    cfg_defaults(&c);
    char *before = print_cfg(&c, NULL);
    struct dg_err err = {0};
    int rc = dg_conf_set(&schema, &c, assignment, &err);
    if (rc < 0) {
        char *after = print_cfg(&c, NULL);
        if (strcmp(before, after) != 0)
            die("a failed --set changed the config", err.msg);
        free(after);
    } else if (rc > 0) {
        die("set", "a positive return code");
    } else if (yaml_readable((const unsigned char *)assignment)) {
        /* --set takes any bytes; a YAML file cannot hold every byte sequence (invalid UTF-8,
         * C1 controls), so only text a file could hold must round-trip. */
        check_round_trip(&c, "--set");
    }
    free(before);
    free(assignment);
    dg_conf_free(&schema, &c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file(data, size);
    fuzz_set(data, size);
    return 0;
}
