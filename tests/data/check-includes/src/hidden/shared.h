/* declares what x.c and y.c define: the circle between them is behind this one header */
void x_run(int n);
void y_run(int n);
extern int x_count;
