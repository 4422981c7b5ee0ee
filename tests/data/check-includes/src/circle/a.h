int a_get(void);
