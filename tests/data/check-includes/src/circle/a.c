#include "a.h"
#include "b.h"
int a_get(void)
{
    return B_SIZE;
}
