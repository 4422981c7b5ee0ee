#include "p.h"
#include "q.h"
struct q_thing; /* a tag declared, no variable: q.c's use of the tag is not a use of p.c */
int p_run(void)
{
    return q_make();
}
