/*
 * exec.h: helper commands (skopeo, umoci, crun) run off the event loop (exec.c), and the
 * reaping of the orphans a child subreaper inherits.
 */
#ifndef DIRIGENT_WORKER_EXEC_H
#define DIRIGENT_WORKER_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "dirigent/common.h"

enum wk_exec_capture { WK_EXEC_STDERR, WK_EXEC_STDOUT, WK_EXEC_NONE };
/* `output` is what the command printed on the captured stream (up to 4 KiB, trailing
 * newlines cut). The other streams go to the worker's stderr. */
typedef void (*wk_exec_cb)(void *ud, int64_t status, int term_signal, const char *output);
int wk_exec(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture, wk_exec_cb cb,
            void *ud, struct dg_err *err);
/* The same, in its own process group (a session: what it starts goes with it), and the
 * handle to kill it by: valid until `cb` runs. NULL (err set) when it cannot start. */
struct wk_exec;
struct wk_exec *wk_exec_group(uv_loop_t *loop, char *const argv[], enum wk_exec_capture capture,
                              wk_exec_cb cb, void *ud, struct dg_err *err);
/* SIGKILL to the process group of a wk_exec_group command still running; `cb` follows. */
void wk_exec_kill(struct wk_exec *x);
/* The reason in a Go tool's log line (msg="..."), or `out` itself. */
const char *wk_tool_message(const char *out);
/* Reap exited children nobody waits for (as a child subreaper the worker inherits crun's
 * middle processes); `keep(pid)` spares pids someone else reaps. Returns how many. */
unsigned wk_reap_orphans(bool (*keep)(pid_t pid, void *ud), void *ud);
/* Helper commands started from now on run `nice` steps below the worker (0: at its
 * priority): sandbox work yields the CPU to the worker's loop. */
void wk_exec_set_nice(int nice);
/* Run argv to completion (blocking: start-up only); its stdout into out (NUL-terminated). */
int wk_run_sync(char *const argv[], char *out, size_t outlen);

#endif
