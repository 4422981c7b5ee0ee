/*
 * trace.h: CSV trace files written off the event loop (the original's
 * cold_start_trace.csv and proxy_trace.csv). Rows go into a memory buffer;
 * once a second (or past 64 KiB) the buffer is appended to the file through
 * libuv's thread pool, one write at a time, so no disk write ever blocks the
 * loop. Rows are lost only if the process dies within that second.
 */
#ifndef DIRIGENT_TRACE_H
#define DIRIGENT_TRACE_H

#include <uv.h>

#include "dirigent/common.h"

struct dg_trace;

/* Open (create, append) DIR/NAME, creating DIR; write `header` (a line without newline) if
 * the file is new. NULL with `err` set when the file cannot be opened. */
struct dg_trace *dg_trace_open(uv_loop_t *loop, const char *dir, const char *name,
                               const char *header, struct dg_err *err);
/* Append one row (printf-style, the newline is added). */
void dg_trace_row(struct dg_trace *t, const char *fmt, ...) DG_PRINTF(2, 3);
/* Flush what is buffered, close the file, free `t` when the last write is done. */
void dg_trace_close(struct dg_trace *t);

#endif
