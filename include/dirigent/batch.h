/*
 * batch.h: many small calls to one daemon as one HTTP request. The control plane sends
 * thousands of sandbox creates, deletes and drains per second at scale; one request per item
 * cost a write, a wake-up and a parse on both sides each. A batch carries the items made in
 * one loop turn as {"items":[...]}, and the answer streams back one line per item as each
 * finishes (NDJSON: {"i":K,"status":S,"body":"..."}), so a slow item never holds up a fast
 * one's answer.
 *
 * Client: items collect in a dg_batch until dg_batch_flush sends them (or the batch is
 * dropped), as encoded text (no JSON tree per item), split into parts below the receiver's
 * body limit (each part a valid batch of its own, sent in order); every item's callback runs
 * exactly once, with a response made from its line, or
 * with an error when the request failed or ended without its line.
 * Server: a reply sink. dg_batch_reply_start answers a batch request; each item is answered
 * once with dg_batch_reply_item (or _answer, _text), in any order; the response ends after
 * the last. dg_batch_reply_single makes the same sink for a plain request: a batch of one
 * whose item 0 is answered as an ordinary HTTP response (status, Content-Type, body), so a
 * handler that serves both routes holds only (reply, i) and has one answer path. If the
 * client goes away first, the items not answered yet are given to `on_abort` (their work may
 * have to be undone) and the reply is freed: an item given to on_abort must not be answered.
 */
#ifndef DIRIGENT_BATCH_H
#define DIRIGENT_BATCH_H

#include <jansson.h>

#include "dirigent/http.h"

/* ---- client ------------------------------------------------------------------------------ */

typedef void (*dg_batch_cb)(void *ud, const struct dg_http_resp *resp, const struct dg_err *err);

struct dg_batch;

struct dg_batch *dg_batch_new(const char *path);
/* Add an item already encoded (`item`: its JSON text, `len` bytes, copied) whose answer goes
 * to cb(ud, ...). An item that alone is more than a part holds (DG_WIRE_PART_MAX less the
 * envelope) is not sent: its callback gets the error (DG_E_LIMIT, "an item of N bytes is more
 * than a part holds ...") at the next flush (or free), never from inside this call. */
void dg_batch_add_text(struct dg_batch *b, const char *item, size_t len, dg_batch_cb cb, void *ud);
/* Add an item (`item` taken) as JSON: dg_batch_add_text of its text. */
void dg_batch_add(struct dg_batch *b, json_t *item, dg_batch_cb cb, void *ud);
/* Items added and not flushed yet (refused ones included). */
size_t dg_batch_size(const struct dg_batch *b);
/* Requests the next flush sends: the items are split in parts below the receiver's body
 * limit (each part at most DG_WIRE_PART_MAX bytes, or what dg_batch_set_part_max said). */
size_t dg_batch_parts(const struct dg_batch *b);
/* A smaller part bound than DG_WIRE_PART_MAX (tests; a receiver with a lower limit). Call
 * before the first add. */
void dg_batch_set_part_max(struct dg_batch *b, size_t max);
/* Send what was added as one POST per part on `pool`, in order (nothing if empty), and answer
 * the refused items; the batch is empty after. */
void dg_batch_flush(struct dg_batch *b, struct dg_http_pool *pool);
/* Every item added and not sent yet is answered with `err`; then the batch is freed. */
void dg_batch_free(struct dg_batch *b, const struct dg_err *err);

/* ---- server ------------------------------------------------------------------------------ */

struct dg_batch_reply;

/* The items of a batch request's body ({"items":[...]}), borrowed from `*root` (to be
 * json_decref'd by the caller); NULL with `err` set when the body is not that. */
json_t *dg_batch_items(struct dg_http_req *r, json_t **root, struct dg_err *err);
/* Start the streamed answer to `r` for `n` items (n > 0). */
struct dg_batch_reply *dg_batch_reply_start(struct dg_http_req *r, size_t n,
                                            void (*on_abort)(void *item_ud));
/* The sink for a plain (not batched) request `r`: one item, 0, whose answer is `r`'s whole
 * response. Nothing is sent before it is answered. */
struct dg_batch_reply *dg_batch_reply_single(struct dg_http_req *r,
                                             void (*on_abort)(void *item_ud));
/* Number of items of the reply (1 for a single one). */
size_t dg_batch_reply_size(const struct dg_batch_reply *b);
/* What on_abort gets for item i if the client goes away before it is answered. */
void dg_batch_reply_set_ud(struct dg_batch_reply *b, size_t i, void *item_ud);
/* Answer item i (once; later answers of i, and i out of range, are ignored). The reply is
 * freed after the last item: `b` must not be used once every item is answered. `ctype` is
 * the Content-Type of a single reply (NULL: text/plain); a batch line has none. `body` is
 * borrowed. */
void dg_batch_reply_answer(struct dg_batch_reply *b, size_t i, int status, const char *ctype,
                           const char *body, size_t len);
/* dg_batch_reply_answer with text/plain. */
void dg_batch_reply_item(struct dg_batch_reply *b, size_t i, int status, const char *body,
                         size_t len);
/* A formatted text answer (at most 1 KiB). A single reply ends it with a newline, as
 * dg_http_respond_text does; a batch line carries the text as formatted. */
void dg_batch_reply_text(struct dg_batch_reply *b, size_t i, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
