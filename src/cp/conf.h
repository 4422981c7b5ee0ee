/*
 * conf.h: the control plane's configuration (conf.c): its fields, defaults and help, as
 * dirigent-cp --help prints them (lib/config.c reads them from YAML, the environment and the
 * command line).
 */
#ifndef DIRIGENT_CP_CONF_H
#define DIRIGENT_CP_CONF_H

#include "dirigent/config.h"
#include "dirigent/daemon.h"

struct cp_config {
    char *host;
    int64_t port;
    char *registration_server;
    char *placement;
    char *lb_address;
    char *log_level;
    char *trace_folder;
    int64_t heartbeat_ms;
    int64_t batch_interval_ms; /* batchInterval */
    int64_t scale_down_budget; /* scaleDownBudget */
    double chbl_eps;
    int64_t seed;
    char *autoscaler;
    char *persistence;
    char *data_dir;
    struct dg_strlist replicas, raft_addresses;
    int64_t replica_id;
    int64_t election_timeout_ms;
    char *redis_address;
    char *redis_password_file;
    bool redis_full;
    int64_t redis_replicas;
    char *haproxy_api, *haproxy_backend, *haproxy_server_opts;
    char *auth_token_file; /* the cluster key (lib/auth.h); "": none, loopback only */
    char *registration_auth;
    int64_t max_functions, max_per_function, max_per_worker, max_sandboxes; /* quotas */
    int64_t max_creates_per_worker_s;
    int64_t async_ttl_ms;      /* asyncResultTtl */
    int64_t async_max_records; /* asyncMaxRecords */
    int64_t async_max_bytes;   /* asyncMaxBytes */
    struct dg_http_conf http;
};

extern const struct dg_conf_schema cp_schema;
extern const char *const cp_registration_auths[];

#endif
