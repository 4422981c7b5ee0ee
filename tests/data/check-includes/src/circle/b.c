#include "b.h"
#include "a.h"
static int b_twice(void)
{
    return 2 * a_get();
}
