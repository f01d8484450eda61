/* A complete echo server on several stacks, built against the installed
 * header only (make examples). Usage: echo_server ADDRESS; runs until killed.
 * With --once it exits after the first connection ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <multiserver.h>

static int once;
static ms_listener_t *listener;

static void on_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}

static void on_closed(ms_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
  if (once && listener) {
    ms_listener_close(listener, NULL, NULL);
    listener = NULL;
  }
}

static void on_shutdown(ms_stream_t *s, int status, void *arg) {
  (void)status;
  (void)arg;
  ms_stream_close(s, on_closed, NULL);
}

static void on_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  (void)arg;
  if (status == 0) {
    uint8_t *copy = malloc(len); /* read bytes live only during this call */
    if (copy == NULL) return;
    memcpy(copy, data, len);
    ms_buf_t b = {copy, len};
    if (ms_stream_write(s, &b, 1, on_written, copy) != 0) free(copy);
  } else if (status == MS_EOF) {
    ms_stream_shutdown(s, on_shutdown, NULL);
  } else {
    fprintf(stderr, "%s: %s\n", ms_stream_address(s), ms_strerror(status));
    ms_stream_close(s, on_closed, NULL);
  }
}

static void on_connection(ms_stream_t *s, void *arg) {
  (void)arg;
  fprintf(stderr, "connection %s\n", ms_stream_address(s));
  ms_stream_read_start(s, on_read, NULL);
}

int main(int argc, char **argv) {
  const char *addr = argc > 1 ? argv[argc - 1] : "net:127.0.0.1:0~shs";
  once = argc > 2 && strcmp(argv[1], "--once") == 0;
  ms_t *ms;
  char why[256] = "";
  int rc = ms_new(&ms, NULL);
  if (rc == 0) rc = ms_listen(ms, addr, on_connection, NULL, &listener, why, sizeof why);
  if (rc != 0) {
    fprintf(stderr, "echo_server: %s\n", why[0] ? why : ms_strerror(rc));
    return 1;
  }
  printf("%s\n", ms_listener_address(listener));
  fflush(stdout);
  ms_run(ms, MS_RUN_DEFAULT);
  return ms_delete(ms) == 0 ? 0 : 1;
}
