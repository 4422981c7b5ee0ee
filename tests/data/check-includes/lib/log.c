#include "dirigent/log.h"
#include "dirigent/mem.h"
void dg_log(const char *msg)
{
    dg_alloc(1);
}
