/* The noise transform over real sockets: 16 MiB echo with backpressure over
 * net and unix, half-close and goodbye, wrong server key, wrong app key,
 * refusal by the authorize hook and the accepted value, handshake timeouts
 * (option and per-stack), shs and noise on one listener, noise over shs and
 * shs over noise, fallback over a dead alternative, data that comes with
 * the handshake and a reader that pauses, many writes in one loop turn
 * completing in order, and address validation. Every wait is bounded. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "multiserver_plugin.h"
#include "mstest.h"
#include "util.h"

#define WAIT_MS 20000
#define BULK (16u * 1024 * 1024)
#define MS_NOISE_MAX_PAYLOAD_TEST 65519 /* spec: largest transport payload */

#define WAIT(loop, counter, target, what) \
  CHECK(tu_wait((loop), &(counter), (target), WAIT_MS, (what)))

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

static void env_done(env_t *e) {
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(ms_delete(e->srv), 0);
  CHECK_INT(ms_delete(e->cli), 0);
  CHECK(tu_drain(&e->loop, 10000));
  CHECK_INT(uv_loop_close(&e->loop), 0);
}

/* Port of a printed net alternative ("net:127.0.0.1:PORT~..."). */
static int port_of(const char *alt) { return atoi(alt + strlen("net:127.0.0.1:")); }

/* Connect to addr (listener recording into acc) and expect success, the
 * client stream's address to contain want (if not NULL), both identities
 * set; then close both ends. */
static void expect_ok(env_t *e, const char *addr, tu_accept_t *acc,
                      const char *want, const char *what) {
  tu_conn_t r;
  int n = acc->n;
  CHECK_INT(tu_connect(e->cli, addr, &r, NULL), 0);
  WAIT(&e->loop, r.done, 1, what);
  CHECK_INT(r.status, 0);
  if (r.status) fprintf(stderr, "  %s: %s\n", what, r.reason);
  if (want && r.s) CHECK_HAS(ms_stream_address(r.s), want);
  WAIT(&e->loop, acc->n, n + 1, what);
  if (r.s)
    CHECK(ms_stream_remote_key(r.s) &&
          memcmp(ms_stream_remote_key(r.s), ms_keys(e->srv)->public_key, 32) == 0);
  if (acc->n > n)
    CHECK(ms_stream_remote_key(acc->s[n]) &&
          memcmp(ms_stream_remote_key(acc->s[n]), ms_keys(e->cli)->public_key, 32) == 0);
  ms_stream_t *v[2] = {r.s, acc->n > n ? acc->s[n] : NULL};
  tu_close_streams(&e->loop, v, 2, WAIT_MS);
}

/* ======================================================================== */
/* bulk echo, half-close                                                    */
/* ======================================================================== */

static uint8_t *bulk_data;

static void bulk_over(const char *listen_addr) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, listen_addr, tu_echo_on_connection, &echo);
  if (l == NULL) return;
  CHECK_HAS(ms_listener_address(l), "~noise:");
  const tu_bulk_cfg_t cfg = {.data = bulk_data,
                             .total = BULK,
                             .queue_limit = 1024 * 1024,
                             .timeout_ms = 120000,
                             .close_timeout_ms = WAIT_MS};
  tu_bulk_t b;
  tu_bulk_echo(&e.loop, e.cli, ms_listener_address(l), &cfg, &echo, &b);
  CHECK(b.has_key && memcmp(b.remote_key, ms_keys(e.srv)->public_key, 32) == 0);
  CHECK_HAS(b.address, "~noise:");
  CHECK_HAS(echo.last_address, tu_b64(ms_keys(e.cli)->public_key));
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

static void test_bulk(void) {
  bulk_data = malloc(BULK);
  randombytes_buf(bulk_data, BULK);
  char dir[64], a[128];
  snprintf(dir, sizeof dir, "%s", tu_mkdtemp());
  bulk_over("net:127.0.0.1:0~noise");
  snprintf(a, sizeof a, "unix:%s/bulk-noise.sock~noise", dir);
  bulk_over(a);
  /* stacked: noise over shs, shs over noise */
  bulk_over("net:127.0.0.1:0~shs~noise");
  bulk_over("net:127.0.0.1:0~noise~shs");
  tu_rmtree(dir);
  free(bulk_data);
  bulk_data = NULL;
}

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
  half_close_over("net:127.0.0.1:0~noise", 0, MS_EOF);
  /* closed without the goodbye: the reader can tell */
  half_close_over("net:127.0.0.1:0~noise", 1, MS_EHANGUP);
  half_close_over("net:127.0.0.1:0~shs~noise", 0, MS_EOF);
  half_close_over("net:127.0.0.1:0~noise~shs", 0, MS_EOF);
}

/* ======================================================================== */
/* failures: wrong key, wrong app key, authorize                            */
/* ======================================================================== */

enum { AUTH_ACCEPT, AUTH_REJECT, AUTH_NEVER };

typedef struct {
  int mode;
  int calls;
  void *value;
  uint8_t key[32];
  ms_authorize_t *held;
  int frees;
  void *last_freed;
} auth_t;

static void auth_free_cb(void *value, void *arg) {
  auth_t *a = arg;
  a->frees++;
  a->last_freed = value;
}

static void authorize(const uint8_t remote_key[32], ms_authorize_t *req, void *arg) {
  auth_t *a = arg;
  a->calls++;
  memcpy(a->key, remote_key, 32);
  if (a->mode == AUTH_ACCEPT)
    ms_authorize_done(req, true, a->value);
  else if (a->mode == AUTH_REJECT)
    ms_authorize_done(req, false, NULL);
  else
    a->held = req;
}

static void test_failures(void) {
  auth_t au = {.mode = AUTH_ACCEPT};
  ms_options_t so;
  tu_opts_default(&so);
  so.authorize = authorize;
  so.authorize_arg = &au;
  so.authorize_free = auth_free_cb;
  env_t e;
  env_init(&e, &so, NULL);
  tu_lerr_t lerr = {0};
  tu_accept_t acc = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noise", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);
  const char *good = ms_listener_address(l);
  char want[128];
  snprintf(want, sizeof want, "~noise:%s", tu_b64(ms_keys(e.srv)->public_key));
  CHECK_HAS(good, want);
  tu_conn_t r;

  /* wrong server key */
  ms_keypair_t other;
  ms_keypair_generate(&other);
  char bad[256];
  snprintf(bad, sizeof bad, "net:127.0.0.1:%d~noise:%s", port_of(good),
           tu_b64(other.public_key));
  CHECK_INT(tu_connect(e.cli, bad, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "wrong server key");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "server hung up after msg1: wrong server key, wrong network, or not authorized");
  WAIT(&e.loop, lerr.count, 1, "server reports the wrong key");
  CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
  CHECK_HAS(lerr.last_reason, "msg1");
  CHECK_STR(lerr.last_stack, good);
  CHECK_INT(au.calls, 0);
  expect_ok(&e, good, &acc, want, "good connection after a wrong key");
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
    CHECK_HAS(r.reason, "wrong network");
    WAIT(&e.loop, lerr.count, 2, "server reports the wrong app key");
    CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
    tu_sleep_loop(&e.loop, 50);
    CHECK_INT(ms_delete(other_net), 0);
    expect_ok(&e, good, &acc, want, "good connection after a wrong app key");
  }

  /* the authorize hook refuses: no msg2, the client sees the hang-up */
  au.mode = AUTH_REJECT;
  au.calls = 0;
  CHECK_INT(tu_connect(e.cli, good, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "refused client");
  CHECK_INT(r.status, MS_EHANDSHAKE);
  CHECK_HAS(r.reason, "not authorized");
  WAIT(&e.loop, lerr.count, 3, "server reports the refusal");
  CHECK_INT(lerr.last_status, MS_EUNAUTHORIZED);
  CHECK_INT(au.calls, 1);
  CHECK(memcmp(au.key, ms_keys(e.cli)->public_key, 32) == 0);

  /* the hook accepts with a value: it reaches ms_stream_auth */
  static int token = 42;
  au.mode = AUTH_ACCEPT;
  au.value = &token;
  int n = acc.n;
  CHECK_INT(tu_connect(e.cli, good, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "accepted client");
  CHECK_INT(r.status, 0);
  WAIT(&e.loop, acc.n, n + 1, "accept");
  if (acc.n > n) {
    CHECK(ms_stream_auth(acc.s[n]) == &token);
    CHECK(ms_stream_is_server(acc.s[n]));
  }
  if (r.s) {
    CHECK(ms_stream_auth(r.s) == NULL);
    CHECK(!ms_stream_is_server(r.s));
    CHECK_HAS(ms_stream_address(r.s), want);
  }
  ms_stream_t *v[2] = {r.s, acc.n > n ? acc.s[n] : NULL};
  CHECK_INT(au.frees, 0);
  tu_close_streams(&e.loop, v, 2, WAIT_MS);
  CHECK_INT(au.frees, 1);
  CHECK(au.last_freed == &token);
  CHECK_INT(lerr.count, 3);

  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* handshake timeouts                                                       */
/* ======================================================================== */

typedef struct {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t wr;
  int connected, ended, closed;
  const char *say; /* written once connected (may be NULL) */
  size_t say_len;
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
    uv_read_stop(s);
  }
}
static void raw_connected(uv_connect_t *c, int status) {
  raw_t *r = c->data;
  r->connected = status == 0 ? 1 : status;
  if (status != 0) return;
  uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
  if (r->say) {
    uv_buf_t b = uv_buf_init((char *)r->say, (unsigned)r->say_len);
    uv_write(&r->wr, (uv_stream_t *)&r->tcp, &b, 1, NULL);
  }
}
static void raw_closed(uv_handle_t *h) { ((raw_t *)h->data)->closed++; }

/* A raw TCP client to port that sends say (or nothing), until the server
 * hangs up. */
static void raw_run(env_t *e, int port, raw_t *raw, const char *say, size_t say_len) {
  memset(raw, 0, sizeof *raw);
  raw->say = say;
  raw->say_len = say_len;
  uv_tcp_init(&e->loop, &raw->tcp);
  raw->tcp.data = raw;
  raw->conn.data = raw;
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", port, &sa);
  CHECK_INT(uv_tcp_connect(&raw->conn, &raw->tcp, (struct sockaddr *)&sa, raw_connected), 0);
}

static void raw_done(env_t *e, raw_t *raw) {
  WAIT(&e->loop, raw->ended, 1, "server hangs up on the raw client");
  uv_close((uv_handle_t *)&raw->tcp, raw_closed);
  WAIT(&e->loop, raw->closed, 1, "raw close");
}

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
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noise", tu_on_accept, &acc);
  if (l == NULL) return;
  ms_listener_on_error(l, tu_on_listen_error, &lerr);

  /* server side: a client that never sends msg1 */
  raw_t raw;
  uint64_t t0 = tu_now_ms();
  raw_run(&e, port_of(ms_listener_address(l)), &raw, NULL, 0);
  WAIT(&e.loop, lerr.count, 1, "server handshake timeout");
  uint64_t dt = tu_now_ms() - t0;
  CHECK_INT(lerr.last_status, MS_ETIMEDOUT);
  CHECK_HAS(lerr.last_reason, "timed out");
  CHECK_HAS(lerr.last_reason, "msg1");
  CHECK(dt >= 250 && dt < 5000);
  raw_done(&e, &raw);

  /* a msg1 whose prefix is wrong fails at once, naming the stage */
  static const char junk[] = "\x00\x10garbage";
  t0 = tu_now_ms();
  raw_run(&e, port_of(ms_listener_address(l)), &raw, junk, sizeof junk - 1);
  WAIT(&e.loop, lerr.count, 2, "bad msg1 prefix");
  CHECK_INT(lerr.last_status, MS_EHANDSHAKE);
  CHECK_HAS(lerr.last_reason, "msg1");
  CHECK(tu_now_ms() - t0 < 250);
  raw_done(&e, &raw);
  CHECK_INT(acc.n, 0);

  /* client side: a plain TCP server that accepts and never answers */
  ms_listener_t *plain = tu_listen_ok(e.srv, "net:127.0.0.1:0", tu_on_accept, &acc);
  if (plain) {
    char a[256];
    snprintf(a, sizeof a, "%s~noise:%s", ms_listener_address(plain),
             tu_b64(ms_keys(e.srv)->public_key));
    tu_conn_t r;
    t0 = tu_now_ms();
    CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "client handshake timeout");
    dt = r.at - t0;
    CHECK_INT(r.status, MS_ETIMEDOUT);
    CHECK_HAS(r.reason, "timed out");
    CHECK_HAS(r.reason, "msg2");
    CHECK(dt >= 250 && dt < 5000);

    /* the per-stack option wins over ms_options_t */
    ms_popts_t *po = NULL;
    CHECK_INT(ms_popts_new(&po), 0);
    CHECK_INT(ms_popts_set(po, "noise", "handshake_timeout_ms", "1200"), 0);
    memset(&r, 0, sizeof r);
    t0 = tu_now_ms();
    CHECK_INT(ms_connect_with(e.cli, a, po, tu_on_conn, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "client handshake timeout (per-stack option)");
    dt = r.at - t0;
    CHECK_INT(r.status, MS_ETIMEDOUT);
    CHECK(dt >= 1100 && dt < 6000);

    /* a misspelt key is refused, naming the known one */
    ms_popts_t *po2 = NULL;
    CHECK_INT(ms_popts_new(&po2), 0);
    CHECK_INT(ms_popts_set(po2, "noise", "handshake_timeout", "1200"), 0);
    memset(&r, 0, sizeof r);
    CHECK_INT(ms_connect_with(e.cli, a, po2, tu_on_conn, &r, NULL), 0);
    WAIT(&e.loop, r.done, 1, "misspelt option");
    CHECK_INT(r.status, MS_EINVAL);
    CHECK_HAS(r.reason, "handshake_timeout_ms");
    ms_popts_free(po);
    ms_popts_free(po2);

    WAIT(&e.loop, acc.n, 2, "plain accepts");
    tu_close_streams(&e.loop, acc.s, acc.n, WAIT_MS);
    tu_close_listener(&e.loop, plain, WAIT_MS);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* shs and noise on one listener; fallback                                  */
/* ======================================================================== */

static void test_shs_and_noise(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_accept_t acc = {0};
  ms_listener_t *l =
      tu_listen_ok(e.srv, "net:127.0.0.1:0~shs;net:127.0.0.1:0~noise", tu_on_accept, &acc);
  if (l == NULL) return;
  char **alts;
  size_t n = tu_split(ms_listener_address(l), &alts);
  CHECK_INT(n, 2);
  if (n == 2) {
    const char *key = tu_b64(ms_keys(e.srv)->public_key);
    char w0[128], w1[128];
    snprintf(w0, sizeof w0, "~shs:%s", key);
    snprintf(w1, sizeof w1, "~noise:%s", key);
    CHECK_HAS(alts[0], w0);
    CHECK_HAS(alts[1], w1);
    expect_ok(&e, alts[0], &acc, "~shs:", "over shs");
    expect_ok(&e, alts[1], &acc, "~noise:", "over noise");
    /* fallback: a dead noise alternative first */
    char a[512];
    snprintf(a, sizeof a, "net:127.0.0.1:%d~noise:%s;%s", tu_closed_port(),
             tu_b64(ms_keys(e.srv)->public_key), alts[1]);
    expect_ok(&e, a, &acc, "~noise:", "fallback over a closed port");
    /* the whole advertised address: the first alternative wins */
    expect_ok(&e, ms_listener_address(l), &acc, "~shs:", "advertised address");
  }
  tu_split_free(alts, n);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* data with the handshake, a pausing reader                                */
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
static void greeter_accept(ms_stream_t *s, void *arg) {
  greeter_t *g = arg;
  /* in uneven pieces, all in this turn: one flush */
  size_t off = 0, piece = 1;
  while (off < g->len) {
    size_t k = g->len - off < piece ? g->len - off : piece;
    ms_buf_t b = {g->data + off, k};
    CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
    off += k;
    piece = piece * 3 + 1;
  }
  ms_stream_shutdown(s, greeter_shut, g);
}

typedef struct {
  ms_stream_t *s;
  const uint8_t *want;
  size_t want_len, got;
  bool bad;
  int end, ends, closed, pauses;
  bool pause_each;
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
    if (len == 0 || len > MS_NOISE_MAX_PAYLOAD_TEST) r->bad = true;
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
  if (pause_each) CHECK(r.pauses > 3);
  uv_close((uv_handle_t *)&r.timer, NULL);
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
  free(data);
}

static void test_early_and_pause(void) {
  early_over("net:127.0.0.1:0~noise", false);
  early_over("net:127.0.0.1:0~noise", true);
  early_over("net:127.0.0.1:0~shs~noise", true);
}

/* ======================================================================== */
/* many writes in one turn: in order, each completing                       */
/* ======================================================================== */

#define NWRITES 1000

typedef struct {
  int done;
  int order_bad;
  int errors;
} wrec_t;

typedef struct {
  wrec_t *rec;
  int idx;
} wone_t;

static void on_one_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  wone_t *w = arg;
  if (status != 0) w->rec->errors++;
  if (w->idx != w->rec->done) w->rec->order_bad++;
  w->rec->done++;
}

static void test_write_order(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noise", tu_echo_on_connection, &echo);
  if (!l) return;
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, ms_listener_address(l), &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect");
  CHECK_INT(r.status, 0);
  if (r.s) {
    static wone_t ws[NWRITES];
    static uint8_t bytes[NWRITES * 3];
    wrec_t rec = {0};
    size_t total = 0;
    for (int i = 0; i < NWRITES; i++) {
      ws[i].rec = &rec;
      ws[i].idx = i;
      size_t k = (size_t)(i % 4); /* 0..3 bytes: empty writes too */
      for (size_t j = 0; j < k; j++) bytes[total + j] = (uint8_t)(i + j);
      ms_buf_t b = {bytes + total, k};
      CHECK_INT(ms_stream_write(r.s, &b, 1, on_one_written, &ws[i]), 0);
      total += k;
    }
    CHECK_INT(rec.done, 0); /* never inside ms_stream_write */
    WAIT(&e.loop, rec.done, NWRITES, "all writes complete");
    CHECK_INT(rec.order_bad, 0);
    CHECK_INT(rec.errors, 0);
    /* and a 1 MiB + 1 write in one piece */
    static uint8_t big[1024 * 1024 + 1];
    randombytes_buf(big, sizeof big);
    ms_buf_t bb[2] = {{big, 70000}, {big + 70000, sizeof big - 70000}};
    wone_t w1 = {.rec = &rec, .idx = NWRITES};
    CHECK_INT(ms_stream_write(r.s, bb, 2, on_one_written, &w1), 0);
    WAIT(&e.loop, rec.done, NWRITES + 1, "big write completes");
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
    WAIT(&e.loop, echo.closed, 1, "echo done");
    CHECK_INT(echo.bytes, total + sizeof big);
    CHECK_INT(echo.eof, 1);
    ms_stream_t *v[1] = {r.s};
    tu_close_streams(&e.loop, v, 1, WAIT_MS);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}


/* ======================================================================== */
/* the cork: the writes of one turn leave as one lower write                */
/* ======================================================================== */

/* `count`: a pass-through transform (registered on the client only) that
 * counts the writes the layer above hands it. */
typedef struct {
  ms_stream_t *lower, *upper;
} cnt_t;
static int cnt_writes;

static void cnt_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  ms_write_req_done(arg, status);
}
static int cnt_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned n) {
  cnt_t *c = ms_stream_impl(s);
  cnt_writes++;
  return ms_stream_write(c->lower, bufs, n, cnt_written, req);
}
static void cnt_read(ms_stream_t *s, int status, const uint8_t *data, size_t len,
                     void *arg) {
  (void)s;
  cnt_t *c = arg;
  ms_stream_emit_read(c->upper, status, (uint8_t *)data, len);
}
static int cnt_read_start(ms_stream_t *s) {
  cnt_t *c = ms_stream_impl(s);
  return ms_stream_read_start(c->lower, cnt_read, c);
}
static int cnt_read_stop(ms_stream_t *s) {
  cnt_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}
static void cnt_shut(ms_stream_t *s, int status, void *arg) {
  (void)s;
  ms_stream_shutdown_done(((cnt_t *)arg)->upper, status);
}
static int cnt_shutdown(ms_stream_t *s) {
  cnt_t *c = ms_stream_impl(s);
  return ms_stream_shutdown(c->lower, cnt_shut, c);
}
static void cnt_closed(ms_stream_t *s, void *arg) {
  (void)s;
  cnt_t *c = arg;
  ms_stream_t *up = c->upper;
  free(c);
  ms_stream_closed(up);
}
static void cnt_close(ms_stream_t *s) {
  cnt_t *c = ms_stream_impl(s);
  ms_stream_close(c->lower, cnt_closed, c);
}
static const ms_stream_ops_t cnt_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = cnt_write,
    .read_start = cnt_read_start,
    .read_stop = cnt_read_stop,
    .shutdown = cnt_shutdown,
    .close = cnt_close,
};
static int cnt_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                    int role, void *pdata) {
  (void)sec;
  (void)role;
  (void)pdata;
  cnt_t *c = calloc(1, sizeof *c);
  if (c == NULL) return MS_ENOMEM;
  char addr[512];
  snprintf(addr, sizeof addr, "%s~count", ms_stream_address(lower));
  c->lower = lower;
  c->upper = ms_stream_new(ms_pwrap_ms(pw), &cnt_ops, c, addr);
  if (c->upper == NULL) {
    free(c);
    return MS_ENOMEM;
  }
  ms_pwrap_done(pw, 0, c->upper, NULL);
  return 0;
}
static const ms_protocol_t cnt_proto = {
    .size = sizeof(ms_protocol_t),
    .name = "count",
    .kind = MS_PROTO_TRANSFORM,
    .wrap = cnt_wrap,
};

static void test_cork(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  CHECK_INT(ms_register(e.cli, &cnt_proto, NULL), 0);
  tu_echo_t echo = {0};
  ms_listener_t *l = tu_listen_ok(e.srv, "net:127.0.0.1:0~noise", tu_echo_on_connection, &echo);
  if (!l) return;
  char a[256];
  snprintf(a, sizeof a, "net:127.0.0.1:%d~count~noise:%s", port_of(ms_listener_address(l)),
           tu_b64(ms_keys(e.srv)->public_key));
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "connect over count~noise");
  CHECK_INT(r.status, 0);
  if (r.s) {
    CHECK_INT(cnt_writes, 1); /* msg1 */
    static wone_t ws[100];
    wrec_t rec = {0};
    for (int i = 0; i < 100; i++) {
      ws[i].rec = &rec;
      ws[i].idx = i;
      ms_buf_t b = {"0123456789", 10};
      CHECK_INT(ms_stream_write(r.s, &b, 1, on_one_written, &ws[i]), 0);
    }
    WAIT(&e.loop, rec.done, 100, "corked writes complete");
    CHECK_INT(rec.order_bad, 0);
    CHECK_INT(cnt_writes, 2); /* 100 writes, one lower write */
    CHECK_INT(ms_stream_shutdown(r.s, NULL, NULL), 0);
    WAIT(&e.loop, echo.closed, 1, "echo done");
    CHECK_INT(echo.bytes, 1000);
    CHECK_INT(cnt_writes, 3); /* the goodbye */
    ms_stream_t *v[1] = {r.s};
    tu_close_streams(&e.loop, v, 1, WAIT_MS);
  }
  tu_close_listener(&e.loop, l, WAIT_MS);
  env_done(&e);
}

/* ======================================================================== */
/* addresses                                                                */
/* ======================================================================== */

static void test_addresses(void) {
  env_t e;
  env_init(&e, NULL, NULL);
  char reason[256], a[256];
  ms_listener_t *l = NULL;
  ms_keypair_t other;
  ms_keypair_generate(&other);

  /* a listen key other than ours */
  snprintf(a, sizeof a, "net:127.0.0.1:0~noise:%s", tu_b64(other.public_key));
  reason[0] = '\0';
  CHECK_INT(ms_listen(e.srv, a, tu_on_accept, NULL, &l, reason, sizeof reason), MS_EKEY);
  CHECK_HAS(reason, "noise");
  CHECK(l == NULL);
  /* our own key is fine */
  snprintf(a, sizeof a, "net:127.0.0.1:0~noise:%s", tu_b64(ms_keys(e.srv)->public_key));
  tu_accept_t acc = {0};
  l = tu_listen_ok(e.srv, a, tu_on_accept, &acc);
  if (l) tu_close_listener(&e.loop, l, WAIT_MS);
  l = NULL;
  /* a listen address takes at most the key */
  snprintf(a, sizeof a, "net:127.0.0.1:0~noise:%s:x", tu_b64(ms_keys(e.srv)->public_key));
  CHECK_INT(ms_listen(e.srv, a, tu_on_accept, NULL, &l, reason, sizeof reason), MS_EADDRESS);

  /* dialing: a key is required, base64 of 32 bytes, with an X25519 form */
  tu_conn_t r;
  CHECK_INT(tu_connect(e.cli, "net:127.0.0.1:1~noise", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "dial without a key");
  CHECK_INT(r.status, MS_EADDRESS);
  CHECK_HAS(r.reason, "noise");
  CHECK_INT(tu_connect(e.cli, "net:127.0.0.1:1~noise:notbase64", &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "dial with a bad key");
  CHECK_INT(r.status, MS_EKEY);
  CHECK_HAS(r.reason, "base64");
  uint8_t small[32] = {0}; /* the identity point: no usable X25519 form */
  small[0] = 1;
  snprintf(a, sizeof a, "net:127.0.0.1:1~noise:%s", tu_b64(small));
  CHECK_INT(tu_connect(e.cli, a, &r, NULL), 0);
  WAIT(&e.loop, r.done, 1, "dial a key without an X25519 form");
  CHECK_INT(r.status, MS_EKEY);
  CHECK_HAS(r.reason, "X25519");
  CHECK_INT(ms_address_check(a, false, NULL, reason, sizeof reason), MS_EKEY);
  CHECK_INT(ms_address_check("net:127.0.0.1:0~noise", true, NULL, reason, sizeof reason), 0);
  env_done(&e);
}

int main(int argc, char **argv) {
  const tu_test_t tests[] = {
      {"bulk", test_bulk},
      {"half_close", test_half_close},
      {"failures", test_failures},
      {"timeouts", test_timeouts},
      {"shs_and_noise", test_shs_and_noise},
      {"early_and_pause", test_early_and_pause},
      {"write_order", test_write_order},
      {"cork", test_cork},
      {"addresses", test_addresses},
  };
  if (sodium_init() < 0) return 1;
  tu_run_tests(tests, sizeof tests / sizeof tests[0], argc, argv);
  return mst_done("noise");
}
