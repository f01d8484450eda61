/* Limits under load over real sockets: open connections, pending
 * handshakes (global and per source address), idle streams, the write
 * queue cap; a flood of silent connections while a legitimate client is
 * served; the counters (ms_stats). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "multiserver.h"
#include "multiserver_uv.h"
#include "mstest.h"
#include "util.h"

#define WAIT_MS 10000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
} env_t;

static void env_init(env_t *e, const ms_options_t *so) {
  ms_options_t d;
  tu_opts_default(&d);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, so ? so : &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, &d), 0);
}

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

static int port_of(const char *addr) {
  const char *tilde = strchr(addr, '~');
  const char *end = tilde ? tilde : addr + strlen(addr);
  const char *p = end;
  while (p > addr && p[-1] != ':') p--;
  return atoi(p);
}

/* A raw TCP client that connects from a chosen loopback source and says
 * nothing. */
static int silent_client(const char *src, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  inet_pton(AF_INET, src, &sa.sin_addr);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  sa.sin_port = htons((uint16_t)port);
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Has the server closed this socket (EOF or reset)? */
static bool closed_by_peer(int fd) {
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* ---- max_connections ----------------------------------------------------- */

static void test_max_connections(void) {
  env_t e;
  ms_options_t o;
  tu_opts_default(&o);
  o.max_connections = 2;
  env_init(&e, &o);
  tu_accept_t acc = {0};
  tu_lerr_t le = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_on_accept, &acc);
  if (!l) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  tu_conn_t r[4];
  for (int i = 0; i < 2; i++) {
    CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r[i], NULL), 0);
    WAIT(&e.loop, r[i].done, 1, "client within the limit");
    CHECK_INT(r[i].status, 0);
  }
  WAIT(&e.loop, acc.n, 2, "two accepted");
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r[2], NULL), 0);
  WAIT(&e.loop, r[2].done, 1, "third client refused");
  CHECK(r[2].status != 0);
  WAIT(&e.loop, le.count, 1, "refusal reported");
  CHECK_INT(le.last_status, MS_ELIMIT);
  CHECK_HAS(le.last_reason, "max_connections");
  ms_stats_t st;
  ms_stats(e.srv, &st);
  CHECK_INT(st.connections, 2);
  CHECK_INT(st.refused_connections, 1);
  CHECK_INT(st.accepted, 2);
  /* Load falls: a new client gets in. */
  ms_stream_t *v[2] = {r[0].s, acc.s[0]};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  tu_sleep_loop(&e.loop, 50);
  ms_stats(e.srv, &st);
  CHECK_INT(st.connections, 1);
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r[3], NULL), 0);
  WAIT(&e.loop, r[3].done, 1, "client after load fell");
  CHECK_INT(r[3].status, 0);
  WAIT(&e.loop, acc.n, 3, "accepted again");
  ms_stream_t *w[4] = {r[1].s, r[3].s, acc.s[1], acc.n > 2 ? acc.s[2] : NULL};
  tu_close_streams(&e.loop, w, 4, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ---- a flood of silent connections; a legitimate client still served ----- */

#define FLOOD 1000

static void test_flood(void) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < FLOOD + 200 && rl.rlim_max >= FLOOD + 200) {
    rl.rlim_cur = FLOOD + 200;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  int flood = rl.rlim_cur >= FLOOD + 200 ? FLOOD : (int)rl.rlim_cur / 2 - 100;
  env_t e;
  ms_options_t o;
  tu_opts_default(&o);
  o.handshake_timeout_ms = 500;
  o.max_handshakes_per_source = 100;
  env_init(&e, &o);
  tu_echo_t echo = {0};
  tu_lerr_t le = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_echo_on_connection, &echo);
  if (!l) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  int port = port_of(ms_listener_address(l));
  int *fds = calloc((size_t)flood, sizeof(int));
  int opened = 0;
  uint64_t t0 = tu_now_ms();
  for (int i = 0; i < flood; i++) {
    fds[i] = silent_client("127.0.0.3", port);
    if (fds[i] >= 0) opened++;
    if (i % 50 == 49) uv_run(&e.loop, UV_RUN_NOWAIT); /* let the server accept */
  }
  CHECK_INT(opened, flood);
  /* A legitimate client from another source gets in while the flood waits. */
  int served = 0;
  for (int round = 0; round < 3; round++) {
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "legitimate client during the flood");
    if (r.status == 0) {
      served++;
      ms_stream_close(r.s, NULL, NULL);
    } else {
      fprintf(stderr, "  legitimate client: %s\n", r.reason);
    }
  }
  CHECK_INT(served, 3);
  ms_stats_t st;
  ms_stats(e.srv, &st);
  CHECK(st.handshakes <= 100);
  CHECK(st.refused_per_source >= (uint64_t)(flood - 100 - 50));
  fprintf(stderr, "  flood of %d: %llu refused at once, %llu pending, legitimate clients served %d/3 in %llu ms\n",
          flood, (unsigned long long)st.refused_per_source, (unsigned long long)st.handshakes, served,
          (unsigned long long)(tu_now_ms() - t0));
  /* The pending ones end at the handshake timeout and their fds are freed. */
  tu_sleep_loop(&e.loop, 900);
  ms_stats(e.srv, &st);
  CHECK_INT(st.handshakes, 0);
  int closed = 0;
  for (int i = 0; i < flood; i++)
    if (fds[i] >= 0) {
      closed += closed_by_peer(fds[i]);
      close(fds[i]);
    }
  CHECK_INT(closed, opened);
  free(fds);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ---- idle timeout and the write cap ------------------------------------------ */

typedef struct {
  int status;
  int done;
  uint64_t at;
} rd_t;

static void on_rd(ms_stream_t *s, int status, const uint8_t *d, size_t n, void *arg) {
  (void)s;
  (void)d;
  (void)n;
  rd_t *r = arg;
  if (status == 0) return;
  r->status = status;
  r->at = tu_now_ms();
  r->done++;
}

static void test_idle_and_queue_cap(void) {
  env_t e;
  ms_options_t o;
  tu_opts_default(&o);
  env_init(&e, &o);
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "limits", "idle_timeout_ms", "300"), 0);
  CHECK_INT(ms_popts_set(po, "limits", "max_write_queue", "65536"), 0);
  tu_accept_t acc = {0};
  char why[256] = "";
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0~shs", po, tu_on_accept, &acc, &l, why,
                           sizeof why), 0);
  if (!l) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "client");
  WAIT(&e.loop, acc.n, 1, "accepted");
  ms_stream_t *srv = acc.s[0];
  /* The write cap: a write past 64 KiB queued is refused, nothing queued. */
  static uint8_t big[70000];
  ms_buf_t b = {big, sizeof big};
  CHECK_INT(ms_stream_write(srv, &b, 1, NULL, NULL), MS_ELIMIT);
  CHECK_INT(ms_stream_write_queue_size(srv), 0);
  ms_buf_t small = {big, 1000};
  CHECK_INT(ms_stream_write(srv, &small, 1, NULL, NULL), 0);
  /* Activity keeps it alive; silence ends it with MS_ETIMEDOUT. */
  rd_t rs = {0}, rc = {0};
  CHECK_INT(ms_stream_read_start(srv, on_rd, &rs), 0);
  CHECK_INT(ms_stream_read_start(r.s, on_rd, &rc), 0);
  uint64_t t0 = tu_now_ms();
  for (int i = 0; i < 4; i++) { /* a byte every 150 ms: never idle */
    tu_sleep_loop(&e.loop, 150);
    ms_buf_t one = {"x", 1};
    CHECK_INT(ms_stream_write(r.s, &one, 1, NULL, NULL), 0);
  }
  CHECK_INT(rs.done, 0);
  uint64_t quiet = tu_now_ms();
  WAIT(&e.loop, rs.done, 1, "idle timeout");
  CHECK_INT(rs.status, MS_ETIMEDOUT);
  CHECK(rs.at - quiet >= 250 && rs.at - quiet < 1000);
  CHECK(rs.at - t0 >= 800);
  CHECK_INT(ms_stream_write(srv, &small, 1, NULL, NULL), MS_ETIMEDOUT);
  WAIT(&e.loop, rc.done, 1, "the client hears the end");
  CHECK(rc.status != 0);
  ms_stats_t st;
  ms_stats(e.srv, &st);
  CHECK_INT(st.idle_timeouts, 1);
  ms_stream_t *v[2] = {srv, r.s};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  /* A misspelt limit is refused with the known names. */
  ms_popts_t *bad;
  CHECK_INT(ms_popts_new(&bad), 0);
  CHECK_INT(ms_popts_set(bad, "limits", "max_conections", "1"), 0);
  ms_listener_t *l2 = NULL;
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0", bad, tu_on_accept, &acc, &l2, why, sizeof why),
            MS_EINVAL);
  CHECK_HAS(why, "max_connections");
  ms_popts_free(bad);
  ms_popts_free(po);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ---- a per-stack connection limit beside an unlimited stack ----------------- */

static void test_per_stack(void) {
  env_t e;
  env_init(&e, NULL);
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "limits", "max_connections", "1"), 0);
  tu_accept_t acc = {0}, acc2 = {0};
  char why[256] = "";
  ms_listener_t *l = NULL, *l2 = NULL;
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0", po, tu_on_accept, &acc, &l, why, sizeof why), 0);
  ms_popts_free(po);
  l2 = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc2);
  if (!l || !l2) return;
  tu_conn_t r[4];
  for (int i = 0; i < 2; i++) CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r[i], NULL), 0);
  for (int i = 2; i < 4; i++) CHECK_INT(tu_connect(e.cli, ms_listener_address(l2), &r[i], NULL), 0);
  for (int i = 0; i < 4; i++) WAIT(&e.loop, r[i].done, 1, "connects");
  WAIT(&e.loop, acc2.n, 2, "the other stack takes both");
  tu_sleep_loop(&e.loop, 50);
  CHECK_INT(acc.n, 1);
  ms_stream_t *v[8] = {r[0].s, r[1].s, r[2].s, r[3].s, acc.s[0], acc2.s[0], acc2.s[1], NULL};
  tu_close_streams(&e.loop, v, 8, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  tu_close_listener(&e.loop, l2, WAIT_MS);
  env_done(&e);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"max_connections", test_max_connections},
      {"flood", test_flood},
      {"idle_and_queue", test_idle_and_queue_cap},
      {"per_stack", test_per_stack},
  };
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("load");
}
