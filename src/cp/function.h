/*
 * function.h: what a registered function is (its spec as registered), and the
 * registration form of the original system, as InVitro posts it:
 *
 *   name=hello&image=docker.io/x/y:latest&port_forwarding=80&port_forwarding=tcp
 *   &requested_cpu=100&requested_memory=128&scaling_upper_bound=10
 *   &scaling_lower_bound=0&cold_start_sweep=false
 *
 * Validation names the field and what was expected; a field given twice (other than the
 * repeated ones) is refused; unknown fields with a value are ignored (newer InVitro versions
 * send more), a bare unknown key ("...&udp") is refused.
 */
#ifndef DIRIGENT_CP_FUNCTION_H
#define DIRIGENT_CP_FUNCTION_H

#include "dirigent/config.h"
#include "dirigent/form.h"

#define CP_NAME_MAX    63
#define CP_PREWARM_MAX 1000 /* = DG_WIRE_POOL_MAX: what one worker keeps of a function */

struct cp_fn_spec {
    char name[CP_NAME_MAX + 1];
    char *image;        /* image reference, or an absolute path for the process runtime */
    int port;           /* guest port */
    char proto[4];      /* "tcp" or "udp", as registered (invocations are HTTP over tcp) */
    int64_t cpu_milli;  /* requested_cpu, milli-CPU */
    int64_t memory_mib; /* requested_memory, MiB */
    int upper_bound;    /* scaling_upper_bound */
    int lower_bound;    /* scaling_lower_bound */
    bool cold_start_sweep;
    int concurrency;        /* container_concurrency: requests at once per sandbox, 0 unlimited
                               (not in the original's form; default 1 as its DP hard-coded) */
    struct dg_strlist env;  /* env_vars, each KEY=VALUE */
    struct dg_strlist args; /* program_args */
    int64_t iteration_multiplier;
    int64_t cold_start_busy_loop_ms;
    int prewarm; /* prewarm: sandboxes kept pre-created (created, not started) on the workers
                    besides what the autoscaler predicts; 0..CP_PREWARM_MAX (default 0) */
    bool h2c;    /* upstream_protocol: "http1" (default) or "h2c", how the DPs reach its
                 sandboxes (a gRPC call goes over h2c whatever this says) */
    bool no_init; /* init: false: its entrypoint runs as the sandbox's PID 1 itself, not under
                     the worker's minimal init (sandboxInit; issue 16) */
};

/* Fill `out` from a registration form. Errors: "field 'port_forwarding': expected ...,
 * got '...'"; on error `out` owns nothing. */
int cp_fn_spec_from_form(const struct dg_form *f, struct cp_fn_spec *out, struct dg_err *err);
void cp_fn_spec_free(struct cp_fn_spec *s);

/* The registration's fields and how many values each takes. */
enum cp_fn_field_kind {
    CP_FIELD_STRING, /* one string */
    CP_FIELD_INT,    /* one integer (JSON: a number or a string of one) */
    CP_FIELD_BOOL,   /* one boolean (JSON: true/false or a string of one) */
    CP_FIELD_PORT,   /* port_forwarding: exactly the port and the protocol */
    CP_FIELD_LIST,   /* repeated strings (env_vars, program_args) */
};
/* The kind of a registration field; -1 for a field the registration does not know. */
int cp_fn_field_kind(const char *key);

/* Validation pieces, also used by the JSON API. */
bool cp_fn_name_valid(const char *name);
/* 0, or -1 with "field 'image': <what is wrong>: <the forms accepted>". */
int cp_fn_image_check(const char *image, struct dg_err *err);

#endif
