/* SIGPIPE: a peer that resets while the server writes must not kill the
 * process. ms_new ignores SIGPIPE when it is at SIG_DFL (unless
 * keep_sigpipe), so a write to the dead socket fails with UV_EPIPE or
 * UV_ECONNRESET instead. The peer is a raw socket closed with SO_LINGER 0
 * (an RST). If the library did not ignore SIGPIPE, this binary would die
 * with signal 13 (exit 141) inside the "reset" test. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mstest.h"
#include "util.h"

#define CHUNK (256u * 1024)
#define TOTAL (64u << 20) /* the writer stops here if nothing fails first */

typedef struct {
  ms_stream_t *s;
  uint8_t *buf;
  size_t written;
  int accepted;
  int failed;      /* write callbacks with an error */
  int first_error;
  int after_error; /* status of one more write after the first failure */
  int closed;
} writer_t;

static void writer_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((writer_t *)arg)->closed++;
}

static void write_more(writer_t *w);

static void on_written(ms_stream_t *s, int status, void *arg) {
  writer_t *w = arg;
  if (status != 0) {
    if (w->failed++ == 0) {
      w->first_error = status;
      /* One more write to the dead socket: write() now raises SIGPIPE
       * (EPIPE) in the kernel. */
      ms_buf_t b = {w->buf, CHUNK};
      int rc = ms_stream_write(s, &b, 1, on_written, w);
      if (rc != 0) w->after_error = rc;
    } else if (w->after_error == 0) {
      w->after_error = status;
    }
    if (w->failed == 2 || w->after_error != 0)
      ms_stream_close(s, writer_closed, w);
    return;
  }
  w->written += CHUNK;
  write_more(w);
}

static void write_more(writer_t *w) {
  if (w->written >= TOTAL) {
    ms_stream_close(w->s, writer_closed, w);
    return;
  }
  ms_buf_t b = {w->buf, CHUNK};
  CHECK_INT(ms_stream_write(w->s, &b, 1, on_written, w), 0);
}

static void on_conn(ms_stream_t *s, void *arg) {
  writer_t *w = arg;
  w->accepted++;
  w->s = s;
  write_more(w);
}

static int listener_port(ms_listener_t *l) {
  const char *a = ms_listener_address(l);
  const char *colon = strrchr(a, ':');
  return colon ? atoi(colon + 1) : 0;
}

static void sigpipe_disposition(struct sigaction *sa) {
  sigaction(SIGPIPE, NULL, sa);
}

static void test_reset(void) {
  signal(SIGPIPE, SIG_DFL);
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  struct sigaction sa;
  sigpipe_disposition(&sa);
  CHECK(sa.sa_handler == SIG_IGN);

  writer_t w;
  memset(&w, 0, sizeof w);
  w.buf = calloc(1, CHUNK);
  ms_listener_t *l = tu_listen_ok(ms, "net:127.0.0.1:0", on_conn, &w);
  if (l == NULL) return;
  uv_loop_t *loop = ms_loop(ms);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in in;
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_port = htons((uint16_t)listener_port(l));
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK_INT(connect(fd, (struct sockaddr *)&in, sizeof in), 0);
  CHECK(tu_wait(loop, &w.accepted, 1, 5000, "accept"));
  /* Let the server fill the socket buffers, read a little, then reset. */
  tu_sleep_loop(loop, 100);
  char tmp[65536];
  CHECK(recv(fd, tmp, sizeof tmp, MSG_DONTWAIT) > 0);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  CHECK_INT(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
  close(fd);

  CHECK(tu_wait(loop, &w.closed, 1, 10000, "the writer's failure and close"));
  CHECK(w.written < TOTAL);
  CHECK(w.failed >= 1);
  CHECK(w.first_error == UV_EPIPE || w.first_error == UV_ECONNRESET);
  CHECK(w.after_error == UV_EPIPE || w.after_error == UV_ECONNRESET ||
        w.after_error == MS_ECANCELED);
  fprintf(stderr, "  wrote %zu bytes, then %s, then %s\n", w.written,
          ms_err_name(w.first_error), ms_err_name(w.after_error));

  int lc = 0;
  ms_listener_close(l, tu_on_listener_closed, &lc);
  CHECK(tu_wait(loop, &lc, 1, 5000, "listener close"));
  CHECK_INT(ms_delete(ms), 0);
  free(w.buf);
}

/* keep_sigpipe leaves SIG_DFL alone; a disposition the application chose is
 * never changed. */
static void on_sigpipe(int sig) { (void)sig; }

static void test_dispositions(void) {
  struct sigaction sa;
  ms_t *ms;
  ms_options_t o;

  signal(SIGPIPE, SIG_DFL);
  ms_options_init(&o);
  o.keep_sigpipe = true;
  CHECK_INT(ms_new(&ms, &o), 0);
  sigpipe_disposition(&sa);
  CHECK(sa.sa_handler == SIG_DFL);
  CHECK_INT(ms_delete(ms), 0);

  signal(SIGPIPE, on_sigpipe);
  CHECK_INT(ms_new(&ms, NULL), 0);
  sigpipe_disposition(&sa);
  CHECK(sa.sa_handler == on_sigpipe);
  CHECK_INT(ms_delete(ms), 0);

  /* ms_new_on_loop does the same as ms_new. */
  signal(SIGPIPE, SIG_DFL);
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  CHECK_INT(ms_new_on_loop(&ms, &loop, NULL), 0);
  sigpipe_disposition(&sa);
  CHECK(sa.sa_handler == SIG_IGN);
  CHECK_INT(ms_delete(ms), 0);
  CHECK(tu_drain(&loop, 5000));
  CHECK_INT(uv_loop_close(&loop), 0);
  signal(SIGPIPE, SIG_DFL);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"reset", test_reset},
      {"dispositions", test_dispositions},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("sigpipe");
}
