#include "q.h"
#include "types.h" /* "p.h" in a comment is no include: #include "p.h" */
struct q_thing {
    int n;
};
/* p_run(), q.c's own: not p.c's */
static int p_run(void)
{
    return 1;
}
int q_make(void)
{
    struct p s = {.p_run = 0};
    struct p *t = &s;
    struct q_thing qt = {0};
    const char *text = "p_run() in a string";
    return t->q_make + s.q_make + p_run() + a_get() + qt.n + (text != 0);
}
