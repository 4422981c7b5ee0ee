/*
 * test_election.c: control-plane leader election (src/cp/election.c) with real
 * libraft servers on ephemeral 127.0.0.1 ports and temporary data directories.
 * First three replicas on one loop in this process: one leader that all agree
 * on, a new leader after the leader stops, a restarted replica rejoining as a
 * follower without deposing the leader. Then three processes (election_node,
 * found next to this program or through $ELECTION_NODE): the leader is
 * SIGKILLed, a survivor leads and all agree on it, and the killed replica
 * comes back from its directory and follows; $ELECTION_ROUNDS rounds (default
 * 3). Times are printed as TAP comments, never judged here (the failover goal
 * of 1.5 s is bench/failover.sh's). The in-process cluster runs with a cluster key (raft
 * connections authenticated, raft_auth.h): raw TCP clients that forge libraft's handshake and
 * messages, or present a credential of another key, role or replica, are refused (answer 'R'
 * or closed, an audit line) and change nothing; the unkeyed processes show that the same
 * forged message does move an unauthenticated replica. Children die with this
 * process (PR_SET_PDEATHSIG) and are killed and reaped, and the directories
 * removed, on every exit path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "election.h"
#include "raft_auth.h"

#define N                3
#define GOAL_FAILOVER_MS 1500 /* a new leader this soon after the leader's process dies (said) */

/* Where a cluster's replicas listen and keep their data. */
struct cluster {
    char base[PATH_MAX];
    char addr[N][32];
    const char *peers[N];
    char dirs[N][PATH_MAX + 8];
};

static struct cluster lc; /* the replicas on one loop */
static struct cluster pc; /* the processes */

/* An ephemeral port nobody listens on right now (bind port 0, read it, close). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd != -1);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

/* A fresh base directory, N data directories under it (not created: the election does) and N
 * free ports. */
static void cluster_make(struct cluster *c, const char *tag)
{
    snprintf(c->base, sizeof(c->base), "/tmp/dg-election-%s-XXXXXX", tag);
    assert_non_null(mkdtemp(c->base));
    for (int i = 0; i < N; i++) {
        size_t bl = strlen(c->base); /* base is a mkdtemp name, far below PATH_MAX */
        memcpy(c->dirs[i], c->base, bl);
        snprintf(c->dirs[i] + bl, sizeof(c->dirs[i]) - bl, "/r%d", i + 1);
        snprintf(c->addr[i], sizeof(c->addr[i]), "127.0.0.1:%d", free_port());
        c->peers[i] = c->addr[i];
    }
}

static void cluster_remove(struct cluster *c)
{
    if (c->base[0])
        nftw(c->base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    c->base[0] = '\0';
}

static double ms_since(uint64_t t0_us)
{
    return (double)(dg_now_us() - t0_us) / 1000.0;
}

/* ---- part 1: three replicas on one loop --------------------------------------------------- */

struct replica {
    struct cp_election *e; /* NULL: stopped */
    unsigned id;
    bool is_leader;
    unsigned leader_id;
    char leader_address[32];
    unsigned changes;
    bool stop_done;
};

static uv_loop_t loop;
static struct replica reps[N];
static struct dg_auth_key lkey; /* the in-process cluster's key */

/* The caller's loop must never stall (libraft's fsyncs run on the election's own thread): a
 * 10 ms timer records the longest gap between its runs, except across cp_election_start,
 * which reads the raft directory synchronously on purpose. */
static uv_timer_t lag_timer;
static uint64_t lag_last_us, lag_max_us;
static void on_lag(uv_timer_t *t)
{
    uint64_t now = dg_now_us();
    if (lag_last_us && now - lag_last_us > lag_max_us)
        lag_max_us = now - lag_last_us;
    lag_last_us = now;
}

static void on_change(void *ud, bool is_leader, unsigned leader_id, const char *leader_address)
{
    struct replica *r = ud;
    r->is_leader = is_leader;
    r->leader_id = leader_id;
    snprintf(r->leader_address, sizeof(r->leader_address), "%s",
             leader_address ? leader_address : "");
    r->changes++;
    /* what the getters say matches the callback */
    const char *a = NULL;
    assert_int_equal(cp_election_leader(r->e, &a), leader_id);
    assert_true(a == leader_address);
    assert_int_equal(cp_election_is_leader(r->e), is_leader);
}

static void replica_start(int i)
{
    struct replica *r = &reps[i];
    memset(r, 0, sizeof(*r));
    r->id = (unsigned)i + 1;
    struct cp_election_opts o = {
        .id = r->id, .peers = lc.peers, .npeers = N, .dir = lc.dirs[i], .auth_key = &lkey};
    struct dg_err err = {0};
    r->e = cp_election_start(&loop, &o, on_change, r, &err);
    lag_last_us = 0; /* the start itself does not count */
    if (!r->e)
        fail_msg("replica %u: %s", r->id, err.msg);
}

static void on_stop_done(void *ud)
{
    ((struct replica *)ud)->stop_done = true;
}

static void replica_stop(int i)
{
    struct replica *r = &reps[i];
    if (!r->e)
        return;
    struct cp_election *e = r->e;
    r->e = NULL;
    r->stop_done = false;
    cp_election_stop(e, on_stop_done, r);
}

/* The leader every running replica agrees on, with exactly one of them leading and the
 * address matching its id; 0 if there is none (yet). */
static unsigned agreed_leader(void)
{
    unsigned leader = 0, leaders = 0;
    for (int i = 0; i < N; i++) {
        if (reps[i].e && reps[i].is_leader) {
            leaders++;
            leader = reps[i].id;
        }
    }
    if (leaders != 1)
        return 0;
    for (int i = 0; i < N; i++) {
        if (!reps[i].e)
            continue;
        if (reps[i].leader_id != leader ||
            strcmp(reps[i].leader_address, lc.peers[leader - 1]) != 0)
            return 0;
    }
    return leader;
}

static void on_deadline(uv_timer_t *t)
{
    *(bool *)t->data = true;
}

/* Run `l` until pred() holds or timeout_ms passes; returns pred(). */
static bool run_until_on(uv_loop_t *l, bool (*pred)(void), unsigned timeout_ms)
{
    uv_timer_t tm;
    bool expired = false;
    uv_update_time(l); /* the loop may have sat idle (the process test): time from now */
    uv_timer_init(l, &tm);
    tm.data = &expired;
    uv_timer_start(&tm, on_deadline, timeout_ms, 0);
    while (!pred() && !expired)
        uv_run(l, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tm, NULL);
    uv_run(l, UV_RUN_NOWAIT);
    return pred();
}

static bool run_until(bool (*pred)(void), unsigned timeout_ms)
{
    return run_until_on(&loop, pred, timeout_ms);
}

static bool never(void)
{
    return false;
}

static bool have_leader(void)
{
    return agreed_leader() != 0;
}

static unsigned old_leader;
static bool have_new_leader(void)
{
    unsigned l = agreed_leader();
    return l != 0 && l != old_leader;
}

static int stopping_index = -1;
static bool stop_finished(void)
{
    return reps[stopping_index].stop_done;
}

static int local_setup(void **state)
{
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &lag_timer);
    uv_timer_start(&lag_timer, on_lag, 10, 10);
    cluster_make(&lc, "loop");
    struct dg_err err = {0};
    assert_int_equal(dg_auth_key_generate(&lkey, &err), 0);
    return 0;
}

static bool all_stopped(void)
{
    for (int i = 0; i < N; i++)
        if (reps[i].id && !reps[i].stop_done)
            return false;
    return true;
}

static int local_teardown(void **state)
{
    for (int i = 0; i < N; i++) {
        if (reps[i].e)
            replica_stop(i);
        else if (!reps[i].id)
            reps[i].stop_done = true;
    }
    bool ok = run_until(all_stopped, 5000);
    uv_close((uv_handle_t *)&lag_timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&loop);
    cluster_remove(&lc);
    assert_true(ok);
    assert_int_equal(rc, 0); /* every handle was closed: nothing leaked on the loop */
    return 0;
}

static void test_first_leader(void **state)
{
    uint64_t t0 = dg_now_us();
    for (int i = 0; i < N; i++)
        replica_start(i);
    printf("# in-process: cp_election_start x%d took %.0f ms (synchronous: libraft reads and "
           "probes the directory)\n",
           N, ms_since(t0));
    assert_true(run_until(have_leader, 2000));
    unsigned l = agreed_leader();
    printf("# in-process: leader %u elected after %.0f ms\n", l, ms_since(t0));
    for (int i = 0; i < N; i++) {
        assert_int_equal(reps[i].leader_id, l);
        assert_string_equal(reps[i].leader_address, lc.peers[l - 1]);
        assert_int_equal(reps[i].is_leader, reps[i].id == l);
    }
    /* the data directories were created and hold raft's files */
    for (int i = 0; i < N; i++) {
        char meta[PATH_MAX + 32];
        snprintf(meta, sizeof(meta), "%s/metadata1", lc.dirs[i]);
        char meta2[PATH_MAX + 32];
        snprintf(meta2, sizeof(meta2), "%s/metadata2", lc.dirs[i]);
        assert_true(access(meta, F_OK) == 0 || access(meta2, F_OK) == 0);
    }
}

static void test_stop_leader(void **state)
{
    old_leader = agreed_leader();
    assert_true(old_leader != 0);
    int li = (int)old_leader - 1;
    uint64_t t0 = dg_now_us();
    stopping_index = li;
    unsigned changes_before = reps[li].changes;
    replica_stop(li);
    assert_true(run_until(have_new_leader, 3000));
    unsigned l = agreed_leader();
    printf("# in-process: leader %u stopped, leader %u after %.0f ms\n", old_leader, l,
           ms_since(t0));
    assert_true(l != old_leader);
    assert_true(run_until(stop_finished, 3000));
    assert_int_equal(reps[li].changes, changes_before); /* no callback after stop */
}

static unsigned restarted_id;
static bool restarted_knows_leader(void)
{
    struct replica *r = &reps[restarted_id - 1];
    return r->e && agreed_leader() != 0 && r->leader_id == agreed_leader();
}

static void test_restart_rejoins(void **state)
{
    unsigned leader = agreed_leader();
    assert_true(leader != 0);
    restarted_id = old_leader; /* the one test_stop_leader stopped, same directory and port */
    uint64_t t0 = dg_now_us();
    replica_start((int)restarted_id - 1);
    assert_true(run_until(restarted_knows_leader, 3000));
    printf("# in-process: replica %u restarted, follows leader %u after %.0f ms\n", restarted_id,
           leader, ms_since(t0));
    struct replica *r = &reps[restarted_id - 1];
    assert_false(r->is_leader);
    assert_int_equal(agreed_leader(), leader);
    /* and it stays that way: pre-vote keeps the returning replica from raising the term */
    unsigned leader_changes = reps[leader - 1].changes;
    run_until(never, 1000);
    assert_int_equal(agreed_leader(), leader);
    assert_int_equal(reps[leader - 1].changes, leader_changes);
    /* three elections, a stop and a restart: how long the caller's loop went without running
     * (information; a wall-clock bound would be a flaky verdict under sanitizers) */
    printf("# in-process: longest stall of the caller's loop %.1f ms\n",
           (double)lag_max_us / 1000.0);
}

/* ---- forged raft peers (the in-process cluster is keyed) ---------------------------------- */

static void put64(unsigned char **p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *(*p)++ = (unsigned char)(v >> (8 * i));
}

/* libraft 0.15's connection handshake, claiming to be replica `id` at `address`: protocol 1,
 * id, the address's length padded to 8, the address (little-endian words). */
static size_t forge_handshake(unsigned char *out, uint64_t id, const char *address)
{
    size_t alen = (strlen(address) + 1 + 7) / 8 * 8;
    unsigned char *p = out;
    put64(&p, 1);
    put64(&p, id);
    put64(&p, alen);
    memset(p, 0, alen);
    memcpy(p, address, strlen(address));
    return 24 + alen;
}

/* An AppendEntries heartbeat (message type 1) of term `term` and nothing else: a follower that
 * takes it adopts the term and the sender as its leader. 48 header bytes: the term, then zeros
 * (previous index and term, commit index, no entries). */
static size_t forge_append_entries(unsigned char *out, uint64_t term)
{
    unsigned char *p = out;
    put64(&p, 1);
    put64(&p, 48);
    put64(&p, term);
    memset(p, 0, 40);
    return 16 + 48;
}

/* Connect to "127.0.0.1:port", send `n` bytes and read until the replica closes (3 s at most).
 * Returns the number of bytes it sent back (the first in *first), or -1 if it kept the
 * connection open. A reset counts as closed. */
static int probe(const char *addr, const unsigned char *buf, size_t n, unsigned char *first)
{
    const char *colon = strrchr(addr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd != -1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    int got = 0;
    *first = 0;
    uint64_t end = dg_now_ms() + 3000;
    for (;;) {
        uint64_t now = dg_now_ms();
        if (now >= end) {
            got = -1;
            break;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)(end - now)) <= 0)
            continue;
        unsigned char c[64];
        ssize_t r = read(fd, c, sizeof(c));
        if (r <= 0)
            break; /* closed (0) or reset */
        if (got == 0)
            *first = c[0];
        got += (int)r;
    }
    close(fd);
    return got;
}

/* stderr into a file while probing, to find the audit lines */
static char audit_path[64];
static int saved_stderr = -1;

static void audit_capture(void)
{
    snprintf(audit_path, sizeof(audit_path), "/tmp/dg-election-audit-XXXXXX");
    int fd = mkstemp(audit_path);
    assert_true(fd != -1);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
}

/* Restore stderr; returns what was logged (static buffer) and echoes it. */
static const char *audit_release(void)
{
    static char text[16384];
    if (saved_stderr == -1)
        return "";
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    saved_stderr = -1;
    FILE *f = fopen(audit_path, "r");
    size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
    text[n] = '\0';
    if (f)
        fclose(f);
    unlink(audit_path);
    fputs(text, stderr);
    return text;
}

static unsigned total_changes(void)
{
    unsigned n = 0;
    for (int i = 0; i < N; i++)
        n += reps[i].changes;
    return n;
}

/* A frame with a credential of (key, role, name) after a handshake claiming `id`. */
static size_t forge_with_credential(unsigned char *out, uint64_t id, const char *address,
                                    const struct dg_auth_key *key, unsigned role, const char *name)
{
    char cred[DG_AUTH_CRED_MAX];
    struct dg_err err = {0};
    assert_int_equal(dg_auth_credential(key, role, name, cred, sizeof(cred), &err), 0);
    size_t n = forge_handshake(out, id, address);
    size_t f = cp_raft_auth_frame(cred, out + n, 512);
    assert_true(f > 0);
    return n + f;
}

static void test_forged_peers(void **state)
{
    unsigned leader = agreed_leader();
    assert_true(leader != 0);
    /* the target: a follower; the claimed sender: the other follower */
    unsigned target = leader % N + 1, claimed = target % N + 1;
    if (claimed == leader)
        claimed = claimed % N + 1;
    const char *taddr = lc.peers[target - 1], *caddr = lc.peers[claimed - 1];
    unsigned changes = total_changes();
    unsigned char buf[1024], first;
    size_t n;
    struct dg_auth_key other;
    struct dg_err err = {0};
    assert_int_equal(dg_auth_key_generate(&other, &err), 0);
    char name[32];

    audit_capture();
    /* 1. libraft's handshake and an AppendEntries of a much higher term, no credential */
    n = forge_handshake(buf, claimed, caddr);
    n += forge_append_entries(buf + n, 1000000);
    int r1 = probe(taddr, buf, n, &first);
    run_until(never, 1100); /* nothing moves; and the next refusal gets its own audit line */
    unsigned after1 = total_changes();
    /* 2. a well-formed credential of another cluster's key */
    snprintf(name, sizeof(name), "cp-%u", claimed);
    n = forge_with_credential(buf, claimed, caddr, &other, DG_AUTH_CP, name);
    unsigned char first2;
    int r2 = probe(taddr, buf, n, &first2);
    run_until(never, 1100);
    /* 3. this cluster's key, but the leader's name while claiming another replica's id */
    snprintf(name, sizeof(name), "cp-%u", leader);
    n = forge_with_credential(buf, claimed, caddr, &lkey, DG_AUTH_CP, name);
    unsigned char first3;
    int r3 = probe(taddr, buf, n, &first3);
    run_until(never, 1100);
    /* 4. this cluster's key, a node's credential (a compromised worker) */
    snprintf(name, sizeof(name), "cp-%u", claimed);
    n = forge_with_credential(buf, claimed, caddr, &lkey, DG_AUTH_NODE, name);
    unsigned char first4;
    int r4 = probe(taddr, buf, n, &first4);
    run_until(never, 1100);
    /* 5. an address in raft's handshake that would write a line of its own into the log */
    n = forge_handshake(buf, claimed, "1.2.3.4:5\naudit: who=operator.admin forged line");
    unsigned char first5;
    probe(taddr, buf, n, &first5);
    run_until(never, 1100);
    const char *log = audit_release();
    assert_null(strstr(log, "\naudit: who=operator.admin forged line"));
    assert_non_null(strstr(log, "1.2.3.4:5?audit: who=operator.admin forged line"));

    printf("# forged AppendEntries: closed with %d bytes back (first '%c'); other key: %d "
           "('%c'); wrong replica: %d ('%c'); node role: %d ('%c')\n",
           r1, first ? first : '-', r2, first2 ? first2 : '-', r3, first3 ? first3 : '-', r4,
           first4 ? first4 : '-');
    assert_true(r1 >= 0); /* closed, not kept open */
    assert_int_equal(r2, 1);
    assert_int_equal(first2, CP_RAFT_AUTH_REFUSE);
    assert_int_equal(r3, 1);
    assert_int_equal(first3, CP_RAFT_AUTH_REFUSE);
    assert_int_equal(r4, 1);
    assert_int_equal(first4, CP_RAFT_AUTH_REFUSE);
    /* the audit lines, who and why */
    assert_non_null(strstr(log, "refused raft connection"));
    assert_non_null(strstr(log, "bad magic"));
    assert_non_null(strstr(log, "bad credential signature"));
    snprintf(name, sizeof(name), "who=cp.cp-%u", leader);
    assert_non_null(strstr(log, name));
    assert_non_null(strstr(log, "cannot act as replica"));
    assert_non_null(strstr(log, "cannot join raft (it needs cp)"));
    /* nothing moved: the same leader, no replica saw a change */
    assert_int_equal(after1, changes);
    assert_int_equal(total_changes(), changes);
    assert_int_equal(agreed_leader(), leader);

    /* 6. the right credential for the claimed replica is accepted (then closed by us) */
    snprintf(name, sizeof(name), "cp-%u", claimed);
    n = forge_with_credential(buf, claimed, caddr, &lkey, DG_AUTH_CP, name);
    const char *colon = strrchr(taddr, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 3000), 1);
    unsigned char answer = 0;
    assert_int_equal(read(fd, &answer, 1), 1);
    assert_int_equal(answer, CP_RAFT_AUTH_ACCEPT);
    close(fd);
}

/* Read from fd until `n` bytes are in or it closes, 3 s at most; returns how many. */
static size_t read_some(int fd, unsigned char *buf, size_t n)
{
    size_t have = 0;
    uint64_t end = dg_now_ms() + 3000;
    while (have < n && dg_now_ms() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + have, n - have);
        if (r <= 0)
            break;
        have += (size_t)r;
    }
    return have;
}

/* Whether the other end closes fd within 3 s (EOF or reset). */
static bool closes(int fd)
{
    unsigned char c[64];
    uint64_t end = dg_now_ms() + 3000;
    while (dg_now_ms() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if (read(fd, c, sizeof(c)) <= 0)
            return true;
    }
    return false;
}

static bool pending_done;
static bool pending_done_pred(void)
{
    return pending_done;
}
static void on_pending_stopped(void *ud)
{
    pending_done = true;
}
static void on_pending_change(void *ud, bool is_leader, unsigned leader_id, const char *address)
{
}

/* A keyed replica stopped in the middle of both exchanges: its connection to a peer that never
 * answers the credential (here a bare socket), and a connection to it that never sends one. It
 * closes both and releases everything (the sanitizer build checks leaks and use after free; the
 * loop closes with no handle left). What the connecting side sends is checked on the way: raft's
 * handshake, then a frame with this replica's cp credential. */
static void test_close_pending(void **state)
{
    uv_loop_t l;
    assert_int_equal(uv_loop_init(&l), 0);
    struct cluster c;
    cluster_make(&c, "pending");
    /* replica 2 is a socket that accepts and never answers */
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd != -1);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)atoi(strrchr(c.addr[1], ':') + 1));
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(lfd, 4), 0);

    struct cp_election_opts o = {
        .id = 1, .peers = c.peers, .npeers = 2, .dir = c.dirs[0], .auth_key = &lkey};
    struct dg_err err = {0};
    pending_done = false;
    struct cp_election *e = cp_election_start(&l, &o, on_pending_change, NULL, &err);
    if (!e)
        fail_msg("%s", err.msg);

    /* after its election timeout replica 1 asks replica 2 for a (pre-)vote: it connects */
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(afd != -1);
    unsigned char hs[24 + 32];
    size_t alen = (strlen(c.addr[0]) + 1 + 7) / 8 * 8;
    size_t hlen = 24 + alen;
    assert_int_equal(read_some(afd, hs, hlen), hlen);
    assert_int_equal(hs[0], 1); /* libraft's handshake: protocol 1, id 1 */
    assert_int_equal(hs[8], 1);
    unsigned char frame[CP_RAFT_AUTH_HDR + DG_AUTH_CRED_MAX];
    assert_int_equal(read_some(afd, frame, CP_RAFT_AUTH_HDR), CP_RAFT_AUTH_HDR);
    size_t clen = 0;
    assert_int_equal(cp_raft_auth_header_parse(frame, &clen, &err), 0);
    assert_int_equal(read_some(afd, frame + CP_RAFT_AUTH_HDR, clen), clen);
    char mine[DG_AUTH_CRED_MAX];
    assert_int_equal(dg_auth_credential(&lkey, DG_AUTH_CP, "cp-1", mine, sizeof(mine), &err), 0);
    assert_int_equal(clen, strlen(mine));
    assert_memory_equal(frame + CP_RAFT_AUTH_HDR, mine, clen);

    /* and a connection to replica 1 that sends raft's handshake and no credential */
    unsigned char buf[128];
    size_t n = forge_handshake(buf, 2, c.addr[1]);
    int ifd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sa.sin_port = htons((uint16_t)atoi(strrchr(c.addr[0], ':') + 1));
    assert_int_equal(connect(ifd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(ifd, buf, n), (ssize_t)n);
    run_until_on(&l, never, 200); /* it has read the handshake and waits for the frame */

    cp_election_stop(e, on_pending_stopped, NULL);
    bool stopped = run_until_on(&l, pending_done_pred, 5000);
    uv_run(&l, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&l);
    bool closed_out = closes(afd), closed_in = closes(ifd);
    close(afd);
    close(ifd);
    close(lfd);
    cluster_remove(&c);
    assert_true(stopped);
    assert_int_equal(rc, 0);
    assert_true(closed_out);
    assert_true(closed_in);
}

/* The frame's header: what the listener accepts before reading a credential. */
static void test_frame_parse(void **state)
{
    unsigned char f[CP_RAFT_AUTH_HDR + DG_AUTH_CRED_MAX];
    size_t len = 0;
    struct dg_err err = {0};
    size_t n = cp_raft_auth_frame("dg1.cp.cp-1.abc", f, sizeof(f));
    assert_int_equal(n, CP_RAFT_AUTH_HDR + 15);
    assert_int_equal(cp_raft_auth_header_parse(f, &len, &err), 0);
    assert_int_equal(len, 15);
    assert_memory_equal(f + CP_RAFT_AUTH_HDR, "dg1.cp.cp-1.abc", 15);
    /* what would not fit, or is empty, is not framed */
    char big[DG_AUTH_CRED_MAX + 1];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(cp_raft_auth_frame(big, f, sizeof(f)), 0);
    assert_int_equal(cp_raft_auth_frame("", f, sizeof(f)), 0);
    assert_int_equal(cp_raft_auth_frame("dg1.cp.cp-1.abc", f, 10), 0);
    /* refused headers, each naming what is wrong */
    unsigned char h[CP_RAFT_AUTH_HDR];
    memcpy(h, f, sizeof(h));
    h[0] = 1; /* libraft's own handshake starts with protocol 1 */
    assert_true(cp_raft_auth_header_parse(h, &len, &err) < 0);
    assert_non_null(strstr(err.msg, "bad magic"));
    memcpy(h, f, sizeof(h));
    h[4] = 2;
    assert_true(cp_raft_auth_header_parse(h, &len, &err) < 0);
    assert_non_null(strstr(err.msg, "version 2.0"));
    memcpy(h, f, sizeof(h));
    h[6] = h[7] = 0;
    assert_true(cp_raft_auth_header_parse(h, &len, &err) < 0);
    assert_non_null(strstr(err.msg, "credential length 0"));
    h[6] = 0xff;
    assert_true(cp_raft_auth_header_parse(h, &len, &err) < 0);
    assert_non_null(strstr(err.msg, "expected 1..159"));
}

static void test_bad_options(void **state)
{
    uv_loop_t l;
    uv_loop_init(&l);
    struct dg_err err = {0};
    const char *bad[] = {"127.0.0.1:1", "localhost:2"};
    struct cp_election_opts o = {.id = 1, .peers = bad, .npeers = 2, .dir = "/tmp/unused"};
    assert_null(cp_election_start(&l, &o, on_change, NULL, &err));
    assert_int_equal(err.code, DG_E_INVAL);
    assert_non_null(strstr(err.msg, "peers[1]"));
    o.peers = lc.peers;
    o.npeers = N;
    o.id = 4;
    assert_null(cp_election_start(&l, &o, on_change, NULL, &err));
    assert_non_null(strstr(err.msg, "id"));
    o.id = 1;
    o.election_timeout_ms = 100;
    o.heartbeat_timeout_ms = 100;
    assert_null(cp_election_start(&l, &o, on_change, NULL, &err));
    assert_non_null(strstr(err.msg, "heartbeat"));
    uv_run(&l, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&l), 0);
}

/* The port is taken: start fails with the reason, and what libraft had opened closes on the
 * loop. */
static void test_port_in_use(void **state)
{
    uv_loop_t l;
    uv_loop_init(&l);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    char addr[32], dir[PATH_MAX];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    snprintf(dir, sizeof(dir), "/tmp/dg-election-busy-XXXXXX");
    assert_non_null(mkdtemp(dir));
    const char *one[] = {addr};
    struct cp_election_opts o = {.id = 1, .peers = one, .npeers = 1, .dir = dir};
    struct dg_err err = {0};
    struct cp_election *e = cp_election_start(&l, &o, on_change, NULL, &err);
    uv_run(&l, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&l);
    close(fd);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("# port in use: %s\n", err.msg);
    assert_null(e);
    assert_true(err.code < 0);
    assert_int_equal(rc, 0);
}

/* A single replica elects itself at once; the callback stops the election from inside, and
 * the second start on the same directory (bootstrapped already), listening on 0.0.0.0, leads
 * again. */
static struct cp_election *solo;
static unsigned solo_leads, solo_calls;
static bool solo_done;
static void on_solo_stopped(void *ud)
{
    solo_done = true;
}
static void on_solo(void *ud, bool is_leader, unsigned leader_id, const char *leader_address)
{
    solo_calls++;
    if (is_leader && leader_id == 1) {
        solo_leads++;
        cp_election_stop(solo, on_solo_stopped, NULL);
    }
}
static bool solo_done_pred(void)
{
    return solo_done;
}

static void test_single_replica(void **state)
{
    uv_loop_t l;
    assert_int_equal(uv_loop_init(&l), 0);
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "/tmp/dg-election-solo-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char addr[32], sub[PATH_MAX + 16];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
    snprintf(sub, sizeof(sub), "%s/a/b", dir); /* parents are created too */
    const char *one[] = {addr};
    struct cp_election_opts o = {.id = 1, .peers = one, .npeers = 1, .dir = sub};
    struct dg_err err = {0};
    bool ok = true;
    char bind[32];
    snprintf(bind, sizeof(bind), "0.0.0.0:%s", strrchr(addr, ':') + 1);
    for (int run = 0; run < 2 && ok; run++) {
        solo_done = false;
        o.bind_address = run ? bind : NULL; /* the second start listens on every address */
        solo = cp_election_start(&l, &o, on_solo, NULL, &err);
        ok = solo && run_until_on(&l, solo_done_pred, 3000);
    }
    uv_run(&l, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&l);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (!ok)
        fail_msg("solo replica: %s", solo ? "did not lead and stop" : err.msg);
    assert_int_equal(solo_leads, 2);
    assert_int_equal(solo_calls, 2); /* nothing after the stop */
    assert_int_equal(rc, 0);
}

/* ---- part 2: three processes, SIGKILL the leader ------------------------------------------ */

struct child {
    pid_t pid; /* 0: not running */
    int out;   /* read end of its stdout */
    char buf[1024];
    size_t len;
    bool is_leader;
    unsigned leader_id;
    uint64_t leader_since_us; /* its clock when it last reported leading */
};

static struct child kids[N];
static char node_path[PATH_MAX];

static void find_node(void)
{
    const char *env = getenv("ELECTION_NODE");
    if (env) {
        snprintf(node_path, sizeof(node_path), "%s", env);
    } else {
        ssize_t n = readlink("/proc/self/exe", node_path, sizeof(node_path) - 32);
        assert_true(n > 0);
        node_path[n] = '\0';
        char *slash = strrchr(node_path, '/');
        snprintf(slash + 1, sizeof(node_path) - (size_t)(slash + 1 - node_path), "election_node");
    }
    if (access(node_path, X_OK) != 0)
        fail_msg("election_node not found at %s (build it or set ELECTION_NODE)", node_path);
}

static void child_spawn(int i)
{
    struct child *c = &kids[i];
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    char id[16], list[3 * 32];
    snprintf(id, sizeof(id), "%d", i + 1);
    snprintf(list, sizeof(list), "%s,%s,%s", pc.peers[0], pc.peers[1], pc.peers[2]);
    pid_t ppid = getpid();
    pid_t pid = fork();
    assert_true(pid != -1);
    if (pid == 0) {
        /* die with the test, whatever way it ends */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != ppid)
            _exit(1);
        dup2(p[1], STDOUT_FILENO);
        execl(node_path, node_path, id, pc.dirs[i], list, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    memset(c, 0, sizeof(*c));
    c->pid = pid;
    c->out = p[0];
}

static void child_kill(int i, int sig)
{
    struct child *c = &kids[i];
    if (!c->pid)
        return;
    kill(c->pid, sig);
    waitpid(c->pid, NULL, 0);
    close(c->out);
    c->pid = 0;
    c->is_leader = false;
    c->leader_id = 0;
}

static void child_line(struct child *c, char *line)
{
    unsigned long long t;
    unsigned self, leader;
    int is_leader;
    if (sscanf(line, "%llu %u %d %u", &t, &self, &is_leader, &leader) != 4)
        return;
    c->is_leader = is_leader != 0;
    c->leader_id = leader;
    if (c->is_leader)
        c->leader_since_us = t;
}

/* Read what the children wrote, waiting up to wait_ms for something. */
static void children_read(int wait_ms)
{
    struct pollfd pfd[N];
    int map[N], n = 0;
    for (int i = 0; i < N; i++) {
        if (kids[i].pid) {
            pfd[n] = (struct pollfd){.fd = kids[i].out, .events = POLLIN};
            map[n++] = i;
        }
    }
    if (poll(pfd, (nfds_t)n, wait_ms) <= 0)
        return;
    for (int k = 0; k < n; k++) {
        if (!(pfd[k].revents & (POLLIN | POLLHUP)))
            continue;
        struct child *c = &kids[map[k]];
        ssize_t got;
        while ((got = read(c->out, c->buf + c->len, sizeof(c->buf) - 1 - c->len)) > 0) {
            c->len += (size_t)got;
            c->buf[c->len] = '\0';
            char *nl;
            while ((nl = strchr(c->buf, '\n'))) {
                *nl = '\0';
                child_line(c, c->buf);
                size_t used = (size_t)(nl + 1 - c->buf);
                memmove(c->buf, nl + 1, c->len - used);
                c->len -= used;
                c->buf[c->len] = '\0';
            }
        }
    }
}

/* As agreed_leader, over the running children. */
static unsigned children_leader(void)
{
    unsigned leader = 0, leaders = 0;
    for (int i = 0; i < N; i++) {
        if (kids[i].pid && kids[i].is_leader) {
            leaders++;
            leader = (unsigned)i + 1;
        }
    }
    if (leaders != 1)
        return 0;
    for (int i = 0; i < N; i++)
        if (kids[i].pid && kids[i].leader_id != leader)
            return 0;
    return leader;
}

/* Wait until the running children agree on a leader other than `except`; 0 on timeout. */
static unsigned children_wait_leader(unsigned except, unsigned timeout_ms)
{
    uint64_t end = dg_now_ms() + timeout_ms;
    for (;;) {
        unsigned l = children_leader();
        if (l && l != except)
            return l;
        uint64_t now = dg_now_ms();
        if (now >= end)
            return 0;
        children_read((int)DG_MIN(end - now, 50));
    }
}

static int procs_setup(void **state)
{
    find_node();
    cluster_make(&pc, "procs");
    return 0;
}

static int procs_teardown(void **state)
{
    for (int i = 0; i < N; i++)
        child_kill(i, SIGKILL);
    cluster_remove(&pc);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_processes_kill_leader(void **state)
{
    const char *r = getenv("ELECTION_ROUNDS");
    static double took[1000]; /* static: a failed assertion longjmps out */
    int rounds = r ? atoi(r) : 3;
    rounds = DG_MAX(1, DG_MIN(rounds, (int)DG_ARRAY_LEN(took)));
    uint64_t t0 = dg_now_us();
    for (int i = 0; i < N; i++)
        child_spawn(i);
    unsigned leader = children_wait_leader(0, 3000);
    assert_true(leader != 0);
    printf("# processes: first leader %u, all agree %.0f ms after spawning\n", leader,
           ms_since(t0));

    int over_goal = 0;
    for (int round = 0; round < rounds; round++) {
        leader = children_wait_leader(0, 3000);
        assert_true(leader != 0);
        uint64_t kill_us = dg_now_us();
        child_kill((int)leader - 1, SIGKILL);
        unsigned next = children_wait_leader(leader, 5000);
        if (!next)
            fail_msg("round %d: no new leader within 5 s of killing leader %u", round + 1, leader);
        double agreed_ms = ms_since(kill_us);
        /* the new leader's own clock when it took over (same host, same monotonic clock) */
        double led_ms = (double)(kids[next - 1].leader_since_us - kill_us) / 1000.0;
        took[round] = led_ms;
        if (led_ms > GOAL_FAILOVER_MS)
            over_goal++;
        printf("# round %d: leader %u SIGKILLed, replica %u leads after %.0f ms, both agree "
               "after %.0f ms%s\n",
               round + 1, leader, next, led_ms, agreed_ms,
               led_ms > GOAL_FAILOVER_MS ? " (over the goal)" : "");
        /* the killed replica comes back from its directory and follows */
        uint64_t back_us = dg_now_us();
        child_spawn((int)leader - 1);
        uint64_t end = dg_now_ms() + 3000;
        while (kids[leader - 1].leader_id != next && dg_now_ms() < end)
            children_read(50);
        assert_int_equal(kids[leader - 1].leader_id, next);
        assert_int_equal(children_leader(), next);
        printf("# round %d: replica %u restarted, follows %u after %.0f ms\n", round + 1, leader,
               next, ms_since(back_us));
    }
    qsort(took, (size_t)rounds, sizeof(*took), cmp_double);
    printf("# failover after SIGKILL over %d rounds: min %.0f ms, median %.0f ms, max %.0f ms; "
           "%d over the %d ms goal\n",
           rounds, took[0], took[rounds / 2], took[rounds - 1], over_goal, GOAL_FAILOVER_MS);
    /* the verdict is that every round had a new leader all agreed on and a returning replica
     * that follows it (above); how fast is measured against the goal by bench/failover.sh */

    /* Without a key (these processes), the forged AppendEntries that the keyed cluster refuses
     * (test_forged_peers) moves a follower: it takes the forged sender as its leader. */
    leader = children_wait_leader(0, 3000);
    assert_true(leader != 0);
    unsigned target = leader % N + 1, claimed = target % N + 1;
    if (claimed == leader)
        claimed = claimed % N + 1;
    unsigned char buf[256];
    size_t n = forge_handshake(buf, claimed, pc.peers[claimed - 1]);
    n += forge_append_entries(buf + n, 1000000);
    const char *colon = strrchr(pc.peers[target - 1], ':');
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    uint64_t end = dg_now_ms() + 3000;
    while (kids[target - 1].leader_id != claimed && dg_now_ms() < end)
        children_read(50);
    close(fd);
    printf("# unauthenticated: replica %u took the forged replica %u as its leader: %s\n", target,
           claimed, kids[target - 1].leader_id == claimed ? "yes" : "no");
    assert_int_equal(kids[target - 1].leader_id, claimed);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* libraft followers die silently otherwise */
    dg_log_init("test_election");
    const char *lvl = getenv("ELECTION_LOG");
    int level = DG_LOG_WARN;
    if (lvl)
        dg_log_level_parse(lvl, &level);
    dg_log_set_level(level);
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* The first three share the cluster on `loop`, which the group setup and teardown own
     * (the teardown stops whatever still runs, whichever test failed). */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_leader),
        cmocka_unit_test(test_stop_leader),
        cmocka_unit_test(test_restart_rejoins),
        cmocka_unit_test(test_forged_peers),
        cmocka_unit_test(test_frame_parse),
        cmocka_unit_test(test_close_pending),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_port_in_use),
        cmocka_unit_test(test_single_replica),
        cmocka_unit_test_setup_teardown(test_processes_kill_leader, procs_setup, procs_teardown),
    };
    return cmocka_run_group_tests(tests, local_setup, local_teardown);
}
