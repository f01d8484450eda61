/* stdin → stream, stream → stdout, with half-close at stdin EOF. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "multiserver_uv.h"

static struct {
  ms_stream_t *s;
  bool stdin_eof;
  bool shut_done;
  bool remote_eof;
  bool finishing;
  int status;
  char reason[512];
  cli_bridge_done done;
  void *arg;
  /* Keeps the loop alive while we wait for stdin with nothing else active
   * (e.g. after the remote finished writing). */
  uv_timer_t keepalive;
} br;

static void on_keepalive(uv_timer_t *t) { (void)t; }

static void on_closed(ms_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
  uv_close((uv_handle_t *)&br.keepalive, NULL);
  br.done(br.status, br.status ? br.reason : NULL, br.arg);
}

static void finish(int status, const char *reason) {
  if (br.finishing) return;
  br.finishing = true;
  br.status = status;
  if (reason) snprintf(br.reason, sizeof br.reason, "%s", reason);
  ms_stream_close(br.s, on_closed, NULL);
}

static void maybe_done(void) {
  if (br.shut_done && br.remote_eof) finish(0, NULL);
}

static void on_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  (void)s;
  (void)arg;
  if (status == 0) {
    if (cli_write_all(1, data, len) != 0) finish(-1, "cannot write to stdout");
    return;
  }
  if (status == MS_EOF) {
    br.remote_eof = true;
    maybe_done();
    return;
  }
  finish(status, ms_strerror(status));
}

static void on_shutdown(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)arg;
  if (status != 0 && status != MS_ECANCELED) {
    finish(status, ms_strerror(status));
    return;
  }
  br.shut_done = true;
  maybe_done();
}

static void on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)arg;
  if (status != 0 && status != MS_ECANCELED) {
    char why[256];
    snprintf(why, sizeof why, "write failed: %s", ms_strerror(status));
    finish(status, why);
  }
  cli_stdin_done(); /* the pump may read the next chunk */
}

static void on_stdin(const uint8_t *data, size_t len, int status, void *arg) {
  (void)arg;
  if (br.finishing) {
    if (len) cli_stdin_done();
    return;
  }
  if (len > 0) {
    ms_buf_t b = {data, len};
    int rc = ms_stream_write(br.s, &b, 1, on_written, NULL);
    if (rc != 0) {
      finish(rc, ms_strerror(rc));
      cli_stdin_done();
    }
    return;
  }
  if (status < 0) {
    finish(status, "cannot read stdin");
    return;
  }
  br.stdin_eof = true;
  int rc = ms_stream_shutdown(br.s, on_shutdown, NULL);
  if (rc != 0) finish(rc, ms_strerror(rc));
}

int cli_bridge_start(ms_t *ms, ms_stream_t *s, cli_bridge_done done, void *arg) {
  memset(&br, 0, sizeof br);
  br.s = s;
  br.done = done;
  br.arg = arg;
  uv_timer_init(ms_loop(ms), &br.keepalive);
  uv_timer_start(&br.keepalive, on_keepalive, 3600 * 1000, 3600 * 1000);
  int rc = ms_stream_read_start(s, on_read, NULL);
  if (rc == 0) rc = cli_stdin_start(ms, on_stdin, NULL);
  if (rc != 0) uv_close((uv_handle_t *)&br.keepalive, NULL);
  return rc;
}
