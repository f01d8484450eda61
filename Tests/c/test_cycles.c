/* Many connect/handshake/close cycles against one server (net~shs): the
 * process's open fds (/proc/self/fd) and RSS must not grow once warmed up.
 * MS_CYCLES sets the count (default 10000; make soak runs 100000). The
 * RSS bound is skipped under ASan (its quarantine holds freed memory) and
 * when MS_CYCLES_NO_RSS is set (valgrind). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "multiserver.h"
#include "multiserver_uv.h"
#include "mstest.h"
#include "util.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define INFLIGHT 16

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own fd */
}

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  fclose(f);
  return kb;
}

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
  const char *addr;
  long target, started, connected, failed, accepted, server_ended, closed;
  int done; /* for tu_wait: all cycles finished */
  char last_reason[512];
} run_t;

static void start_one(run_t *r);

static void srv_closed(ms_stream_t *s, void *arg) {
  (void)s;
  run_t *r = arg;
  r->server_ended++;
}

static void srv_read(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)d;
  (void)n;
  if (status != 0) ms_stream_close(s, srv_closed, arg);
}

static void on_accept(ms_stream_t *s, void *arg) {
  run_t *r = arg;
  r->accepted++;
  if (ms_stream_read_start(s, srv_read, r) != 0) ms_stream_close(s, srv_closed, r);
}

static void cli_closed(ms_stream_t *s, void *arg) {
  (void)s;
  run_t *r = arg;
  r->closed++;
  if (r->closed + r->failed == r->target) r->done = 1;
  start_one(r);
}

static void on_conn(ms_stream_t *s, int status, const char *reason, void *arg) {
  run_t *r = arg;
  if (status != 0) {
    r->failed++;
    snprintf(r->last_reason, sizeof r->last_reason, "%s", reason);
    if (r->closed + r->failed == r->target) r->done = 1;
    start_one(r);
    return;
  }
  r->connected++;
  ms_stream_close(s, cli_closed, r);
}

static void start_one(run_t *r) {
  if (r->started >= r->target) return;
  r->started++;
  if (ms_connect(r->cli, r->addr, on_conn, r, NULL) != 0) {
    r->failed++;
    if (r->closed + r->failed == r->target) r->done = 1;
  }
}

/* Run n cycles, INFLIGHT at a time; wait until the server side has closed
 * all of them too. */
static void cycles(run_t *r, long n) {
  long base_srv = r->server_ended;
  r->target = n;
  r->started = r->connected = r->failed = r->closed = 0;
  r->done = 0;
  for (int i = 0; i < INFLIGHT; i++) start_one(r);
  CHECK(tu_wait(&r->loop, &r->done, 1, (unsigned)(60000 + n * 20), "cycles"));
  CHECK_INT(r->failed, 0);
  if (r->failed) fprintf(stderr, "  %ld failed, last: %s\n", r->failed, r->last_reason);
  uint64_t t0 = tu_now_ms();
  while (r->server_ended - base_srv < r->connected && tu_now_ms() - t0 < 10000)
    tu_sleep_loop(&r->loop, 10);
  CHECK_INT(r->server_ended - base_srv, r->connected);
  tu_sleep_loop(&r->loop, 20); /* closing handles finish */
}

static void test_cycles(void) {
  long n = 10000;
  const char *env = getenv("MS_CYCLES");
  if (env && atol(env) > 0) n = atol(env);
  bool check_rss = !UNDER_ASAN && getenv("MS_CYCLES_NO_RSS") == NULL;
  run_t r;
  memset(&r, 0, sizeof r);
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(uv_loop_init(&r.loop), 0);
  CHECK_INT(ms_new_on_loop(&r.srv, &r.loop, &o), 0);
  CHECK_INT(ms_new_on_loop(&r.cli, &r.loop, &o), 0);
  ms_listener_t *l = tu_listen_ok(r.srv, "net:127.0.0.1:0~shs", on_accept, &r);
  if (!l) return;
  r.addr = ms_listener_address(l);
  long warm = n / 10 < 1000 ? n / 10 : 1000;
  if (warm < 1) warm = 1;
  uint64_t t0 = tu_now_ms();
  cycles(&r, warm);
  int fd0 = count_fds();
  long rss0 = rss_kib();
  long left = n - warm, step = left / 4 > 0 ? left / 4 : left;
  long done = warm;
  while (left > 0) {
    long k = left < step ? left : step;
    cycles(&r, k);
    left -= k;
    done += k;
    fprintf(stderr, "  %ld cycles: %d fds (%d after warm-up), RSS %ld KiB (%ld after warm-up), %llu ms\n",
            done, count_fds(), fd0, rss_kib(), rss0, (unsigned long long)(tu_now_ms() - t0));
  }
  int fd1 = count_fds();
  long rss1 = rss_kib();
  CHECK_INT(fd1, fd0);
  /* Slack for allocator fragmentation: 2 MiB, whatever the count. */
  if (check_rss) {
    CHECK(rss1 - rss0 <= 2048);
    if (rss1 - rss0 > 2048) fprintf(stderr, "  RSS grew by %ld KiB\n", rss1 - rss0);
  }
  ms_stats_t st;
  ms_stats(r.srv, &st);
  CHECK_INT(st.connections, 0);
  CHECK_INT(st.handshakes, 0);
  CHECK_INT(st.accepted, n);
  CHECK_INT(st.handshake_failures, 0);
  fprintf(stderr, "  %ld connect/handshake/close cycles in %llu ms\n", n,
          (unsigned long long)(tu_now_ms() - t0));
  tu_close_listener(&r.loop, l, 10000);
  CHECK(tu_drain(&r.loop, 10000));
  CHECK_INT(ms_delete(r.srv), 0);
  CHECK_INT(ms_delete(r.cli), 0);
  CHECK(tu_drain(&r.loop, 10000));
  CHECK_INT(uv_loop_close(&r.loop), 0);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {{"cycles", test_cycles}};
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("cycles");
}
