/* A client built against the installed header only (make examples): dials
 * ADDRESS (any stack: net, unix, ws, onion, …, with shs/noise/gzip on top;
 * ;-alternatives ranked and staggered), sends MESSAGE, shuts its side down
 * and prints what comes back until the server finishes.
 * Usage: client ADDRESS MESSAGE */
#include <stdio.h>
#include <string.h>

#include <multiserver.h>

static const char *message;
static int exit_code = 1;

static void on_closed(ms_stream_t *s, void *arg) {
  (void)s;
  (void)arg;
}

static void on_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  (void)arg;
  if (status == 0) {
    fwrite(data, 1, len, stdout); /* data lives only during this call */
    return;
  }
  if (status == MS_EOF) {
    exit_code = 0;
  } else {
    fprintf(stderr, "client: read: %s\n", ms_strerror(status));
  }
  ms_stream_close(s, on_closed, NULL);
}

static void on_connect(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)arg;
  if (status != 0) {
    fprintf(stderr, "client: %s\n", reason ? reason : ms_strerror(status));
    return;
  }
  fprintf(stderr, "client: connected to %s\n", ms_stream_address(s));
  ms_buf_t b = {message, strlen(message)};
  int rc = ms_stream_write(s, &b, 1, NULL, NULL); /* message is static */
  if (rc == 0) rc = ms_stream_shutdown(s, NULL, NULL);
  if (rc == 0) rc = ms_stream_read_start(s, on_read, NULL);
  if (rc != 0) {
    fprintf(stderr, "client: %s\n", ms_strerror(rc));
    ms_stream_close(s, on_closed, NULL);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: client ADDRESS MESSAGE\n");
    return 2;
  }
  message = argv[2];
  ms_t *ms;
  if (ms_new(&ms, NULL) != 0) return 1;
  int rc = ms_connect(ms, argv[1], on_connect, NULL, NULL);
  if (rc != 0) {
    fprintf(stderr, "client: %s\n", ms_strerror(rc));
    return 1;
  }
  ms_run(ms, MS_RUN_DEFAULT);
  ms_delete(ms);
  fflush(stdout);
  return exit_code;
}
