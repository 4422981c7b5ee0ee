/*
 * log.h: one line per event on stderr,
 *   2026-11-28T10:00:00.123Z info cp[1234] autoscaler: fn=hello desired=3
 * The level is checked before anything is formatted, so a disabled trace line
 * costs one comparison.
 */
#ifndef DIRIGENT_LOG_H
#define DIRIGENT_LOG_H

#include "dirigent/common.h"

enum dg_log_level {
    DG_LOG_TRACE = 0,
    DG_LOG_DEBUG = 1,
    DG_LOG_INFO = 2,
    DG_LOG_WARN = 3,
    DG_LOG_ERROR = 4,
    DG_LOG_OFF = 5
};

extern int dg__log_level;

/* "trace".."error", NULL-terminated: the choices of every daemon's logLevel key. */
extern const char *const dg_log_level_choices[];

/* Set the program name shown in every line ("cp", "fn"). The string is borrowed. */
void dg_log_init(const char *prog);
void dg_log_set_level(int level);
/* Parse "trace|debug|info|warn|error|off"; returns false if unknown. */
bool dg_log_level_parse(const char *s, int *level);
void dg__log_write(int level, const char *module, const char *fmt, ...) DG_PRINTF(3, 4);

/* Start-up facts a user needs at every log level (the addresses a daemon listens on, which
 * --port 0 makes ephemeral): written as info lines whatever the level. */
#define dg_log_always(module, ...) dg__log_write(DG_LOG_INFO, (module), __VA_ARGS__)

#define dg_log(level, module, ...)                                                                 \
    do {                                                                                           \
        if ((level) >= dg__log_level)                                                              \
            dg__log_write((level), (module), __VA_ARGS__);                                         \
    } while (0)

#endif
