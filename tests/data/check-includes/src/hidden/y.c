#include "shared.h"
#define TRACE(name) /* expands to nothing; a macro call before a definition */
TRACE(y)
void y_run(int n)
{
    if (n > x_count) /* y.c uses x.c's global */
        return;
}
