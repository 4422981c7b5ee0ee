/*
 * wire.h: every message between the daemons (control plane, data planes, workers, the CLI's
 * view of the CP) as a C struct with one encoder and one decoder, so the protocol is spelled
 * in one file (lib/wire.c) and changing its format is a one-file change. Today's format is
 * JSON; the keys, types and optional parts are exactly what the daemons sent before these
 * types existed.
 *
 * For each message `X` (a struct dg_wire_X) there are:
 *   json_t *dg_wire_X_encode(const struct dg_wire_X *m)   a new JSON value (caller decrefs)
 *   char *dg_wire_X_dumps(const struct dg_wire_X *m)      compact JSON text (caller frees)
 *   int dg_wire_X_decode(const json_t *j, struct dg_wire_X *out, struct dg_err *err)
 *   int dg_wire_X_parse(const char *buf, size_t len, struct dg_wire_X *out, struct dg_err *err)
 *   void dg_wire_X_free(struct dg_wire_X *m)              frees what a decode made
 * Decoding checks every field (type, bounds, required, and for strict messages unknown keys)
 * and fills `*out` (overwritten: it needs no initialisation), whose strings and arrays are
 * then owned by it (dg_wire_X_free). On error `*out` holds nothing to free and `err` names the
 * field as the JSON helpers do (`field 'id': required`, `field 'endpoints': item 2: field
 * 'address': expected string, got integer`), without the message's name: receivers add their
 * own context ("worker: ..."). The code is DG_E_INVAL, or DG_E_PROTO when _parse was given
 * text that is not JSON. Encoding borrows every pointer of `m`.
 *
 * Every field is validated, not only typed (docs/api.md "Validation"): names, ids and
 * addresses by the rules below, integers by their ranges (non-negative where a negative one
 * means nothing), numbers finite and bounded, lists at most DG_WIRE_LIST_MAX items, strings at
 * most DG_WIRE_TEXT_MAX bytes unless a rule says otherwise, enumerations one of their values.
 * The error names the field, what was expected and (quoted, cut short, control characters as
 * '?') what came: `field 'name': expected a name (1..128 of A-Z a-z 0-9 . _ -, starting with a
 * letter or digit), got 'w?1'`.
 *
 * Conventions in the structs: a NULL string is absent (or JSON null where the message says
 * so); an array is a pointer and a count; `has_*` says whether an optional part is present
 * (a decode sets it, an encode sends the part only when it is set).
 */
#ifndef DIRIGENT_WIRE_H
#define DIRIGENT_WIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "dirigent/common.h"

/* ---- validation rules ------------------------------------------------------------------ */

#define DG_WIRE_FN_NAME_MAX 63      /* a function name: a DNS label (the CP's registration rule) */
#define DG_WIRE_NAME_MAX    128     /* a worker's or DP's name, a sandbox id */
#define DG_WIRE_TEXT_MAX    4096    /* a reason, an error, any other string */
#define DG_WIRE_ARG_MAX     65536   /* an image reference, an env entry, a program argument */
#define DG_WIRE_LIST_MAX    1048576 /* items of any list */
#define DG_WIRE_ARGS_MAX    4096    /* env entries, program arguments of a create */

/* [a-z0-9]([a-z0-9-]{0,61}[a-z0-9])? */
bool dg_wire_fn_name_ok(const char *name);
/* A worker's or data plane's name: 1..DG_WIRE_NAME_MAX of [A-Za-z0-9._-], the first a letter
 * or digit (a host name, "dp-8081", "w1-0"). */
bool dg_wire_node_name_ok(const char *name);
/* A sandbox id: the same rule (a worker makes "<its name>-<run>-<n>"). */
bool dg_wire_id_ok(const char *id);
/* HOST:PORT: an IPv4 address, [IPv6] (or IPv6 without brackets, split at the last ':') or a
 * host name (RFC 1123), and a port 1..65535. */
bool dg_wire_address_ok(const char *address);

/* ---- paths and headers ------------------------------------------------------------------ */

/* CP internal API (workers and data planes; /v1/status also for the CLI) */
#define DG_WIRE_PATH_WORKERS        "/v1/workers"          /* POST dg_wire_worker_beat */
#define DG_WIRE_PATH_SIBLINGS       "/v1/workers/siblings" /* POST dg_wire_sibling_beat */
#define DG_WIRE_PATH_DATAPLANES     "/v1/dataplanes"       /* POST dg_wire_dp_beat */
#define DG_WIRE_PATH_METRICS        "/v1/metrics"          /* POST dg_wire_metrics */
#define DG_WIRE_PATH_SANDBOX_EXITED "/v1/sandboxes/exited" /* POST dg_wire_sandbox_exit */
#define DG_WIRE_PATH_STATUS         "/v1/status"           /* GET -> dg_wire_status */
/* asynchronous invocations (docs/api.md "Asynchronous invocations"): a DP hands an accepted
 * request to the CP's store (POST dg_wire_async_req, answered once durable), posts its result
 * (POST dg_wire_async_result), takes over its unfinished ones on start (POST
 * dg_wire_async_claim -> dg_wire_async_batch) and reads a record (GET PATH/ID ->
 * dg_wire_async_state, 404 when unknown or expired) */
#define DG_WIRE_PATH_ASYNC        "/v1/async"
#define DG_WIRE_PATH_ASYNC_RESULT "/v1/async-results"
#define DG_WIRE_PATH_ASYNC_CLAIM  "/v1/async-claims"
/* worker API */
#define DG_WIRE_PATH_SANDBOXES                                                                     \
    "/v1/sandboxes"                                          /* POST dg_wire_create -> 201
                                                              dg_wire_created; GET ->
                                                              dg_wire_sandbox_list */
#define DG_WIRE_PATH_SANDBOXES_BATCH  "/v1/sandboxes/batch"  /* batch of dg_wire_create */
#define DG_WIRE_PATH_SANDBOXES_DELETE "/v1/sandboxes/delete" /* batch of sandbox ids */
/* DELETE /v1/sandboxes/ID: one delete */
#define DG_WIRE_PATH_PREWARM "/v1/prewarm" /* PUT dg_wire_pool: the pre-created sandboxes */
/* DP API */
#define DG_WIRE_PATH_ENDPOINTS "/v1/endpoints" /* PUT dg_wire_push */
#define DG_WIRE_PATH_DRAIN     "/v1/drain"     /* batch of dg_wire_drain */
#define DG_WIRE_PATH_FORGET    "/v1/forget"    /* batch of function names (deleted) */
#define DG_WIRE_PATH_FUNCTIONS                                                                     \
    "/v1/functions" /* + "/NAME": PUT dg_wire_dp_fn, DELETE;
                                                  "/NAME/endpoints": PUT dg_wire_fn_update
                                                  (no name); "/NAME/drain": POST
                                                  dg_wire_drain (no name) */

/* A CP replica that does not lead names the leader's internal API in its refusal. */
#define DG_WIRE_HDR_LEADER "X-Dirigent-Leader"
/* A request a follower passed on to the leader (never forwarded again). */
#define DG_WIRE_HDR_FORWARDED "X-Dirigent-Forwarded"
/* On a request the DP forwards to a sandbox: the sandbox id it means. A sandbox that knows
 * its own id (DG_WIRE_ENV_SANDBOX_ID, set by the worker) and has another answers 421 with its
 * own id in this header: the DP's endpoint is stale (its address now belongs to another
 * sandbox), the DP drops it and the request goes elsewhere (docs/security.md). */
#define DG_WIRE_HDR_SANDBOX "X-Dirigent-Sandbox"
/* The environment variable in which the worker gives each sandbox its id. */
#define DG_WIRE_ENV_SANDBOX_ID "DIRIGENT_SANDBOX_ID"
/* On a DP's response to a request that waited for a sandbox to start (dirigent load counts
 * them). */
#define DG_WIRE_HDR_COLD_START "X-Dirigent-Cold-Start"
/* On the asynchronous results port (portProxyRead): why a fetch has no result (its body is
 * empty: what InVitro reads as "no result"). */
#define DG_WIRE_HDR_ERROR "X-Dirigent-Error"

/* The CP's answer to a heartbeat (text): "ok", or "resync" when it wants the sender's whole
 * state in the next beat. dg_wire_beat_answer_is_resync reads one such body. */
#define DG_WIRE_BEAT_OK     "ok"
#define DG_WIRE_BEAT_RESYNC "resync"
bool dg_wire_beat_answer_is_resync(const char *body, size_t len);
/* Set the "resync" flag of an encoded heartbeat (a worker's or a data plane's): the heartbeat
 * (lib/heartbeat.c) knows it, not the body's builder. */
void dg_wire_beat_set_resync(json_t *beat, bool resync);

/* ---- message size: every internal message is split below the receiver's body limit -------- */

/* The receivers' body limit: http.maxBodyBytes of the CP's internal API, the DP API and the
 * worker API (1 MiB, lib/http_common.c). An internal port must not be configured below it. */
#define DG_WIRE_BODY_LIMIT (1024 * 1024)
/* What a sender puts in one body at most: the limit less a safe margin (a request line and
 * headers never count, but a receiver configured a little lower still takes it). */
#define DG_WIRE_PART_MAX (DG_WIRE_BODY_LIMIT - 64 * 1024)
/* The bytes of a part around its items ({"functions":[ ... ],"full":true,"sync":...}) at
 * most: what dg_wire_parts_add keeps free. */
#define DG_WIRE_ENVELOPE_MAX 256

/* Splitting a list of encoded items into parts ("bodies") of at most `max` bytes each: the
 * items in order, each part holding as many whole items as fit with the envelope
 * (DG_WIRE_ENVELOPE_MAX) and a ',' between two. An item is never cut: one that does not fit
 * in a part alone is refused (the caller answers it with the error) and the others go on. */
struct dg_wire_parts {
    size_t max;   /* a part's bytes at most, envelope included */
    size_t used;  /* the current part's item bytes with their separators */
    size_t items; /* items in the current part */
    size_t parts; /* parts started so far (the current one included) */
};
void dg_wire_parts_init(struct dg_wire_parts *p, size_t max);
#define DG_WIRE_PART_SAME 0 /* the item joins the current part */
#define DG_WIRE_PART_NEW  1 /* the current part is full (or there is none): it starts the next */
/* Place the next item, of `len` encoded bytes: DG_WIRE_PART_SAME or DG_WIRE_PART_NEW, or
 * -1 (DG_E_LIMIT) with `err` ("an item of N bytes is more than a part holds (M bytes
 * with the envelope): not sent") when it alone exceeds a part; nothing changes then. */
int dg_wire_parts_add(struct dg_wire_parts *p, size_t len, struct dg_err *err);

/* ---- batches (lib/batch.c) --------------------------------------------------------------- */

/* A batch request's body: {"items":[...]} with `items` (an array, taken). */
json_t *dg_wire_batch_encode(json_t *items);
/* The same body built from items already encoded (no JSON tree): open it, append item k
 * (0, 1, ...; `item` the JSON text of one item, borrowed) as often as needed, close it. At
 * most DG_WIRE_ENVELOPE_MAX bytes besides the items and their separators. */
void dg_wire_batch_open(struct dg_buf *b);
void dg_wire_batch_append(struct dg_buf *b, size_t k, const char *item, size_t len);
void dg_wire_batch_close(struct dg_buf *b);
/* The items of a batch body, borrowed from `root`; NULL with "field 'items': expected a
 * non-empty array" in `err` when there are none. */
json_t *dg_wire_batch_items(const json_t *root, struct dg_err *err);

/* One line of a batch's streamed answer: item i's status and body. */
struct dg_wire_batch_line {
    int64_t i, status;
    struct dg_str body; /* borrowed from the parsed line (dg_wire_batch_line_free) */
    bool json;          /* a "json" line: body is the object's text as it came, not checked
                           here (its receiver's decode checks it: JSON, UTF-8, fields) */
    json_t *root_;
};
/* The line for item i (malloc'd JSON text without the newline; `body` borrowed, any bytes:
 * not UTF-8 ones are replaced by '?'). */
char *dg_wire_batch_line_dumps(size_t i, int status, const char *body, size_t len);
/* The line for item i whose answer is a JSON object (`json`, `len` bytes, borrowed, e.g. a
 * dg_wire_created): {"i":K,"status":S,"json":{...}}, the object as it is, not escaped into a
 * string: written without a JSON encoder and read back without a parser (its receiver decodes
 * the object: one parse). The caller vouches that `json` is one JSON object. */
char *dg_wire_batch_line_json(size_t i, int status, const char *json, size_t len);
/* Parse one line (without its newline): either form; a "json" line's body is the object's
 * text (a view into `buf`, for the item's receiver to decode and validate). Errors name the
 * field ("field 'i': required"). */
int dg_wire_batch_line_parse(const char *buf, size_t len, struct dg_wire_batch_line *out,
                             struct dg_err *err);
void dg_wire_batch_line_free(struct dg_wire_batch_line *l);

/* ---- worker -> CP ----------------------------------------------------------------------- */

/* A sandbox a worker runs, in its resync heartbeat (the CP adopts it). */
struct dg_wire_sandbox_ref {
    char *id, *function, *endpoint; /* all required; endpoint "IP:PORT" */
};

/* POST /v1/workers: register and heartbeat. */
struct dg_wire_worker_beat {
    char *name, *address;   /* required */
    char *boot;             /* the daemon's boot id: a new one means it restarted */
    int64_t cpu_milli;      /* "cpuMilli": capacity; 0 unknown */
    int64_t memory_mib;     /* "memoryMiB" */
    double cpu_overcommit;  /* "cpuOvercommit": absent decodes as 1.0 */
    int64_t min_cpu_milli;  /* "sandboxMinCpuMilli": the accounting floors */
    int64_t min_memory_mib; /* "sandboxMinMemoryMiB" */
    bool has_sandboxes;     /* "sandboxes": only in resync beats */
    struct dg_wire_sandbox_ref *sandboxes;
    size_t nsandboxes;
    bool resync;
    bool has_sandbox_count; /* "sandboxCount": how many ready sandboxes it runs (every beat of
                               a one-node worker; absent from older workers) */
    int64_t sandbox_count;
    char *sandbox_subnet; /* "sandboxSubnet": the IPv4 CIDR its sandboxes' endpoints lie in
                             (the CP adopts no endpoint outside it); absent: its address's host */
    /* a listing over one body (DG_WIRE_PART_MAX) goes in parts, one per beat, in order:
     * "listing" (its number, >= 1), "listingPart" (0..listingParts-1), "listingParts"; the
     * CP answers "resync" until the last, and takes the listing whole (all parts of one
     * number) or not at all. All 0 (absent): the sandboxes are the whole list. */
    int64_t listing, listing_part, listing_parts;
    bool saturated; /* "saturated": its create (or delete) queue is full: it takes more
                             only by making them wait; the CP places elsewhere (absent: false) */
};
/* The bytes a sandbox_ref of these takes in a beat at most (its strings need no escaping:
 * validated names, ids and addresses). */
#define DG_WIRE_SANDBOX_REF_BYTES(id, function, endpoint)                                          \
    (strlen(id) + strlen(function) + strlen(endpoint) + 40)
/* The bytes of a worker beat besides its sandboxes at most. */
#define DG_WIRE_WORKER_BEAT_ENVELOPE 2048

/* POST /v1/workers/siblings: the heartbeats of many emulated nodes of one worker process in
 * one message (emulatedNodes: without it, 10,000 nodes were 10,000 requests a second). Sent
 * by the process's first node NAME-0 ("sender", under its own credential); each of "nodes" is
 * a sibling NAME-<digits> that registered itself (its own beat, its own credential) from the
 * same address and boot, and beats again with the fields here (the sender's: one process, one
 * machine's capacity). The CP takes a node only when it is such a sibling, else names it in
 * the answer's "refused" and the node beats on its own again. No sandboxes: the first node
 * lists for all. */
struct dg_wire_sibling_beat {
    char *sender, *address;  /* required: NAME-0, the address it registered at */
    char *boot;              /* required: its boot id (the siblings' too) */
    int64_t cpu_milli;       /* "cpuMilli", as dg_wire_worker_beat */
    int64_t memory_mib;      /* "memoryMiB" */
    double cpu_overcommit;   /* "cpuOvercommit": absent decodes as 1.0 */
    int64_t min_cpu_milli;   /* "sandboxMinCpuMilli" */
    int64_t min_memory_mib;  /* "sandboxMinMemoryMiB" */
    char *sandbox_subnet;    /* "sandboxSubnet" */
    bool saturated;          /* "saturated" */
    struct dg_strlist nodes; /* "nodes": 1..DG_WIRE_SIBLINGS_MAX names, none the sender */
};
#define DG_WIRE_SIBLINGS_MAX 1000
/* The CP's answer (200) to a sibling beat: the nodes it did not take (not registered, or not
 * the sender's siblings: another address or boot, or another name's); empty when it took all. */
struct dg_wire_sibling_answer {
    struct dg_strlist refused; /* "refused" */
};

/* POST /v1/sandboxes/exited: a sandbox exited that nobody asked to delete. */
struct dg_wire_sandbox_exit {
    char *worker;        /* optional */
    char *id, *function; /* required */
    int64_t status;      /* exit status, or -signal */
    char *reason;        /* optional: "OOM-killed: memory limit 64 MiB" */
};

/* ---- data plane -> CP ------------------------------------------------------------------- */

/* POST /v1/dataplanes: register and heartbeat. */
struct dg_wire_dp_beat {
    char *name, *api, *proxy; /* required; api and proxy "IP:PORT" */
    bool resync;
};

/* One function's requests in flight (queued or running) at a data plane. */
struct dg_wire_fn_load {
    char *name;       /* required */
    int64_t inflight; /* required */
};

/* POST /v1/metrics */
struct dg_wire_metrics {
    char *dataplane; /* required */
    struct dg_wire_fn_load *functions;
    size_t nfunctions;
};

/* ---- CP -> worker ----------------------------------------------------------------------- */

/* A sandbox to create: POST /v1/sandboxes, or an item of /v1/sandboxes/batch. Strict: an
 * unknown key is an error. */
struct dg_wire_create {
    char *function;         /* required */
    char *image;            /* an image reference, or the process runtime's command */
    int64_t port;           /* 1..65535; 0 absent */
    struct dg_strlist env;  /* "NAME=value" */
    struct dg_strlist args; /* the program's arguments */
    int64_t cpu_milli;      /* "cpuMilli" 0..100000000 */
    int64_t memory_mib;     /* "memoryMiB" 0..16777216 */
    bool no_init;           /* "noInit": run the entrypoint as PID 1 itself, without the worker's
                               minimal init (registration init: false); absent: false */
};

/* PUT /v1/prewarm (DG_WIRE_PATH_PREWARM): the sandboxes a worker keeps pre-created
 * (created, not started: src/worker/prewarm.c), per function: the whole table, replaced at
 * each message (a function not in it keeps none). Strict: an unknown key is an error. */
#define DG_WIRE_POOL_MAX       1000   /* "count" of one function */
#define DG_WIRE_POOL_ITEMS_MAX 100000 /* functions in one table */
struct dg_wire_pool_item {
    struct dg_wire_create spec; /* what each runs: the create's keys, flat */
    int64_t count;              /* "count" 0..DG_WIRE_POOL_MAX, required */
};
struct dg_wire_pool {
    struct dg_wire_pool_item *items; /* "items", required; one per function */
    size_t nitems;
};

/* Where a create's time went, µs ("latencyUs"). */
struct dg_wire_latency {
    int64_t image, rootfs, network, start, ready, total;
};

/* A create's answer (201). */
struct dg_wire_created {
    char *id; /* required */
    char *function;
    char *endpoint; /* required, "IP:PORT" */
    bool has_latency;
    struct dg_wire_latency latency;
};

/* An item of /v1/sandboxes/delete is the sandbox's id as a JSON string. */
json_t *dg_wire_delete_item_encode(const char *id);
/* `*id` borrowed from `j`. Error: "expected a sandbox id (string), got integer". */
int dg_wire_delete_item_decode(const json_t *j, const char **id, struct dg_err *err);
/* An item of POST /v1/forget (CP -> DP: functions deleted at the CP, many per batch) is the
 * function's name as a JSON string; `*name` borrowed from `j`. Error: "expected a function
 * name (string), got integer", or the name's rule. */
json_t *dg_wire_forget_item_encode(const char *name);
int dg_wire_forget_item_decode(const json_t *j, const char **name, struct dg_err *err);

/* A sandbox's state in GET /v1/sandboxes. */
#define DG_WIRE_SB_CREATING "creating"
#define DG_WIRE_SB_READY    "ready"
#define DG_WIRE_SB_EXITED   "exited"
#define DG_WIRE_SB_DELETING "deleting"

/* A sandbox in GET /v1/sandboxes. */
struct dg_wire_sandbox_state {
    char *id, *function, *endpoint, *state; /* required; state one of DG_WIRE_SB_* */
    char *exit_reason;                      /* "exitReason", only when it exited */
};

/* GET /v1/sandboxes */
struct dg_wire_sandbox_list {
    char *name, *runtime;
    struct dg_wire_sandbox_state *sandboxes;
    size_t nsandboxes;
};

/* ---- CP -> data plane ------------------------------------------------------------------- */

struct dg_wire_endpoint {
    char *id, *address; /* required; address "IP:PORT" */
};

/* A sandbox that exited by itself, with why (its callers' 502 says it). */
struct dg_wire_exit_note {
    char *id, *reason; /* required */
};

/* One function's update: its whole endpoint list, the sandboxes that exited since the last
 * update, and its last create failure while it has no sandbox. An item of dg_wire_push
 * (name required: dg_wire_fn_update_decode), or the body of PUT /v1/functions/NAME/endpoints
 * (no name: dg_wire_fn_endpoints_decode). */
struct dg_wire_fn_update {
    char *name;
    int64_t concurrency;                /* 0..100000; absent decodes as 1 */
    struct dg_wire_endpoint *endpoints; /* required (may be empty) */
    size_t nendpoints;
    char *error;                      /* absent or null: none */
    struct dg_wire_exit_note *exited; /* sent only when not empty */
    size_t nexited;
    /* "h2c": its sandboxes speak HTTP/2 cleartext (upstream_protocol h2c); sent only when true */
    bool h2c;
};
int dg_wire_fn_endpoints_decode(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err);
/* The same decodes with the strings borrowed from `j` (valid while it lives; never to be freed
 * or changed): no copy per endpoint, for a receiver that applies an update before it drops the
 * JSON (the DP's push path, thousands of functions a second). Free what they made with
 * dg_wire_fn_update_view_free (the arrays), not dg_wire_fn_update_free. */
int dg_wire_fn_update_view(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err);
int dg_wire_fn_endpoints_view(const json_t *j, struct dg_wire_fn_update *out, struct dg_err *err);
void dg_wire_fn_update_view_free(struct dg_wire_fn_update *m);

/* PUT /v1/endpoints: many functions' updates in one call. `full` (a resync; "full": true,
 * absent when false): the functions are the receiver's whole table, it drops the others. */
struct dg_wire_push {
    struct dg_wire_fn_update *functions;
    size_t nfunctions;
    bool full;
    /* a resync split in parts (a table over DG_WIRE_PART_MAX): every part is full and carries
     * "sync" (the resync's number, >= 1), "part" (0..parts-1) and "parts" (>= 1); the
     * receiver applies each part's items as they come and drops the functions that none of
     * the parts named only once it holds every part of that sync. All 0 (absent): one body. */
    int64_t sync, part, parts;
};
/* A push's part fields (all 0 when it is one body); -1 with `err` naming the field when they
 * are not a valid set (sync >= 1, 0 <= part < parts, only on a full push). */
int dg_wire_push_part(const json_t *root, struct dg_wire_push *out, struct dg_err *err);
/* A push decoded whole without a JSON tree when it is what a daemon writes (compact, ASCII
 * strings without escapes, integers: wire.c "a fast path"), its strings borrowed from *store:
 * 0, then free both with dg_wire_push_view_free. -1 (nothing to free) when it is anything
 * else, valid or not: decode it the usual way (dg_json_parse, dg_wire_push_items, ...), which
 * gives the error if there is one. Every *_parse takes this path first the same way. */
int dg_wire_push_view_fast(const char *buf, size_t len, struct dg_wire_push *out, char **store);
void dg_wire_push_view_free(struct dg_wire_push *m, char *store);
/* The body of a push from its items already encoded (dg_wire_fn_update_dumps: `items[k]`
 * borrowed), with the flags and part fields of `m` (its functions ignored): a new string,
 * its length in *len. */
char *dg_wire_push_join(const struct dg_str *items, size_t n, const struct dg_wire_push *m,
                        size_t *len);
/* The "functions" array of a push, borrowed from `root`, for a receiver that applies each
 * item on its own (dg_wire_fn_update_decode): one bad item does not refuse the others. NULL
 * with "field 'functions': expected an array" in `err` when it is not one. */
const json_t *dg_wire_push_items(const json_t *root, struct dg_err *err);
/* A push's "full" flag (absent: false). */
bool dg_wire_push_is_full(const json_t *root);

/* An item of POST /v1/drain (name required: dg_wire_drain_decode; unknown keys ignored), or
 * the body of POST /v1/functions/NAME/drain (no name, strict: dg_wire_drain_ids_decode). */
struct dg_wire_drain {
    char *name;
    struct dg_strlist ids; /* required: the sandboxes leaving its list */
};
int dg_wire_drain_ids_decode(const json_t *j, struct dg_wire_drain *out, struct dg_err *err);
/* A batch of drains (POST /v1/drain: {"items":[drain, ...]}) decoded whole on the fast path
 * (see dg_wire_push_view_fast): 0 with its n >= 1 items, their strings borrowed from *store
 * (free all with dg_wire_drains_view_free); -1 (nothing to free) when it is anything else:
 * decode it item by item the usual way (dg_batch_items), which names a bad item. */
int dg_wire_drains_view_fast(const char *buf, size_t len, struct dg_wire_drain **items, size_t *n,
                             char **store);
void dg_wire_drains_view_free(struct dg_wire_drain *items, size_t n, char *store);

/* An endpoint in a DP's GET /v1/functions. */
struct dg_wire_dp_endpoint_view {
    char *id, *address;
    int64_t in_flight; /* "inFlight" */
};

/* A function in a DP's GET /v1/functions (a JSON array of these). */
struct dg_wire_dp_fn_view {
    char *name;
    int64_t concurrency, queued;
    int64_t in_flight; /* "inFlight": queued + running */
    struct dg_wire_dp_endpoint_view *endpoints;
    size_t nendpoints;
    char *error; /* the last create failure, or null */
    bool h2c;    /* reached over h2c (sent only when true) */
};

/* PUT /v1/functions/NAME at a data plane: add or update a function. */
struct dg_wire_dp_fn {
    int64_t concurrency; /* 0..100000; absent decodes as 1 */
    bool h2c;            /* "h2c": reach its sandboxes over HTTP/2 cleartext; absent: false */
};

/* ---- CP store records (shared by the CP replicas) ---------------------------------------- */

struct dg_wire_worker_rec {
    char *address;        /* required */
    char *sandbox_subnet; /* "sandboxSubnet" as it last said (absent: not said) */
};
struct dg_wire_dp_rec {
    char *api, *proxy; /* required */
};

/* ---- GET /v1/status (the CLI) ------------------------------------------------------------ */

struct dg_wire_worker_view {
    char *name, *address;
    bool schedulable;
    int64_t sandboxes;
    int64_t cpu_milli, memory_mib;           /* capacity */
    int64_t cpu_used_milli, memory_used_mib; /* reserved by placement */
    int64_t cpu_schedulable_milli;           /* cpuMilli x cpuOvercommit */
    double cpu_overcommit;
    int64_t min_cpu_milli, min_memory_mib;
};

struct dg_wire_dp_view {
    char *name, *api, *proxy;
};

/* A function as the CP's API shows it (also GET /v1/functions[/NAME]). "error" is null
 * without a failure; with one (has_error) error_worker (or null), error_at_ms, error_age_ms
 * and error_kind follow. */
struct dg_wire_fn_view {
    char *name, *image;
    int64_t port;
    char *state;
    int64_t ready, desired, creating;
    int64_t lower_bound, upper_bound;        /* "scaling_lower_bound", "scaling_upper_bound" */
    int64_t requested_cpu, requested_memory; /* millicores, MiB */
    bool cold_start_sweep;
    int64_t container_concurrency;
    int64_t prewarm; /* sandboxes kept pre-created (registration); 0 is left out */
    char *error;
    bool has_error;
    char *error_worker;
    int64_t error_at_ms, error_age_ms;
    char *error_kind;
};

struct dg_wire_replica {
    int64_t id;
    char *api;
    bool self, leader;
};

struct dg_wire_status {
    struct dg_wire_worker_view *workers;
    size_t nworkers;
    struct dg_wire_dp_view *dataplanes;
    size_t ndataplanes;
    struct dg_wire_fn_view *functions;
    size_t nfunctions;
    char *role;   /* "leader" or "follower" */
    char *leader; /* the leader's internal API, or null */
    bool has_replicas;
    struct dg_wire_replica *replicas;
    size_t nreplicas;
};

/* ---- asynchronous invocations (DP <-> CP) ------------------------------------------------ */

/* An asynchronous request's id: 1..64 of 0-9 a-f and '-' (the DP makes a UUID-shaped one). */
#define DG_WIRE_ASYNC_ID_MAX 64
bool dg_wire_async_id_ok(const char *id, size_t len);
/* Bodies travel base64-encoded (RFC 4648, with padding), at most this many bytes decoded: the
 * encoded message then fits the CP's default http.maxBodyBytes (1 MiB). */
#define DG_WIRE_ASYNC_BODY_MAX    (512 * 1024)
#define DG_WIRE_ASYNC_HEADERS_MAX 64
/* base64 of `len` bytes: a new NUL-terminated string. */
char *dg_wire_b64_encode(const void *data, size_t len);
/* Decode `s` (validated by the message's decode) into a new buffer (*out, *len; NUL-ended). */
int dg_wire_b64_decode(const char *s, char **out, size_t *len);

/* One header kept with a request: a token name, a value of printable ASCII. */
struct dg_wire_async_header {
    char *name, *value; /* required */
};

/* An accepted request, as the DP stored it with the CP (and gets back to run it). */
struct dg_wire_async_req {
    char *id;        /* required: dg_wire_async_id_ok */
    char *dataplane; /* required: who runs it */
    char *function;  /* required */
    char *method;    /* required: a token */
    char *url;       /* required: origin form, printable ASCII, at most DG_WIRE_ARG_MAX */
    struct dg_wire_async_header *headers; /* at most DG_WIRE_ASYNC_HEADERS_MAX */
    size_t nheaders;
    char *body;          /* required (may be ""): base64 */
    int64_t accepted_ms; /* wall clock at acceptance (Unix ms) */
    int64_t tries;       /* sandbox failures so far */
};

/* Its outcome: the function's answer, or the platform's (500 after numberRetries failures). */
struct dg_wire_async_result {
    char *id;            /* required */
    int64_t status;      /* required: 100..599 */
    char *content_type;  /* optional */
    char *body;          /* required (may be ""): base64 */
    int64_t duration_us; /* acceptance to result (Duration-Microseconds) */
    int64_t tries;
};

/* A DP starting: the unfinished requests of `dataplane` are its again; and, also every 10 s
 * after (`orphansOnly`), those of data planes the CP no longer has (lost: silent for 3
 * heartbeats), which become the claimer's. */
struct dg_wire_async_claim {
    char *dataplane; /* required */
    bool orphans_only;
    /* one claim of the claimer (random, new for each claim; 0: none): a record handed in it is
     * not handed again in a later page, so an answer cut at DG_WIRE_ASYNC_CLAIM_BYTES goes on
     * where it ended */
    int64_t boot;
    /* the page of that claim asked for (0, 1, ...): the same page asked again (a resend after
     * a lost answer) gets the records it had again */
    int64_t page;
    /* other data planes' requests in this answer at most (0: up to the page's bounds): what the
     * claimer can take beyond its asyncMaxPending */
    int64_t max_orphans;
};

struct dg_wire_async_batch {
    struct dg_wire_async_req *requests;
    size_t nrequests;
    /* a claim's answer stops near DG_WIRE_ASYNC_CLAIM_BYTES of records (far below a body
     * limit); more are left: the claimer asks again at once */
    bool more;
};
#define DG_WIRE_ASYNC_CLAIM_BYTES (4u << 20)

/* The CP's record of one id (kept in its store under kind "async"; GET /v1/async/ID). */
struct dg_wire_async_state {
    char *state; /* required: "pending" or "done" */
    bool has_request;
    struct dg_wire_async_req request; /* while pending */
    bool has_result;
    struct dg_wire_async_result result; /* once done */
    int64_t expires_ms;                 /* done: deleted after (Unix ms) */
};

/* ---- the functions of every message ------------------------------------------------------ */

#define DG_WIRE_MESSAGES(X)                                                                        \
    X(sandbox_ref)                                                                                 \
    X(worker_beat)                                                                                 \
    X(sandbox_exit)                                                                                \
    X(dp_beat)                                                                                     \
    X(fn_load)                                                                                     \
    X(metrics)                                                                                     \
    X(create)                                                                                      \
    X(latency)                                                                                     \
    X(created)                                                                                     \
    X(sandbox_state)                                                                               \
    X(sandbox_list)                                                                                \
    X(endpoint)                                                                                    \
    X(exit_note)                                                                                   \
    X(fn_update)                                                                                   \
    X(push)                                                                                        \
    X(drain)                                                                                       \
    X(dp_fn)                                                                                       \
    X(dp_endpoint_view)                                                                            \
    X(dp_fn_view)                                                                                  \
    X(worker_rec)                                                                                  \
    X(dp_rec)                                                                                      \
    X(worker_view)                                                                                 \
    X(dp_view)                                                                                     \
    X(fn_view)                                                                                     \
    X(replica)                                                                                     \
    X(status)                                                                                      \
    X(async_header)                                                                                \
    X(async_req)                                                                                   \
    X(async_result)                                                                                \
    X(async_claim)                                                                                 \
    X(async_batch)                                                                                 \
    X(async_state)                                                                                 \
    X(pool_item)                                                                                   \
    X(pool)                                                                                        \
    X(sibling_beat)                                                                                \
    X(sibling_answer)

#define DG_WIRE_DECLARE(x)                                                                         \
    json_t *dg_wire_##x##_encode(const struct dg_wire_##x *m);                                     \
    char *dg_wire_##x##_dumps(const struct dg_wire_##x *m);                                        \
    int dg_wire_##x##_decode(const json_t *j, struct dg_wire_##x *out, struct dg_err *err);        \
    int dg_wire_##x##_parse(const char *buf, size_t len, struct dg_wire_##x *out,                  \
                            struct dg_err *err);                                                   \
    void dg_wire_##x##_free(struct dg_wire_##x *m);
DG_WIRE_MESSAGES(DG_WIRE_DECLARE)

/* For tests and the fuzzer: decode `buf` as message number `i` (0.., in DG_WIRE_MESSAGES
 * order, then the two name-less decoders, the delete item and the batch line), encode the result again and
 * free it. Returns the decode's result; -1 after the last. `name` (may be NULL) gets the
 * message's name. */
int dg_wire_roundtrip_nth(size_t i, const char *buf, size_t len, const char **name,
                          struct dg_err *err);

#endif
