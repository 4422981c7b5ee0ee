/*
 * config.h: the worker's configuration (config.c has the schema: keys, defaults, bounds and
 * --help, the original's names where it has them).
 */
#ifndef DIRIGENT_WORKER_CONFIG_H
#define DIRIGENT_WORKER_CONFIG_H

#include "dirigent/config.h"
#include "dirigent/daemon.h"

struct wk_config {
    int64_t port;
    char *host;
    char *name;
    char *runtime;
    char *log_level;
    int64_t readiness_timeout_ms;
    int64_t emulated_create_delay_ms;
    int64_t heartbeat_ms;
    int64_t emulated_nodes;
    char *fn_binary;
    struct dg_strlist cp_addresses;
    struct dg_http_conf http;
    /* the host (every runtime) and the oci runtime's settings */
    char *oci_runtime;
    char *data_dir, *run_dir;
    char *bridge, *subnet;
    int64_t address_quarantine_ms;
    int64_t netns_pool, pids_limit, min_cpu_milli, min_memory_mib, kill_grace_ms;
    int64_t cap_cpu_milli, cap_memory_mib;
    double cpu_overcommit;
    char *cpu_limit;
    struct dg_strlist insecure_registries, prefetch;
    char *auth_token_file;
    /* sandbox confinement (issue 14) */
    char *sandbox_egress, *sandbox_userns;
    struct dg_strlist sandbox_egress_allow, sandbox_caps;
    /* confinement of what a create may name (docs/security.md) */
    char *process_user;
    struct dg_strlist process_allowed_dirs, image_roots, image_registries;
    int64_t image_pull_timeout_ms;
    /* bounded sandbox work (issue 16) */
    int64_t max_creates, max_deletes;
    char *sandbox_init;
};

extern const struct dg_conf_schema wk_schema;

#endif
