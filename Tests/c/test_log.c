/* The log hook (multiserver_log.h): a connection refused by a limit and a
 * failed connect produce lines of the right levels and subsystems; levels
 * below the hook's minimum, and everything without a hook, are dropped
 * before any formatting. */
#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "internal.h"
#include "multiserver_log.h"
#include "mstest.h"
#include "util.h"

#define WAIT_MS 10000
#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

typedef struct {
  int n;
  int level[64];
  char subsystem[64][32];
  char message[64][MS_LOG_LINE];
} rec_t;

static void on_log(int level, const char *subsystem, const char *message, void *arg) {
  rec_t *r = arg;
  if (r->n >= 64) return;
  r->level[r->n] = level;
  snprintf(r->subsystem[r->n], sizeof r->subsystem[r->n], "%s", subsystem);
  snprintf(r->message[r->n], sizeof r->message[r->n], "%s", message);
  r->n++;
}

/* Index of the first line with this level and subsystem containing needle,
 * or -1. */
static int find(const rec_t *r, int level, const char *subsystem, const char *needle) {
  for (int i = 0; i < r->n; i++)
    if (r->level[i] == level && strcmp(r->subsystem[i], subsystem) == 0 &&
        strstr(r->message[i], needle))
      return i;
  return -1;
}

static void dump(const char *who, const rec_t *r) {
  for (int i = 0; i < r->n; i++)
    fprintf(stderr, "  %s log %d [%s] %s\n", who, r->level[i], r->subsystem[i], r->message[i]);
}

static void test_refused(void) {
  uv_loop_t loop;
  ms_t *srv, *cli;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(uv_loop_init(&loop), 0);
  CHECK_INT(ms_new_on_loop(&srv, &loop, &o), 0);
  CHECK_INT(ms_new_on_loop(&cli, &loop, &o), 0);
  rec_t sl = {0}, cl = {0};
  CHECK_INT(ms_set_log(srv, on_log, &sl, MS_LOG_DEBUG), 0);
  CHECK_INT(ms_set_log(cli, on_log, &cl, MS_LOG_DEBUG), 0);
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "limits", "max_connections", "1"), 0);
  tu_accept_t acc = {0};
  tu_lerr_t le = {0};
  ms_listener_t *l = NULL;
  char why[256] = "";
  CHECK_INT(ms_listen_with(srv, "net:127.0.0.1:0~shs", po, tu_on_accept, &acc, &l, why,
                           sizeof why), 0);
  ms_popts_free(po);
  if (!l) return;
  ms_listener_on_error(l, tu_on_listen_error, &le);
  tu_conn_t r[2];
  CHECK_INT(tu_connect(cli, ms_listener_address(l), &r[0], NULL), 0);
  WAIT(&loop, r[0].done, 1, "first client");
  CHECK_INT(r[0].status, 0);
  WAIT(&loop, acc.n, 1, "first accepted");
  CHECK_INT(tu_connect(cli, ms_listener_address(l), &r[1], NULL), 0);
  WAIT(&loop, r[1].done, 1, "second client refused");
  CHECK(r[1].status != 0);
  WAIT(&loop, le.count, 1, "refusal reported");
  int i = find(&sl, MS_LOG_WARN, "listen", "max_connections (1) reached");
  CHECK(i >= 0);
  if (i >= 0) CHECK_HAS(sl.message[i], "net:127.0.0.1");
  /* The client: connected once (DEBUG), then the refused connect failed
   * (WARN), its one alternative's failure first (INFO). */
  CHECK(find(&cl, MS_LOG_DEBUG, "connect", "connected: ") >= 0);
  int alt = find(&cl, MS_LOG_INFO, "connect", "alternative 1 (net:127.0.0.1:");
  int fail = find(&cl, MS_LOG_WARN, "connect", "failed: ");
  CHECK(alt >= 0);
  CHECK(fail > alt);
  if (mst_fail) {
    dump("server", &sl);
    dump("client", &cl);
  }
  ms_stream_t *v[2] = {r[0].s, acc.s[0]};
  tu_close_streams(&loop, v, 2, WAIT_MS);
  tu_close_listener(&loop, l, WAIT_MS);
  CHECK(tu_drain(&loop, 10000));
  CHECK_INT(ms_delete(srv), 0);
  CHECK_INT(ms_delete(cli), 0);
  CHECK(tu_drain(&loop, 10000));
  CHECK_INT(uv_loop_close(&loop), 0);
}

static void test_connect_failed(void) {
  uv_loop_t loop;
  ms_t *cli;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(uv_loop_init(&loop), 0);
  CHECK_INT(ms_new_on_loop(&cli, &loop, &o), 0);
  rec_t cl = {0};
  /* INFO: the alternative's line and the outcome, no debug lines. */
  CHECK_INT(ms_set_log(cli, on_log, &cl, MS_LOG_INFO), 0);
  char addr[64];
  int port = tu_closed_port();
  snprintf(addr, sizeof addr, "net:127.0.0.1:%d;net:127.0.0.1:%d", port, port);
  tu_conn_t r;
  CHECK_INT(tu_connect(cli, addr, &r, NULL), 0);
  WAIT(&loop, r.done, 1, "connect to a closed port");
  CHECK_INT(r.status, MS_EALLFAILED);
  CHECK(find(&cl, MS_LOG_INFO, "connect", "alternative 1 (") >= 0);
  CHECK(find(&cl, MS_LOG_INFO, "connect", "alternative 2 (") >= 0);
  int f = find(&cl, MS_LOG_WARN, "connect", "failed: ");
  CHECK(f >= 0);
  if (f >= 0) CHECK_HAS(cl.message[f], r.reason);
  for (int i = 0; i < cl.n; i++) CHECK(cl.level[i] <= MS_LOG_INFO);
  if (mst_fail) dump("client", &cl);
  CHECK(tu_drain(&loop, 10000));
  CHECK_INT(ms_delete(cli), 0);
  CHECK(tu_drain(&loop, 10000));
  CHECK_INT(uv_loop_close(&loop), 0);
}

/* A %s argument that is no string would crash vsnprintf: a line that is
 * dropped must never reach the formatter. */
static const char *const BAD = (const char *)1;

static void test_not_formatted(void) {
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  /* No hook. */
  ms_log(ms, MS_LOG_ERROR, "test", "%s", BAD);
  ms__log(ms, MS_LOG_ERROR, "test", "%s", BAD);
  CHECK(!ms__log_on(ms, MS_LOG_ERROR));
  /* A hook with a minimum: less severe lines are dropped unformatted. */
  rec_t r = {0};
  CHECK_INT(ms_set_log(ms, on_log, &r, MS_LOG_WARN), 0);
  ms_log(ms, MS_LOG_INFO, "test", "%s", BAD);
  ms__log(ms, MS_LOG_DEBUG, "test", "%s", BAD);
  CHECK_INT(r.n, 0);
  ms_log(ms, MS_LOG_WARN, "plugin", "n=%d %s", 7, "x");
  ms__log(ms, MS_LOG_ERROR, "core", "e");
  CHECK_INT(r.n, 2);
  CHECK_INT(r.level[0], MS_LOG_WARN);
  CHECK_STR(r.subsystem[0], "plugin");
  CHECK_STR(r.message[0], "n=7 x");
  CHECK_INT(r.level[1], MS_LOG_ERROR);
  /* Long lines are truncated, NUL-terminated. */
  char big[2 * MS_LOG_LINE];
  memset(big, 'a', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  ms_log(ms, MS_LOG_ERROR, "core", "%s", big);
  CHECK_INT(r.n, 3);
  CHECK_INT(strlen(r.message[2]), MS_LOG_LINE - 1);
  /* Removed: nothing more. */
  CHECK_INT(ms_set_log(ms, NULL, NULL, MS_LOG_DEBUG), 0);
  ms_log(ms, MS_LOG_ERROR, "test", "%s", BAD);
  CHECK_INT(r.n, 3);
  /* Bad arguments. */
  CHECK_INT(ms_set_log(NULL, on_log, &r, MS_LOG_INFO), MS_EINVAL);
  CHECK_INT(ms_set_log(ms, on_log, &r, MS_LOG_DEBUG + 1), MS_EINVAL);
  CHECK_INT(ms_set_log(ms, on_log, &r, -1), MS_EINVAL);
  ms_log(NULL, MS_LOG_ERROR, "test", "%s", BAD);
  CHECK_INT(ms_delete(ms), 0);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"not_formatted", test_not_formatted},
      {"refused", test_refused},
      {"connect_failed", test_connect_failed},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("log");
}
