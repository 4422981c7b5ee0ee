/*
 * log.c: the line format of STYLE.md. One write(2) per line so lines from
 * several threads or processes sharing stderr do not interleave.
 */
#include "dirigent/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int dg__log_level = DG_LOG_INFO;
static const char *log_prog = "dirigent";
static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};
const char *const dg_log_level_choices[] = {"trace", "debug", "info", "warn", "error", NULL};

static int log_pid; /* getpid() is a system call: once per process (and per fork) */

static void log_forked(void)
{
    log_pid = (int)getpid();
}

void dg_log_init(const char *prog)
{
    log_prog = prog;
    log_pid = (int)getpid();
    pthread_atfork(NULL, NULL, log_forked);
}

void dg_log_set_level(int level)
{
    dg__log_level = level;
}

bool dg_log_level_parse(const char *s, int *level)
{
    for (int i = 0; i < (int)DG_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *level = i;
            return true;
        }
    }
    return false;
}

void dg__log_write(int level, const char *module, const char *fmt, ...)
{
    char line[2048];
    uint64_t ms = dg_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n +=
        snprintf(line + n, sizeof(line) - (size_t)n, ".%03uZ %s %s[%d] %s: ", (unsigned)(ms % 1000),
                 level_names[level < 0   ? 0
                             : level > 4 ? 4
                                         : level],
                 log_prog, log_pid ? log_pid : (int)getpid(), module);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
