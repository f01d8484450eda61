/* multiserver connect ADDRESS: pipe stdin/stdout through the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int exit_code = 1;

static void on_bridge_done(int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    cli_err("connection failed: %s", reason ? reason : ms_strerror(status));
    exit_code = 1;
  } else {
    exit_code = 0;
  }
}

static void on_connect(ms_stream_t *s, int status, const char *reason, void *arg) {
  ms_t *ms = arg;
  if (status != 0) {
    cli_err("cannot connect: %s", reason ? reason : ms_strerror(status));
    exit_code = 1;
    return;
  }
  int rc = cli_bridge_start(ms, s, on_bridge_done, NULL);
  if (rc != 0) {
    cli_err("cannot start: %s", ms_strerror(rc));
    ms_stream_close(s, NULL, NULL);
  }
}

int cli_connect(int argc, char **argv) {
  static cli_opts_t o;
  const char *addr = NULL;
  for (int i = 1; i < argc; i++) {
    int r = cli_common_option(&o, argc, argv, &i, false);
    if (r < 0) return 2;
    if (r > 0) continue;
    if (argv[i][0] == '-' && argv[i][1] == '-') {
      cli_err("connect: unknown option %s", argv[i]);
      return 2;
    }
    if (addr) {
      cli_err("connect: one ADDRESS expected (join alternatives with ';')");
      return 2;
    }
    addr = argv[i];
  }
  if (addr == NULL) {
    cli_err("connect: ADDRESS expected");
    return 2;
  }
  ms_options_t mo;
  cli_ms_options(&o, &mo);
  ms_t *ms;
  int rc = ms_new(&ms, &mo);
  if (rc != 0) {
    cli_err("cannot start: %s", ms_strerror(rc));
    return 1;
  }
  rc = ms_connect_with(ms, addr, o.popts, on_connect, ms, NULL);
  if (rc != 0) {
    cli_err("cannot connect: %s", ms_strerror(rc));
    return 1;
  }
  ms_run(ms, MS_RUN_DEFAULT);
  /* The stdin thread may still sit in read(); exiting ends it. */
  cli_stdin_stop();
  rc = ms_delete(ms);
  if (rc != 0) cli_err("shutdown: %s", ms_strerror(rc));
  ms_keypair_wipe(&o.keys);
  ms_popts_free(o.popts);
  fflush(stdout);
  return exit_code;
}
