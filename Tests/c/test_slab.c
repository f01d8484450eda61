/* Writing received bytes back by reference (a libuv-style echo) must not
 * corrupt them: reads land in the loop's shared read slab, so the uv stream
 * copies a write that points into it before the next read overwrites it.
 * The client sends 32 MiB of patterned data and pauses its reads for 300 ms
 * now and then, so the echo's writes queue up behind a full socket. Over
 * net and unix, whose reads hand out the slab (shs seals into its own
 * buffers, so it never wrote slab pointers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mstest.h"
#include "util.h"

#define TOTAL (32u << 20)
#define CHUNK (64u * 1024)
#define PAUSE_EVERY (6u << 20)
#define PAUSE_MS 300

typedef struct {
  ms_t *ms;
  uint8_t *src;
  ms_stream_t *cli;
  size_t sent, got, bad_reads, first_bad;
  size_t next_pause;
  int pauses;
  int write_errors;
  int srv_closed, cli_closed, done;
  uv_timer_t resume;
} echo_t;

static void srv_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((echo_t *)arg)->srv_closed++;
}

static void srv_read(ms_stream_t *s, int status, const uint8_t *d, size_t n,
                     void *arg) {
  echo_t *e = arg;
  if (status != 0) {
    ms_stream_close(s, srv_closed, e);
    return;
  }
  ms_buf_t b = {d, n}; /* by reference: the read slab itself */
  if (ms_stream_write(s, &b, 1, NULL, NULL) != 0) e->write_errors++;
}

static void on_conn(ms_stream_t *s, void *arg) {
  ms_stream_read_start(s, srv_read, arg);
}

static void pump(echo_t *e) {
  while (e->sent < TOTAL && ms_stream_writable(e->cli)) {
    ms_buf_t b = {e->src + e->sent, CHUNK};
    if (ms_stream_write(e->cli, &b, 1, NULL, NULL) != 0) e->write_errors++;
    e->sent += CHUNK;
  }
}

static void on_drain(ms_stream_t *s, void *arg) {
  (void)s;
  pump(arg);
}

static void cli_read(ms_stream_t *s, int status, const uint8_t *d, size_t n,
                     void *arg);

static void on_resume(uv_timer_t *t) {
  echo_t *e = t->data;
  ms_stream_read_start(e->cli, cli_read, e);
}

static void cli_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((echo_t *)arg)->cli_closed++;
}

static void cli_read(ms_stream_t *s, int status, const uint8_t *d, size_t n,
                     void *arg) {
  echo_t *e = arg;
  if (status != 0) {
    e->done++;
    ms_stream_close(s, cli_closed, e);
    return;
  }
  if (e->got + n > TOTAL || memcmp(d, e->src + e->got, n) != 0) {
    if (e->bad_reads++ == 0) e->first_bad = e->got;
  }
  e->got += n;
  if (e->got >= TOTAL) {
    e->done++;
    ms_stream_close(s, cli_closed, e);
    return;
  }
  if (e->got >= e->next_pause) {
    e->next_pause += PAUSE_EVERY;
    e->pauses++;
    ms_stream_read_stop(s);
    uv_timer_start(&e->resume, on_resume, PAUSE_MS, 0);
  }
}

static void on_connected(ms_stream_t *s, int status, const char *reason,
                         void *arg) {
  echo_t *e = arg;
  if (status != 0) {
    fprintf(stderr, "connect failed: %s\n", reason);
    e->done++;
    return;
  }
  e->cli = s;
  ms_stream_on_drain(s, on_drain, e);
  ms_stream_read_start(s, cli_read, e);
  pump(e);
}

static void echo_by_reference(const char *listen_addr) {
  echo_t e;
  memset(&e, 0, sizeof e);
  e.src = malloc(TOTAL);
  for (size_t i = 0; i < TOTAL; i++) e.src[i] = (uint8_t)((i * 2654435761u) >> 13);
  e.next_pause = 2u << 20;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&e.ms, &o), 0);
  uv_loop_t *loop = ms_loop(e.ms);
  uv_timer_init(loop, &e.resume);
  e.resume.data = &e;
  ms_listener_t *l = tu_listen_ok(e.ms, listen_addr, on_conn, &e);
  if (l == NULL) return;
  CHECK_INT(ms_connect(e.ms, ms_listener_address(l), on_connected, &e, NULL), 0);
  CHECK(tu_wait(loop, &e.done, 1, 60000, "the echo of 32 MiB"));
  fprintf(stderr, "  %s: echoed %zu of %u bytes, %d pauses, %zu corrupted reads"
          " (first at %zu)\n", listen_addr, e.got, TOTAL, e.pauses,
          e.bad_reads, e.first_bad);
  CHECK_INT(e.got, TOTAL);
  CHECK_INT(e.bad_reads, 0);
  CHECK(e.pauses >= 3);
  CHECK_INT(e.write_errors, 0);
  CHECK(tu_wait(loop, &e.srv_closed, 1, 10000, "the echo side's close"));
  CHECK(tu_wait(loop, &e.cli_closed, 1, 10000, "the client's close"));
  tu_close_listener(loop, l, 5000);
  uv_close((uv_handle_t *)&e.resume, NULL);
  CHECK(tu_drain(loop, 10000));
  CHECK_INT(ms_delete(e.ms), 0);
  free(e.src);
}

static void test_net(void) { echo_by_reference("net:127.0.0.1:0"); }

static void test_unix(void) {
  char *dir = tu_mkdtemp();
  char d[64], addr[128];
  snprintf(d, sizeof d, "%s", dir);
  snprintf(addr, sizeof addr, "unix:%s/echo.sock", d);
  echo_by_reference(addr);
  tu_rmtree(d);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"net", test_net},
      {"unix", test_unix},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("slab");
}
