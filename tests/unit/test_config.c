/*
 * test_config.c: the schema-driven config (lib/config.c) seen from a program's side. A test
 * schema covers every type, a nested group (redis.*) and environment overrides; each case
 * writes a YAML file under /tmp and checks the values or the exact error a user would read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dirigent/config.h"

struct tcfg {
    bool debug;
    int64_t port;
    double ratio;
    char *name;
    char *policy;
    int64_t timeout_ms;
    int64_t max_body;
    struct dg_strlist peers;
    char *redis_address;
    int64_t redis_db;
    char *log_level;
};

static const char *const policies[] = {"random", "round-robin", "kubernetes", NULL};
static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

#define F(k, t, m) .key = k, .type = t, .offset = offsetof(struct tcfg, m)
static const struct dg_conf_field fields[] = {
    {F("debug", DG_CONF_BOOL, debug), .def = "false", .help = "verbose output"},
    {F("port", DG_CONF_INT, port), .def = "8080", .min = 1, .max = 65535, .env = "TDG_PORT",
     .help = "listen port"},
    {F("ratio", DG_CONF_DOUBLE, ratio), .def = "0.5", .dmin = 0, .dmax = 1, .help = "a share"},
    {F("name", DG_CONF_STRING, name), .def = "fn", .help = "function name"},
    {F("policy", DG_CONF_ENUM, policy), .def = "round-robin", .choices = policies,
     .help = "load balancing"},
    {F("timeout", DG_CONF_DURATION, timeout_ms), .def = "2s", .min = 1, .max = 3600000,
     .help = "request timeout"},
    {F("maxBody", DG_CONF_SIZE, max_body), .def = "16KiB", .min = 1, .max = 1 << 30,
     .help = "largest body"},
    {F("peers", DG_CONF_STRLIST, peers), .def = "a, b", .env = "TDG_PEERS", .help = "peers"},
    {F("redis.address", DG_CONF_STRING, redis_address), .def = "127.0.0.1:6379", .env = "TDG_REDIS",
     .help = "redis host:port"},
    {F("redis.db", DG_CONF_INT, redis_db), .def = "0", .min = 0, .max = 15, .help = "db index"},
    {F("logLevel", DG_CONF_ENUM, log_level), .def = "info", .choices = levels, .help = "log level"},
};
static const struct dg_conf_schema schema = {
    "test-prog", "A program to test the config.", fields, DG_ARRAY_LEN(fields), NULL, 0};

/* Per-test state: the config and the temp files to remove. */
struct fix {
    struct tcfg cfg;
    struct dg_err err;
    char paths[16][64];
    int npaths;
};

static int setup(void **state)
{
    struct fix *fx = calloc(1, sizeof(*fx));
    unsetenv("TDG_PORT");
    unsetenv("TDG_PEERS");
    unsetenv("TDG_REDIS");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fix *fx = *state;
    dg_conf_free(&schema, &fx->cfg);
    for (int i = 0; i < fx->npaths; i++)
        unlink(fx->paths[i]);
    unsetenv("TDG_PORT");
    unsetenv("TDG_PEERS");
    unsetenv("TDG_REDIS");
    free(fx);
    return 0;
}

/* Write `text` to a new temp file; returns its path (removed in teardown). */
static const char *tmpfile_with(struct fix *fx, const char *text)
{
    assert_true(fx->npaths < 16);
    char *p = fx->paths[fx->npaths++];
    strcpy(p, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(p);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return p;
}

static void load_defaults(struct fix *fx)
{
    assert_int_equal(dg_conf_defaults(&schema, &fx->cfg, &fx->err), 0);
}

/* Load `text` and expect failure with a message containing every NULL-terminated needle. */
static void expect_load_error(struct fix *fx, const char *text, ...)
{
    const char *path = tmpfile_with(fx, text);
    assert_true(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err) < 0);
    assert_non_null(strstr(fx->err.msg, path));
    va_list ap;
    va_start(ap, text);
    for (const char *s; (s = va_arg(ap, const char *));) {
        if (!strstr(fx->err.msg, s))
            fail_msg("error '%s' lacks '%s'", fx->err.msg, s);
    }
    va_end(ap);
}

/* The message with the temp path replaced by "F", for exact comparisons. */
static const char *msg_without_path(struct fix *fx)
{
    static char buf[300];
    const char *path = fx->paths[fx->npaths - 1], *at = strstr(fx->err.msg, path);
    assert_non_null(at);
    snprintf(buf, sizeof(buf), "%.*sF%s", (int)(at - fx->err.msg), fx->err.msg, at + strlen(path));
    return buf;
}

static int run_args(struct fix *fx, FILE *out, int argc, const char **argv)
{
    return dg_conf_parse_args(&schema, &fx->cfg, argc, (char **)argv, out, &fx->err);
}

static void test_defaults(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    assert_false(fx->cfg.debug);
    assert_int_equal(fx->cfg.port, 8080);
    assert_true(fx->cfg.ratio == 0.5);
    assert_string_equal(fx->cfg.name, "fn");
    assert_string_equal(fx->cfg.policy, "round-robin");
    assert_int_equal(fx->cfg.timeout_ms, 2000);
    assert_int_equal(fx->cfg.max_body, 16384);
    assert_int_equal(fx->cfg.peers.n, 2);
    assert_string_equal(fx->cfg.peers.v[0], "a");
    assert_string_equal(fx->cfg.peers.v[1], "b");
    assert_string_equal(fx->cfg.redis_address, "127.0.0.1:6379");
    assert_int_equal(fx->cfg.redis_db, 0);
    assert_string_equal(fx->cfg.log_level, "info");
}

static void test_bad_default_is_reported(void **state)
{
    static const struct dg_conf_field bad[] = {
        {.key = "port", .type = DG_CONF_INT, .offset = 0, .def = "0", .min = 1, .max = 10}};
    const struct dg_conf_schema s = {"x", NULL, bad, 1, NULL, 0};
    int64_t v = 7;
    struct fix *fx = *state;
    assert_int_equal(dg_conf_defaults(&s, &v, &fx->err), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "default of port: expected an integer 1..10, got '0'");
    assert_int_equal(v, 7);
}

static void test_file_flat_and_nested(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    const char *path = tmpfile_with(fx, "# comment\n"
                                        "debug: yes\n"
                                        "port: 9090\n"
                                        "ratio: 0.25\n"
                                        "name: hello world\n"
                                        "policy: kubernetes\n"
                                        "timeout: 1.5s\n"
                                        "maxBody: 10MiB\n"
                                        "redis:\n"
                                        "  address: redis:6380\n"
                                        "  db: 3\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_true(fx->cfg.debug);
    assert_int_equal(fx->cfg.port, 9090);
    assert_true(fx->cfg.ratio == 0.25);
    assert_string_equal(fx->cfg.name, "hello world");
    assert_string_equal(fx->cfg.policy, "kubernetes");
    assert_int_equal(fx->cfg.timeout_ms, 1500);
    assert_int_equal(fx->cfg.max_body, 10 << 20);
    assert_string_equal(fx->cfg.redis_address, "redis:6380");
    assert_int_equal(fx->cfg.redis_db, 3);
    /* untouched keys keep their defaults */
    assert_int_equal(fx->cfg.peers.n, 2);
    assert_string_equal(fx->cfg.log_level, "info");
}

static void test_file_flow_mapping_dotted_key_and_null_string(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    const char *path = tmpfile_with(fx, "redis: {address: 'x:1'}\nredis.db: 2\nname: ~\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_string_equal(fx->cfg.redis_address, "x:1");
    assert_int_equal(fx->cfg.redis_db, 2);
    assert_string_equal(fx->cfg.name, "");
}

static void test_empty_file_sets_nothing(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    const char *path = tmpfile_with(fx, "");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    path = tmpfile_with(fx, "---\n# nothing\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_int_equal(fx->cfg.port, 8080);
}

static void test_set_overrides_file(void **state)
{
    struct fix *fx = *state;
    const char *path = tmpfile_with(fx, "port: 9090\nname: file\nredis:\n  db: 4\n");
    /* --set before --config still wins: the file is always applied first */
    const char *argv[] = {"prog", "--set", "port=7070", "--config", path, "--set=redis.db=5"};
    assert_int_equal(run_args(fx, NULL, 6, argv), DG_CONF_RUN);
    assert_int_equal(fx->cfg.port, 7070);
    assert_int_equal(fx->cfg.redis_db, 5);
    assert_string_equal(fx->cfg.name, "file");
    assert_int_equal(fx->cfg.timeout_ms, 2000);
}

static void test_set_errors(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "port=abc", &fx->err), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--set port: expected an integer 1..65535, got 'abc'");
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "prot=1", &fx->err), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--set: unknown key 'prot' (did you mean 'port'?)");
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "port", &fx->err), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--set: expected key=value, got 'port'");
    assert_int_equal(fx->cfg.port, 8080);
    /* an empty value is a value */
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "name=", &fx->err), 0);
    assert_string_equal(fx->cfg.name, "");
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "name=a=b", &fx->err), 0);
    assert_string_equal(fx->cfg.name, "a=b");
}

static void test_key_options(void **state)
{
    struct fix *fx = *state;
    const char *argv[] = {"prog",    "--port",      "9000", "--timeout=250ms", "--debug", "--peers",
                          "x, y,,z", "--log-level", "warn", "--redis.db=7",    "--ratio", "1"};
    assert_int_equal(run_args(fx, NULL, 12, argv), DG_CONF_RUN);
    assert_int_equal(fx->cfg.port, 9000);
    assert_int_equal(fx->cfg.timeout_ms, 250);
    assert_true(fx->cfg.debug);
    assert_int_equal(fx->cfg.peers.n, 3);
    assert_string_equal(fx->cfg.peers.v[2], "z");
    assert_string_equal(fx->cfg.log_level, "warn");
    assert_int_equal(fx->cfg.redis_db, 7);
    assert_true(fx->cfg.ratio == 1.0);
    dg_conf_free(&schema, &fx->cfg);

    const char *argv2[] = {"prog", "--debug=false", "--port=1"};
    assert_int_equal(run_args(fx, NULL, 3, argv2), DG_CONF_RUN);
    assert_false(fx->cfg.debug);
    assert_int_equal(fx->cfg.port, 1);
}

static void test_arg_errors(void **state)
{
    struct fix *fx = *state;
    const char *a1[] = {"prog", "--prot", "1"};
    assert_int_equal(run_args(fx, NULL, 3, a1), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "unknown option '--prot' (see --help)");
    const char *a2[] = {"prog", "extra"};
    assert_int_equal(run_args(fx, NULL, 2, a2), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "unexpected argument 'extra' (see --help)");
    const char *a3[] = {"prog", "--port"};
    assert_int_equal(run_args(fx, NULL, 2, a3), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--port: missing value");
    const char *a4[] = {"prog", "--port=0"};
    assert_int_equal(run_args(fx, NULL, 2, a4), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--port: expected an integer 1..65535, got '0'");
    assert_null(fx->cfg.name); /* what was loaded has been freed */
    const char *a5[] = {"prog", "--config"};
    assert_int_equal(run_args(fx, NULL, 2, a5), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--config: missing FILE");
    const char *a6[] = {"prog", "-x"};
    assert_int_equal(run_args(fx, NULL, 2, a6), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "unknown option '-x' (see --help)");
    const char *a7[] = {"prog", "--config", "/nonexistent/test_config.yaml"};
    assert_true(run_args(fx, NULL, 3, a7) < 0);
    assert_string_equal(fx->err.msg,
                        "/nonexistent/test_config.yaml: cannot open: No such file or directory");
    const char *a9[] = {"prog", "--config="};
    assert_int_equal(run_args(fx, NULL, 2, a9), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--config: missing FILE");
    const char *a10[] = {"prog", "-"};
    assert_int_equal(run_args(fx, NULL, 2, a10), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "unknown option '-' (see --help)");
    const char *a8[] = {"prog", "--set", "port=x"};
    assert_int_equal(run_args(fx, NULL, 3, a8), DG_E_INVAL);
    assert_string_equal(fx->err.msg, "--set port: expected an integer 1..65535, got 'x'");
}

static void test_env_between_file_and_set(void **state)
{
    struct fix *fx = *state;
    const char *path = tmpfile_with(fx, "port: 9090\npeers: [f1]\nredis: {address: file:1}\n");
    setenv("TDG_PORT", "9191", 1);
    setenv("TDG_PEERS", "e1,e2", 1);
    setenv("TDG_REDIS", "", 1); /* empty counts as unset */
    const char *argv[] = {"prog", "--config", path};
    assert_int_equal(run_args(fx, NULL, 3, argv), DG_CONF_RUN);
    assert_int_equal(fx->cfg.port, 9191);
    assert_int_equal(fx->cfg.peers.n, 2);
    assert_string_equal(fx->cfg.peers.v[1], "e2");
    assert_string_equal(fx->cfg.redis_address, "file:1");
    dg_conf_free(&schema, &fx->cfg);

    const char *argv2[] = {"prog", "--config", path, "--port", "9292"};
    assert_int_equal(run_args(fx, NULL, 5, argv2), DG_CONF_RUN);
    assert_int_equal(fx->cfg.port, 9292);
    dg_conf_free(&schema, &fx->cfg);

    setenv("TDG_PORT", "http", 1);
    assert_int_equal(run_args(fx, NULL, 3, argv), DG_E_INVAL);
    assert_string_equal(
        fx->err.msg, "environment TDG_PORT (key port): expected an integer 1..65535, got 'http'");
}

static void test_bad_values(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    expect_load_error(fx, "name: x\ndebug: maybe\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:2: debug: expected a boolean (true or false), got 'maybe'");
    expect_load_error(fx, "name: x\n\nport: 70000\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:3: port: expected an integer 1..65535, got '70000'");
    expect_load_error(fx, "port: 80abc\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:1: port: expected an integer 1..65535, got '80abc'");
    expect_load_error(fx, "debug: true\nratio: 1.5\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:2: ratio: expected a number 0..1, got '1.5'");
    expect_load_error(fx, "policy: fastest\n", NULL);
    assert_string_equal(
        msg_without_path(fx),
        "F:1: policy: expected one of random|round-robin|kubernetes, got 'fastest'");
    expect_load_error(fx, "\n\n\n\ntimeout: 2 weeks\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:5: timeout: expected a duration 1ms..1h (like 250ms, 2s or 1m), got "
                        "'2 weeks'");
}

static void test_bad_values_more(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    expect_load_error(fx, "maxBody: 2GiB\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:1: maxBody: expected a size 1..1GiB (like 512, 16KiB or 10MiB), got "
                        "'2GiB'");
    expect_load_error(fx, "maxBody: 99999999999999GiB\n", "maxBody: expected a size", NULL);
    expect_load_error(fx, "peers:\n  - a\n  - {host: b}\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:3: peers: expected a list of strings, got a mapping item");
    expect_load_error(fx, "port:\n  - 1\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:2: port: expected an integer 1..65535, got a list");
}

static void test_structure_errors(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    expect_load_error(fx, "port: 1\nprot: 2\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:2: unknown key 'prot' (did you mean 'port'?)");
    expect_load_error(fx, "redis:\n  adress: x\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:2: unknown key 'redis.adress' (did you mean 'redis.address'?)");
    expect_load_error(fx, "cache:\n  size: 1\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:1: unknown key 'cache'");
    expect_load_error(fx, "PORT: 1\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:1: unknown key 'PORT' (did you mean 'port'?)");
    expect_load_error(fx, "redis: localhost\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:1: redis: expected a mapping of redis.* keys, got a scalar");
    expect_load_error(fx, "name: a\nport: 1\nname: b\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:3: name: duplicate key");
}

static void test_structure_errors_more(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    expect_load_error(fx, "redis:\n  db: 1\nredis:\n  address: x\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:3: redis: duplicate key");
    expect_load_error(fx, "port: 1\n\tname: x\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:2: invalid YAML: found a tab character that violates indentation");
    expect_load_error(fx, "- 1\n- 2\n", NULL);
    assert_string_equal(msg_without_path(fx), "F:1: expected a mapping of keys, got a list");
    expect_load_error(fx, "name: &n x\nredis: {address: *n}\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:2: redis.address: aliases (*name) are not supported");
}

static void test_yaml_syntax_error_line(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    expect_load_error(fx, "port: 1\nname: x\n  bad: indent\n", NULL);
    assert_string_equal(msg_without_path(fx),
                        "F:3: invalid YAML: mapping values are not allowed in this context");
    expect_load_error(fx, "name: \"open\n", ":2: invalid YAML: ", NULL);
}

static void test_missing_file(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    assert_true(dg_conf_load_file(&schema, &fx->cfg, "/nonexistent/x.yaml", &fx->err) < 0);
    assert_string_equal(fx->err.msg, "/nonexistent/x.yaml: cannot open: No such file or directory");
    assert_true(dg_conf_load_file(&schema, &fx->cfg, "/tmp", &fx->err) < 0);
    assert_string_equal(fx->err.msg, "/tmp: cannot open: Is a directory");
}

static void test_failed_load_leaves_cfg_unchanged(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    char *name = fx->cfg.name, **peers = fx->cfg.peers.v;
    expect_load_error(fx, "name: changed\npeers: [x, y, z]\nport: 5\nredis: {db: 99}\n",
                      ":4: redis.db: expected an integer 0..15, got '99'", NULL);
    assert_ptr_equal(fx->cfg.name, name);
    assert_string_equal(fx->cfg.name, "fn");
    assert_ptr_equal(fx->cfg.peers.v, peers);
    assert_int_equal(fx->cfg.peers.n, 2);
    assert_int_equal(fx->cfg.port, 8080);
    assert_int_equal(fx->cfg.redis_db, 0);
}

static char *capture(struct fix *fx, int argc, const char **argv, int want)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    assert_int_equal(run_args(fx, out, argc, argv), want);
    fclose(out);
    return text;
}

static void test_help(void **state)
{
    struct fix *fx = *state;
    const char *argv[] = {"prog", "--port", "1", "--help"};
    char *text = capture(fx, 4, argv, DG_CONF_EXIT);
    assert_non_null(strstr(text, "Usage: test-prog [--config FILE] [--set key=value]... "
                                 "[--KEY VALUE]... [--print-config] [--help]\n"));
    assert_non_null(strstr(text, "A program to test the config."));
    for (size_t i = 0; i < DG_ARRAY_LEN(fields); i++) {
        const char *line = strstr(text, fields[i].key);
        if (!line)
            fail_msg("help lacks key %s", fields[i].key);
        const char *eol = strchr(line, '\n');
        char *row = strndup(line, (size_t)(eol - line));
        if (!strstr(row, fields[i].def) || !strstr(row, fields[i].help))
            fail_msg("help row '%s' lacks default '%s' or help", row, fields[i].def);
        free(row);
    }
    assert_non_null(strstr(text, "1..65535; env TDG_PORT"));
    assert_non_null(strstr(text, "one of random|round-robin|kubernetes"));
    assert_non_null(strstr(text, "KiB"));
    assert_null(fx->cfg.name); /* --help does not load anything */
    free(text);
}

static void test_print_config_round_trip(void **state)
{
    struct fix *fx = *state;
    const char *argv[] = {"prog",
                          "--set",
                          "name=say \"hi\"\\ \t:#x\xe2\x80\xa8y\xc2\x85z\xc2\x8f\xef\xbf\xbe",
                          "--peers",
                          "p:1, p 2",
                          "--timeout",
                          "90s",
                          "--maxBody",
                          "3MiB",
                          "--ratio",
                          "0.1",
                          "--redis.address",
                          "",
                          "--port",
                          "123",
                          "--print-config"};
    char *text = capture(fx, 16, argv, DG_CONF_EXIT);
    assert_non_null(strstr(text, "timeout: 90s\n"));
    assert_non_null(strstr(text, "maxBody: 3MiB\n"));
    assert_non_null(strstr(text, "peers: [\"p:1\", \"p 2\"]\n"));
    assert_non_null(strstr(text, "redis:\n  address: \"\"\n  db: 0\n"));

    struct fix other = {0};
    const char *path = tmpfile_with(fx, text);
    load_defaults(&other);
    assert_int_equal(dg_conf_load_file(&schema, &other.cfg, path, &other.err), 0);
    struct tcfg *a = &fx->cfg, *b = &other.cfg;
    assert_int_equal(a->debug, b->debug);
    assert_int_equal(a->port, b->port);
    assert_true(a->ratio == b->ratio);
    assert_string_equal(a->name, b->name);
    /* U+2028 and U+0085 are line breaks to YAML, U+008F and U+FFFE not printable: printed
     * escaped, read back the same */
    assert_string_equal(b->name, "say \"hi\"\\ \t:#x\xe2\x80\xa8y\xc2\x85z\xc2\x8f\xef\xbf\xbe");
    assert_string_equal(a->policy, b->policy);
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->max_body, b->max_body);
    assert_int_equal(a->peers.n, b->peers.n);
    for (size_t i = 0; i < a->peers.n; i++)
        assert_string_equal(a->peers.v[i], b->peers.v[i]);
    assert_string_equal(a->redis_address, b->redis_address);
    assert_int_equal(a->redis_db, b->redis_db);
    assert_string_equal(a->log_level, b->log_level);
    dg_conf_free(&schema, &other.cfg);
    free(text);
}

/* Keys of one group that are not contiguous in the table still print as one mapping. */
static void test_print_regroups_keys(void **state)
{
    struct grp {
        int64_t ax, b, ay, azq;
    } g = {0}, back = {0};
    static const struct dg_conf_field gf[] = {
        {.key = "a.x", .type = DG_CONF_INT, .offset = offsetof(struct grp, ax), .def = "1"},
        {.key = "b", .type = DG_CONF_DURATION, .offset = offsetof(struct grp, b), .def = "0"},
        {.key = "a.y", .type = DG_CONF_SIZE, .offset = offsetof(struct grp, ay), .def = "512"},
        {.key = "a.z.q", .type = DG_CONF_INT, .offset = offsetof(struct grp, azq), .def = "-3"},
    };
    const struct dg_conf_schema gs = {"g", NULL, gf, DG_ARRAY_LEN(gf), NULL, 0};
    struct fix *fx = *state;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_int_equal(dg_conf_defaults(&gs, &g, &fx->err), 0);
    dg_conf_print(&gs, &g, out);
    fclose(out);
    assert_string_equal(text, "# g: effective configuration\n"
                              "a:\n  x: 1\n  y: 512\n  z:\n    q: -3\nb: 0\n");
    assert_int_equal(dg_conf_load_file(&gs, &back, tmpfile_with(fx, text), &fx->err), 0);
    assert_memory_equal(&g, &back, sizeof(g));
    free(text);
}

static void test_strlist_forms(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    const char *path = tmpfile_with(fx, "peers:\n  - 10.0.0.1:80\n  - 'b, c'\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_int_equal(fx->cfg.peers.n, 2);
    assert_string_equal(fx->cfg.peers.v[0], "10.0.0.1:80");
    assert_string_equal(fx->cfg.peers.v[1], "b, c"); /* sequence items are not split */
    path = tmpfile_with(fx, "peers: ' x ,y,, z '\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_int_equal(fx->cfg.peers.n, 3);
    assert_string_equal(fx->cfg.peers.v[0], "x");
    assert_string_equal(fx->cfg.peers.v[2], "z");
    path = tmpfile_with(fx, "peers: []\n");
    assert_int_equal(dg_conf_load_file(&schema, &fx->cfg, path, &fx->err), 0);
    assert_int_equal(fx->cfg.peers.n, 0);
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "peers=a,b,c", &fx->err), 0);
    assert_int_equal(fx->cfg.peers.n, 3);
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "peers=", &fx->err), 0);
    assert_int_equal(fx->cfg.peers.n, 0);
}

static void test_value_spellings(void **state)
{
    static const struct {
        const char *set;
        int64_t want;
    } cases[] = {
        {"timeout=250ms", 250},    {"timeout=2s", 2000},    {"timeout=1.5s", 1500},
        {"timeout=1m", 60000},     {"timeout=1h", 3600000}, {"timeout=1m30s", 90000},
        {"timeout=250", 250},      {"timeout=0.0015s", 1},  {"maxBody=512", 512},
        {"maxBody=16K", 16384},    {"maxBody=16KB", 16384}, {"maxBody=16kib", 16384},
        {"maxBody=1GiB", 1 << 30}, {"maxBody=1.5K", 1536},  {"maxBody=2 MiB", 2 << 20},
        {"port=+80", 80},
    };
    static const char *const bad[] = {"timeout=-1s", "timeout=1d", "timeout=1s2",
                                      "timeout=",    "timeout=0",  "maxBody=1XB",
                                      "maxBody=-1",  "maxBody=K",  "port=1.0"};
    struct fix *fx = *state;
    load_defaults(fx);
    for (size_t i = 0; i < DG_ARRAY_LEN(cases); i++) {
        if (dg_conf_set(&schema, &fx->cfg, cases[i].set, &fx->err) != 0)
            fail_msg("%s: %s", cases[i].set, fx->err.msg);
        int64_t got = strncmp(cases[i].set, "timeout", 7) == 0 ? fx->cfg.timeout_ms
                      : cases[i].set[0] == 'p'                 ? fx->cfg.port
                                                               : fx->cfg.max_body;
        if (got != cases[i].want)
            fail_msg("%s gave %lld", cases[i].set, (long long)got);
    }
    for (size_t i = 0; i < DG_ARRAY_LEN(bad); i++)
        if (dg_conf_set(&schema, &fx->cfg, bad[i], &fx->err) == 0)
            fail_msg("%s was accepted", bad[i]);
    static const char *const truthy[] = {"true", "YES", "On", "1"};
    static const char *const falsy[] = {"False", "no", "OFF", "0"};
    char buf[32];
    for (size_t i = 0; i < 4; i++) {
        snprintf(buf, sizeof(buf), "debug=%s", truthy[i]);
        assert_int_equal(dg_conf_set(&schema, &fx->cfg, buf, &fx->err), 0);
        assert_true(fx->cfg.debug);
        snprintf(buf, sizeof(buf), "debug=%s", falsy[i]);
        assert_int_equal(dg_conf_set(&schema, &fx->cfg, buf, &fx->err), 0);
        assert_false(fx->cfg.debug);
    }
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "policy=Random", &fx->err), 0);
    assert_string_equal(fx->cfg.policy, "random");
}

static void test_free_leaves_nothing(void **state)
{
    struct fix *fx = *state;
    load_defaults(fx);
    assert_int_equal(dg_conf_set(&schema, &fx->cfg, "name=x", &fx->err), 0);
    dg_conf_free(&schema, &fx->cfg);
    assert_null(fx->cfg.name);
    assert_null(fx->cfg.policy);
    assert_null(fx->cfg.redis_address);
    assert_null(fx->cfg.log_level);
    assert_null(fx->cfg.peers.v);
    assert_int_equal(fx->cfg.peers.n, 0);
    dg_conf_free(&schema, &fx->cfg); /* twice is harmless */
}

/* ---- the original's keys (a compat table) ---- */

/* "false" -> "random" for `policy`, an error for "bad", anything else is ours. */
static int policy_value(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    if (!strcmp(t, "bad"))
        return dg_err_set(err, DG_E_INVAL, "no such policy in the original either");
    if (strcmp(t, "false") != 0)
        return DG_COMPAT_SAME;
    snprintf(buf, n, "random");
    *note = "the original's off";
    return DG_COMPAT_USE;
}

static int level_value(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    snprintf(buf, n, "%s", !strcmp(t, "trace") ? "debug" : t);
    return DG_COMPAT_USE;
}

static int drop_zero(const char *t, char *buf, size_t n, const char **note, struct dg_err *err)
{
    return strcmp(t, "0") ? DG_COMPAT_SAME : DG_COMPAT_DROP;
}

static const struct dg_conf_compat compat[] = {
    {.key = "verbosity", .kind = DG_COMPAT_MAP, .to = "logLevel", .value = level_value},
    {.key = "policy", .kind = DG_COMPAT_MAP, .to = "policy", .value = policy_value},
    {.key = "oldName", .kind = DG_COMPAT_MAP, .to = "name"},
    {.key = "redis.db",
     .kind = DG_COMPAT_MAP,
     .to = "redis.db",
     .value = drop_zero,
     .why = "db 0 is the default"},
    {.key = "redisHost", .kind = DG_COMPAT_HOST, .to = "redis.address", .def = "6379"},
    {.key = "redisPort", .kind = DG_COMPAT_PORT, .to = "redis.address", .def = "127.0.0.1"},
    {.key = "vm.*", .kind = DG_COMPAT_IGNORE, .why = "no VMs here"},
    {.key = "vmKernel", .kind = DG_COMPAT_IGNORE, .why = "no VMs here"},
    {.key = "async", .kind = DG_COMPAT_IGNORE, .why = "not implemented"},
    {.key = "prof.enable", .kind = DG_COMPAT_IGNORE, .why = "Go's pprof"},
    {.key = "broken", .kind = DG_COMPAT_MAP, .to = "noSuchKey"},
};
static const struct dg_conf_schema cschema = {"test-prog",          NULL,   fields,
                                              DG_ARRAY_LEN(fields), compat, DG_ARRAY_LEN(compat)};

/* Load `text` with the compat schema; returns the rc, warnings in *w (path replaced by F). */
static int load_compat(struct fix *fx, const char *text, struct dg_strlist *w)
{
    const char *path = tmpfile_with(fx, text);
    struct dg_strlist raw = {0};
    int rc = dg_conf_load_file_warn(&cschema, &fx->cfg, path, &raw, &fx->err);
    for (size_t i = 0; i < raw.n; i++) {
        assert_memory_equal(raw.v[i], path, strlen(path));
        dg_strlist_push(w, dg_xasprintf("F%s", raw.v[i] + strlen(path)));
    }
    dg_strlist_free(&raw);
    return rc;
}

static void test_compat_maps_with_warnings(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    assert_int_equal(load_compat(fx,
                                 "port: 9\n"
                                 "verbosity: trace\n"
                                 "policy: false\n"
                                 "oldName: hello\n",
                                 &w),
                     0);
    assert_string_equal(fx->cfg.log_level, "debug");
    assert_string_equal(fx->cfg.policy, "random");
    assert_string_equal(fx->cfg.name, "hello");
    assert_int_equal(fx->cfg.port, 9);
    assert_int_equal(w.n, 3);
    assert_string_equal(w.v[0], "F:2: verbosity: the original's key; using logLevel: debug");
    assert_string_equal(w.v[1], "F:3: policy: 'false' is the original's value; using policy: "
                                "random (the original's off)");
    assert_string_equal(w.v[2], "F:4: oldName: the original's key; using name: hello");
    dg_strlist_free(&w);
}

static void test_compat_own_values_stay_silent(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    assert_int_equal(load_compat(fx, "policy: kubernetes\nredis:\n  db: 3\n", &w), 0);
    assert_string_equal(fx->cfg.policy, "kubernetes");
    assert_int_equal(fx->cfg.redis_db, 3);
    assert_int_equal(w.n, 0);
    /* a value of ours that is bad is still an error of ours */
    assert_true(load_compat(fx, "policy: nope\n", &w) < 0);
    assert_non_null(strstr(fx->err.msg, ":1: policy: expected one of random|round-robin"));
    dg_strlist_free(&w);
}

static void test_compat_ignores_with_reason(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    assert_int_equal(load_compat(fx,
                                 "vm:\n"
                                 "  Kernel: /boot/x\n"
                                 "  Nested: {a: [1, 2], b: {c: d}}\n"
                                 "vmKernel: y\n"
                                 "async: [1, 2]\n"
                                 "prof:\n"
                                 "  enable: true\n"
                                 "redis:\n"
                                 "  db: 0\n"
                                 "port: 7\n",
                                 &w),
                     0);
    assert_int_equal(fx->cfg.port, 7); /* the keys after the skipped groups still load */
    assert_int_equal(fx->cfg.redis_db, 0);
    assert_int_equal(w.n, 5);
    assert_string_equal(w.v[0], "F:1: vm: ignored: no VMs here");
    assert_string_equal(w.v[1], "F:4: vmKernel: ignored: no VMs here");
    assert_string_equal(w.v[2], "F:5: async: ignored: not implemented");
    assert_string_equal(w.v[3], "F:7: prof.enable: ignored: Go's pprof");
    assert_string_equal(w.v[4], "F:9: redis.db: ignored: db 0 is the default");
    dg_strlist_free(&w);
}

static void test_compat_split_address(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    assert_int_equal(load_compat(fx, "redisHost: 10.0.0.1\nredisPort: 7000\n", &w), 0);
    assert_string_equal(fx->cfg.redis_address, "10.0.0.1:7000");
    assert_int_equal(w.n, 2);
    assert_string_equal(w.v[0], "F:1: redisHost: the original's key; using redis.address: "
                                "10.0.0.1:7000 (with redisPort)");
    assert_string_equal(w.v[1], "F:2: redisPort: the original's key; using redis.address: "
                                "10.0.0.1:7000 (with redisHost)");
    dg_strlist_free(&w);
    /* one part alone: the other from the entry's default */
    assert_int_equal(load_compat(fx, "redisPort: 7001\n", &w), 0);
    assert_string_equal(fx->cfg.redis_address, "127.0.0.1:7001");
    assert_int_equal(w.n, 1);
    dg_strlist_free(&w);
}

static void test_compat_ours_wins(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    /* order does not matter: our key wins over the original's either way */
    assert_int_equal(load_compat(fx,
                                 "verbosity: trace\nlogLevel: warn\n"
                                 "redis:\n  address: 1.2.3.4:5\nredisPort: 6\n",
                                 &w),
                     0);
    assert_string_equal(fx->cfg.log_level, "warn");
    assert_string_equal(fx->cfg.redis_address, "1.2.3.4:5");
    assert_int_equal(w.n, 2);
    assert_string_equal(w.v[0], "F:1: verbosity: ignored: logLevel is set already (by the file or "
                                "by another of the original's keys)");
    assert_non_null(strstr(w.v[1], "F:5: redisPort: ignored: redis.address is set already"));
    dg_strlist_free(&w);
}

static void test_compat_errors_name_file_and_line(void **state)
{
    struct fix *fx = *state;
    struct dg_strlist w = {0};
    load_defaults(fx);
    fx->cfg.port = 8080;
    /* unknown keys in neither table stay errors, and nothing is applied or warned */
    assert_true(load_compat(fx, "verbosity: trace\nport: 1\ncriTypo: x\n", &w) < 0);
    assert_string_equal(msg_without_path(fx), "F:3: unknown key 'criTypo'");
    assert_int_equal(w.n, 0);
    assert_int_equal(fx->cfg.port, 8080);
    assert_string_equal(fx->cfg.log_level, "info");
    /* inside a group of the original's that is not ignored as a whole */
    assert_true(load_compat(fx, "prof:\n  enable: true\n  mutex: false\n", &w) < 0);
    assert_string_equal(msg_without_path(fx), "F:3: unknown key 'prof.mutex'");
    /* a translator's error */
    assert_true(load_compat(fx, "policy: bad\n", &w) < 0);
    assert_string_equal(msg_without_path(fx), "F:1: policy: no such policy in the original either");
    /* a mapped value that ours rejects names both keys */
    assert_true(load_compat(fx, "oldName: [a, b]\n", &w) < 0);
    assert_string_equal(msg_without_path(fx), "F:1: oldName: expected a single value, got a list");
    assert_true(load_compat(fx, "oldName:\n  a: b\n", &w) < 0);
    assert_string_equal(msg_without_path(fx),
                        "F:2: oldName: expected a single value, got a mapping");
    assert_true(load_compat(fx, "redisPort: 1\nredisHost: [x]\n", &w) < 0);
    /* a table entry naming a key the program lacks is reported, not ignored */
    assert_true(load_compat(fx, "broken: 1\n", &w) < 0);
    assert_non_null(strstr(fx->err.msg, "broken: the original's key maps to 'noSuchKey'"));
    assert_int_equal(w.n, 0);
    dg_strlist_free(&w);
}

/* The daemons' tables: found by program name, every ignored key says why, no key twice. */
static void test_compat_daemon_tables(void **state)
{
    static const char *const progs[] = {"dirigent-cp", "dirigent-dp", "dirigent-worker"};
    size_t n = 99;
    assert_null(dg_conf_compat_for("dirigent-fn", &n));
    assert_int_equal(n, 0);
    for (size_t p = 0; p < DG_ARRAY_LEN(progs); p++) {
        const struct dg_conf_compat *t = dg_conf_compat_for(progs[p], &n);
        assert_non_null(t);
        assert_true(n > 3);
        for (size_t i = 0; i < n; i++) {
            if (t[i].kind == DG_COMPAT_IGNORE)
                assert_true(t[i].why && *t[i].why);
            else
                assert_true(t[i].to || t[i].value);
            for (size_t j = i + 1; j < n; j++)
                assert_string_not_equal(t[i].key, t[j].key);
        }
    }
    /* the original's keys the issue names */
    const struct dg_conf_compat *wk = dg_conf_compat_for("dirigent-worker", &n);
    const char *want[] = {"verbosity", "criType", "prefetchImage", "firecrackerKernel",
                          "firecracker.*"};
    for (size_t k = 0; k < DG_ARRAY_LEN(want); k++) {
        bool found = false;
        for (size_t i = 0; i < n; i++)
            found |= !strcmp(wk[i].key, want[k]);
        if (!found)
            fail_msg("dirigent-worker's table lacks %s", want[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_defaults),
        T(test_bad_default_is_reported),
        T(test_file_flat_and_nested),
        T(test_file_flow_mapping_dotted_key_and_null_string),
        T(test_empty_file_sets_nothing),
        T(test_set_overrides_file),
        T(test_set_errors),
        T(test_key_options),
        T(test_arg_errors),
        T(test_env_between_file_and_set),
        T(test_bad_values),
        T(test_bad_values_more),
        T(test_structure_errors),
        T(test_structure_errors_more),
        T(test_yaml_syntax_error_line),
        T(test_missing_file),
        T(test_failed_load_leaves_cfg_unchanged),
        T(test_help),
        T(test_print_config_round_trip),
        T(test_print_regroups_keys),
        T(test_strlist_forms),
        T(test_value_spellings),
        T(test_free_leaves_nothing),
        T(test_compat_maps_with_warnings),
        T(test_compat_own_values_stay_silent),
        T(test_compat_ignores_with_reason),
        T(test_compat_split_address),
        T(test_compat_ours_wins),
        T(test_compat_errors_name_file_and_line),
        T(test_compat_daemon_tables),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
