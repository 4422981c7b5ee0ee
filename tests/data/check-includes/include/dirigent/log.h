void dg_log(const char *msg);
