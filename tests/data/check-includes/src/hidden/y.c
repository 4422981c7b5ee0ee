#include "shared.h"
void y_run(int n)
{
    if (n > x_count) /* y.c uses x.c's global */
        return;
}
