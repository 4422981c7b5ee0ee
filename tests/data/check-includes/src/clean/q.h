#include <stdio.h>
#include "../circle/a.h"
int q_make(void);
