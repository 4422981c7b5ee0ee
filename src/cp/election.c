/*
 * election.c: see election.h.
 *
 * Two threads. libraft 0.15 writes its term and vote with a synchronous write and
 * fsync on the loop it runs on (twice per election step; 0.6 s seen on a busy
 * VM disk), so it gets a thread and a loop of its own ("raft side" below): the
 * raft server, its libuv I/O backend and TCP transport (embedded here; with a cluster
 * key wrapped by raft_auth.c, so every connection presents a cp credential), a
 * uv_check handle that looks for leadership changes, and `wake`, through which
 * the caller asks it to stop. The caller's loop ("CP side") only has `notify`,
 * through which the raft side posts the latest leadership and, last, that it
 * has finished. The fields under `mu` are the only ones both sides touch.
 *
 * Closing: CP side cp_election_stop -> wake -> raft side (leadership transfer)
 * -> raft_close -> raft_uv_close, the transport's release, close check and wake ->
 * the raft loop ends -> notify -> CP side joins the thread, closes notify,
 * frees, done(ud).
 */
#include "election.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <raft.h>
#include <raft/uv.h>

#include "dirigent/log.h"
#include "raft_auth.h"

#define ELECTION_TIMEOUT_MS  300
#define HEARTBEAT_TIMEOUT_MS 100
#define ADDRESS_MAX          48 /* "255.255.255.255:65535" with room to spare */

/* A leadership state as posted from the raft side to the CP side. */
struct view {
    bool is_leader;
    unsigned leader_id;
    char address[ADDRESS_MAX]; /* "" when no leader is known */
};

struct cp_election {
    /* CP side */
    uv_loop_t *loop;
    uv_async_t notify;
    cp_election_cb cb;
    void *ud;
    bool is_leader;       /* as last delivered */
    unsigned leader_id;   /* as last delivered */
    char *leader_address; /* as last delivered; owned */
    bool stopping;
    void (*done)(void *ud);
    void *done_ud;

    /* both sides, under mu */
    uv_mutex_t mu;
    struct view posted; /* the raft side's latest */
    bool stop_requested, finished;

    /* raft side */
    uv_thread_t thread;
    uv_loop_t rloop;
    uv_async_t wake;
    uv_check_t check; /* runs report() once libraft has returned to the loop */
    struct raft raft;
    struct raft_io io;
    struct raft_uv_transport transport; /* raft_uv_tcp, without a key */
    struct cp_raft_auth *auth;          /* with a key: wraps a raft_uv_tcp (raft_auth.h) */
    struct raft_fsm fsm;
    struct raft_transfer transfer;
    int (*uv_start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick, raft_io_recv_cb recv);
    raft_io_tick_cb raft_tick;
    raft_io_recv_cb raft_recv;
    struct view seen;           /* as last posted */
    bool r_stopping, close_now; /* close_now: the leadership transfer ended, close next */

    /* set before the thread starts, read-only after */
    unsigned id;
    char **peers; /* owned copies */
    size_t npeers;
};

/* ---- the FSM: nothing is replicated ------------------------------------------------------ */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    *result = NULL;
    return 0;
}

/* libraft snapshots every 1024 entries. None are appended here (0.15 adds none when a leader is
 * elected and nothing is applied), but should any be, an 8-byte placeholder keeps the log
 * bounded without any state. Ownership of bufs passes to libraft (FSM version 1). */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
    *bufs = raft_malloc(sizeof(**bufs));
    if (!*bufs)
        return RAFT_NOMEM;
    (*bufs)[0].len = 8;
    (*bufs)[0].base = raft_calloc(1, 8);
    if (!(*bufs)[0].base) {
        raft_free(*bufs);
        return RAFT_NOMEM;
    }
    *n_bufs = 1;
    return 0;
}

/* The restore callback owns buf->base. */
static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    raft_free(buf->base);
    return 0;
}

/* ---- raft side: leadership reports ------------------------------------------------------- */

static const char *state_name(int state)
{
    switch (state) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "unavailable";
    }
}

/* Compare libraft's view with what was last posted; post a change to the CP side. */
static void report(struct cp_election *e)
{
    if (e->r_stopping)
        return;
    struct view v = {.is_leader = raft_state(&e->raft) == RAFT_LEADER};
    raft_id id = 0;
    const char *address = NULL;
    raft_leader(&e->raft, &id, &address);
    if (id) {
        v.leader_id = (unsigned)id;
        snprintf(v.address, sizeof(v.address), "%s", address ? address : "");
    }
    if (v.is_leader == e->seen.is_leader && v.leader_id == e->seen.leader_id &&
        strcmp(v.address, e->seen.address) == 0)
        return;
    e->seen = v;
    dg_log(DG_LOG_INFO, "election", "self=%u term=%llu role=%s leader=%u address=%s", e->id,
           e->raft.current_term, state_name(raft_state(&e->raft)), v.leader_id,
           v.leader_id ? v.address : "-");
    uv_mutex_lock(&e->mu);
    e->posted = v;
    uv_mutex_unlock(&e->mu);
    uv_async_send(&e->notify);
}

static void begin_close(struct cp_election *e);

static void on_check(uv_check_t *c)
{
    struct cp_election *e = c->data;
    uv_check_stop(c);
    if (e->close_now) {
        e->close_now = false;
        begin_close(e);
        return;
    }
    report(e);
}

/* Called inside libraft's callbacks: look once control is back in the loop, outside
 * libraft's stack. */
static void schedule_report(struct cp_election *e)
{
    if (!e->r_stopping)
        uv_check_start(&e->check, on_check);
}

static void wrap_tick(struct raft_io *io)
{
    struct cp_election *e = DG_CONTAINER_OF(io, struct cp_election, io);
    e->raft_tick(io);
    schedule_report(e);
}

static void wrap_recv(struct raft_io *io, struct raft_message *m)
{
    struct cp_election *e = DG_CONTAINER_OF(io, struct cp_election, io);
    e->raft_recv(io, m);
    schedule_report(e);
}

/* raft_start hands its tick and receive callbacks to io->start: keep them, pass ours.
 *
 * It asks for a tick every heartbeat timeout, but libraft 0.15 measures every timeout against
 * io->time() and only looks at the tick, so its timers fire up to one tick late: election
 * timeouts randomized over [T, 2T) collapse into three 100 ms buckets (more split votes, and
 * up to 100 ms more failover) and a heartbeat due just after a tick waits for the next one.
 * A tick of a quarter heartbeat keeps them within 25 ms for 40 cheap wake-ups a second. */
static int wrap_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                      raft_io_recv_cb recv)
{
    struct cp_election *e = DG_CONTAINER_OF(io, struct cp_election, io);
    e->raft_tick = tick;
    e->raft_recv = recv;
    return e->uv_start(io, msecs >= 40 ? msecs / 4 : msecs, wrap_tick, wrap_recv);
}

/* ---- raft side: stop ------------------------------------------------------------------------ */

/* libraft is closed (its I/O too): release the backend and the transport, then our handles;
 * the raft loop then has nothing left and ends. */
static void transport_release(struct cp_election *e)
{
    if (e->auth)
        cp_raft_auth_free(e->auth);
    else
        raft_uv_tcp_close(&e->transport);
    e->auth = NULL;
}

static void on_raft_closed(struct raft *r)
{
    struct cp_election *e = r->data;
    raft_uv_close(&e->io);
    transport_release(e);
    uv_close((uv_handle_t *)&e->check, NULL);
    uv_close((uv_handle_t *)&e->wake, NULL);
}

static void begin_close(struct cp_election *e)
{
    raft_close(&e->raft, on_raft_closed);
}

static void on_transfer(struct raft_transfer *t)
{
    struct cp_election *e = t->data;
    /* may run inside libraft's receive path: close from the check handle instead */
    e->close_now = true;
    uv_check_start(&e->check, on_check);
}

/* The CP side asked to stop. A leader first hands over (at most one election timeout: libraft
 * ends the transfer then, successful or not). */
static void on_wake(uv_async_t *a)
{
    struct cp_election *e = a->data;
    uv_mutex_lock(&e->mu);
    bool stop = e->stop_requested;
    uv_mutex_unlock(&e->mu);
    if (!stop || e->r_stopping)
        return;
    e->r_stopping = true;
    uv_check_stop(&e->check);
    if (raft_state(&e->raft) == RAFT_LEADER && e->npeers > 1) {
        e->transfer.data = e;
        int rv = raft_transfer(&e->raft, &e->transfer, 0, on_transfer);
        if (rv == 0) {
            dg_log(DG_LOG_INFO, "election", "self=%u stopping: handing leadership over", e->id);
            return;
        }
        dg_log(DG_LOG_DEBUG, "election", "self=%u leadership transfer: %s", e->id,
               raft_strerror(rv));
    }
    begin_close(e);
}

static void raft_thread(void *arg)
{
    struct cp_election *e = arg;
    uv_run(&e->rloop, UV_RUN_DEFAULT);
    uv_loop_close(&e->rloop);
    uv_mutex_lock(&e->mu);
    e->finished = true;
    uv_mutex_unlock(&e->mu);
    uv_async_send(&e->notify); /* the last touch of e on this thread */
}

/* ---- CP side --------------------------------------------------------------------------------- */

static void election_free(struct cp_election *e)
{
    for (size_t i = 0; i < e->npeers; i++)
        free(e->peers[i]);
    free(e->peers);
    free(e->leader_address);
    free(e);
}

static void on_notify_closed(uv_handle_t *h)
{
    struct cp_election *e = h->data;
    void (*done)(void *) = e->done;
    void *ud = e->done_ud;
    uv_mutex_destroy(&e->mu);
    election_free(e);
    if (done)
        done(ud);
}

/* The raft side posted a new view or finished. uv_async coalesces: a burst of changes shows as
 * the latest. */
static void on_notify(uv_async_t *a)
{
    struct cp_election *e = a->data;
    uv_mutex_lock(&e->mu);
    struct view v = e->posted;
    bool finished = e->finished;
    uv_mutex_unlock(&e->mu);
    const char *address = v.leader_id ? v.address : NULL;
    bool same_address =
        address ? e->leader_address && strcmp(address, e->leader_address) == 0 : !e->leader_address;
    if (!e->stopping &&
        (v.is_leader != e->is_leader || v.leader_id != e->leader_id || !same_address)) {
        e->is_leader = v.is_leader;
        e->leader_id = v.leader_id;
        free(e->leader_address);
        e->leader_address = address ? dg_xstrdup(address) : NULL;
        e->cb(e->ud, e->is_leader, e->leader_id, e->leader_address); /* may stop */
    }
    if (finished) {
        /* `finished` is the thread's last act but its final uv_async_send: the join waits
         * for that at most */
        uv_thread_join(&e->thread);
        uv_close((uv_handle_t *)&e->notify, on_notify_closed);
    }
}

bool cp_election_is_leader(const struct cp_election *e)
{
    return e->is_leader;
}

unsigned cp_election_leader(const struct cp_election *e, const char **address)
{
    if (address)
        *address = e->leader_address;
    return e->leader_id;
}

void cp_election_stop(struct cp_election *e, void (*done)(void *ud), void *ud)
{
    e->stopping = true;
    e->done = done;
    e->done_ud = ud;
    uv_mutex_lock(&e->mu);
    e->stop_requested = true;
    uv_mutex_unlock(&e->mu);
    uv_async_send(&e->wake);
}

/* ---- start ------------------------------------------------------------------------------- */

static int raft_code(int rv)
{
    switch (rv) {
    case RAFT_NOMEM:
        return -ENOMEM;
    case RAFT_NOTFOUND:
        return -ENOENT;
    case RAFT_NOSPACE:
        return -ENOSPC;
    case RAFT_UNAUTHORIZED:
        return -EACCES;
    case RAFT_INVALID:
    case RAFT_BADID:
    case RAFT_MALFORMED:
    case RAFT_NAMETOOLONG:
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
        return DG_E_INVAL;
    default:
        return -EIO;
    }
}

static int raft_fail(struct dg_err *err, int rv, const char *what, const char *detail)
{
    return dg_err_set(err, raft_code(rv), "election: %s: %s", what,
                      detail && *detail ? detail : raft_strerror(rv));
}

/* "a.b.c.d:port" as libraft's transport parses it (IPv4 only, port 1..65535). */
static bool valid_address(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || colon - s > 15)
        return false;
    char host[16];
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    uint64_t port;
    if (!dg_str_to_u64(dg_str_c(colon + 1), &port) || port < 1 || port > 65535)
        return false;
    struct sockaddr_in sa;
    return uv_ip4_addr(host, (int)port, &sa) == 0;
}

static int check_opts(const struct cp_election_opts *o, unsigned et, unsigned ht,
                      struct dg_err *err)
{
    if (!o->peers || o->npeers == 0)
        return dg_err_set(err, DG_E_INVAL, "election: peers: expected at least one address");
    if (o->id < 1 || o->id > o->npeers)
        return dg_err_set(err, DG_E_INVAL, "election: id: expected 1..%zu (index + 1), got %u",
                          o->npeers, o->id);
    for (size_t i = 0; i < o->npeers; i++) {
        if (!o->peers[i] || !valid_address(o->peers[i]))
            return dg_err_set(err, DG_E_INVAL,
                              "election: peers[%zu]: expected an IPv4 address and port like "
                              "10.0.0.2:7000, got '%s'",
                              i, o->peers[i] ? o->peers[i] : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->peers[i], o->peers[j]) == 0)
                return dg_err_set(err, DG_E_INVAL,
                                  "election: peers[%zu]: '%s' is listed twice; give each replica "
                                  "its own port",
                                  i, o->peers[i]);
    }
    if (o->bind_address && !valid_address(o->bind_address))
        return dg_err_set(err, DG_E_INVAL,
                          "election: bind address: expected an IPv4 address and port like "
                          "0.0.0.0:7000, got '%s'",
                          o->bind_address);
    if (!o->dir || !*o->dir)
        return dg_err_set(err, DG_E_INVAL, "election: dir: expected a data directory");
    if (ht >= et)
        return dg_err_set(err, DG_E_INVAL,
                          "election: heartbeat timeout %u ms: expected less than the election "
                          "timeout (%u ms)",
                          ht, et);
    return 0;
}

/* mkdir -p. Blocking, start-up only (libraft reads the directory synchronously right after). */
static int make_dir(const char *dir, struct dg_err *err)
{
    int rc = dg_mkdir_p(dir, 0700, err);
    if (rc < 0)
        dg_err_wrap(err, "election: dir '%s'", dir);
    if (rc == 0) {
        struct stat st;
        if (stat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
            rc = dg_err_set(err, -ENOTDIR, "election: dir '%s': not a directory", dir);
    }
    return rc;
}

/* libraft 0.15 drops the reason its transport could not listen (raft_start says only "I/O
 * error"): find it by binding the address the way libuv does. Returns `out`, empty if the
 * bind works. */
static const char *listen_failure(const char *address, char *out, size_t n)
{
    const char *colon = strrchr(address, ':');
    char host[16];
    struct sockaddr_in sa;
    out[0] = '\0';
    if (!colon || colon - address > 15)
        return out;
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    if (uv_ip4_addr(host, atoi(colon + 1), &sa) != 0)
        return out;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return out;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
        snprintf(out, n, "listen on %s: %s", address, strerror(errno));
    close(fd);
    return out;
}

/* Undo a start that failed, on the caller's thread (the raft thread never ran): close what was
 * opened on the raft loop, run it until everything is closed, free. */
static void start_failed(struct cp_election *e, bool raft_inited)
{
    e->r_stopping = true; /* nothing to report */
    if (raft_inited) {
        raft_close(&e->raft, on_raft_closed);
    } else {
        uv_close((uv_handle_t *)&e->check, NULL);
        uv_close((uv_handle_t *)&e->wake, NULL);
    }
    uv_run(&e->rloop, UV_RUN_DEFAULT);
    uv_loop_close(&e->rloop);
    if (e->notify.data) { /* on the caller's loop: freed once closed there */
        uv_close((uv_handle_t *)&e->notify, on_notify_closed);
        return;
    }
    uv_mutex_destroy(&e->mu);
    election_free(e);
}

struct cp_election *cp_election_start(uv_loop_t *loop, const struct cp_election_opts *o,
                                      cp_election_cb cb, void *ud, struct dg_err *err)
{
    unsigned et = o->election_timeout_ms ? o->election_timeout_ms : ELECTION_TIMEOUT_MS;
    unsigned ht = o->heartbeat_timeout_ms ? o->heartbeat_timeout_ms : HEARTBEAT_TIMEOUT_MS;
    if (check_opts(o, et, ht, err) < 0 || make_dir(o->dir, err) < 0)
        return NULL;

    struct cp_election *e = dg_xcalloc(1, sizeof(*e));
    e->loop = loop;
    e->id = o->id;
    e->cb = cb;
    e->ud = ud;
    e->npeers = o->npeers;
    e->peers = dg_xcalloc(o->npeers, sizeof(*e->peers));
    for (size_t i = 0; i < o->npeers; i++)
        e->peers[i] = dg_xstrdup(o->peers[i]);
    e->fsm.version = 1;
    e->fsm.data = e;
    e->fsm.apply = fsm_apply;
    e->fsm.snapshot = fsm_snapshot;
    e->fsm.restore = fsm_restore;
    int rv = uv_mutex_init(&e->mu);
    if (rv == 0 && (rv = uv_loop_init(&e->rloop)) != 0)
        uv_mutex_destroy(&e->mu);
    if (rv != 0) {
        dg_err_set(err, rv, "election: %s", uv_strerror(rv));
        election_free(e);
        return NULL;
    }
    /* Everything of the raft side is set up here, on the caller's thread, before the raft
     * thread exists (its creation orders these writes before its first read). */
    uv_async_init(&e->rloop, &e->wake, on_wake);
    e->wake.data = e;
    uv_check_init(&e->rloop, &e->check);
    e->check.data = e;

    struct raft_uv_transport *tp = &e->transport;
    if (o->auth_key) {
        e->auth = cp_raft_auth_new(&e->rloop, o->auth_key, o->id, o->bind_address, err);
        if (!e->auth) {
            start_failed(e, false);
            return NULL;
        }
        tp = cp_raft_auth_transport(e->auth);
    } else {
        rv = raft_uv_tcp_init(&e->transport, &e->rloop);
        if (rv != 0) {
            raft_fail(err, rv, "transport", e->transport.errmsg);
            start_failed(e, false);
            return NULL;
        }
        if (o->bind_address &&
            (rv = raft_uv_tcp_set_bind_address(&e->transport, o->bind_address))) {
            raft_fail(err, rv, "bind address", e->transport.errmsg);
            raft_uv_tcp_close(&e->transport);
            start_failed(e, false);
            return NULL;
        }
    }
    rv = raft_uv_init(&e->io, &e->rloop, o->dir, tp);
    if (rv != 0) {
        dg_err_set(err, raft_code(rv), "election: dir '%s': %s", o->dir,
                   *e->io.errmsg ? e->io.errmsg : raft_strerror(rv));
        transport_release(e);
        start_failed(e, false);
        return NULL;
    }
    /* A follower retries a lost connection to the leader (and the leader to a restarted
     * follower) after this delay; libraft's default of 1 s would outlast the election timeout
     * and make a restarted replica call needless elections. */
    raft_uv_set_connect_retry_delay(&e->io, ht);
    e->uv_start = e->io.start;
    e->io.start = wrap_start;

    rv = raft_init(&e->raft, &e->io, &e->fsm, o->id, e->peers[o->id - 1]);
    if (rv != 0) {
        raft_fail(err, rv, "init", raft_errmsg(&e->raft));
        raft_uv_close(&e->io);
        transport_release(e);
        start_failed(e, false);
        return NULL;
    }
    e->raft.data = e;
    raft_set_election_timeout(&e->raft, et);
    raft_set_heartbeat_timeout(&e->raft, ht);
    /* Pre-vote: a replica that was restarted or cut off asks before raising the term, so it
     * cannot depose a healthy leader (followers with a live leader refuse it). */
    raft_set_pre_vote(&e->raft, true);

    struct raft_configuration conf;
    raft_configuration_init(&conf);
    for (size_t i = 0; i < o->npeers && rv == 0; i++)
        rv = raft_configuration_add(&conf, (raft_id)i + 1, e->peers[i], RAFT_VOTER);
    if (rv == 0) {
        rv = raft_bootstrap(&e->raft, &conf);
        if (rv == RAFT_CANTBOOTSTRAP) /* bootstrapped on an earlier start: the log has it */
            rv = 0;
        else if (rv != 0)
            raft_fail(err, rv, "bootstrap", raft_errmsg(&e->raft));
    } else {
        raft_fail(err, rv, "configuration", NULL);
    }
    raft_configuration_close(&conf);
    if (rv == 0) {
        rv = raft_start(&e->raft);
        if (rv != 0) {
            char why[128] = "";
            const char *msg = raft_errmsg(&e->raft);
            if (!*msg)
                msg = listen_failure(o->bind_address ? o->bind_address : e->peers[o->id - 1], why,
                                     sizeof(why));
            raft_fail(err, rv, "start", msg);
        }
    }
    if (rv == 0) {
        uv_async_init(loop, &e->notify, on_notify);
        e->notify.data = e;
        schedule_report(e); /* a single-voter configuration leads at once */
        rv = uv_thread_create(&e->thread, raft_thread, e);
        if (rv != 0)
            dg_err_set(err, rv, "election: thread: %s", uv_strerror(rv));
    }
    if (rv != 0) {
        dg_err_wrap(err, "replica %u (%s, dir %s)", o->id, e->peers[o->id - 1], o->dir);
        start_failed(e, true);
        return NULL;
    }
    dg_log(DG_LOG_INFO, "election", "self=%u address=%s peers=%zu dir=%s election=%ums auth=%s",
           o->id, e->peers[o->id - 1], o->npeers, o->dir, et,
           e->auth ? "cp credential" : "none (loopback only)");
    return e;
}
