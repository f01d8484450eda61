/* Socket-test helpers (see util.h). */
#include "util.h"

#include "mstest.h"

#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
  uv_timer_t t;
  bool fired;
} guard_t;

static void on_guard(uv_timer_t *t) {
  guard_t *g = (guard_t *)t;
  g->fired = true;
  uv_stop(t->loop);
}

static void noop_close(uv_handle_t *h) { (void)h; }

bool tu_wait(uv_loop_t *loop, const int *counter, int target,
             unsigned timeout_ms, const char *what) {
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, timeout_ms, 0);
  while (*counter < target && !g.fired) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT); /* the guard's close callback */
  if (*counter < target) {
    fprintf(stderr, "TIMEOUT after %u ms waiting for %s (%d of %d)\n",
            timeout_ms, what, *counter, target);
    return false;
  }
  return true;
}

bool tu_drain(uv_loop_t *loop, unsigned timeout_ms) {
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, timeout_ms, 0);
  uv_unref((uv_handle_t *)&g.t);
  uv_run(loop, UV_RUN_DEFAULT);
  bool ok = !g.fired;
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT);
  if (!ok) fprintf(stderr, "loop still busy after %u ms (leaked handle?)\n", timeout_ms);
  return ok;
}

void tu_sleep_loop(uv_loop_t *loop, unsigned ms) {
  int never = 0;
  guard_t g = {.fired = false};
  uv_timer_init(loop, &g.t);
  uv_timer_start(&g.t, on_guard, ms, 0);
  while (!never && !g.fired) uv_run(loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&g.t, noop_close);
  uv_run(loop, UV_RUN_NOWAIT);
}

void tu_run_tests(const tu_test_t *tests, size_t n, int argc, char **argv) {
  for (size_t i = 0; i < n; i++) {
    if (argc > 1) {
      bool want = false;
      for (int k = 1; k < argc; k++)
        if (strcmp(argv[k], tests[i].name) == 0) want = true;
      if (!want) continue;
    }
    int f0 = mst_fail;
    uint64_t t0 = tu_now_ms();
    tests[i].fn();
    fprintf(stderr, "%-16s %s (%llu ms)\n", tests[i].name,
            mst_fail == f0 ? "ok" : "FAILED", (unsigned long long)(tu_now_ms() - t0));
  }
}

void tu_opts_default(ms_options_t *o) {
  ms_options_init(o);
  o->handshake_timeout_ms = 5000;
  o->connect_timeout_ms = 5000;
}

int tu_closed_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t n = sizeof sa;
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &n) != 0) {
    if (fd >= 0) close(fd);
    return 1; /* tcpmux: nobody listens there in a test box */
  }
  close(fd);
  return ntohs(sa.sin_port);
}

uint64_t tu_now_ms(void) { return uv_hrtime() / 1000000u; }

char *tu_mkdtemp(void) {
  static char buf[64];
  snprintf(buf, sizeof buf, "/tmp/mstest-XXXXXX");
  return mkdtemp(buf);
}

void tu_rmtree(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

char *tu_alt_string(const ms_addr_t *a, size_t alt) {
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  if (out == NULL) return NULL;
  out[0] = '\0';
  for (size_t s = 0; s < ms_addr_sections(a, alt); s++) {
    len += (size_t)snprintf(out + len, cap - len, "%s%s", s ? "~" : "",
                            ms_addr_name(a, alt, s));
    for (size_t f = 0; f < ms_addr_fields(a, alt, s); f++) {
      size_t flen;
      const char *fd = ms_addr_field(a, alt, s, f, &flen);
      out[len++] = ':';
      len += ms_addr_escape(fd, flen, out + len, cap - len);
    }
  }
  return out;
}

size_t tu_split(const char *address, char ***out) {
  ms_addr_t *a;
  *out = NULL;
  if (ms_addr_parse(address, strlen(address), &a, NULL) != 0) return 0;
  size_t n = ms_addr_alternatives(a);
  char **v = calloc(n, sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = tu_alt_string(a, i);
  ms_addr_free(a);
  *out = v;
  return n;
}

void tu_split_free(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

const char *tu_b64(const uint8_t key[32]) {
  static char buf[64];
  ms_key_to_base64(key, buf, sizeof buf);
  return buf;
}

/* ---- echo server ------------------------------------------------------ */

typedef struct {
  tu_echo_t *st;
  bool eof;
  bool closing;
} echo_conn_t;

static void echo_closed(ms_stream_t *s, void *arg) {
  (void)s;
  echo_conn_t *c = arg;
  c->st->closed++;
  free(c);
}

static void echo_close(ms_stream_t *s, echo_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  ms_stream_close(s, echo_closed, c);
}

static void echo_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  (void)status;
  free(arg);
}

static void echo_shut(ms_stream_t *s, int status, void *arg) {
  echo_conn_t *c = arg;
  if (status != 0) {
    c->st->errors++;
    c->st->last_error = status;
  }
  echo_close(s, c);
}

static void echo_read(ms_stream_t *s, int status, const uint8_t *data,
                      size_t len, void *arg) {
  echo_conn_t *c = arg;
  if (status == 0) {
    if (len == 0) return;
    uint8_t *copy = malloc(len);
    memcpy(copy, data, len);
    ms_buf_t b = {copy, len};
    c->st->bytes += len;
    int rc = ms_stream_write(s, &b, 1, echo_written, copy);
    if (rc != 0) {
      free(copy);
      c->st->errors++;
      c->st->last_error = rc;
      echo_close(s, c);
      return;
    }
    if (!ms_stream_writable(s)) ms_stream_read_stop(s);
    return;
  }
  if (status == MS_EOF) {
    c->eof = true;
    c->st->eof++;
    if (ms_stream_shutdown(s, echo_shut, c) != 0) echo_close(s, c);
    return;
  }
  c->st->errors++;
  c->st->last_error = status;
  echo_close(s, c);
}

static void echo_drain(ms_stream_t *s, void *arg) {
  echo_conn_t *c = arg;
  if (!c->eof && !c->closing) ms_stream_read_start(s, echo_read, c);
}

void tu_echo_on_connection(ms_stream_t *s, void *arg) {
  tu_echo_t *st = arg;
  echo_conn_t *c = calloc(1, sizeof *c);
  c->st = st;
  st->accepted++;
  snprintf(st->last_stack, sizeof st->last_stack, "%s",
           ms_stream_stack(s) ? ms_stream_stack(s) : "(null)");
  snprintf(st->last_address, sizeof st->last_address, "%s", ms_stream_address(s));
  ms_stream_on_drain(s, echo_drain, c);
  if (ms_stream_read_start(s, echo_read, c) != 0) {
    st->errors++;
    echo_close(s, c);
  }
}

void tu_on_listen_error(const char *stack, int status, const char *reason,
                        void *arg) {
  tu_lerr_t *e = arg;
  e->count++;
  e->last_status = status;
  snprintf(e->last_reason, sizeof e->last_reason, "%s", reason ? reason : "(null)");
  snprintf(e->last_stack, sizeof e->last_stack, "%s", stack ? stack : "(null)");
}

void tu_on_listener_closed(ms_listener_t *l, void *arg) {
  (void)l;
  (*(int *)arg)++;
}

void tu_on_stream_closed(ms_stream_t *s, void *arg) {
  (void)s;
  if (arg) (*(int *)arg)++;
}

/* ---- connect and accept recorders -------------------------------------- */

void tu_on_conn(ms_stream_t *s, int status, const char *reason, void *arg) {
  tu_conn_t *r = arg;
  r->done++;
  r->status = status;
  r->s = s;
  r->at = tu_now_ms();
  if (r->in_call) r->fired_in_call = true;
  snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
}

int tu_connect(ms_t *ms, const char *addr, tu_conn_t *r, ms_connect_t **req) {
  memset(r, 0, sizeof *r);
  r->in_call = true;
  int rc = ms_connect(ms, addr, tu_on_conn, r, req);
  r->in_call = false;
  return rc;
}

void tu_cancel(tu_conn_t *r, ms_connect_t *req) {
  r->in_call = true;
  ms_connect_cancel(req);
  r->in_call = false;
}

void tu_cancel_now(void *arg) { ms_connect_cancel(((tu_cancel_arg_t *)arg)->req); }

void tu_on_accept(ms_stream_t *s, void *arg) {
  tu_accept_t *a = arg;
  if (a->n < 16)
    a->s[a->n++] = s;
  else
    ms_stream_close(s, NULL, NULL);
}

void tu_on_shut(ms_stream_t *s, int status, void *arg) {
  (void)s;
  tu_shut_t *h = arg;
  h->status = status;
  h->done++;
}

ms_listener_t *tu_listen_ok(ms_t *ms, const char *addr, ms_connection_cb cb,
                            void *arg) {
  ms_listener_t *l = NULL;
  char reason[512] = "";
  int rc = ms_listen(ms, addr, cb, arg, &l, reason, sizeof reason);
  CHECK_INT(rc, 0);
  if (rc != 0) fprintf(stderr, "  listen %s: %s (%s)\n", addr, ms_err_name(rc), reason);
  return rc == 0 ? l : NULL;
}

void tu_close_listener(uv_loop_t *loop, ms_listener_t *l, unsigned wait_ms) {
  int closed = 0;
  ms_listener_close(l, tu_on_listener_closed, &closed);
  CHECK_INT(closed, 0); /* never from inside ms_listener_close */
  CHECK(tu_wait(loop, &closed, 1, wait_ms, "listener close callback"));
}

void tu_close_streams(uv_loop_t *loop, ms_stream_t **v, int n, unsigned wait_ms) {
  int closed = 0, want = 0;
  for (int i = 0; i < n; i++)
    if (v[i]) {
      ms_stream_close(v[i], tu_on_stream_closed, &closed);
      want++;
    }
  CHECK_INT(closed, 0); /* never from inside ms_stream_close */
  CHECK(tu_wait(loop, &closed, want, wait_ms, "stream close callbacks"));
}

/* ---- bulk echo --------------------------------------------------------- */

static void bulk_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((tu_bulk_t *)arg)->done++;
}

static void bulk_written(ms_stream_t *s, int status, void *arg) {
  (void)s;
  if (status != 0) ((tu_bulk_t *)arg)->write_errors++;
}

static void bulk_shut(ms_stream_t *s, int status, void *arg) {
  (void)s;
  ((tu_bulk_t *)arg)->shut_status = status;
}

static void bulk_pump(tu_bulk_t *b) {
  size_t total = b->cfg.total;
  while (b->sent < total && ms_stream_writable(b->s)) {
    size_t n = total - b->sent < TU_BULK_CHUNK ? total - b->sent : TU_BULK_CHUNK;
    ms_buf_t buf = {b->cfg.data + b->sent, n};
    int rc = ms_stream_write(b->s, &buf, 1, bulk_written, b);
    if (rc != 0) {
      b->status = rc;
      ms_stream_close(b->s, bulk_closed, b);
      return;
    }
    b->sent += n;
    size_t q = ms_stream_write_queue_size(b->s);
    if (q > b->max_queue) b->max_queue = q;
  }
  if (b->sent == total && !b->shut) {
    b->shut = true;
    b->shut_status = 1;
    int rc = ms_stream_shutdown(b->s, bulk_shut, b);
    if (rc != 0) b->status = rc;
  }
}

static void bulk_drain(ms_stream_t *s, void *arg) {
  (void)s;
  tu_bulk_t *b = arg;
  b->drains++;
  bulk_pump(b);
}

static void bulk_read(ms_stream_t *s, int status, const uint8_t *data,
                      size_t len, void *arg) {
  tu_bulk_t *b = arg;
  if (status == 0) {
    if (b->recvd + len > b->cfg.total ||
        memcmp(data, b->cfg.data + b->recvd, len) != 0)
      b->mismatch = true;
    crypto_generichash_update(&b->h, data, len);
    b->recvd += len;
    return;
  }
  if (status == MS_EOF)
    b->eof++;
  else
    b->status = status;
  ms_stream_close(s, bulk_closed, b);
}

static void bulk_connected(ms_stream_t *s, int status, const char *reason,
                           void *arg) {
  tu_bulk_t *b = arg;
  b->status = status;
  if (status != 0) {
    fprintf(stderr, "  bulk connect: %s\n", reason);
    b->done++;
    return;
  }
  b->s = s;
  snprintf(b->address, sizeof b->address, "%s", ms_stream_address(s));
  b->is_server = ms_stream_is_server(s);
  if (ms_stream_remote_key(s)) {
    b->has_key = true;
    memcpy(b->remote_key, ms_stream_remote_key(s), 32);
  }
  if (b->cfg.high_water) ms_stream_set_high_water(s, b->cfg.high_water);
  ms_stream_on_drain(s, bulk_drain, b);
  ms_stream_read_start(s, bulk_read, b);
  bulk_pump(b);
}

void tu_bulk_echo(uv_loop_t *loop, ms_t *cli, const char *addr,
                  const tu_bulk_cfg_t *cfg, tu_echo_t *echo, tu_bulk_t *b) {
  memset(b, 0, sizeof *b);
  b->cfg = *cfg;
  size_t total = cfg->total;
  crypto_generichash_init(&b->h, NULL, 0, 32);
  int closed0 = echo->closed, acc0 = echo->accepted, eof0 = echo->eof;
  size_t bytes0 = echo->bytes;
  uint64_t t0 = tu_now_ms();
  CHECK_INT(ms_connect_with(cli, addr, cfg->opts, bulk_connected, b, NULL), 0);
  CHECK(tu_wait(loop, &b->done, 1, cfg->timeout_ms, addr));
  uint8_t got[32], want[32];
  crypto_generichash_final(&b->h, got, sizeof got);
  crypto_generichash(want, sizeof want, cfg->data, total, NULL, 0);
  fprintf(stderr, "  %zu KiB echo over %-60.60s %5llu ms, max queue %zu, %d drains\n",
          total / 1024, addr, (unsigned long long)(tu_now_ms() - t0), b->max_queue,
          b->drains);
  CHECK_INT(b->status, 0);
  CHECK_INT(b->eof, 1);
  CHECK_INT(b->sent, total);
  CHECK_INT(b->recvd, total);
  CHECK(!b->mismatch);
  CHECK_MEM(got, want, 32);
  CHECK_INT(b->write_errors, 0);
  CHECK_INT(b->shut_status, 0);
  if (cfg->queue_limit) {
    CHECK(b->drains > 0);                                   /* backpressure engaged */
    CHECK(b->max_queue <= cfg->queue_limit + TU_BULK_CHUNK); /* and was respected */
  }
  CHECK(tu_wait(loop, &echo->closed, closed0 + 1, cfg->close_timeout_ms,
                "echo side close"));
  CHECK_INT(echo->accepted, acc0 + 1);
  CHECK_INT(echo->eof, eof0 + 1);
  CHECK_INT(echo->errors, 0);
  if (echo->errors) fprintf(stderr, "  echo side error: %s\n", ms_strerror(echo->last_error));
  CHECK_INT(echo->bytes - bytes0, total);
}

/* ---- half-close -------------------------------------------------------- */

typedef struct {
  int mode; /* 0: reply, shutdown, close; 1: reply, close without shutdown */
  size_t got, got_at_eof;
  int eof, err, shut_status, closed;
  bool bad;
  const uint8_t *req, *reply;
} hc_srv_t;

static void hc_srv_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((hc_srv_t *)arg)->closed++;
}
static void hc_srv_shut(ms_stream_t *s, int status, void *arg) {
  hc_srv_t *h = arg;
  h->shut_status = status;
  ms_stream_close(s, hc_srv_closed, h);
}
static void hc_srv_written(ms_stream_t *s, int status, void *arg) {
  hc_srv_t *h = arg;
  if (status != 0) h->err = status;
  if (h->mode == 1) ms_stream_close(s, hc_srv_closed, h);
}
static void hc_srv_read(ms_stream_t *s, int status, const uint8_t *data,
                        size_t len, void *arg) {
  hc_srv_t *h = arg;
  if (status == 0) {
    if (h->got + len > TU_HC_REQ || memcmp(data, h->req + h->got, len) != 0)
      h->bad = true;
    h->got += len;
    return;
  }
  if (status != MS_EOF) {
    h->err = status;
    ms_stream_close(s, hc_srv_closed, h);
    return;
  }
  h->eof++;
  h->got_at_eof = h->got;
  /* The read side is done; the write side is still open. */
  ms_buf_t b = {h->reply, TU_HC_REPLY};
  int rc = ms_stream_write(s, &b, 1, hc_srv_written, h);
  if (rc == 0 && h->mode == 0) rc = ms_stream_shutdown(s, hc_srv_shut, h);
  if (rc != 0) {
    h->err = rc;
    ms_stream_close(s, hc_srv_closed, h);
  }
}
static void hc_accept(ms_stream_t *s, void *arg) {
  ms_stream_read_start(s, hc_srv_read, arg);
}

typedef struct {
  tu_shut_t shut;
  size_t got;
  int end; /* MS_EOF or an error */
  int ends, closed;
  bool bad;
  const uint8_t *req, *reply;
  void (*after_shutdown)(ms_stream_t *s, const tu_shut_t *shut);
} hc_cli_t;

static void hc_cli_closed(ms_stream_t *s, void *arg) {
  (void)s;
  ((hc_cli_t *)arg)->closed++;
}
static void hc_cli_read(ms_stream_t *s, int status, const uint8_t *data,
                        size_t len, void *arg) {
  hc_cli_t *h = arg;
  if (status == 0) {
    if (h->got + len > TU_HC_REPLY || memcmp(data, h->reply + h->got, len) != 0)
      h->bad = true;
    h->got += len;
    return;
  }
  h->end = status;
  h->ends++;
  ms_stream_close(s, hc_cli_closed, h);
}
static void hc_cli_connected(ms_stream_t *s, int status, const char *reason,
                             void *arg) {
  hc_cli_t *h = arg;
  if (status != 0) {
    fprintf(stderr, "  half-close connect: %s\n", reason);
    h->end = status;
    h->ends++;
    h->closed++;
    return;
  }
  ms_buf_t b = {h->req, TU_HC_REQ};
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), 0);
  CHECK_INT(ms_stream_shutdown(s, tu_on_shut, &h->shut), 0);
  /* After shutdown no more writes: */
  CHECK_INT(ms_stream_write(s, &b, 1, NULL, NULL), MS_ESHUTDOWN);
  CHECK_INT(ms_stream_shutdown(s, NULL, NULL), MS_ESHUTDOWN);
  if (h->after_shutdown) h->after_shutdown(s, &h->shut);
  ms_stream_read_start(s, hc_cli_read, h);
}

/* The exchange's state lives on the heap: if a side never finishes (a failed
 * wait), its callbacks may still come after tu_half_close returned, so it is
 * then left allocated on purpose. */
typedef struct {
  hc_srv_t srv;
  hc_cli_t cli;
  uint8_t req[TU_HC_REQ];
  uint8_t reply[TU_HC_REPLY];
} hc_t;

void tu_half_close(uv_loop_t *loop, ms_t *srv, ms_t *cli, const char *listen_addr,
                   int mode, int want_end, unsigned wait_ms,
                   void (*after_shutdown)(ms_stream_t *s, const tu_shut_t *shut)) {
  hc_t *x = calloc(1, sizeof *x);
  randombytes_buf(x->req, TU_HC_REQ);
  randombytes_buf(x->reply, TU_HC_REPLY);
  hc_srv_t *hs = &x->srv;
  hc_cli_t *hc = &x->cli;
  *hs = (hc_srv_t){.mode = mode, .req = x->req, .reply = x->reply};
  *hc = (hc_cli_t){.req = x->req, .reply = x->reply, .after_shutdown = after_shutdown};
  ms_listener_t *l = NULL;
  char reason[512] = "";
  int rc = ms_listen(srv, listen_addr, hc_accept, hs, &l, reason, sizeof reason);
  CHECK_INT(rc, 0);
  if (l == NULL) {
    fprintf(stderr, "  listen %s: %s (%s)\n", listen_addr, ms_err_name(rc), reason);
    free(x);
    return;
  }
  CHECK_INT(ms_connect(cli, ms_listener_address(l), hc_cli_connected, hc, NULL), 0);
  CHECK(tu_wait(loop, &hc->closed, 1, wait_ms, "half-close client done"));
  CHECK(tu_wait(loop, &hs->closed, 1, wait_ms, "half-close server done"));
  CHECK_INT(hs->eof, 1);
  CHECK_INT(hs->got_at_eof, TU_HC_REQ); /* EOF only after all the data */
  CHECK(!hs->bad);
  CHECK_INT(hs->err, 0);
  if (mode == 0) CHECK_INT(hs->shut_status, 0);
  CHECK_INT(hc->shut.done, 1);
  CHECK_INT(hc->shut.status, 0);
  CHECK_INT(hc->got, TU_HC_REPLY);
  CHECK(!hc->bad);
  CHECK_INT(hc->ends, 1);
  CHECK_INT(hc->end, want_end);
  if (hc->end != want_end)
    fprintf(stderr, "  half-close over %s mode %d: ended with %s\n", listen_addr,
            mode, ms_err_name(hc->end));
  tu_close_listener(loop, l, wait_ms);
  if (hc->closed && hs->closed) free(x);
}
