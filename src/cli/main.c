/*
 * dirigent: the command-line tool's entry point. Parses the command line against the command
 * table (commands.c), finds the binaries and configs the handlers start or read (next to this
 * binary, and its source tree), and runs the command's handler (one file each).
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    struct cli_ctx c = {.cp = "127.0.0.1:9091", .dp = "127.0.0.1:8080"};
    int rc = cli_parse(argc, argv, &c);
    if (rc < 0) {
        /* where the other binaries and the configs are: next to this one, and its source
         * tree */
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        self[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        c.self_dir = self;
        c.src_dir = getenv("DIRIGENT_SOURCE_DIR") ? getenv("DIRIGENT_SOURCE_DIR") : DG_SOURCE_DIR;
        rc = cli_token_setup(&c);
        if (rc == 0)
            rc = c.cmd->run(&c);
    }
    free(c.args);
    free(c.opts);
    return rc;
}
