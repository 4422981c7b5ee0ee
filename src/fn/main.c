/*
 * dirigent-fn: the function server that runs inside every sandbox, compatible
 * with InVitro's workload (DESIGN.md §8); what it serves is described in server.c.
 *
 * This file wires: the config (the schema below: flags, environment, --help), the tie to
 * a parent process, the daemon's signals and loop, and the server (server.c: the HTTP API,
 * the work and the start-up busy loop; workload.c: the CPU work itself).
 */
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "dirigent/config.h"
#include "dirigent/daemon.h"
#include "dirigent/log.h"
#include "server.h"
#include "workload.h"

static const struct dg_conf_field fn_fields[] = {
    {.key = "port",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, port),
     .def = "-1",
     .min = -1,
     .max = 65535,
     .env = "PORT",
     .help = "listen port; -1: 80 when running as a container's init (PID 1), else 8080; "
             "0: an ephemeral port (printed at start)"},
    {.key = "host",
     .type = DG_CONF_STRING,
     .offset = offsetof(struct fn_config, host),
     .def = "0.0.0.0",
     .help = "listen address (numeric IPv4 or IPv6)"},
    {.key = "logLevel",
     .type = DG_CONF_ENUM,
     .offset = offsetof(struct fn_config, log_level),
     .def = "info",
     .choices = dg_log_level_choices,
     .help = "log verbosity"},
    {.key = "maxCpuMs",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, max_cpu_ms),
     .def = "900000",
     .min = 0,
     .max = 86400000,
     .help = "largest requested_cpu accepted (ms); larger: 400"},
    {.key = "maxMemoryMiB",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, max_memory_mib),
     .def = "4096",
     .min = 0,
     .max = 1048576,
     .help = "allocateRequestedMemory: largest requested_memory accepted (MiB); larger: 400"},
    {.key = "allocateRequestedMemory",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct fn_config, allocate_memory),
     .def = "false",
     .help = "allocate and touch the requested_memory header's MiB during the work (off: the "
             "header is ignored, as the original workload; InVitro sends the function's full "
             "memory there, ten times what it registers as the sandbox's limit)"},
    {.key = "parentPid",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, parent_pid),
     .def = "0",
     .min = 0,
     .max = 1 << 22,
     .help = "exit when this process, our parent, exits (even by SIGKILL): the emulated "
             "worker's shared server goes with its worker; 0: no such tie"},
    {.key = "allocateEndpoint",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct fn_config, allocate_endpoint),
     .def = "false",
     .env = "DIRIGENT_FN_ALLOCATE_ENDPOINT",
     .help = "serve /_dirigent/allocate?mib=N (allocate and touch N MiB, at most maxMemoryMiB: "
             "a deliberate way past a sandbox's memory limit); off, that path is an invocation "
             "like any other, so a caller cannot exhaust a host's memory (the process runtime "
             "sets no limit)"},
    {.key = "coldStartBusyLoopMs",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, startup_loop_ms),
     .def = "0",
     .min = 0,
     .max = 3600000,
     .env = "COLD_START_BUSY_LOOP_MS",
     .help = "start-up busy loop before listening: iterationsMultiplier x this many "
             "iterations (the registration's cold_start_busy_loop_ms)"},
    {.key = "iterationsMultiplier",
     .type = DG_CONF_INT,
     .offset = offsetof(struct fn_config, startup_multiplier),
     .def = "102",
     .min = 0,
     .max = 1000000000,
     .env = "ITERATIONS_MULTIPLIER",
     .help = "iterations per ms of the start-up busy loop (the registration's "
             "iteration_multiplier; 102 as the original)"},
    {.key = "calibrate",
     .type = DG_CONF_BOOL,
     .offset = offsetof(struct fn_config, calibrate),
     .def = "false",
     .help = "print this machine's iterations per ms (the multiplier) and exit"},
    DG_CONF_HTTP_FIELDS(struct fn_config, http),
};

static const struct dg_conf_schema fn_schema = {
    .prog = "dirigent-fn",
    .summary = "InVitro-compatible function server: spins requested_cpu ms and reports it",
    .fields = fn_fields,
    .nfields = DG_ARRAY_LEN(fn_fields),
};

int main(int argc, char **argv)
{
    static struct fn f;
    struct dg_err err = {0};
    dg_log_init("fn");
    int rc = dg_daemon_configure(&fn_schema, &f.cfg, &f.cfg.log_level, argc, argv);
    if (rc >= 0)
        return rc;
    if (f.cfg.calibrate) {
        printf("%llu\n", (unsigned long long)fn_calibrate(500));
        dg_conf_free(&fn_schema, &f.cfg);
        return 0;
    }
    /* tied to a parent: SIGTERM when it dies; one that died before this line is caught by the
     * check after it */
    if (f.cfg.parent_pid > 0 &&
        (prctl(PR_SET_PDEATHSIG, SIGTERM) == -1 || getppid() != (pid_t)f.cfg.parent_pid)) {
        dg_conf_free(&fn_schema, &f.cfg);
        return 0;
    }
    int port = (int)f.cfg.port;
    if (port < 0)
        port = getpid() == 1 ? 80 : 8080;

    f.loop = uv_default_loop();
    if (dg_daemon_init(&f.daemon, f.loop, "fn", fn_on_stop, &f, &err) < 0) {
        dg_log(DG_LOG_ERROR, "fn", "%s", err.msg);
        return 1;
    }
    fn_init(&f, port);
    if (fn_start(&f, &err) < 0) {
        dg_log(DG_LOG_ERROR, "fn", "%s", err.msg);
        return 1;
    }

    uv_run(f.loop, UV_RUN_DEFAULT);

    dg_loop_close_all(f.loop);
    fn_deinit(&f);
    dg_conf_free(&fn_schema, &f.cfg);
    dg_log(DG_LOG_INFO, "fn", "stopped");
    return 0;
}
