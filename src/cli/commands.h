/*
 * commands.h: the CLI's command table, as main.c uses it: parse the command line into a
 * handler's context, answering help and usage errors on the way.
 */
#ifndef DIRIGENT_CLI_COMMANDS_H
#define DIRIGENT_CLI_COMMANDS_H

#include "cli.h"

/* Parses argv (borrowed; `c` points into it) against the table into `c`, whose `cp`/`dp`
 * hold the defaults on entry. Returns -1 when c->cmd's handler should run (arguments and
 * required options checked); else the exit status, having printed what was asked (usage for
 * --help, -h or no command: 0, CLI_USAGE) or the usage error. c->args and c->opts are
 * allocated in every case: the caller frees both. */
int cli_parse(int argc, char **argv, struct cli_ctx *c);

#endif
