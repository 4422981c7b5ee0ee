/*
 * batch.c: see batch.h. The server side is a reply sink: a batch streams one NDJSON line per
 * item, a single reply (a batch of one) answers its request with item 0's status and body.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dirigent/batch.h"
#include "dirigent/json.h"
#include "dirigent/wire.h"

/* ---- client ------------------------------------------------------------------------------ */

struct item_cb {
    dg_batch_cb cb;
    void *ud;
    bool done;
};

/* One part: a body under construction ({"items":[ then the items, each already encoded) and
 * its items' callbacks. A batch is one part until the next item would take it over
 * DG_WIRE_PART_MAX (the receiver's body limit less a margin); then it is several, each sent
 * as its own request. */
struct part {
    struct dg_buf body;
    struct item_cb *cbs;
    size_t n, cap;
};

struct dg_batch {
    char *path;
    struct part *parts;
    size_t nparts;
    struct dg_wire_parts split;
    /* items refused (over a part alone): answered with their error at the next flush, from
     * the loop, not from inside the caller's add */
    struct item_cb *refused;
    struct dg_err *why;
    size_t nrefused;
    size_t n; /* items in all parts */
};

/* One batch on the wire. */
struct flight {
    struct item_cb *cbs;
    size_t n;
    int status;       /* from the head; 0 before */
    struct dg_buf in; /* the unparsed rest (200), or the whole body (an error) */
    size_t scanned;   /* bytes of `in` known to hold no newline */
};

struct dg_batch *dg_batch_new(const char *path)
{
    struct dg_batch *b = dg_xcalloc(1, sizeof(*b));
    b->path = dg_xstrdup(path);
    dg_wire_parts_init(&b->split, DG_WIRE_PART_MAX);
    return b;
}

void dg_batch_set_part_max(struct dg_batch *b, size_t max)
{
    dg_wire_parts_init(&b->split, max);
}

static void part_add_cb(struct part *p, dg_batch_cb cb, void *ud)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 16;
        p->cbs = dg_xrealloc(p->cbs, p->cap * sizeof(*p->cbs));
    }
    p->cbs[p->n++] = (struct item_cb){cb, ud, false};
}

void dg_batch_add_text(struct dg_batch *b, const char *item, size_t len, dg_batch_cb cb, void *ud)
{
    struct dg_err err;
    int where = dg_wire_parts_add(&b->split, len, &err);
    if (where < 0) {
        b->refused = dg_xrealloc(b->refused, (b->nrefused + 1) * sizeof(*b->refused));
        b->why = dg_xrealloc(b->why, (b->nrefused + 1) * sizeof(*b->why));
        b->refused[b->nrefused] = (struct item_cb){cb, ud, false};
        b->why[b->nrefused++] = err;
        return;
    }
    if (where == DG_WIRE_PART_NEW) {
        b->parts = dg_xrealloc(b->parts, (b->nparts + 1) * sizeof(*b->parts));
        b->parts[b->nparts++] = (struct part){0};
        dg_wire_batch_open(&b->parts[b->nparts - 1].body);
    }
    struct part *p = &b->parts[b->nparts - 1];
    dg_wire_batch_append(&p->body, p->n, item, len);
    part_add_cb(p, cb, ud);
    b->n++;
}

void dg_batch_add(struct dg_batch *b, json_t *item, dg_batch_cb cb, void *ud)
{
    char *s = dg_json_dumps(item);
    json_decref(item);
    dg_batch_add_text(b, s, strlen(s), cb, ud);
    free(s);
}

size_t dg_batch_size(const struct dg_batch *b)
{
    return b->n + b->nrefused;
}

size_t dg_batch_parts(const struct dg_batch *b)
{
    return b->nparts;
}

static void answer_line(struct flight *f, const char *line, size_t len)
{
    struct dg_wire_batch_line l;
    struct dg_err err;
    if (dg_wire_batch_line_parse(line, len, &l, &err) < 0)
        return; /* not a line of ours: its item ends with "ended without this item" */
    if ((uint64_t)l.i < f->n && !f->cbs[l.i].done) {
        struct item_cb *c = &f->cbs[l.i];
        c->done = true;
        struct dg_http_resp resp = {.status = (int)l.status, .body = l.body};
        c->cb(c->ud, &resp, NULL);
    }
    dg_wire_batch_line_free(&l);
}

static void flight_head(struct dg_http_creq *q, const struct dg_http_resp *resp, void *ud)
{
    struct flight *f = ud;
    f->status = resp->status;
}

static void flight_body(struct dg_http_creq *q, const char *data, size_t len, void *ud)
{
    struct flight *f = ud;
    dg_buf_append(&f->in, data, len);
    if (f->status != 200)
        return; /* an error's text: given to every item at the end */
    /* a long line arriving in many pieces is scanned once, not once per piece */
    size_t start = 0;
    for (size_t k = f->scanned; k < f->in.len; k++)
        if (f->in.data[k] == '\n') {
            answer_line(f, f->in.data + start, k - start);
            start = k + 1;
        }
    if (start) {
        memmove(f->in.data, f->in.data + start, f->in.len - start);
        f->in.len -= start;
    }
    f->scanned = f->in.len;
}

static void flight_done(struct dg_http_creq *q, const struct dg_http_resp *resp,
                        const struct dg_err *err, void *ud)
{
    struct flight *f = ud;
    struct dg_err e = {0};
    struct dg_http_resp whole = {0};
    if (!resp)
        e = *err;
    else if (f->status == 200)
        dg_err_set(&e, DG_E_PROTO, "the batch's answer ended without this item");
    else
        whole = (struct dg_http_resp){.status = f->status,
                                      .body = {f->in.data ? f->in.data : "", f->in.len}};
    for (size_t i = 0; i < f->n; i++) {
        if (f->cbs[i].done)
            continue;
        f->cbs[i].done = true;
        if (whole.status) /* the server refused the batch: each item gets its answer */
            f->cbs[i].cb(f->cbs[i].ud, &whole, NULL);
        else
            f->cbs[i].cb(f->cbs[i].ud, NULL, &e);
    }
    dg_buf_free(&f->in);
    free(f->cbs);
    free(f);
}

/* Answer the refused items with their errors (they were never sent). */
static void answer_refused(struct dg_batch *b)
{
    struct item_cb *r = b->refused;
    struct dg_err *why = b->why;
    size_t n = b->nrefused;
    b->refused = NULL;
    b->why = NULL;
    b->nrefused = 0;
    for (size_t i = 0; i < n; i++)
        r[i].cb(r[i].ud, NULL, &why[i]);
    free(r);
    free(why);
}

void dg_batch_flush(struct dg_batch *b, struct dg_http_pool *pool)
{
    static const struct dg_http_client_cbs cbs = {
        .on_head = flight_head, .on_body = flight_body, .on_done = flight_done};
    static const struct dg_http_header ct[] = {
        {DG_STR("Content-Type"), DG_STR("application/json")}};
    struct part *parts = b->parts;
    size_t nparts = b->nparts;
    b->parts = NULL;
    b->nparts = b->n = 0;
    dg_wire_parts_init(&b->split, b->split.max);
    answer_refused(b);
    for (size_t k = 0; k < nparts; k++) { /* in order: the pool keeps a peer's order */
        struct part *p = &parts[k];
        struct flight *f = dg_xcalloc(1, sizeof(*f));
        f->cbs = p->cbs;
        f->n = p->n;
        dg_wire_batch_close(&p->body);
        dg_http_request(pool, "POST", b->path, ct, 1, p->body.data, p->body.len, &cbs, f);
        dg_buf_free(&p->body);
    }
    free(parts);
}

void dg_batch_free(struct dg_batch *b, const struct dg_err *err)
{
    if (!b)
        return;
    answer_refused(b);
    for (size_t k = 0; k < b->nparts; k++) {
        struct part *p = &b->parts[k];
        for (size_t i = 0; i < p->n; i++)
            p->cbs[i].cb(p->cbs[i].ud, NULL, err);
        free(p->cbs);
        dg_buf_free(&p->body);
    }
    free(b->parts);
    free(b->path);
    free(b);
}

/* ---- server ------------------------------------------------------------------------------ */

struct dg_batch_reply {
    struct dg_http_req *r; /* NULL once the client is gone */
    size_t n, left;
    void **uds;
    bool *answered;
    bool single; /* a plain request: item 0 is the whole response */
    void (*on_abort)(void *item_ud);
};

json_t *dg_batch_items(struct dg_http_req *r, json_t **root, struct dg_err *err)
{
    struct dg_str body = dg_http_req_body(r);
    *root = NULL;
    if (dg_json_parse(body.ptr, body.len, root, err) < 0)
        return NULL;
    return dg_wire_batch_items(*root, err);
}

static void reply_free(struct dg_batch_reply *b)
{
    free(b->uds);
    free(b->answered);
    free(b);
}

static void reply_aborted(struct dg_http_req *r, void *ud)
{
    struct dg_batch_reply *b = ud;
    b->r = NULL;
    for (size_t i = 0; i < b->n; i++)
        if (!b->answered[i]) {
            b->answered[i] = true;
            b->left--;
            if (b->on_abort)
                b->on_abort(b->uds[i]);
        }
    reply_free(b); /* every item is answered now: nothing refers to it */
}

struct dg_batch_reply *dg_batch_reply_start(struct dg_http_req *r, size_t n,
                                            void (*on_abort)(void *item_ud))
{
    struct dg_batch_reply *b = dg_xcalloc(1, sizeof(*b));
    b->r = r;
    b->n = b->left = n;
    b->uds = dg_xcalloc(n, sizeof(*b->uds));
    b->answered = dg_xcalloc(n, sizeof(*b->answered));
    b->on_abort = on_abort;
    dg_http_resp_header(r, "Content-Type", "application/x-ndjson");
    dg_http_resp_hold_head(r); /* the head goes with the first answered line */
    dg_http_resp_start(r, 200, -1);
    dg_http_req_on_abort(r, reply_aborted, b);
    return b;
}

struct dg_batch_reply *dg_batch_reply_single(struct dg_http_req *r, void (*on_abort)(void *item_ud))
{
    struct dg_batch_reply *b = dg_xcalloc(1, sizeof(*b));
    b->r = r;
    b->n = b->left = 1;
    b->single = true;
    b->uds = dg_xcalloc(1, sizeof(*b->uds));
    b->answered = dg_xcalloc(1, sizeof(*b->answered));
    b->on_abort = on_abort;
    dg_http_req_on_abort(r, reply_aborted, b);
    return b;
}

size_t dg_batch_reply_size(const struct dg_batch_reply *b)
{
    return b->n;
}

void dg_batch_reply_set_ud(struct dg_batch_reply *b, size_t i, void *item_ud)
{
    if (i < b->n)
        b->uds[i] = item_ud;
}

void dg_batch_reply_answer(struct dg_batch_reply *b, size_t i, int status, const char *ctype,
                           const char *body, size_t len)
{
    if (i >= b->n || b->answered[i])
        return;
    b->answered[i] = true;
    b->left--;
    if (b->single) {
        dg_http_req_on_abort(b->r, NULL, NULL);
        dg_http_respond(b->r, status, ctype ? ctype : "text/plain", body ? body : "",
                        body ? len : 0);
        reply_free(b);
        return;
    }
    /* a JSON answer travels as it is: no escaping here, no second parse at the client */
    bool raw = ctype && strcmp(ctype, "application/json") == 0 && body && len >= 2 &&
               body[0] == '{' && body[len - 1] == '}' && !memchr(body, '\n', len) &&
               !memchr(body, '\0', len);
    char *s = raw ? dg_wire_batch_line_json(i, status, body, len)
                  : dg_wire_batch_line_dumps(i, status, body, len);
    size_t sl = strlen(s);
    s[sl] = '\n'; /* replaces the NUL: the line's end */
    dg_http_resp_write(b->r, s, sl + 1);
    free(s);
    if (b->left == 0) {
        dg_http_req_on_abort(b->r, NULL, NULL);
        dg_http_resp_end(b->r);
        reply_free(b);
    }
}

void dg_batch_reply_item(struct dg_batch_reply *b, size_t i, int status, const char *body,
                         size_t len)
{
    dg_batch_reply_answer(b, i, status, NULL, body, len);
}

void dg_batch_reply_text(struct dg_batch_reply *b, size_t i, int status, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    /* single: newline-ended, as dg_http_respond_text */
    size_t n = dg_http_text_vfmt(buf, sizeof(buf), b->single, fmt, ap);
    va_end(ap);
    dg_batch_reply_answer(b, i, status, NULL, buf, n);
}
