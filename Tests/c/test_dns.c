/* Name resolution on the net transport: the connect timeout and
 * ms_connect_cancel are honoured while getaddrinfo runs (the dial finishes
 * at once and the lookup is left to finish on its own), slow lookups of one
 * multiserver never take every libuv threadpool slot, literal IPs need no
 * lookup, and orphaned lookups are freed (ms_delete returns 0 after them).
 *
 * getaddrinfo is interposed: this executable's definition is the one
 * libuv.so calls; the real one is found with dlsym(RTLD_NEXT). Names ending
 * in ".slow.test" sleep 2 s and fail; names ending in ".slowok.test" sleep
 * 1 s and resolve to 127.0.0.1. */
#include <dlfcn.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mstest.h"
#include "util.h"

static atomic_int slow_now, slow_max, slow_calls;

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *,
                      struct addrinfo **);

__attribute__((visibility("default"))) int getaddrinfo(
    const char *node, const char *service, const struct addrinfo *hints,
    struct addrinfo **res) {
  gai_fn real;
  *(void **)&real = dlsym(RTLD_NEXT, "getaddrinfo");
  bool slow = node && ends_with(node, ".slow.test");
  bool slowok = node && ends_with(node, ".slowok.test");
  if (!slow && !slowok) return real(node, service, hints, res);
  atomic_fetch_add(&slow_calls, 1);
  int now = atomic_fetch_add(&slow_now, 1) + 1;
  int max = atomic_load(&slow_max);
  while (now > max && !atomic_compare_exchange_weak(&slow_max, &max, now)) {
  }
  usleep(slow ? 2000000 : 1000000);
  atomic_fetch_sub(&slow_now, 1);
  if (slow) return EAI_NONAME;
  return real("127.0.0.1", service, hints, res);
}

static ms_t *new_ms(uv_loop_t *loop, uint32_t connect_timeout_ms) {
  ms_options_t o;
  tu_opts_default(&o);
  o.connect_timeout_ms = connect_timeout_ms;
  ms_t *ms = NULL;
  CHECK_INT(ms_new_on_loop(&ms, loop, &o), 0);
  return ms;
}

/* Runs the loop until the orphaned lookups are done, then frees ms. */
static void delete_after_orphans(uv_loop_t *loop, ms_t *ms) {
  CHECK(tu_drain(loop, 10000));
  CHECK_INT(atomic_load(&slow_now), 0);
  CHECK_INT(ms_delete(ms), 0);
}

static void done_loop(uv_loop_t *loop) {
  CHECK(tu_drain(loop, 5000));
  CHECK_INT(uv_loop_close(loop), 0);
}

static void test_timeout(void) {
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  ms_t *ms = new_ms(&loop, 300);
  tu_conn_t r;
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(ms, "net:a.slow.test:1", &r, NULL), 0);
  CHECK(tu_wait(&loop, &r.done, 1, 5000, "timeout"));
  uint64_t took = r.at - t0;
  fprintf(stderr, "  timed out after %llu ms: %s (%s)\n",
          (unsigned long long)took, ms_err_name(r.status), r.reason);
  CHECK_INT(r.status, MS_ETIMEDOUT);
  CHECK(took >= 250 && took < 800);
  CHECK_HAS(r.reason, "timed out");
  /* The lookup still runs in the threadpool: it holds the multiserver, and
   * ms_delete waits for it (the dial itself was reported at the timeout). */
  int rc = ms_delete(ms);
  CHECK_INT(rc, 0);
  if (rc != 0) delete_after_orphans(&loop, ms);
  done_loop(&loop);
}

typedef struct {
  uv_timer_t t;
  tu_conn_t *r;
  ms_connect_t *req;
} cancel_timer_t;

static void on_cancel_timer(uv_timer_t *t) {
  cancel_timer_t *c = (cancel_timer_t *)t;
  tu_cancel(c->r, c->req);
  uv_close((uv_handle_t *)t, NULL);
}

static void cancel_at_100(const char *addr, bool orphan_succeeds) {
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  ms_t *ms = new_ms(&loop, 5000);
  tu_conn_t r;
  cancel_timer_t c = {.r = &r};
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(ms, addr, &r, &c.req), 0);
  uv_timer_init(&loop, &c.t);
  uv_timer_start(&c.t, on_cancel_timer, 100, 0);
  CHECK(tu_wait(&loop, &r.done, 1, 5000, "cancel"));
  uint64_t took = r.at - t0;
  fprintf(stderr, "  %s: canceled after %llu ms: %s\n", addr,
          (unsigned long long)took, ms_err_name(r.status));
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(took >= 90 && took < 500);
  CHECK(!r.fired_in_call);
  CHECK(r.s == NULL);
  (void)orphan_succeeds; /* its addrinfo is freed by the orphan (ASan) */
  delete_after_orphans(&loop, ms);
  done_loop(&loop);
}

static void test_cancel(void) {
  cancel_at_100("net:b.slow.test:1", false);
  /* The orphaned lookup succeeds later: its result is freed, not used. */
  cancel_at_100("net:c.slowok.test:1", true);
}

static void test_pool_kept_free(void) {
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  ms_t *ms = new_ms(&loop, 1500);
  ms_t *other = new_ms(&loop, 5000);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(ms, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (l == NULL) return;
  const char *la = ms_listener_address(l);
  const char *port = strrchr(la, ':') + 1;
  char lit[64], named[64];
  snprintf(lit, sizeof lit, "net:127.0.0.1:%s", port);
  snprintf(named, sizeof named, "net:localhost:%s", port);

  atomic_store(&slow_max, 0);
  atomic_store(&slow_calls, 0);
  tu_conn_t slow[6];
  char addr[64];
  uint64_t t0 = tu_now_ms();
  for (int i = 0; i < 6; i++) {
    snprintf(addr, sizeof addr, "net:s%d.slow.test:1", i);
    CHECK_INT(tu_connect(ms, addr, &slow[i], NULL), 0);
  }
  /* A literal IP on the same multiserver: no lookup, so no wait. */
  tu_conn_t rl;
  CHECK_INT(tu_connect(ms, lit, &rl, NULL), 0);
  CHECK(tu_wait(&loop, &rl.done, 1, 5000, "literal connect"));
  CHECK_INT(rl.status, 0);
  fprintf(stderr, "  literal connect after %llu ms\n",
          (unsigned long long)(rl.at - t0));
  CHECK(rl.at - t0 < 500);
  /* A name, looked up by another multiserver of the process: the slow ones
   * left it a threadpool slot. */
  tu_conn_t rn;
  CHECK_INT(tu_connect(other, named, &rn, NULL), 0);
  CHECK(tu_wait(&loop, &rn.done, 1, 5000, "localhost connect"));
  CHECK_INT(rn.status, 0);
  fprintf(stderr, "  localhost connect after %llu ms (%s)\n",
          (unsigned long long)(rn.at - t0), rn.reason);
  CHECK(rn.at - t0 < 1000);
  if (rl.s) ms_stream_close(rl.s, NULL, NULL);
  if (rn.s) ms_stream_close(rn.s, NULL, NULL);

  for (int i = 0; i < 6; i++) {
    CHECK(tu_wait(&loop, &slow[i].done, 1, 10000, "slow connect"));
    CHECK(slow[i].status == MS_ETIMEDOUT || slow[i].status == UV_EAI_NONAME);
    CHECK(slow[i].at - t0 < 2500);
  }
  fprintf(stderr, "  slow lookups: %d started, at most %d at once\n",
          atomic_load(&slow_calls), atomic_load(&slow_max));
  CHECK(atomic_load(&slow_max) <= 2);
  tu_close_streams(&loop, acc.s, acc.n, 5000);
  tu_close_listener(&loop, l, 5000);
  delete_after_orphans(&loop, ms);
  CHECK_INT(ms_delete(other), 0);
  done_loop(&loop);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"timeout", test_timeout},
      {"cancel", test_cancel},
      {"pool_kept_free", test_pool_kept_free},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("dns");
}
