/*
 * config.h: one schema table per program gives every key its type, default,
 * bounds and help. From that table come the defaults, the YAML file reader,
 * `--set key=value` overrides, environment overrides, `--help` and
 * `--print-config`.
 *
 * Keys are the original's camelCase names; nested YAML mappings are addressed
 * with dots (`redis.address` is `redis: {address: ...}` in a file).
 *
 * Precedence: defaults < --config FILE < environment (field.env) < --set / --KEY.
 * Errors name where and what: `fn.yaml:3: port: expected an integer 1..65535, got 'abc'`.
 */
#ifndef DIRIGENT_CONFIG_H
#define DIRIGENT_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "dirigent/common.h"
#include "dirigent/config_compat.h"

enum dg_conf_type {
    DG_CONF_BOOL,     /* bool: true|false|yes|no|on|off|1|0 */
    DG_CONF_INT,      /* int64_t, bounded by [min, max] */
    DG_CONF_DOUBLE,   /* double, bounded by [dmin, dmax] */
    DG_CONF_STRING,   /* char * (owned by the config, freed by dg_conf_free); "" allowed */
    DG_CONF_ENUM,     /* char *, one of choices[] */
    DG_CONF_DURATION, /* int64_t milliseconds; text "250ms", "2s", "1m", "1h"; a bare number is
                         milliseconds; bounded by [min, max] in ms */
    DG_CONF_SIZE,   /* int64_t bytes; text "16KiB", "10MiB", "1GiB", "512"; bounded by [min, max] */
    DG_CONF_STRLIST /* struct dg_strlist; a YAML sequence of scalars or a comma-separated string */
};

struct dg_conf_field {
    const char *key; /* "port", "redis.address" */
    enum dg_conf_type type;
    size_t offset;              /* offsetof(struct prog_config, member) */
    const char *def;            /* default as text, parsed like a --set value; NULL = "" / 0 */
    int64_t min, max;           /* INT, DURATION, SIZE bounds (inclusive); min == max == 0: none */
    double dmin, dmax;          /* DOUBLE bounds; dmin == dmax == 0: none */
    const char *const *choices; /* ENUM: NULL-terminated list */
    const char *env;            /* optional environment variable that overrides the file */
    const char *help;           /* one line for --help */
};

struct dg_conf_schema {
    const char *prog;    /* "dirigent-fn" */
    const char *summary; /* one line shown by --help */
    const struct dg_conf_field *fields;
    size_t nfields;
    /* The original's keys (config_compat.h); NULL: dg_conf_compat_for(prog). */
    const struct dg_conf_compat *compat;
    size_t ncompat;
};

/* Apply every default to `cfg` (a zeroed struct of the program). Returns 0 or a negative code
 * (a default that does not parse is a programming error, reported like any other). */
int dg_conf_defaults(const struct dg_conf_schema *s, void *cfg, struct dg_err *err);

/* Read a YAML file (a mapping, possibly nested) into `cfg`. Unknown keys and bad values fail
 * with "PATH:LINE: KEY: expected ..., got '...'". On error `cfg` is left unchanged. The
 * original's keys in the schema's compat table load with a warning each. */
int dg_conf_load_file(const struct dg_conf_schema *s, void *cfg, const char *path,
                      struct dg_err *err);
/* The same, with the warnings about the original's keys appended to `warnings` (one line each,
 * "PATH:LINE: KEY: ...", in file order; none on error). dg_conf_load_file prints them to stderr
 * as "PROG: warning: ..."; dg_conf_parse_args does the same. */
int dg_conf_load_file_warn(const struct dg_conf_schema *s, void *cfg, const char *path,
                           struct dg_strlist *warnings, struct dg_err *err);

/* Apply one "key=value" override. Errors: "--set KEY: expected ..., got '...'" or
 * "--set: unknown key 'KEY'". On error `cfg` is unchanged. */
int dg_conf_set(const struct dg_conf_schema *s, void *cfg, const char *assignment,
                struct dg_err *err);

/* Apply the environment overrides of every field that names one (env set and non-empty). */
int dg_conf_apply_env(const struct dg_conf_schema *s, void *cfg, struct dg_err *err);

enum dg_conf_parse_result {
    DG_CONF_RUN = 0,  /* proceed with the program */
    DG_CONF_EXIT = 1, /* --help or --print-config was handled: exit 0 */
};

/* The whole command line of a daemon: --config FILE, --set key=value (repeatable),
 * --KEY VALUE / --KEY=VALUE (shorthand for --set, for any key in the table), --help,
 * --print-config, --log-level LEVEL (shorthand for --set logLevel=...).
 * Applies defaults, then the file, then the environment, then the overrides in order.
 * Output of --help / --print-config goes to `out`. Returns DG_CONF_RUN, DG_CONF_EXIT, or a
 * negative code with `err` set (the caller prints it and exits 2). */
int dg_conf_parse_args(const struct dg_conf_schema *s, void *cfg, int argc, char **argv, FILE *out,
                       struct dg_err *err);

/* --help text generated from the table: key, type, default, bounds, help. */
void dg_conf_print_help(const struct dg_conf_schema *s, FILE *out);
/* The effective config as YAML (nested keys re-nested), loadable by dg_conf_load_file. */
void dg_conf_print(const struct dg_conf_schema *s, const void *cfg, FILE *out);
/* Free the strings and lists owned by `cfg` (not cfg itself). */
void dg_conf_free(const struct dg_conf_schema *s, void *cfg);

#endif
