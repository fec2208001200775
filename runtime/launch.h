/* launch.h: `adaspa launch -n N [--all-output] [--grace S] [--] ARGS...` (prefix ada_launch_).
 *
 * Starts N processes of this program with ARGS, one per rank, with the rank / world-size
 * variables and the shared communicator file (comm.h) set; forwards SIGINT and SIGTERM to them;
 * passes rank 0's output through and prefixes the others' standard error with "[rank r] " (their
 * standard output is dropped unless --all-output); collects every exit status; when one rank
 * fails, the others get a grace period to stop on their own (their collectives fail naming the
 * dead rank), then SIGTERM, then SIGKILL. Host code of the CLI: it forks and execs, and never
 * exits the calling process. */
#ifndef ADA_LAUNCH_H
#define ADA_LAUNCH_H

/* argv[first..] are the launcher's options and ARGS; returns the exit status (the first failing
 * rank's, 0 when every rank succeeded, 2 on a usage error). */
int ada_launch_main(int argc, char **argv, int first);

#endif
