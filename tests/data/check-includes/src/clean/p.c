#include "p.h"
#include "q.h"
int p_run(void) { return q_make(); }
