#include "shared.h"
int x_count;
void x_run(int n)
{
    x_count++;
    if (n > 0)
        y_run(n - 1);
}
