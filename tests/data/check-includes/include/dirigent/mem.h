void *dg_alloc(unsigned n);
