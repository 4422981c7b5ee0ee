int p_run(void);
