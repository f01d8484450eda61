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

/* ---- shared by the subcommands (cli_common.c) ---- */
#include <stdbool.h>
#include <stddef.h>
#include "multiserver.h"

#define CLI_MAX_AUTH 64

typedef struct {
  ms_keypair_t keys;
  bool have_keys;
  uint8_t app_key[MS_APPKEYBYTES];
  bool have_app_key;
  uint8_t allow[CLI_MAX_AUTH][MS_PUBLICKEYBYTES];
  size_t nallow;
  bool allow_remote_noauth;
  bool allow_loopback_noauth;
  unsigned timeout_ms;
  ms_popts_t *popts; /* --opt PROTO.KEY=VALUE, NULL if none */
} cli_opts_t;

/* Handles a shared option at argv[*i] (advancing *i past its value).
 * Returns 1 if consumed, 0 if not a shared option, -1 on error (message
 * printed). `authorize` is accepted only when allow_authorize. */
int cli_common_option(cli_opts_t *o, int argc, char **argv, int *i,
                      bool allow_authorize);
/* Fill ms options from the parsed CLI options (pointers into o). */
void cli_ms_options(cli_opts_t *o, ms_options_t *mo);
/* "multiserver: <fmt>\n" on stderr. */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whole-buffer write to fd, retrying short writes and EINTR. 0 or -1. */
int cli_write_all(int fd, const void *buf, size_t len);

/* stdin pump: a thread reads fd 0 and hands each chunk to the loop, in
 * order; each data chunk stays valid until cli_stdin_done() says it was
 * consumed (a few may be in flight). len 0 means EOF, status < 0 a read
 * error. */
typedef void (*cli_stdin_cb)(const uint8_t *data, size_t len, int status,
                             void *arg);
int cli_stdin_start(ms_t *ms, cli_stdin_cb cb, void *arg);
void cli_stdin_done(void);
/* Detach the pump from the loop (it may stay blocked in read until exit). */
void cli_stdin_stop(void);

/* Bridge a stream to stdin/stdout (cli_bridge.c). done fires once, after the
 * stream is closed: status 0 when stdin reached EOF (write side shut down)
 * and the remote finished; otherwise the error and a reason. */
typedef void (*cli_bridge_done)(int status, const char *reason, void *arg);
int cli_bridge_start(ms_t *ms, ms_stream_t *s, cli_bridge_done done, void *arg);

/* serve --http-root: the static-file handler (cli_http.c); arg is the
 * root directory, already resolved with realpath. */
typedef struct ms_http_request_s ms_http_request_t;
void cli_http_handler(ms_http_request_t *req, void *arg);
