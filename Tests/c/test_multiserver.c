/* multiserver over real sockets: listen on many stacks at once, connect with
 * fallback, bulk echo with backpressure over every transport, half-close,
 * shs failures and authorize, timeouts, cancel, unix socket files, and that
 * every handle is released (ms_delete returns 0). Every wait is bounded. */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <signal.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "multiserver_plugin.h"
#include "mstest.h"
#include "util.h"

#define WAIT_MS 20000

#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

/* ---- environment: a server and a client multiserver on one loop -------- */

typedef struct {
  uv_loop_t loop;
  ms_t *srv, *cli;
} env_t;

static void env_init(env_t *e, const ms_options_t *so, const ms_options_t *co) {
  ms_options_t d;
  tu_opts_default(&d);
  memset(e, 0, sizeof *e);
  CHECK_INT(uv_loop_init(&e->loop), 0);
  CHECK_INT(ms_new_on_loop(&e->srv, &e->loop, so ? so : &d), 0);
  CHECK_INT(ms_new_on_loop(&e->cli, &e->loop, co ? co : &d), 0);
}

/* Everything the test opened is closed: the loop must run dry and both
 * multiservers must be free of live handles. */
static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

/* Connect to addr, whose listener records into acc, and expect success
 * (and, unless want_address is NULL, that the client stream reports
 * want_address); then close both ends. */
static void expect_ok(env_t *e, const char *addr, tu_accept_t *acc,
                      const char *want_address, const char *what) {
  tu_conn_t r;
  int n = acc->n;
  CHECK_INT(tu_connect(e->cli, addr, &r, NULL), 0);
  WAIT(&e->loop, r.done, 1, what);
  CHECK_INT(r.status, 0);
  if (r.status) fprintf(stderr, "  %s: %s\n", what, r.reason);
  if (want_address && r.s) CHECK_STR(ms_stream_address(r.s), want_address);
  WAIT(&e->loop, acc->n, n + 1, what);
  ms_stream_t *v[2] = {r.s, acc->n > n ? acc->s[n] : NULL};
  tu_close_streams(&e->loop, v, 2, WAIT_MS);
}

/* ======================================================================== */
/* 1. one listener, three stacks                                            */
/* ======================================================================== */

static void test_three_stacks(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  char dir[64];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  char want_unix[128], la[256], reason[256] = "";
  snprintf(want_unix, sizeof want_unix, "unix:%s/a.sock", dir);
  snprintf(la, sizeof la, "net:127.0.0.1:0;%s;net:127.0.0.1:0~shs", want_unix);
  tu_accept_t acc = {0};
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen(e.srv, la, tu_on_accept, &acc, &l, reason, sizeof reason), 0);
  if (l == NULL) {
    fprintf(stderr, "listen failed: %s\n", reason);
    return;
  }
  char **alts;
  size_t n = tu_split(ms_listener_address(l), &alts);
  CHECK_INT(n, 3);
  if (n != 3) return;
  CHECK(strncmp(alts[0], "net:127.0.0.1:", 14) == 0 && atoi(alts[0] + 14) > 0);
  CHECK_STR(alts[1], want_unix);
  char want_shs[256];
  snprintf(want_shs, sizeof want_shs, "~shs:%s", tu_b64(ms_keys(e.srv)->public_key));
  CHECK(strncmp(alts[2], "net:127.0.0.1:", 14) == 0 && atoi(alts[2] + 14) > 0 &&
        atoi(alts[2] + 14) != atoi(alts[0] + 14));
  CHECK_HAS(alts[2], want_shs);
  /* The listener keeps the multiserver alive. */
  CHECK_INT(ms_delete(e.srv), MS_EEXIST);

  for (size_t i = 0; i < n; i++) {
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, alts[i], &r, NULL), 0);
    CHECK(!r.fired_in_call);
    WAIT(&e.loop, r.done, 1, "connect");
    WAIT(&e.loop, acc.n, (int)i + 1, "accept");
    CHECK_INT(r.status, 0);
    if (r.status != 0) fprintf(stderr, "connect %s: %s\n", alts[i], r.reason);
    if (r.s == NULL || acc.n != (int)i + 1) continue;
    ms_stream_t *c = r.s, *s = acc.s[i];
    CHECK(!ms_stream_is_server(c));
    CHECK(ms_stream_is_server(s));
    CHECK(ms_stream_stack(c) == NULL);
    CHECK_STR(ms_stream_stack(s), alts[i]);
    CHECK_STR(ms_stream_address(c), alts[i]);
    if (i == 0) {
      CHECK(strncmp(ms_stream_address(s), "net:127.0.0.1:", 14) == 0);
      CHECK(strcmp(ms_stream_address(s), alts[0]) != 0); /* the client's port */
    } else if (i == 1) {
      CHECK_STR(ms_stream_address(s), want_unix);
    }
    if (i < 2) {
      CHECK(ms_stream_remote_key(c) == NULL);
      CHECK(ms_stream_remote_key(s) == NULL);
    } else {
      char want_cli[256];
      snprintf(want_cli, sizeof want_cli, "~shs:%s", tu_b64(ms_keys(e.cli)->public_key));
      CHECK(strncmp(ms_stream_address(s), "net:127.0.0.1:", 14) == 0);
      CHECK_HAS(ms_stream_address(s), want_cli);
      CHECK(ms_stream_remote_key(c) &&
            memcmp(ms_stream_remote_key(c), ms_keys(e.srv)->public_key, 32) == 0);
      CHECK(ms_stream_remote_key(s) &&
            memcmp(ms_stream_remote_key(s), ms_keys(e.cli)->public_key, 32) == 0);
      CHECK(ms_stream_auth(s) == NULL);
    }
    ms_stream_t *both[2] = {c, s};
    tu_close_streams(&e.loop, both, 2, WAIT_MS);
  }
  tu_split_free(alts, n);
  tu_close_listener(&e.loop, l, WAIT_MS);
  char path[128];
  snprintf(path, sizeof path, "%s/a.sock", dir);
  CHECK(access(path, F_OK) != 0); /* removed on close */
  env_done(&e);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* 2. 200 concurrent echo connections                                       */
/* ======================================================================== */

#define NCONC 200

typedef struct {
  int id;
  ms_stream_t *s;
  uint8_t data[3000];
  size_t len;
  uint8_t got[3100];
  size_t glen;
  int status;
  bool eof;
  bool bad;
  int *done, *ok;
} conc_t;

static void cc_closed(ms_stream_t *s, void *arg) {
  (void)s;
  conc_t *c = arg;
  (*c->done)++;
}

static void cc_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  conc_t *c = arg;
  if (status == 0) {
    if (c->glen + len > sizeof c->got) {
      c->bad = true;
    } else {
      memcpy(c->got + c->glen, data, len);
      c->glen += len;
    }
    return;
  }
  if (status == MS_EOF) {
    c->eof = true;
    if (!c->bad && c->glen == c->len && memcmp(c->got, c->data, c->len) == 0)
      (*c->ok)++;
  } else {
    c->status = status;
  }
  ms_stream_close(s, cc_closed, c);
}

static void cc_connected(ms_stream_t *s, int status, const char *reason,
                         void *arg) {
  conc_t *c = arg;
  (void)reason;
  c->status = status;
  if (status != 0) {
    (*c->done)++;
    return;
  }
  c->s = s;
  ms_buf_t b = {c->data, c->len};
  int rc = ms_stream_write(s, &b, 1, NULL, NULL);
  if (rc == 0) rc = ms_stream_shutdown(s, NULL, NULL);
  if (rc == 0) rc = ms_stream_read_start(s, cc_read, c);
  if (rc != 0) {
    c->status = rc;
    ms_stream_close(s, cc_closed, c);
  }
}

static void test_concurrent(void) {
  /* One multiserver on its own loop (ms_new) serving and dialing itself. */
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  uv_loop_t *loop = ms_loop(ms);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(ms, "net:127.0.0.1:0", tu_echo_on_connection, &echo);
  if (l == NULL) return;
  static conc_t cc[NCONC];
  int done = 0, ok = 0, failed_start = 0;
  memset(cc, 0, sizeof cc);
  for (int i = 0; i < NCONC; i++) {
    cc[i].id = i;
    cc[i].len = 1000 + (size_t)i * 9;
    for (size_t k = 0; k < cc[i].len; k++)
      cc[i].data[k] = (uint8_t)(i * 131 + k * 7 + (k >> 8));
    memcpy(cc[i].data, &i, sizeof i); /* every connection's data differs */
    cc[i].done = &done;
    cc[i].ok = &ok;
    if (ms_connect(ms, ms_listener_address(l), cc_connected, &cc[i], NULL) != 0)
      failed_start++;
  }
  CHECK_INT(failed_start, 0);
  CHECK(tu_wait(loop, &done, NCONC, 30000, "200 echo clients"));
  CHECK_INT(ok, NCONC);
  int bad_status = 0;
  for (int i = 0; i < NCONC; i++)
    if (cc[i].status != 0) {
      if (!bad_status)
        fprintf(stderr, "client %d: %s\n", i, ms_err_name(cc[i].status));
      bad_status++;
    }
  CHECK_INT(bad_status, 0);
  CHECK(tu_wait(loop, &echo.closed, NCONC, 10000, "server side closes"));
  CHECK_INT(echo.accepted, NCONC);
  CHECK_INT(echo.eof, NCONC);
  CHECK_INT(echo.errors, 0);
  int lclosed = 0;
  ms_listener_close(l, tu_on_listener_closed, &lclosed);
  CHECK(tu_wait(loop, &lclosed, 1, 10000, "listener close"));
  CHECK(tu_drain(loop, 10000));
  CHECK_INT(ms_delete(ms), 0);
}

/* ======================================================================== */
/* 3. 16 MiB echo with backpressure over every transport                    */
/* ======================================================================== */

#define BULK (16u * 1024 * 1024)

static uint8_t *bulk_data;

static void bulk_over(const char *listen_addr) {
  env_t e;
  ms_options_t o;
  tu_opts_default(&o);
  o.allow_loopback_noauth = strstr(listen_addr, "noauth") != NULL;
  env_init(&e, &o, &o);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_echo_on_connection, &echo);
  if (l == NULL) return;
  /* The stream's default high-water mark (1 MiB) must hold the queue. */
  const tu_bulk_cfg_t cfg = {.data = bulk_data,
                             .total = BULK,
                             .queue_limit = 1024 * 1024,
                             .timeout_ms = 120000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_t b;
  tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_bulk(void) {
  bulk_data = malloc(BULK);
  randombytes_buf(bulk_data, BULK);
  char dir[64], a[128];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  bulk_over("net:127.0.0.1:0");
  snprintf(a, sizeof a, "unix:%s/bulk.sock", dir);
  bulk_over(a);
  bulk_over("net:127.0.0.1:0~shs");
  snprintf(a, sizeof a, "unix:%s/bulk-shs.sock~shs", dir);
  bulk_over(a);
  bulk_over("net:127.0.0.1:0~noauth");
  bulk_over("net:[::1]:0~shs");
  tu_rmtree(dir);
  free(bulk_data);
  bulk_data = NULL;
}

/* ======================================================================== */
/* 4. half-close                                                            */
/* ======================================================================== */

/* This suite's own check on the half-closing client: no longer writable. */
static void hc_not_writable(ms_stream_t *s, const tu_shut_t *shut) {
  (void)shut;
  CHECK(!ms_stream_writable(s));
}

static void half_close_over(const char *listen_addr, int mode, int want_end) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_half_close(&e.loop, e.srv, e.cli, listen_addr, mode, want_end, WAIT_MS,
                hc_not_writable);
  env_done(&e);
}

static void test_half_close(void) {
  half_close_over("net:127.0.0.1:0", 0, MS_EOF);
  half_close_over("net:127.0.0.1:0~shs", 0, MS_EOF);
  /* No goodbye: plain TCP cannot tell, box-stream can. */
  half_close_over("net:127.0.0.1:0", 1, MS_EOF);
  half_close_over("net:127.0.0.1:0~shs", 1, MS_EHANGUP);
}

/* ======================================================================== */
/* 5. refused, 6. bad addresses, 7. fallback                                */
/* ======================================================================== */

static void test_refused(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  int port = tu_closed_port();
  char a[128], hostport[64];
  snprintf(a, sizeof a, "net:127.0.0.1:%d", port);
  snprintf(hostport, sizeof hostport, "127.0.0.1:%d", port);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "refused connect");
  CHECK_INT(r.status, UV_ECONNREFUSED);
  CHECK_HAS(r.reason, hostport);
  CHECK_HAS(r.reason, "refused");
  CHECK(r.s == NULL);

  /* unix: no such file, and a socket file nobody listens on */
  char dir[64];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(a, sizeof a, "unix:%s/nobody.sock", dir);
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "unix ENOENT connect");
  CHECK_INT(r.status, UV_ENOENT);
  CHECK_HAS(r.reason, "nobody.sock");
  env_done(&e);
  tu_rmtree(dir);
}

typedef struct {
  const char *addr;
  int dial;   /* expected ms_connect outcome; 0 = not tried */
  int listen; /* expected ms_listen outcome; 0 = not tried */
  const char *word;
} bad_t;

static void test_bad_addresses(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  char key[64], shs_first[160];
  snprintf(key, sizeof key, "%s", tu_b64(ms_keys(e.srv)->public_key));
  snprintf(shs_first, sizeof shs_first, "shs:%s~net:127.0.0.1:8008", key);
  const bad_t table[] = {
      {"", MS_EADDRESS, MS_EADDRESS, "bad address"},
      {"net:127.0.0.1:8008~", MS_EADDRESS, MS_EADDRESS, "bad address"},
      {"net:127.0.0.1:8008;", MS_EADDRESS, MS_EADDRESS, "bad address"},
      {"NET:127.0.0.1:8008", MS_EADDRESS, MS_EADDRESS, "bad address"},
      {"net:127.0.0.1:80 08", MS_EADDRESS, MS_EADDRESS, "bad address"},
      {"net:127.0.0.1:70000", MS_EADDRESS, MS_EADDRESS, "range"},
      {"net:127.0.0.1:0", MS_EADDRESS, 0, "port 0"},
      {"net:127.0.0.1", MS_EADDRESS, MS_EADDRESS, "port"},
      {"net:127.0.0.1:", MS_EADDRESS, MS_EADDRESS, "port"},
      {"net:127.0.0.1:http", MS_EADDRESS, MS_EADDRESS, "port"},
      {"net:999.0.0.1:8008", MS_EADDRESS, MS_EADDRESS, "IPv4"},
      {"foo:bar", MS_EPROTO_UNKNOWN, MS_EPROTO_UNKNOWN, "unknown protocol"},
      {"net:127.0.0.1:8008~gzipx", MS_EPROTO_UNKNOWN, MS_EPROTO_UNKNOWN, "unknown protocol"},
      {shs_first, MS_ESTACK, MS_ESTACK, "transform"},
      {"net:127.0.0.1:8008~unix:/tmp/x.sock", MS_ESTACK, MS_ESTACK, "transport"},
      {"net:127.0.0.1:8008~shs:notbase64", MS_EKEY, MS_EKEY, "base64"},
      {"net:127.0.0.1:8008~shs", MS_EADDRESS, 0, "shs"},
      {"net:127.0.0.1:0~shs:a:b", 0, MS_EADDRESS, "shs"},
      {"net:192.0.2.1:8008~noauth", MS_ENOAUTH_REMOTE, 0, "noauth"},
      {"net:192.0.2.1:0~noauth", 0, MS_ENOAUTH_REMOTE, "noauth"},
      {"net:example.com:8008~noauth", MS_ENOAUTH_REMOTE, 0, "noauth"},
      /* Loopback TCP admits every local user: not by default, and a name
       * (localhost) never counts as loopback. */
      {"net:127.0.0.1:8008~noauth", MS_ENOAUTH_REMOTE, MS_ENOAUTH_REMOTE, "noauth"},
      {"net:[::1]:8008~noauth", MS_ENOAUTH_REMOTE, MS_ENOAUTH_REMOTE, "loopback"},
      {"net:localhost:8008~noauth", MS_ENOAUTH_REMOTE, MS_ENOAUTH_REMOTE, "noauth"},
      {"net:[::ffff:127.0.0.1]:8008~noauth", MS_ENOAUTH_REMOTE, MS_ENOAUTH_REMOTE, "noauth"},
      {"net:127.0.0.1:8008~noauth:x", MS_EADDRESS, MS_EADDRESS, "noauth"},
      {"unix:", MS_EADDRESS, MS_EADDRESS, "path"},
      {"unix:/tmp/a:b", MS_EADDRESS, MS_EADDRESS, "path"},
  };
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    const bad_t *t = &table[i];
    if (t->dial) {
      tu_conn_t r;
      uint64_t t0 = tu_now_ms();
      CHECK_INT(tu_connect(e.cli, t->addr, &r, NULL), 0);
      CHECK(!r.fired_in_call);
      WAIT(&e.loop, r.done, 1, t->addr);
      CHECK_INT(r.status, t->dial);
      CHECK_HAS(r.reason, t->word);
      CHECK(r.s == NULL);
      CHECK(r.at - t0 < 1000); /* refused up front, nothing sent */
      if (r.status != t->dial)
        fprintf(stderr, "  dial \"%s\": %s (%s)\n", t->addr, ms_err_name(r.status), r.reason);
    }
    if (t->listen) {
      ms_listener_t *l = NULL;
      char reason[512] = "";
      tu_accept_t acc = {0};
      int rc = ms_listen(e.srv, t->addr, tu_on_accept, &acc, &l, reason, sizeof reason);
      CHECK_INT(rc, t->listen);
      CHECK_HAS(reason, t->word);
      if (rc != t->listen)
        fprintf(stderr, "  listen \"%s\": %s (%s)\n", t->addr, ms_err_name(rc), reason);
      if (rc == 0) tu_close_listener(&e.loop, l, WAIT_MS);
    }
  }
  /* shs listen address naming a key: it must be our own */
  {
    ms_keypair_t other;
    ms_keypair_generate(&other);
    char a[256], reason[512] = "";
    ms_listener_t *l = NULL;
    tu_accept_t acc = {0};
    snprintf(a, sizeof a, "net:127.0.0.1:0~shs:%s", tu_b64(other.public_key));
    CHECK_INT(ms_listen(e.srv, a, tu_on_accept, &acc, &l, reason, sizeof reason), MS_EKEY);
    CHECK_HAS(reason, "key");
    snprintf(a, sizeof a, "net:127.0.0.1:0~shs:%s", key);
    CHECK_INT(ms_listen(e.srv, a, tu_on_accept, &acc, &l, reason, sizeof reason), 0);
    if (l) {
      CHECK_HAS(ms_listener_address(l), key);
      expect_ok(&e, ms_listener_address(l), &acc, NULL,
                "connect to an shs:OWNKEY listener");
      tu_close_listener(&e.loop, l, WAIT_MS);
    }
  }
  /* ms_connect argument errors come back directly, with no callback. */
  CHECK_INT(ms_connect(e.cli, NULL, tu_on_conn, NULL, NULL), MS_EINVAL);
  CHECK_INT(ms_connect(e.cli, "net:127.0.0.1:1", NULL, NULL, NULL), MS_EINVAL);

  /* All or none: the second stack fails, the first must not stay open. */
  tu_accept_t acc = {0};
  ms_listener_t *busy = NULL, *l = NULL;
  busy = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (busy) {
    char a[256], reason[512] = "";
    snprintf(a, sizeof a, "net:127.0.0.1:0;%s", ms_listener_address(busy));
    int rc = ms_listen(e.srv, a, tu_on_accept, &acc, &l, reason, sizeof reason);
    CHECK_INT(rc, UV_EADDRINUSE);
    CHECK_HAS(reason, "stack 2");
    snprintf(a, sizeof a, "net:127.0.0.1:0;foo:bar");
    rc = ms_listen(e.srv, a, tu_on_accept, &acc, &l, reason, sizeof reason);
    CHECK_INT(rc, MS_EPROTO_UNKNOWN);
    CHECK_HAS(reason, "foo");
    tu_close_listener(&e.loop, busy, WAIT_MS);
  }
  CHECK_INT(acc.n, 0);
  env_done(&e);
}

static void test_fallback(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (l == NULL) return;
  const char *live = ms_listener_address(l);
  int p1 = tu_closed_port(), p2 = tu_closed_port();
  char a[512];
  tu_conn_t r;

  snprintf(a, sizeof a, "net:127.0.0.1:%d;%s", p1, live);
  expect_ok(&e, a, &acc, live, "fallback to the live port");

  snprintf(a, sizeof a, "bogus:x:1;%s", live);
  expect_ok(&e, a, &acc, live, "skip unknown protocol");

  /* A malformed stack (port 0) is skipped too. */
  snprintf(a, sizeof a, "net:127.0.0.1:0;%s", live);
  expect_ok(&e, a, &acc, NULL, "skip malformed");

  char n1[32], n2[32];
  snprintf(n1, sizeof n1, "127.0.0.1:%d", p1);
  snprintf(n2, sizeof n2, "127.0.0.1:%d", p2);
  snprintf(a, sizeof a, "net:127.0.0.1:%d;bogus:x:1;net:127.0.0.1:%d", p1, p2);
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "all dead");
  CHECK_INT(r.status, MS_EALLFAILED);
  CHECK_HAS(r.reason, n1);
  CHECK_HAS(r.reason, n2);
  CHECK_HAS(r.reason, "bogus");
  CHECK_HAS(r.reason, "alternative 1");
  CHECK_HAS(r.reason, "alternative 2");
  CHECK_HAS(r.reason, "alternative 3");
  CHECK(r.s == NULL);

  /* All alternatives unknown. */
  CHECK_INT(tu_connect(e.cli, "bogus:x:1;i2p:abc.i2p:1", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "all unknown");
  CHECK_INT(r.status, MS_EALLFAILED);
  CHECK_HAS(r.reason, "i2p");

  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 8. cancel                                                                */
/* ======================================================================== */

typedef struct {
  int mode; /* AUTH_* */
  int calls;
  void *value;
  ms_authorize_t *held;
  uint8_t key[32];
  uv_timer_t timer;
  bool timer_used;
  int frees;        /* authorize_free calls */
  void *last_freed;
} auth_t;

static void auth_free_cb(void *value, void *arg) {
  auth_t *a = arg;
  a->frees++;
  a->last_freed = value;
}

enum { AUTH_ACCEPT, AUTH_REJECT, AUTH_ASYNC, AUTH_NEVER };

static void auth_later(uv_timer_t *t) {
  auth_t *a = t->data;
  ms_authorize_t *req = a->held;
  a->held = NULL;
  ms_authorize_done(req, true, a->value);
}

static void authorize(const uint8_t remote_key[32], ms_authorize_t *req, void *arg) {
  auth_t *a = arg;
  a->calls++;
  memcpy(a->key, remote_key, 32);
  switch (a->mode) {
    case AUTH_ACCEPT: ms_authorize_done(req, true, a->value); break;
    case AUTH_REJECT: ms_authorize_done(req, false, NULL); break;
    case AUTH_ASYNC:
      a->held = req;
      a->timer_used = true;
      uv_timer_start(&a->timer, auth_later, 100, 0);
      break;
    default: a->held = req; break;
  }
}

/* An env whose server calls the authorize hook (and authorize_free) with au;
 * a non-zero handshake_ms replaces the server's handshake timeout. */
static void env_init_auth(env_t *e, auth_t *au, unsigned handshake_ms) {
  ms_options_t so;
  tu_opts_default(&so);
  so.authorize = authorize;
  so.authorize_arg = au;
  so.authorize_free = auth_free_cb;
  if (handshake_ms) so.handshake_timeout_ms = handshake_ms;
  env_init(e, &so, NULL);
}

static void test_cancel(void) {
  auth_t au = {.mode = AUTH_NEVER};
  env_t e;
  env_init_auth(&e, &au, 300);
  tu_lerr_t lerr = {0};
  tu_accept_t acc = {0};
  ms_listener_t *l = NULL, *plain = NULL;
  l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_on_accept, &acc);
  plain = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (!l || !plain) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  char dir[64], ua[128];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(ua, sizeof ua, "unix:%s/c.sock", dir);
  ms_listener_t *ul = tu_listen_ok(e.srv, ua, tu_on_accept, &acc);

  /* (a) right after ms_connect */
  tu_conn_t r;
  ms_connect_t *req = NULL;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(plain), &r, &req), 0);
  tu_cancel(&r, req);
  WAIT(&e.loop, r.done, 1, "cancel right away");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(r.s == NULL);
  CHECK(!r.fired_in_call);

  /* (b) while the transport dials (cancel queued behind the dial start) */
  const char *dial_addrs[3] = {ms_listener_address(plain), "net:localhost:1", ua};
  for (int i = 0; i < 3; i++) {
    tu_cancel_arg_t ca;
    CHECK_INT(tu_connect(e.cli, dial_addrs[i], &r, &ca.req), 0);
    CHECK_INT(ms_call(e.cli, tu_cancel_now, &ca), 0);
    WAIT(&e.loop, r.done, 1, "cancel while dialing");
    CHECK_INT(r.status, MS_ECANCELED);
    if (r.status != MS_ECANCELED) fprintf(stderr, "  dial %s: %s\n", dial_addrs[i], ms_err_name(r.status));
    if (r.s) ms_stream_close(r.s, NULL, NULL);
  }
  tu_sleep_loop(&e.loop, 50);
  /* Whatever got accepted meanwhile is closed again. */
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  acc.n = 0;

  /* (c) during the handshake: the server's authorize hook never answers */
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, &req), 0);
  WAIT(&e.loop, au.calls, 1, "authorize hook called");
  CHECK(memcmp(au.key, ms_keys(e.cli)->public_key, 32) == 0);
  CHECK_INT(r.done, 0);
  tu_cancel(&r, req);
  CHECK(!r.fired_in_call); /* as with every other cancel: later, on the loop */
  WAIT(&e.loop, r.done, 1, "cancel during handshake");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(r.s == NULL);
  /* The server gives up after its (short) handshake timeout. */
  WAIT(&e.loop, lerr.count, 1, "server handshake timeout");
  CHECK_INT(lerr.last_status, MS_ETIMEDOUT);
  CHECK_HAS(lerr.last_reason, "authorize");
  CHECK_INT(acc.n, 0);
  /* Answering late is harmless, and an accepted value comes back at once. */
  static int late = 1;
  ms_authorize_done(au.held, true, &late);
  au.held = NULL;
  CHECK_INT(au.frees, 1);
  CHECK(au.last_freed == &late);

  /* (d) listener closed while a handshake waits for authorize */
  au.calls = 0;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, &req), 0);
  WAIT(&e.loop, au.calls, 1, "authorize hook called");
  int before = lerr.count;
  tu_close_listener(&e.loop, l, WAIT_MS);
  WAIT(&e.loop, r.done, 1, "client sees the hang-up");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_INT(lerr.count, before); /* a cancel is not an error */
  ms_authorize_done(au.held, false, NULL);
  au.held = NULL;

  tu_close_listener(&e.loop, plain, WAIT_MS);
  tu_close_listener(&e.loop, ul, WAIT_MS);
  CHECK_INT(acc.n, 0);
  env_done(&e);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* 9. shs: wrong keys, authorize                                            */
/* ======================================================================== */

static void test_shs_failures(void) {
  /* server with an authorize hook we steer per case */
  auth_t au = {.mode = AUTH_ACCEPT};
  env_t e;
  env_init_auth(&e, &au, 0);
  uv_timer_init(&e.loop, &au.timer);
  au.timer.data = &au;
  tu_lerr_t lerr = {0};
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  const char *good = ms_listener_address(l);
  tu_conn_t r;

  /* wrong server key */
  ms_keypair_t other;
  ms_keypair_generate(&other);
  char bad[256];
  int port = atoi(good + strlen("net:127.0.0.1:"));
  snprintf(bad, sizeof bad, "net:127.0.0.1:%d~shs:%s", port, tu_b64(other.public_key));
  CHECK_INT(tu_connect(e.cli, bad, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "wrong server key");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "shs");
  CHECK(strlen(r.reason) > 10);
  WAIT(&e.loop, lerr.count, 1, "server reports the failed handshake");
  CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
  CHECK_STR(lerr.last_stack, good);
  CHECK_INT(au.calls, 0);
  expect_ok(&e, good, &acc, NULL, "good connection after a wrong key");
  CHECK_INT(au.calls, 1);

  /* wrong app key: a client on another network */
  {
    ms_options_t o2;
    tu_opts_default(&o2);
    uint8_t app[32];
    randombytes_buf(app, sizeof app);
    o2.app_key = app;
    ms_t *other_net;
    CHECK_INT(ms_new_on_loop(&other_net, &e.loop, &o2), 0);
    CHECK_INT(tu_connect(other_net, good, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "wrong app key");
    CHECK_INT(r.status, MS_EHANDSHAKE);
    CHECK_HAS(r.reason, "app key");
    WAIT(&e.loop, lerr.count, 2, "server reports the wrong app key");
    CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
    tu_sleep_loop(&e.loop, 50); /* its failed stream finishes closing */
    CHECK_INT(ms_delete(other_net), 0);
    expect_ok(&e, good, &acc, NULL, "good connection after a wrong app key");
  }

  /* authorize rejects */
  au.mode = AUTH_REJECT;
  au.calls = 0;
  CHECK_INT(tu_connect(e.cli, good, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "rejected client");
  CHECK(r.status == MS_EHANDSHAKE || r.status == MS_EUNAUTHORIZED);
  CHECK(r.reason[0] != '\0');
  WAIT(&e.loop, lerr.count, 3, "server reports the rejection");
  CHECK_INT(lerr.last_status, MS_EUNAUTHORIZED);
  CHECK_INT(au.calls, 1);
  CHECK(memcmp(au.key, ms_keys(e.cli)->public_key, 32) == 0);

  /* authorize accepts with a value */
  static int token = 42;
  au.mode = AUTH_ACCEPT;
  au.value = &token;
  int n = acc.n;
  CHECK_INT(tu_connect(e.cli, good, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "accepted client");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, n + 1, "accept");
  if (acc.n > n) CHECK(ms_stream_auth(acc.s[n]) == &token);
  if (r.s) CHECK(ms_stream_auth(r.s) == NULL);
  ms_stream_t *v[2] = {r.s, acc.n > n ? acc.s[n] : NULL};
  CHECK_INT(au.frees, 0); /* held while the stream lives */
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  CHECK_INT(au.frees, 1); /* handed back after its close callback */
  CHECK(au.last_freed == &token);

  /* async authorize: answered 100 ms later from a timer */
  static int token2 = 7;
  au.mode = AUTH_ASYNC;
  au.value = &token2;
  n = acc.n;
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(e.cli, good, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "async-authorized client");
  CHECK_INT(r.status, 0);
  CHECK(r.at - t0 >= 90);
  WAIT(&e.loop, acc.n, n + 1, "accept");
  if (acc.n > n) CHECK(ms_stream_auth(acc.s[n]) == &token2);
  /* and data flows after an async authorize */
  if (r.s && acc.n > n) {
    tu_echo_t echo = {0};
    tu_echo_on_connection(acc.s[n], &echo);
    ms_buf_t b = {"ping", 4};
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
    WAIT(&e.loop, echo.closed, 1, "echo after async authorize");
    CHECK_INT(echo.bytes, 4);
    CHECK_INT(echo.eof, 1);
    ms_stream_close(r.s, NULL, NULL);
  }
  CHECK_INT(lerr.count, 3);
  tu_sleep_loop(&e.loop, 50);
  CHECK_INT(au.frees, 2);
  CHECK(au.last_freed == &token2);

  uv_close((uv_handle_t *)&au.timer, NULL);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 10. handshake timeouts                                                   */
/* ======================================================================== */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t conn;
  int connected;
  int ended;
  int end_status;
  int closed;
  char buf[256];
} raw_t;

static void raw_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)sz;
  raw_t *r = h->data;
  *b = uv_buf_init(r->buf, sizeof r->buf);
}
static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)b;
  raw_t *r = s->data;
  if (n < 0) {
    r->ended++;
    r->end_status = (int)n;
    uv_read_stop(s);
  }
}
static void raw_connected(uv_connect_t *c, int status) {
  raw_t *r = c->data;
  r->connected = status == 0 ? 1 : status;
  if (status == 0) uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
}
static void raw_closed(uv_handle_t *h) { ((raw_t *)h->data)->closed++; }

static void test_timeouts(void) {
  ms_options_t so, co;
  tu_opts_default(&so);
  tu_opts_default(&co);
  so.handshake_timeout_ms = 300;
  co.handshake_timeout_ms = 300;
  env_t e;
  env_init(&e, &so, &co);
  tu_lerr_t lerr = {0};
  tu_accept_t acc = {0};
  ms_listener_t *l = NULL, *plain = NULL;
  l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);

  /* server side: a raw TCP client that never says hello */
  raw_t raw;
  memset(&raw, 0, sizeof raw);
  uv_tcp_init(&e.loop, &raw.tcp);
  raw.tcp.data = &raw;
  raw.conn.data = &raw;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", atoi(ms_listener_address(l) + 14), &sa);
  uint64_t t0 = tu_now_ms();
  CHECK_INT(uv_tcp_connect(&raw.conn, &raw.tcp, (struct sockaddr *)&sa, raw_connected), 0);
  WAIT(&e.loop, lerr.count, 1, "server handshake timeout");
  uint64_t dt = tu_now_ms() - t0;
  CHECK_INT(lerr.last_status, MS_ETIMEDOUT);
  CHECK_HAS(lerr.last_reason, "timed out");
  CHECK(dt >= 250 && dt < 5000);
  WAIT(&e.loop, raw.ended, 1, "server hangs up on the silent client");
  CHECK_INT(raw.connected, 1);
  uv_close((uv_handle_t *)&raw.tcp, raw_closed);
  WAIT(&e.loop, raw.closed, 1, "raw close");
  CHECK_INT(acc.n, 0);

  /* client side: a plain TCP server that accepts and never answers */
  plain = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (plain) {
    char a[256];
    snprintf(a, sizeof a, "%s~shs:%s", ms_listener_address(plain),
             tu_b64(ms_keys(e.srv)->public_key));
    tu_conn_t r;
    t0 = tu_now_ms();
    CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "client handshake timeout");
    dt = r.at - t0;
    CHECK_INT(r.status, MS_ETIMEDOUT);
    CHECK_HAS(r.reason, "timed out");
    CHECK(dt >= 250 && dt < 5000);
    CHECK(r.s == NULL);
    WAIT(&e.loop, acc.n, 1, "plain accept");
    tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
    tu_close_listener(&e.loop, plain, WAIT_MS);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 11. unix socket files                                                    */
/* ======================================================================== */

static void test_unix_files(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  char dir[64], p1[128], p2[128], a1[160], a2[160], reason[512];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(p1, sizeof p1, "%s/one.sock", dir);
  snprintf(p2, sizeof p2, "%s/two.sock", dir);
  snprintf(a1, sizeof a1, "unix:%s", p1);
  snprintf(a2, sizeof a2, "unix:%s", p2);

  /* a stale socket file: bound, then closed without unlink */
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, p1, strlen(p1) + 1);
  CHECK_INT(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
  close(fd);
  struct stat st;
  CHECK(stat(p1, &st) == 0 && S_ISSOCK(st.st_mode));

  tu_accept_t acc = {0};
  ms_listener_t *l1 = NULL, *l2 = NULL, *l3 = NULL;
  CHECK_INT(ms_listen(e.srv, a1, tu_on_accept, &acc, &l1, reason, sizeof reason), 0);
  CHECK_INT(ms_listen(e.srv, a2, tu_on_accept, &acc, &l2, reason, sizeof reason), 0);
  CHECK(stat(p1, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
  CHECK(stat(p2, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
  if (!l1 || !l2) return;
  CHECK_STR(ms_listener_address(l1), a1);
  CHECK_STR(ms_listener_address(l2), a2);
  /* a live socket is not taken over */
  reason[0] = '\0';
  CHECK_INT(ms_listen(e.srv, a1, tu_on_accept, &acc, &l3, reason, sizeof reason),
            UV_EADDRINUSE);
  CHECK_HAS(reason, "listening");
  /* The liveness probe reached the live listener as a connection: close it. */
  WAIT(&e.loop, acc.n, 1, "probe connection");
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  acc.n = 0;
  /* nor is a regular file */
  char p3[128], a3[160];
  snprintf(p3, sizeof p3, "%s/file", dir);
  snprintf(a3, sizeof a3, "unix:%s", p3);
  FILE *f = fopen(p3, "w");
  if (f) fclose(f);
  reason[0] = '\0';
  CHECK_INT(ms_listen(e.srv, a3, tu_on_accept, &acc, &l3, reason, sizeof reason),
            UV_EEXIST);
  CHECK_HAS(reason, "not a socket");
  CHECK(access(p3, F_OK) == 0);

  expect_ok(&e, a1, &acc, NULL, "unix connect one");
  expect_ok(&e, a2, &acc, NULL, "unix connect two");
  expect_ok(&e, a1, &acc, NULL, "unix connect one again");

  /* a path with the separators in it: escaped when printed, round-trips */
  {
    char p4[128], want[200];
    snprintf(p4, sizeof p4, "%s/we:ird;na~me!.sock", dir);
    snprintf(want, sizeof want, "unix:%s/we!:ird!;na!~me!!.sock", dir);
    ms_listener_t *l4 = NULL;
    CHECK_INT(ms_listen(e.srv, want, tu_on_accept, &acc, &l4, reason, sizeof reason), 0);
    CHECK(access(p4, F_OK) == 0);
    if (l4) {
      CHECK_STR(ms_listener_address(l4), want);
      int n = acc.n;
      expect_ok(&e, ms_listener_address(l4), &acc, NULL, "unix path with separators");
      CHECK_INT(acc.n, n + 1);
      tu_close_listener(&e.loop, l4, WAIT_MS);
    }
    CHECK(access(p4, F_OK) != 0);
  }

  tu_close_listener(&e.loop, l1, WAIT_MS);
  CHECK(access(p1, F_OK) != 0);
  CHECK(access(p2, F_OK) == 0);
  tu_close_listener(&e.loop, l2, WAIT_MS);
  CHECK(access(p2, F_OK) != 0);
  env_done(&e);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* 12. stream close semantics                                               */
/* ======================================================================== */

typedef struct {
  int cbs, ok, canceled, other;
  int closed;
  bool closed_before_all_writes;
} wc_t;

static void wc_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  wc_t *w = arg;
  w->cbs++;
  if (w->closed) w->closed_before_all_writes = true;
  if (status == 0) w->ok++;
  else if (status == MS_ECANCELED) w->canceled++;
  else {
    if (!w->other) fprintf(stderr, "  write completed with %s\n", ms_err_name(status));
    w->other++;
  }
}
static void wc_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((wc_t *)arg)->closed++;
}

static void close_with_queued_writes(const char *listen_addr) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_on_accept, &acc);
  if (!l) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  WAIT(&e.loop, acc.n, 1, "accept");
  if (r.s) {
    /* The server never reads: 32 MiB cannot all leave. */
    size_t chunk = 1024 * 1024;
    uint8_t *buf = calloc(1, chunk);
    wc_t w = {0};
    int nw = 32;
    for (int i = 0; i < nw; i++) {
      ms_buf_t b = {buf, chunk};
      CHECK_INT(ms_stream_write(r.s, &b, 1, wc_written, &w), 0);
    }
    CHECK(ms_stream_write_queue_size(r.s) > 0);
    CHECK(!ms_stream_writable(r.s));
    tu_sleep_loop(&e.loop, 50);
    ms_stream_close(r.s, wc_closed, &w);
    ms_stream_close(r.s, wc_closed, &w); /* ignored */
    ms_buf_t b = {buf, 1};
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), MS_ECLOSED);
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), MS_ECLOSED);
    CHECK_INT(w.closed, 0);
    WAIT(&e.loop, w.closed, 1, "close with queued writes");
    CHECK_INT(w.closed, 1);
    CHECK_INT(w.cbs, nw);
    CHECK(w.canceled > 0);
    CHECK_INT(w.other, 0);
    CHECK(!w.closed_before_all_writes);
    free(buf);
  }
  tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_close_semantics(void) {
  close_with_queued_writes("net:127.0.0.1:0");
  close_with_queued_writes("net:127.0.0.1:0~shs");
}

/* ======================================================================== */
/* 13. ms_run(DEFAULT) with nothing but library work                        */
/* ======================================================================== */

static void test_run_default(void) {
  ms_t *ms;
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&ms, &o), 0);
  /* A connect is the only work: ms_run must carry it to its callback. */
  char a[64];
  snprintf(a, sizeof a, "net:127.0.0.1:%d", tu_closed_port());
  tu_conn_t r;
  CHECK_INT(tu_connect(ms, a, &r, NULL), 0);
  CHECK(tu_drain(ms_loop(ms), 10000));
  CHECK_INT(r.done, 1);
  CHECK_INT(r.status, UV_ECONNREFUSED);
  /* Closing a listener is the only work: ms_run must finish it, and then
   * the multiserver is empty. */
  ms_listener_t *l = NULL;
  tu_accept_t acc = {0};
  int closed = 0;
  l = tu_listen_ok(ms, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (l) ms_listener_close(l, tu_on_listener_closed, &closed);
  CHECK(tu_drain(ms_loop(ms), 10000));
  CHECK_INT(closed, 1);
  /* A failed listen cleans up by itself too. */
  CHECK_INT(ms_listen(ms, "net:127.0.0.1:0;foo:x", tu_on_accept, &acc, &l, NULL, 0),
            MS_EPROTO_UNKNOWN);
  CHECK(tu_drain(ms_loop(ms), 10000));
  CHECK_INT(ms_delete(ms), 0);
}

/* ======================================================================== */
/* 14. the loop on its own thread, driven through ms_call                   */
/* ======================================================================== */

typedef struct {
  ms_t *ms;
  ms_listener_t *l;
  tu_echo_t echo;
  uv_mutex_t mu;
  uv_cond_t cv;
  int stage;
  int status;
  char got[64];
  size_t glen;
  int closed;
} th_t;

static void th_signal(th_t *t, int stage) {
  uv_mutex_lock(&t->mu);
  t->stage = stage;
  uv_cond_signal(&t->cv);
  uv_mutex_unlock(&t->mu);
}
static void th_waitfor(th_t *t, int stage) {
  uint64_t until = uv_hrtime() + 20000000000ull;
  uv_mutex_lock(&t->mu);
  while (t->stage < stage && uv_hrtime() < until)
    uv_cond_timedwait(&t->cv, &t->mu, 100000000ull);
  uv_mutex_unlock(&t->mu);
}
static void th_closed(ms_stream_t *s, void *arg) {
  (void)s;
  th_signal(arg, 3);
}
static void th_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                    void *arg) {
  th_t *t = arg;
  if (status == 0) {
    if (t->glen + len <= sizeof t->got) memcpy(t->got + t->glen, data, len);
    t->glen += len;
    return;
  }
  t->status = status;
  ms_stream_close(s, th_closed, t);
}
static void th_connected(ms_stream_t *s, int status, const char *reason, void *arg) {
  (void)reason;
  th_t *t = arg;
  t->status = status;
  if (status != 0) {
    th_signal(t, 3);
    return;
  }
  ms_buf_t b = {"over a thread", 13};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  ms_stream_shutdown(s, NULL, NULL);
  ms_stream_read_start(s, th_read, t);
}
static void th_start(void *arg) {
  th_t *t = arg;
  int rc = ms_listen(t->ms, "net:127.0.0.1:0~shs", tu_echo_on_connection, &t->echo,
                     &t->l, NULL, 0);
  if (rc == 0) rc = ms_connect(t->ms, ms_listener_address(t->l), th_connected, t, NULL);
  if (rc != 0) {
    t->status = rc;
    th_signal(t, 3);
  }
}
static void th_lclosed(ms_listener_t *l, void *arg) {
  (void)l;
  th_signal(arg, 4);
}
static void th_stop(void *arg) {
  th_t *t = arg;
  if (t->l) ms_listener_close(t->l, th_lclosed, t);
  else th_signal(t, 4);
}

static void test_thread(void) {
  th_t t;
  memset(&t, 0, sizeof t);
  uv_mutex_init(&t.mu);
  uv_cond_init(&t.cv);
  ms_options_t o;
  tu_opts_default(&o);
  CHECK_INT(ms_new(&t.ms, &o), 0);
  CHECK_INT(ms_thread_start(t.ms), 0);
  CHECK_INT(ms_call(t.ms, th_start, &t), 0);
  th_waitfor(&t, 3);
  CHECK_INT(t.stage, 3);
  CHECK_INT(t.status, MS_EOF);
  CHECK_INT(t.glen, 13);
  CHECK(memcmp(t.got, "over a thread", 13) == 0);
  CHECK_INT(ms_call(t.ms, th_stop, &t), 0);
  th_waitfor(&t, 4);
  CHECK_INT(t.stage, 4);
  CHECK_INT(ms_thread_join(t.ms), 0);
  CHECK(tu_drain(ms_loop(t.ms), 10000));
  CHECK_INT(t.echo.closed, 1);
  CHECK_INT(ms_delete(t.ms), 0);
  uv_cond_destroy(&t.cv);
  uv_mutex_destroy(&t.mu);
}

/* ======================================================================== */
/* 15. write edge cases: empty writes, many buffers                          */
/* ======================================================================== */

typedef struct {
  int cbs;
  int status;
  bool inside;    /* set around ms_stream_write */
  bool fired_inside;
  size_t queue_after; /* write queue size seen by the latest callback */
} ew_t;

static void ew_written(ms_stream_t *s, int status, void *arg) {
  ew_t *w = arg;
  w->cbs++;
  if (status) w->status = status;
  if (w->inside) w->fired_inside = true;
  w->queue_after = ms_stream_write_queue_size(s);
}

typedef struct {
  uint8_t got[8192];
  size_t len;
  int end;
  int closed;
} collect_t;

static void collect_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((collect_t *)arg)->closed++;
}
static void collect_read(ms_stream_t *s, int status, const uint8_t *data,
                         size_t len, void *arg) {
  collect_t *c = arg;
  if (status == 0) {
    if (c->len + len <= sizeof c->got) memcpy(c->got + c->len, data, len);
    c->len += len;
    return;
  }
  c->end = status;
  ms_stream_close(s, collect_closed, c);
}

static void write_edges_over(const char *listen_addr) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_echo_on_connection, &echo);
  if (!l) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  if (r.s) {
    ew_t w = {0};
    /* an empty write: accepted, completes later with 0, sends nothing */
    ms_buf_t empty = {"", 0};
    w.inside = true;
    int rc = ms_stream_write(r.s, &empty, 1, ew_written, &w);
    w.inside = false;
    CHECK_INT(rc, 0);
    w.inside = true;
    rc = ms_stream_write(r.s, NULL, 0, ew_written, &w);
    w.inside = false;
    CHECK_INT(rc, 0);
    CHECK(!w.fired_inside);
    /* 20 buffers in one write */
    static char parts[20][16];
    ms_buf_t bufs[20];
    char want[400];
    size_t wl = 0;
    for (int i = 0; i < 20; i++) {
      int n = snprintf(parts[i], sizeof parts[i], "<part %d>", i);
      bufs[i].base = parts[i];
      bufs[i].len = (size_t)n;
      memcpy(want + wl, parts[i], (size_t)n);
      wl += (size_t)n;
    }
    w.inside = true;
    rc = ms_stream_write(r.s, bufs, 20, ew_written, &w);
    w.inside = false;
    CHECK_INT(rc, 0);
    CHECK(!w.fired_inside);
    CHECK_INT(ms_stream_write_queue_size(r.s), wl);
    /* bad arguments */
    CHECK_INT(ms_stream_write(r.s, NULL, 1, NULL, NULL), MS_EINVAL);
    ms_buf_t nullbase = {NULL, 3};
    CHECK_INT(ms_stream_write(r.s, &nullbase, 1, NULL, NULL), MS_EINVAL);
    CHECK_INT(ms_stream_read_start(r.s, NULL, NULL), MS_EINVAL);
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
    collect_t c = {0};
    CHECK_INT(ms_stream_read_start(r.s, collect_read, &c), 0);
    WAIT(&e.loop, c.closed, 1, "echo of the many-buffer write");
    CHECK_INT(w.cbs, 3);
    CHECK_INT(w.status, 0);
    CHECK_INT(w.queue_after, 0);
    CHECK_INT(c.end, MS_EOF);
    CHECK_INT(c.len, wl);
    CHECK(c.len == wl && memcmp(c.got, want, wl) == 0);
  }
  WAIT(&e.loop, echo.closed, 1, "echo close");
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_write_edges(void) {
  write_edges_over("net:127.0.0.1:0");
  write_edges_over("net:127.0.0.1:0~shs");
}

/* ======================================================================== */
/* 16. data that arrives with the handshake; a reader that pauses           */
/* ======================================================================== */

#define EARLY_LEN (256 * 1024 + 77)

typedef struct {
  const uint8_t *data;
  size_t len;
  int closed;
} greeter_t;

static void greeter_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((greeter_t *)arg)->closed++;
}
static void greeter_shut(ms_stream_t *s, int status, void *arg) {
  (void)status;
  ms_stream_close(s, greeter_closed, arg);
}
/* The server speaks first: writes at once from the connection callback,
 * then ends its side. */
static void greeter_accept(ms_stream_t *s, void *arg) {
  greeter_t *g = arg;
  ms_buf_t b = {g->data, g->len};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  ms_stream_shutdown(s, greeter_shut, g);
}

typedef struct {
  ms_stream_t *s;
  const uint8_t *want;
  size_t want_len;
  size_t got;
  bool bad;
  int end;
  int ends;
  int closed;
  int pauses;
  bool pause_each; /* stop after every delivery, resume from a timer */
  uv_timer_t timer;
} reader_t;

static void reader_read(ms_stream_t *s, int status, const uint8_t *data,
                        size_t len, void *arg);
static void reader_resume(uv_timer_t *t) {
  reader_t *r = t->data;
  if (ms_stream_read_start(r->s, reader_read, r) != 0) r->bad = true;
}
static void reader_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((reader_t *)arg)->closed++;
}
static void reader_read(ms_stream_t *s, int status, const uint8_t *data,
                        size_t len, void *arg) {
  reader_t *r = arg;
  if (status == 0) {
    if (r->got + len > r->want_len || memcmp(data, r->want + r->got, len) != 0)
      r->bad = true;
    r->got += len;
    if (r->pause_each) {
      ms_stream_read_stop(s);
      r->pauses++;
      uv_timer_start(&r->timer, reader_resume, 0, 0);
    }
    return;
  }
  r->end = status;
  r->ends++;
  ms_stream_close(s, reader_closed, r);
}
static void reader_connected(ms_stream_t *s, int status, const char *reason,
                             void *arg) {
  reader_t *r = arg;
  (void)reason;
  if (status != 0) {
    r->end = status;
    r->ends++;
    r->closed++;
    return;
  }
  r->s = s;
  /* Start reading later: what came with the handshake must wait for us. */
  uv_timer_start(&r->timer, reader_resume, 50, 0);
}

static void early_over(const char *listen_addr, bool pause_each) {
  env_t e;
  env_init(&e, NULL, NULL);
  uint8_t *data = malloc(EARLY_LEN);
  randombytes_buf(data, EARLY_LEN);
  greeter_t g = {.data = data, .len = EARLY_LEN};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, greeter_accept, &g);
  if (!l) return;
  reader_t r;
  memset(&r, 0, sizeof r);
  r.want = data;
  r.want_len = EARLY_LEN;
  r.pause_each = pause_each;
  uv_timer_init(&e.loop, &r.timer);
  r.timer.data = &r;
  CHECK_INT(ms_connect(e.cli, ms_listener_address(l), reader_connected, &r, NULL), 0);
  WAIT(&e.loop, r.closed, 1, "late reader done");
  WAIT(&e.loop, g.closed, 1, "greeter done");
  CHECK_INT(r.ends, 1);
  CHECK_INT(r.end, MS_EOF);
  CHECK_INT(r.got, EARLY_LEN);
  CHECK(!r.bad);
  if (pause_each) CHECK(r.pauses > 3); /* at least 5 x 64 KiB reads */
  uv_close((uv_handle_t *)&r.timer, NULL);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  free(data);
}

static void test_early_and_pause(void) {
  early_over("net:127.0.0.1:0", false);
  early_over("net:127.0.0.1:0~shs", false);
  early_over("net:127.0.0.1:0", true);
  early_over("net:127.0.0.1:0~shs", true);
}

/* ======================================================================== */
/* 17. TCP connect timeout (a listener whose accept queue is full)           */
/* ======================================================================== */

static void test_connect_timeout(void) {
  ms_options_t co;
  tu_opts_default(&co);
  co.connect_timeout_ms = 300;
  env_t e;
  env_init(&e, NULL, &co);
  /* listen(fd, 0) and fill the queue: later SYNs are dropped, so a connect
   * to this port hangs until the dialer gives up. */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  CHECK_INT(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  CHECK_INT(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
  CHECK_INT(listen(lfd, 0), 0);
  int fillers[4], nf = 0;
  for (int i = 0; i < 4; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fd, (struct sockaddr *)&sa, sizeof sa);
    fillers[nf++] = fd;
  }
  usleep(100000);
  int port = ntohs(sa.sin_port);
  char a[256], hang[64];
  snprintf(hang, sizeof hang, "net:127.0.0.1:%d", port);

  tu_conn_t r;
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(e.cli, hang, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect timeout");
  CHECK_INT(r.status, MS_ETIMEDOUT);
  CHECK_HAS(r.reason, "timed out");
  CHECK_HAS(r.reason, hang + 4);
  CHECK(r.at - t0 >= 250 && r.at - t0 < 5000);

  /* a timeout falls back to the next alternative */
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (l) {
    snprintf(a, sizeof a, "%s;%s", hang, ms_listener_address(l));
    CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "fallback after timeout");
    CHECK_INT(r.status, 0);
    CHECK_HAS(r.reason, "");
    WAIT(&e.loop, acc.n, 1, "accept");
    ms_stream_t *v[2] = {r.s, acc.s[0]};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
    tu_close_listener(&e.loop, l, WAIT_MS);
  }

  /* cancel while the TCP connect hangs */
  ms_connect_t *req;
  CHECK_INT(tu_connect(e.cli, hang, &r, &req), 0);
  tu_sleep_loop(&e.loop, 50);
  CHECK_INT(r.done, 0);
  tu_cancel(&r, req);
  CHECK(!r.fired_in_call);
  WAIT(&e.loop, r.done, 1, "cancel a hanging connect");
  CHECK_INT(r.status, MS_ECANCELED);
  CHECK(r.at - t0 < 5000);

  for (int i = 0; i < nf; i++) close(fillers[i]);
  close(lfd);
  env_done(&e);
}

/* ======================================================================== */
/* 18. names: localhost (resolved, possibly to both ::1 and 127.0.0.1)      */
/* ======================================================================== */

static void test_localhost(void) {
  env_t e;
  ms_options_t o;
  tu_opts_default(&o);
  o.allow_loopback_noauth = true; /* loopback literals only: not a name */
  env_init(&e, &o, &o);
  tu_echo_t echo = {0};
  char why[256] = "";
  ms_listener_t *l = NULL;
  CHECK_INT(ms_listen(e.srv, "net:localhost:0~noauth", tu_echo_on_connection, &echo,
                      &l, why, sizeof why),
            MS_ENOAUTH_REMOTE);
  CHECK_HAS(why, "leaves this device");
  l = tu_listen_ok(e.srv, "net:localhost:0~shs", tu_echo_on_connection, &echo);
  if (!l) return;
  CHECK(strncmp(ms_listener_address(l), "net:localhost:", 14) == 0);
  CHECK_HAS(ms_listener_address(l), "~shs:");
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect localhost");
  CHECK_INT(r.status, 0);
  if (r.status) fprintf(stderr, "  localhost: %s\n", r.reason);
  if (r.s) {
    CHECK_HAS(ms_stream_address(r.s), "~shs:");
    CHECK(ms_stream_remote_key(r.s) &&
          memcmp(ms_stream_remote_key(r.s), ms_keys(e.srv)->public_key, 32) == 0);
    /* The host as the address wrote it, beside the resolved IP. */
    CHECK_STR((const char *)ms_stream_meta(r.s, "host", NULL), "localhost");
    ms_buf_t b = {"hi", 2};
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
    ms_stream_shutdown(r.s, NULL, NULL);
    collect_t c = {0};
    ms_stream_read_start(r.s, collect_read, &c);
    WAIT(&e.loop, c.closed, 1, "echo over localhost");
    CHECK_INT(c.len, 2);
    CHECK_INT(c.end, MS_EOF);
  }
  WAIT(&e.loop, echo.closed, 1, "echo close");
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 19. accepted streams outlive their listener                              */
/* ======================================================================== */

static void test_outlive_listener(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l =
      tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_echo_on_connection, &echo);
  if (!l) return;
  char addr[256];
  snprintf(addr, sizeof addr, "%s", ms_listener_address(l));
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, addr, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  WAIT(&e.loop, echo.accepted, 1, "accept");
  tu_close_listener(&e.loop, l, WAIT_MS);
  /* new connections are refused now */
  tu_conn_t r2;
  CHECK_INT(tu_connect(e.cli, addr, &r2, NULL), 0);
  WAIT(&e.loop, r2.done, 1, "connect to a closed listener");
  CHECK_INT(r2.status, UV_ECONNREFUSED);
  /* the accepted stream still works; its multiserver is not empty */
  CHECK_INT(ms_delete(e.srv), MS_EEXIST);
  if (r.s) {
    ms_buf_t b = {"still here", 10};
    CHECK_INT(ms_stream_write(r.s, &b, 1, NULL, NULL), 0);
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
    collect_t c = {0};
    CHECK_INT(ms_stream_read_start(r.s, collect_read, &c), 0);
    WAIT(&e.loop, c.closed, 1, "echo after the listener closed");
    CHECK_INT(c.len, 10);
    CHECK_INT(c.end, MS_EOF);
  }
  WAIT(&e.loop, echo.closed, 1, "server side closed");
  env_done(&e);
}

/* ======================================================================== */
/* 20. shs:KEY:SEED — the client uses the one-time key from the seed         */
/* ======================================================================== */

static void test_shs_seed(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~shs", tu_on_accept, &acc);
  if (!l) return;
  uint8_t seed[32];
  randombytes_buf(seed, sizeof seed);
  ms_keypair_t guest;
  CHECK_INT(ms_keypair_from_seed(&guest, seed), 0);
  char a[300], seed64[64];
  snprintf(seed64, sizeof seed64, "%s", tu_b64(seed));
  snprintf(a, sizeof a, "%s:%s", ms_listener_address(l), seed64);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect with a seed");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, 1, "accept");
  if (acc.n == 1) {
    const uint8_t *k = ms_stream_remote_key(acc.s[0]);
    CHECK(k && memcmp(k, guest.public_key, 32) == 0);
    CHECK(k && memcmp(k, ms_keys(e.cli)->public_key, 32) != 0);
  }
  ms_stream_t *v[2] = {r.s, acc.s[0]};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */

/* ======================================================================== */
/* 21. noauth on unix sockets: the peer's uid is checked; socket file mode   */
/* ======================================================================== */

typedef struct {
  int errors;
  int last;
  char reason[256];
} lerr_t;

static void on_lerr(const char *stack, int status, const char *reason, void *arg) {
  (void)stack;
  lerr_t *e = arg;
  e->errors++;
  e->last = status;
  snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
}

/* A child that becomes another user connects, writes, and reports what it
 * read back through its exit status: 0 = got the echo, 1 = EOF, 2 = error. */
static pid_t other_user_client(const char *path, bool other) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (other && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(2);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) _exit(2);
  if (write(fd, "hi", 2) != 2) _exit(2);
  char b[2];
  ssize_t n = read(fd, b, sizeof b);
  _exit(n == 2 ? 0 : (n == 0 || errno == ECONNRESET) ? 1 : 2);
}

static int wait_child(uv_loop_t *loop, pid_t pid) {
  int st = 0;
  for (int i = 0; i < 500; i++) {
    if (waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
    uv_run(loop, UV_RUN_NOWAIT);
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return 4;
}

static void test_noauth_uid(void) {
  char dir[64], a[128];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  /* The socket file is created with its mode: 0600 even with umask 0. */
  mode_t old = umask(0);
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  snprintf(a, sizeof a, "unix:%s/na.sock~noauth", dir);
  ms_listener_t *l = tu_listen_ok(e.srv, a, tu_echo_on_connection, &echo);
  umask(old);
  if (!l) return;
  char path[128];
  snprintf(path, sizeof path, "%s/na.sock", dir);
  struct stat st;
  CHECK_INT(stat(path, &st), 0);
  CHECK_INT(st.st_mode & 0777, 0600);
  lerr_t le = {0};
  ms_listener_on_error(l, on_lerr, &le);
  /* Same user: accepted and echoed. */
  CHECK_INT(wait_child(&e.loop, other_user_client(path, false)), 0);
  CHECK_INT(echo.accepted, 1);
  if (geteuid() == 0) {
    chmod(dir, 0755);
    chmod(path, 0666); /* let the other user reach the socket at all */
    pid_t pid = other_user_client(path, true);
    CHECK_INT(wait_child(&e.loop, pid), 1); /* hung up on, nothing echoed */
    WAIT(&e.loop, le.errors, 1, "refusal reported");
    CHECK_INT(le.last, MS_EUNAUTHORIZED);
    CHECK_HAS(le.reason, "peer uid 65534");
  } else {
    fprintf(stderr, "  (not root: the other-uid case is skipped)\n");
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  /* noauth.uids=any lets every local user in. */
  if (geteuid() == 0) {
    ms_popts_t *po;
    CHECK_INT(ms_popts_new(&po), 0);
    CHECK_INT(ms_popts_set(po, "noauth", "uids", "any"), 0);
    char why[256] = "";
    ms_listener_t *l2 = NULL;
    snprintf(a, sizeof a, "unix:%s/any.sock~noauth", dir);
    CHECK_INT(ms_listen_with(e.srv, a, po, tu_echo_on_connection, &echo, &l2, why, sizeof why), 0);
    ms_popts_free(po); /* copied by the listen */
    snprintf(path, sizeof path, "%s/any.sock", dir);
    chmod(path, 0666);
    pid_t pid = other_user_client(path, true);
    CHECK_INT(wait_child(&e.loop, pid), 0);
    if (l2) tu_close_listener(&e.loop, l2, WAIT_MS);
  }
  env_done(&e);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* 22. ms_stream_wrap: shs over a stream accepted on a plain stack           */
/* ======================================================================== */

typedef struct {
  ms_stream_t *top;
  int status;
  int done;
  char reason[256];
} wrapped_t;

static void on_wrapped(ms_stream_t *s, int status, const char *reason, void *arg) {
  wrapped_t *w = arg;
  w->top = s;
  w->status = status;
  snprintf(w->reason, sizeof w->reason, "%s", reason ? reason : "");
  w->done++;
}

static wrapped_t wrap_result;

static void wrap_on_connection(ms_stream_t *s, void *arg) {
  ms_t *ms = arg;
  char why[256] = "";
  int rc = ms_stream_wrap(ms, s, "shs", MS_ROLE_SERVER, NULL, on_wrapped, &wrap_result,
                          NULL, why, sizeof why);
  CHECK_INT(rc, 0);
  if (rc != 0) ms_stream_close(s, NULL, NULL);
}

static void test_stream_wrap(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  memset(&wrap_result, 0, sizeof wrap_result);
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0", wrap_on_connection, e.srv);
  if (!l) return;
  char key[45], a[256];
  ms_key_to_base64(ms_keys(e.srv)->public_key, key, sizeof key);
  snprintf(a, sizeof a, "%s~shs:%s", ms_listener_address(l), key);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "client over the wrapped stream");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, wrap_result.done, 1, "server-side wrap");
  CHECK_INT(wrap_result.status, 0);
  if (wrap_result.top) {
    CHECK(ms_stream_remote_key(wrap_result.top) &&
          memcmp(ms_stream_remote_key(wrap_result.top), ms_keys(e.cli)->public_key, 32) == 0);
    CHECK_HAS(ms_stream_address(wrap_result.top), "~shs:");
    ms_stream_close(wrap_result.top, NULL, NULL);
  }
  if (r.s) ms_stream_close(r.s, NULL, NULL);
  /* Errors before anything starts leave the stream with the caller. */
  char why[256] = "";
  ms_stream_t *dummy = NULL;
  CHECK_INT(ms_stream_wrap(e.srv, (ms_stream_t *)&dummy, "net:1.2.3.4:5", MS_ROLE_CLIENT, NULL,
                           on_wrapped, &wrap_result, NULL, why, sizeof why),
            MS_ESTACK);
  CHECK_HAS(why, "transport");
  CHECK_INT(ms_stream_wrap(e.srv, (ms_stream_t *)&dummy, "nosuch", MS_ROLE_CLIENT, NULL,
                           on_wrapped, &wrap_result, NULL, why, sizeof why),
            MS_EPROTO_UNKNOWN);
  CHECK_INT(ms_stream_wrap(e.srv, (ms_stream_t *)&dummy, "noauth", MS_ROLE_CLIENT, NULL,
                           on_wrapped, &wrap_result, NULL, why, sizeof why),
            MS_ENOAUTH_REMOTE);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* 23. ranked, staggered dialing                                             */
/* ======================================================================== */

/* A TCP port that answers no SYN: a listener with a full accept queue that
 * never accepts (the kernel then drops new SYNs). fds[0] is the listener,
 * fds[1..2] the connections that fill its queue. */
static int blackhole(int fds[3]) {
  fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof sa;
  if (bind(fds[0], (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fds[0], 0) != 0 ||
      getsockname(fds[0], (struct sockaddr *)&sa, &n) != 0)
    return -1;
  for (int i = 1; i < 3; i++) {
    fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    connect(fds[i], (struct sockaddr *)&sa, sizeof sa);
  }
  usleep(50000);
  return ntohs(sa.sin_port);
}

static void test_staggered(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  char dir[64], a[1024], key[45];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(a, sizeof a, "net:127.0.0.1:0~shs;unix:%s/rank.sock~shs", dir);
  ms_listener_t *l = tu_listen_ok(e.srv, a, tu_on_accept, &acc);
  if (!l) return;
  ms_key_to_base64(ms_keys(e.srv)->public_key, key, sizeof key);
  char net_alt[256], unix_alt[256];
  const char *adv = ms_listener_address(l);
  const char *semi = strchr(adv, ';');
  snprintf(net_alt, sizeof net_alt, "%.*s", (int)(semi - adv), adv);
  snprintf(unix_alt, sizeof unix_alt, "%s", semi + 1);
  /* Ranking: the unix (device) alternative goes first although written last. */
  snprintf(a, sizeof a, "%s;%s", net_alt, unix_alt);
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "ranked connect");
  CHECK_INT(r.status, 0);
  if (r.s) CHECK(strncmp(ms_stream_address(r.s), "unix:", 5) == 0);
  CHECK(r.s && ms_stream_meta(r.s, "time.total_ms", NULL) != NULL);
  CHECK(r.s && ms_stream_meta(r.s, "time.connect_ms", NULL) != NULL);
  CHECK(r.s && ms_stream_meta(r.s, "time.shs_ms", NULL) != NULL);
  if (r.s) {
    ms_buf_t hi = {"hello", 5};
    CHECK_INT(ms_stream_write(r.s, &hi, 1, NULL, NULL), 0);
    tu_sleep_loop(&e.loop, 50);
    uint64_t in = 1, out = 0;
    ms_stream_bytes(r.s, &in, &out);
    CHECK_INT(in, 0);
    CHECK_INT(out, 5);
  }
  WAIT(&e.loop, acc.n, 1, "accepted");
  ms_stream_t *v[2] = {r.s, acc.s[0]};
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  acc.n = 0;
  /* A black-holed first alternative costs one stagger, not the connect
   * timeout (5 s here): the second wins, the first is canceled. */
  int fds[3] = {-1, -1, -1};
  int bh = blackhole(fds);
  CHECK(bh > 0);
  snprintf(a, sizeof a, "net:127.0.0.1:%d~shs:%s;%s;%s", bh, key, net_alt, net_alt);
  uint64_t t0 = tu_now_ms();
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "staggered connect");
  uint64_t took = r.at - t0;
  fprintf(stderr, "  black-holed first alternative: connected through the second in %llu ms\n",
          (unsigned long long)took);
  CHECK_INT(r.status, 0);
  CHECK(took >= 200 && took < 1500);
  WAIT(&e.loop, acc.n, 1, "accepted once");
  tu_sleep_loop(&e.loop, 400); /* the third was never started or was canceled */
  CHECK_INT(acc.n, 1);
  ms_stream_t *w[2] = {r.s, acc.s[0]};
  tu_close_streams(&e.loop, w, 2, WAIT_MS);
  /* connect.stagger_ms=0: strictly one after another (the timeout applies). */
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "connect", "stagger_ms", "0"), 0);
  CHECK_INT(ms_popts_set(po, "net", "connect_timeout_ms", "600"), 0);
  snprintf(a, sizeof a, "net:127.0.0.1:%d~shs:%s;%s", bh, key, net_alt);
  t0 = tu_now_ms();
  r.done = 0;
  CHECK_INT(ms_connect_with(e.cli, a, po, tu_on_conn, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "sequential connect");
  CHECK_INT(r.status, 0);
  CHECK(r.at - t0 >= 550);
  ms_popts_free(po);
  WAIT(&e.loop, acc.n, 2, "accepted after the timeout");
  ms_stream_t *x[2] = {r.s, acc.s[1]};
  tu_close_streams(&e.loop, x, 2, WAIT_MS);
  /* A misspelt connect option is an error through the callback. */
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "connect", "staggr_ms", "1"), 0);
  r.done = 0;
  CHECK_INT(ms_connect_with(e.cli, net_alt, po, tu_on_conn, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "bad connect option");
  CHECK_INT(r.status, MS_EINVAL);
  CHECK_HAS(r.reason, "stagger_ms");
  ms_popts_free(po);
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  tu_rmtree(dir);
}

/* ======================================================================== */
/* 24. addresses per scope                                                   */
/* ======================================================================== */

#include <ifaddrs.h>

/* This machine's IPv4 addresses of a scope, as the test sees them. */
static int count_if_scope(int scope, char *first, size_t len) {
  struct ifaddrs *ifa, *p;
  int n = 0;
  if (getifaddrs(&ifa) != 0) return -1;
  for (p = ifa; p; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &((struct sockaddr_in *)p->ifa_addr)->sin_addr, ip, sizeof ip);
    const unsigned char *b = (const unsigned char *)&((struct sockaddr_in *)p->ifa_addr)->sin_addr;
    int sc = b[0] == 127 ? MS_SCOPE_DEVICE
             : (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
                (b[0] == 169 && b[1] == 254))
                 ? MS_SCOPE_LOCAL
                 : MS_SCOPE_PUBLIC;
    if (sc != scope) continue;
    if (n++ == 0 && first) snprintf(first, len, "%s", ip);
  }
  freeifaddrs(ifa);
  return n;
}

static void test_scopes(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  char dir[64], a[512], why[256] = "";
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  snprintf(a, sizeof a, "net:0.0.0.0:0~shs;unix:%s/sc.sock~shs;net:127.0.0.1:0", dir);
  ms_listener_t *l = tu_listen_ok(e.srv, a, tu_on_accept, &acc);
  if (!l) return;
  char *dev = ms_listener_addresses(l, MS_SCOPE_DEVICE);
  char *loc = ms_listener_addresses(l, MS_SCOPE_LOCAL);
  char *pub = ms_listener_addresses(l, MS_SCOPE_PUBLIC);
  CHECK(dev && loc && pub);
  if (dev && loc && pub) {
    fprintf(stderr, "  device: %s\n  local: %s\n  public: %s\n", dev, loc, pub);
    CHECK_HAS(dev, "net:127.0.0.1:");
    CHECK_HAS(dev, "unix:");
    CHECK(strstr(dev, "0.0.0.0") == NULL && strstr(loc, "0.0.0.0") == NULL &&
          strstr(pub, "0.0.0.0") == NULL);
    CHECK(strstr(loc, "unix:") == NULL && strstr(pub, "unix:") == NULL);
    /* Each address carries its transforms with the server's key, and works. */
    char key[45];
    ms_key_to_base64(ms_keys(e.srv)->public_key, key, sizeof key);
    CHECK_HAS(dev, key);
    char first[64] = "";
    int nloc = count_if_scope(MS_SCOPE_LOCAL, first, sizeof first);
    if (nloc > 0) CHECK_HAS(loc, first);
    else CHECK(strstr(loc, "net:") == NULL);
    int npub = count_if_scope(MS_SCOPE_PUBLIC, first, sizeof first);
    if (npub > 0) CHECK_HAS(pub, first);
    tu_conn_t r;
    CHECK_INT(tu_connect(e.cli, dev, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "connect to the device addresses");
    CHECK_INT(r.status, 0);
    WAIT(&e.loop, acc.n, 1, "accepted");
    ms_stream_t *v[2] = {r.s, acc.s[0]};
    tu_close_streams(&e.loop, v, 2, WAIT_MS);
  }
  ms_free(dev);
  ms_free(loc);
  ms_free(pub);
  CHECK(ms_listener_addresses(l, 0) == NULL);
  tu_close_listener(&e.loop, l, WAIT_MS);
  /* listen.scopes and listen.external. */
  ms_popts_t *po;
  CHECK_INT(ms_popts_new(&po), 0);
  CHECK_INT(ms_popts_set(po, "listen", "scopes", "public"), 0);
  CHECK_INT(ms_popts_set(po, "listen", "external", "peer.example.org"), 0);
  ms_listener_t *l2 = NULL;
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0~shs", po, tu_on_accept, &acc, &l2, why,
                           sizeof why), 0);
  if (l2) {
    char *p2 = ms_listener_addresses(l2, MS_SCOPE_PUBLIC);
    char *d2 = ms_listener_addresses(l2, MS_SCOPE_DEVICE);
    CHECK(p2 && strncmp(p2, "net:peer.example.org:", 21) == 0);
    CHECK(p2 && strstr(p2, "~shs:") != NULL);
    CHECK_STR(d2, "");
    ms_free(p2);
    ms_free(d2);
    tu_close_listener(&e.loop, l2, WAIT_MS);
  }
  CHECK_INT(ms_popts_set(po, "listen", "scope", "x"), 0);
  CHECK_INT(ms_listen_with(e.srv, "net:127.0.0.1:0", po, tu_on_accept, &acc, &l2, why, sizeof why),
            MS_EINVAL);
  ms_popts_free(po);
  env_done(&e);
  tu_rmtree(dir);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"three_stacks", test_three_stacks},
      {"concurrent", test_concurrent},
      {"bulk", test_bulk},
      {"half_close", test_half_close},
      {"refused", test_refused},
      {"bad_addresses", test_bad_addresses},
      {"fallback", test_fallback},
      {"cancel", test_cancel},
      {"shs_failures", test_shs_failures},
      {"timeouts", test_timeouts},
      {"unix_files", test_unix_files},
      {"close_semantics", test_close_semantics},
      {"run_default", test_run_default},
      {"thread", test_thread},
      {"write_edges", test_write_edges},
      {"early_and_pause", test_early_and_pause},
      {"connect_timeout", test_connect_timeout},
      {"localhost", test_localhost},
      {"outlive_listener", test_outlive_listener},
      {"shs_seed", test_shs_seed},
      {"noauth_uid", test_noauth_uid},
      {"stream_wrap", test_stream_wrap},
      {"staggered", test_staggered},
      {"scopes", test_scopes},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("multiserver");
}
