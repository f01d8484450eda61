/* multiserver CLI: subcommands, one file each. */
#ifndef MS_CLI_H
#define MS_CLI_H

/* Each returns the process exit status. argv[0] is the subcommand name. */
int cli_serve(int argc, char **argv);
int cli_connect(int argc, char **argv);
int cli_address(int argc, char **argv);
int cli_keygen(int argc, char **argv);
/* shs1-testsuite stdio contract (spec §6): `shs1-test server K SK PK` and
 * `shs1-test client K PK`. */
int cli_shs1_test(int argc, char **argv);

#endif
