#define B_SIZE 4
