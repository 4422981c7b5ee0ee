/*
 * election_node.c: one control-plane replica's election and nothing else, for
 * test_election's multi-process case (a process per replica, so the leader can
 * be SIGKILLed). Every leadership change is one line on stdout, written with a
 * single write(2):
 *   <monotonic µs> <self id> <is_leader 0|1> <leader id> <leader address or ->
 * The monotonic clock is the host's, so the parent compares it with its own.
 * SIGTERM or SIGINT stops the election cleanly and exits 0. With $ELECTION_KEY (a key file,
 * lib/auth.h) raft connections are authenticated (raft_auth.h).
 *
 *   election_node ID DIR PEER1,PEER2,... [ELECTION_MS [HEARTBEAT_MS]]
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "dirigent/common.h"
#include "dirigent/log.h"
#include "election.h"

static uv_signal_t sigterm, sigint;
static struct cp_election *election;

static void on_change(void *ud, bool is_leader, unsigned leader_id, const char *leader_address)
{
    unsigned self = *(unsigned *)ud;
    char line[256];
    int n = snprintf(line, sizeof(line), "%llu %u %d %u %s\n", (unsigned long long)dg_now_us(),
                     self, is_leader ? 1 : 0, leader_id, leader_address ? leader_address : "-");
    if (write(STDOUT_FILENO, line, (size_t)n) == -1) {
        /* the test went away: nothing to tell */
    }
}

static void on_stopped(void *ud)
{
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    uv_signal_stop(&sigterm);
    uv_signal_stop(&sigint);
    if (election) {
        struct cp_election *e = election;
        election = NULL;
        cp_election_stop(e, on_stopped, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s ID DIR PEER1,PEER2,... [ELECTION_MS [HEARTBEAT_MS]]\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* libraft writes to peers that may be gone */
    dg_log_init("election_node");
    const char *lvl = getenv("ELECTION_LOG");
    int level = DG_LOG_WARN;
    if (lvl && !dg_log_level_parse(lvl, &level)) {
        fprintf(stderr, "election_node: ELECTION_LOG: unknown level '%s'\n", lvl);
        return 2;
    }
    dg_log_set_level(level);

    unsigned self = (unsigned)strtoul(argv[1], NULL, 10);
    struct dg_strlist peers = {0};
    char *list = dg_xstrdup(argv[3]), *save = NULL;
    for (char *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save))
        dg_strlist_push(&peers, dg_xstrdup(p));
    free(list);
    struct cp_election_opts o = {
        .id = self,
        .peers = (const char *const *)peers.v,
        .npeers = peers.n,
        .dir = argv[2],
        .election_timeout_ms = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 0,
        .heartbeat_timeout_ms = argc > 5 ? (unsigned)strtoul(argv[5], NULL, 10) : 0,
    };

    struct dg_auth_key key;
    const char *key_file = getenv("ELECTION_KEY");
    if (key_file && *key_file) {
        struct dg_err kerr = {0};
        if (dg_auth_key_load(key_file, &key, &kerr) < 0) {
            fprintf(stderr, "election_node: ELECTION_KEY: %s\n", kerr.msg);
            return 2;
        }
        o.auth_key = &key;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_signal_init(&loop, &sigterm);
    uv_signal_init(&loop, &sigint);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    struct dg_err err = {0};
    election = cp_election_start(&loop, &o, on_change, &self, &err);
    dg_strlist_free(&peers);
    if (!election) {
        fprintf(stderr, "election_node: %s\n", err.msg);
        on_stopped(NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    return uv_loop_close(&loop) == 0 ? 0 : 1;
}
