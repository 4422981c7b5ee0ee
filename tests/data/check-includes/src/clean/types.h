struct p {
    int q_make;
    int (*p_run)(void);
};
