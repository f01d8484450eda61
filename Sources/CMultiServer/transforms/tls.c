/*
 * tls: TLS 1.2/1.3 through OpenSSL, over whatever stream is below. OpenSSL
 * never sees a socket: the records it produces go into a memory BIO that
 * this transform writes to the lower stream (one lower write per loop turn,
 * through the flush hook), and what the lower stream delivers is fed into
 * a second memory BIO that SSL_read decrypts from.
 *
 *   client  `…~tls`   verify the server's chain (system CAs or tls.ca) and
 *                     its name (tls.servername, else the lower stream's
 *                     `host` metadata); tls.verify=0 skips both (tests only)
 *   server  `…~tls`   tls.cert=FILE (PEM chain) and tls.key=FILE; with
 *                     tls.ca=FILE it also asks for and verifies a client
 *                     certificate
 *
 * The SSL_CTX of each (role, cert, key, ca) is built once per multiserver
 * and kept in the protocol instance, so connections do not reload files.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"

#define TLS_DEFAULT_TIMEOUT_MS 15000
#define TLS_REASON_LEN 512
#define TLS_CTX_CACHE_MAX 16
#define TLS_READ_CHUNK 16384 /* the largest plaintext of one record */
#define TLS_FEED 17408       /* bytes handed to OpenSSL at a time (a record and a bit) */
#define TLS_RECORD_SLACK 64  /* ciphertext overhead we reserve per record */
#define TLS_NAME_MAX 256

enum { PH_HANDSHAKE, PH_OPEN, PH_FAILED };
enum { OUT_HANDSHAKE, OUT_DATA, OUT_SHUTDOWN, OUT_ALERT };

/* ---- the per-multiserver instance: a cache of SSL_CTXs ------------------ */

typedef struct tls_ctx_s tls_ctx_t;
struct tls_ctx_s {
  tls_ctx_t *next;
  int role;
  char *cert, *key, *ca;
  SSL_CTX *ctx;
};

typedef struct {
  ms_t *ms;
  tls_ctx_t *ctxs; /* most recently used first */
  size_t nctx;
  /* Where SSL_read decrypts to before the bytes are emitted: handed on
   * synchronously, so one buffer serves every connection of the loop. */
  uint8_t buf[TLS_READ_CHUNK];
} tls_inst_t;

/* One lower write: the records of a turn, and the upper requests they carry
 * (completed when the lower write completes). Filled in place (c->ob). */
typedef struct {
  struct tls_conn_s *c;
  ms_write_req_t *reqs;
  int kind;
  size_t len, cap;
  uint8_t data[];
} tls_batch_t;

typedef struct tls_conn_s {
  ms_t *ms;
  tls_inst_t *inst;
  ms_stream_t *lower;
  ms_stream_t *upper;
  ms_pwrap_t *pw;
  int role;
  int phase;
  bool verify;
  SSL *ssl;
  /* The BIOs never hold more than about a record: input is fed to rbio in
   * TLS_FEED pieces, and wbio is emptied into ob after every SSL call. */
  BIO *rbio; /* network → SSL */
  BIO *wbio; /* SSL → network */
  tls_batch_t *ob; /* this turn's records, not yet written to lower */
  /* Input not yet fed: the lower read callback's bytes while it runs, and
   * what a paused reader left of them (stash, malloc'd). */
  const uint8_t *in;
  size_t in_len;
  uint8_t *stash;
  size_t stash_len, stash_off;
  uv_timer_t timer;
  bool timer_closed;
  bool lower_closed;
  ms_defer_t pump_node;
  ms_write_req_t *pend_head, *pend_tail; /* upper writes whose records sit in wbio */
  int write_error;
  bool read_ended; /* the upper reader got MS_EOF or an error */
  int lower_end;   /* the lower stream ended (MS_EOF or its error) */
  char name[TLS_NAME_MAX]; /* the server name a client verifies */
} tls_conn_t;

/* Per-write state in the upper request's scratch space. */
typedef struct {
  ms_write_req_t *next;
} tls_wstate_t;

_Static_assert(sizeof(tls_wstate_t) <= MS_WRITE_REQ_SCRATCH, "scratch too small");

/* ---- helpers ------------------------------------------------------------ */

static bool same(const char *a, const char *b) {
  if (a == NULL || b == NULL) return a == b;
  return strcmp(a, b) == 0;
}

static char *dup_or_null(const char *s, bool *oom) {
  if (s == NULL) return NULL;
  char *d = strdup(s);
  if (d == NULL) *oom = true;
  return d;
}

/* The most telling OpenSSL error of the thread's queue, as text. */
static const char *ssl_err_text(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (e == 0) return "unknown error";
  const char *r = ERR_reason_error_string(e);
  if (r) return r;
  ERR_error_string_n(e, buf, len);
  return buf;
}

static bool is_ip_literal(const char *s) {
  unsigned char tmp[16];
  return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

static int check_file(const char *opt, const char *path, char *reason, size_t rlen) {
  if (access(path, R_OK) != 0) {
    ms_reasonf(reason, rlen, "cannot read tls.%s=%s: %s", opt, path, strerror(errno));
    return MS_EINVAL;
  }
  return 0;
}

static void ctx_entry_free(tls_ctx_t *e) {
  SSL_CTX_free(e->ctx);
  free(e->cert);
  free(e->key);
  free(e->ca);
  free(e);
}

static SSL_CTX *ctx_build(int role, const char *cert, const char *key, const char *ca,
                          char *reason, size_t rlen) {
  char eb[256];
  int rc = 0;
  if (cert) rc = check_file("cert", cert, reason, rlen);
  if (rc == 0 && key) rc = check_file("key", key, reason, rlen);
  if (rc == 0 && ca) rc = check_file("ca", ca, reason, rlen);
  if (rc != 0) return NULL;
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL) {
    ms_reasonf(reason, rlen, "cannot create a context: %s", ssl_err_text(eb, sizeof eb));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back. */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (role == MS_ROLE_SERVER) {
    SSL_CTX_sess_set_cache_size(ctx, 1024);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  if (cert && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    ms_reasonf(reason, rlen, "cannot load tls.cert=%s (PEM chain): %s", cert,
               ssl_err_text(eb, sizeof eb));
    goto fail;
  }
  if (key && SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    ms_reasonf(reason, rlen, "cannot load tls.key=%s (PEM): %s", key,
               ssl_err_text(eb, sizeof eb));
    goto fail;
  }
  if (cert && key && SSL_CTX_check_private_key(ctx) != 1) {
    ms_reasonf(reason, rlen, "tls.key=%s does not match tls.cert=%s", key, cert);
    goto fail;
  }
  if (ca) {
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
      ms_reasonf(reason, rlen, "cannot load tls.ca=%s (PEM): %s", ca,
                 ssl_err_text(eb, sizeof eb));
      goto fail;
    }
  } else if (role == MS_ROLE_CLIENT && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    ms_reasonf(reason, rlen, "cannot load the system CA certificates: %s",
               ssl_err_text(eb, sizeof eb));
    goto fail;
  }
  if (role == MS_ROLE_CLIENT)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  else if (ca)
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  else
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* The cached context for these files (built on first use), or NULL with a
 * reason. */
static SSL_CTX *ctx_get(tls_inst_t *inst, int role, const char *cert, const char *key,
                        const char *ca, char *reason, size_t rlen) {
  for (tls_ctx_t **pp = &inst->ctxs; *pp; pp = &(*pp)->next) {
    tls_ctx_t *e = *pp;
    if (e->role == role && same(e->cert, cert) && same(e->key, key) && same(e->ca, ca)) {
      *pp = e->next; /* move to the front */
      e->next = inst->ctxs;
      inst->ctxs = e;
      return e->ctx;
    }
  }
  SSL_CTX *ctx = ctx_build(role, cert, key, ca, reason, rlen);
  if (ctx == NULL) return NULL;
  bool oom = false;
  tls_ctx_t *e = calloc(1, sizeof *e);
  if (e) {
    e->role = role;
    e->ctx = ctx;
    e->cert = dup_or_null(cert, &oom);
    e->key = dup_or_null(key, &oom);
    e->ca = dup_or_null(ca, &oom);
  }
  if (e == NULL || oom) {
    if (e) ctx_entry_free(e);
    else SSL_CTX_free(ctx);
    ms_reasonf(reason, rlen, "out of memory");
    return NULL;
  }
  e->next = inst->ctxs;
  inst->ctxs = e;
  if (++inst->nctx > TLS_CTX_CACHE_MAX) {
    /* Drop the least recently used: connections using it hold a reference. */
    tls_ctx_t **pp = &inst->ctxs;
    while ((*pp)->next) pp = &(*pp)->next;
    ctx_entry_free(*pp);
    *pp = NULL;
    inst->nctx--;
  }
  return ctx;
}

/* ---- lifetime ----------------------------------------------------------- */

static void complete_reqs(ms_write_req_t *r, int status) {
  while (r) {
    tls_wstate_t *w = ms_write_req_scratch(r);
    ms_write_req_t *next = w->next;
    ms_write_req_done(r, status);
    r = next;
  }
}

static void conn_free(tls_conn_t *c) {
  if (c->ssl) SSL_free(c->ssl); /* frees both BIOs */
  free(c->ob);
  free(c->stash);
  free(c);
}

static void maybe_free(tls_conn_t *c) {
  if (!c->timer_closed || !c->lower_closed) return;
  ms_stream_t *upper = c->upper;
  c->upper = NULL;
  conn_free(c);
  if (upper) ms_stream_closed(upper);
}

static void on_timer_closed(uv_handle_t *h) {
  tls_conn_t *c = h->data;
  c->timer_closed = true;
  maybe_free(c);
}

static void stop_timer(tls_conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_lower_closed(ms_stream_t *s, void *arg) {
  (void)s;
  tls_conn_t *c = arg;
  c->lower_closed = true;
  c->lower = NULL;
  maybe_free(c);
}

/* ---- output: wbio → one lower write ------------------------------------- */

static void fail_as(tls_conn_t *c, int status, int fclass, const char *reason, bool alert);

static void on_lower_shutdown(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  tls_conn_t *c = arg;
  if (c->upper) ms_stream_shutdown_done(c->upper, status);
}

static void on_out_written(ms_stream_t *lower, int status, void *arg) {
  tls_batch_t *b = arg;
  tls_conn_t *c = b->c;
  ms_write_req_t *reqs = b->reqs;
  int kind = b->kind;
  free(b);
  if (status != 0 && !c->write_error) c->write_error = status;
  switch (kind) {
    case OUT_HANDSHAKE:
      if (status != 0 && c->phase == PH_HANDSHAKE) {
        char why[TLS_REASON_LEN];
        ms_reasonf(why, sizeof why, "cannot write handshake records (%s)",
                   ms_strerror(status));
        fail_as(c, status, MS_FAIL_PATH, why, false);
      }
      break;
    case OUT_DATA:
      complete_reqs(reqs, status);
      break;
    case OUT_SHUTDOWN: {
      if (c->upper == NULL) break;
      if (status != 0) {
        ms_stream_shutdown_done(c->upper, status);
      } else if (ms_stream_caps(lower) & MS_CAP_HALF_CLOSE) {
        int rc = ms_stream_shutdown(lower, on_lower_shutdown, c);
        if (rc != 0) ms_stream_shutdown_done(c->upper, rc);
      } else {
        ms_stream_shutdown_done(c->upper, 0);
      }
      break;
    }
    case OUT_ALERT:
      /* The alert is out (or could not be sent): now hang up. */
      ms_stream_close(lower, on_lower_closed, c);
      break;
  }
}

/* Room for extra more bytes in ob. */
static int out_reserve(tls_conn_t *c, size_t extra) {
  size_t len = c->ob ? c->ob->len : 0;
  if (extra > SIZE_MAX / 2 - len - sizeof(tls_batch_t)) return MS_ENOMEM;
  size_t need = len + extra;
  if (c->ob && need <= c->ob->cap) return 0;
  size_t cap = c->ob ? 2 * c->ob->cap : 4096;
  if (cap < need) cap = need;
  tls_batch_t *b = realloc(c->ob, sizeof *b + cap);
  if (b == NULL) return MS_ENOMEM;
  if (c->ob == NULL) b->len = 0;
  b->cap = cap;
  c->ob = b;
  return 0;
}

/* Move what OpenSSL produced from wbio into ob. */
static int move_out(tls_conn_t *c) {
  size_t n = BIO_ctrl_pending(c->wbio);
  if (n == 0) return 0;
  int rc = out_reserve(c, n);
  if (rc != 0) {
    (void)BIO_reset(c->wbio);
    return rc;
  }
  int got = BIO_read(c->wbio, c->ob->data + c->ob->len, (int)n);
  if (got > 0) c->ob->len += (size_t)got;
  return 0;
}

/* Write what OpenSSL produced (and the pending upper requests) to lower in
 * one write. 0, or the error (the requests completed with it). */
static int send_out(tls_conn_t *c, int kind) {
  int rc = c->write_error;
  if (rc == 0 && (rc = move_out(c)) != 0) c->write_error = rc;
  ms_write_req_t *reqs = c->pend_head;
  c->pend_head = c->pend_tail = NULL;
  size_t len = c->ob ? c->ob->len : 0;
  if (rc == 0 && len == 0 && reqs == NULL && (kind == OUT_DATA || kind == OUT_HANDSHAKE))
    return 0;
  if (rc == 0) rc = out_reserve(c, 0);
  if (rc == 0) {
    tls_batch_t *b = c->ob;
    c->ob = NULL;
    b->c = c;
    b->reqs = reqs;
    b->kind = kind;
    ms_buf_t buf = {b->data, len};
    rc = ms_stream_write(c->lower, &buf, len ? 1 : 0, on_out_written, b);
    if (rc != 0) free(b);
  }
  if (rc != 0) {
    if (c->ob) c->ob->len = 0;
    if (!c->write_error) c->write_error = rc;
    complete_reqs(reqs, rc);
  }
  return rc;
}

/* ---- input: lower bytes → rbio, a piece at a time ------------------------- */

/* Feed the next piece (the stash first): 1 when something was fed, 0 when
 * there is nothing, or MS_ENOMEM. */
static int feed(tls_conn_t *c) {
  const uint8_t *p;
  size_t n;
  bool from_stash = c->stash_off < c->stash_len;
  if (from_stash) {
    p = c->stash + c->stash_off;
    n = c->stash_len - c->stash_off;
  } else if (c->in_len > 0) {
    p = c->in;
    n = c->in_len;
  } else {
    return 0;
  }
  if (n > TLS_FEED) n = TLS_FEED;
  if (BIO_write(c->rbio, p, (int)n) != (int)n) return MS_ENOMEM;
  if (from_stash) {
    c->stash_off += n;
    if (c->stash_off == c->stash_len) {
      free(c->stash);
      c->stash = NULL;
      c->stash_len = c->stash_off = 0;
    }
  } else {
    c->in += n;
    c->in_len -= n;
  }
  return 1;
}

/* Keep what the read callback's bytes left unfed (the reader paused). */
static int keep_rest(tls_conn_t *c) {
  if (c->in_len == 0) return 0;
  size_t have = c->stash_len - c->stash_off;
  uint8_t *n = malloc(have + c->in_len);
  if (n == NULL) {
    c->in_len = 0;
    return MS_ENOMEM;
  }
  if (have) memcpy(n, c->stash + c->stash_off, have);
  memcpy(n + have, c->in, c->in_len);
  free(c->stash);
  c->stash = n;
  c->stash_len = have + c->in_len;
  c->stash_off = 0;
  c->in = NULL;
  c->in_len = 0;
  return 0;
}

/* ---- the open session ----------------------------------------------------- */

static void end_read(tls_conn_t *c, int status) {
  if (c->read_ended) return;
  c->read_ended = true;
  if (c->lower && !c->lower_end) ms_stream_read_stop(c->lower);
  ms_stream_emit_read(c->upper, status, NULL, 0);
}

static int session_error(void) {
  unsigned long e = ERR_peek_last_error();
  if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
      ERR_GET_REASON(e) == SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC)
    return MS_EDECRYPT;
  return MS_EHANDSHAKE;
}

/* Decrypt what rbio holds for as long as the reader wants it. */
static void pump(tls_conn_t *c) {
  ms_stream_t *up = c->upper;
  while (!c->read_ended && ms_stream_is_reading(up) && !ms_stream_is_closing(up)) {
    ERR_clear_error();
    int n = SSL_read(c->ssl, c->inst->buf, sizeof c->inst->buf);
    if (n > 0) {
      ms_stream_emit_read(up, 0, c->inst->buf, (size_t)n);
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    /* Reading may have produced records of its own (a key update). */
    if (BIO_ctrl_pending(c->wbio) > 0) ms_stream_want_flush(up);
    if (e == SSL_ERROR_WANT_READ) {
      int f = feed(c);
      if (f > 0) continue;
      if (f < 0) {
        end_read(c, f);
        return;
      }
      if (c->lower_end) end_read(c, c->lower_end == MS_EOF ? MS_EHANGUP : c->lower_end);
      return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
      end_read(c, MS_EOF); /* close_notify */
      return;
    }
    end_read(c, session_error());
    return;
  }
  if (!c->read_ended && c->lower && !c->lower_end && !ms_stream_is_reading(up))
    ms_stream_read_stop(c->lower);
}

static void on_session_read(ms_stream_t *lower, int status, const uint8_t *data, size_t len,
                            void *arg) {
  (void)lower;
  tls_conn_t *c = arg;
  if (c->read_ended) return;
  if (status != 0) {
    c->lower_end = status;
    pump(c);
    return;
  }
  c->in = data;
  c->in_len = len;
  pump(c);
  if (keep_rest(c) != 0) {
    c->in = NULL;
    end_read(c, MS_ENOMEM);
  }
  c->in = NULL;
}

static void deferred_pump(void *arg) {
  tls_conn_t *c = arg;
  if (c->upper && !ms_stream_is_closing(c->upper)) pump(c);
}

static int tls_read_start(ms_stream_t *s) {
  tls_conn_t *c = ms_stream_impl(s);
  if (c->read_ended) return 0;
  /* What is already here (records that came with the handshake, or were
   * left when the reader paused) is decrypted on the next turn. Always
   * deferred: inside the wrap's done callback the handshake's last read
   * has not yet stashed its rest. */
  ms_defer(c->ms, &c->pump_node, deferred_pump, c);
  if (c->lower_end) return 0;
  return ms_stream_read_start(c->lower, on_session_read, c);
}

static int tls_read_stop(ms_stream_t *s) {
  tls_conn_t *c = ms_stream_impl(s);
  if (c->lower_end) return 0;
  return ms_stream_read_stop(c->lower);
}

static int tls_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned nbufs) {
  tls_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  size_t total = 0;
  for (unsigned i = 0; i < nbufs; i++) total += bufs[i].len;
  /* the turn's records in one buffer: reserve once per write */
  int rc = total ? out_reserve(c, total + (total / TLS_READ_CHUNK + 1) * TLS_RECORD_SLACK) : 0;
  if (rc != 0) return rc;
  for (unsigned i = 0; i < nbufs; i++) {
    const uint8_t *p = bufs[i].base;
    size_t left = bufs[i].len;
    while (left > 0) {
      /* One record at a time, so that wbio never holds more than one. */
      int chunk = left > TLS_READ_CHUNK ? TLS_READ_CHUNK : (int)left;
      ERR_clear_error();
      int n = SSL_write(c->ssl, p, chunk);
      if (n <= 0 || (rc = move_out(c)) != 0) {
        /* Records of earlier pieces are already queued: this direction
         * is over. */
        c->write_error = n <= 0 ? MS_EHANDSHAKE : rc;
        return c->write_error;
      }
      p += n;
      left -= (size_t)n;
    }
  }
  tls_wstate_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  if (c->pend_tail) {
    tls_wstate_t *t = ms_write_req_scratch(c->pend_tail);
    t->next = req;
  } else {
    c->pend_head = req;
  }
  c->pend_tail = req;
  ms_stream_want_flush(s);
  return 0;
}

static void tls_flush(ms_stream_t *s) {
  tls_conn_t *c = ms_stream_impl(s);
  if (c->lower == NULL) return;
  (void)send_out(c, OUT_DATA);
}

static int tls_shutdown(ms_stream_t *s) {
  tls_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  (void)send_out(c, OUT_DATA); /* anything still pending goes first */
  ERR_clear_error();
  if (SSL_shutdown(c->ssl) < 0) return MS_EHANDSHAKE;
  return send_out(c, OUT_SHUTDOWN);
}

static void tls_close(ms_stream_t *s) {
  tls_conn_t *c = ms_stream_impl(s);
  ms_defer_cancel(c->ms, &c->pump_node);
  ms_write_req_t *reqs = c->pend_head;
  c->pend_head = c->pend_tail = NULL;
  complete_reqs(reqs, MS_ECANCELED);
  /* Lower write callbacks complete the requests in flight with
   * MS_ECANCELED; the lower close callback then frees us. */
  ms_stream_close(c->lower, on_lower_closed, c);
}

static const ms_stream_ops_t tls_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = tls_write,
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .flush = tls_flush,
};

/* ---- handshake ------------------------------------------------------------ */

/* Handshake failed: report, and hang up (after sending the alert OpenSSL
 * produced, when alert is set, so that the peer learns why). */
static void fail_as(tls_conn_t *c, int status, int fclass, const char *reason, bool alert) {
  if (c->phase != PH_HANDSHAKE) return;
  c->phase = PH_FAILED;
  stop_timer(c);
  bool sent = false;
  if (alert && c->lower_end == 0 && (BIO_ctrl_pending(c->wbio) > 0 || (c->ob && c->ob->len)))
    sent = send_out(c, OUT_ALERT) == 0;
  if (!sent) ms_stream_close(c->lower, on_lower_closed, c);
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  ms_pwrap_fail(pw, status, fclass, reason);
}

static void handshake_failed(tls_conn_t *c) {
  char why[TLS_REASON_LEN], eb[256];
  long v = SSL_get_verify_result(c->ssl);
  if (v != X509_V_OK && (c->verify || c->role == MS_ROLE_SERVER)) {
    const char *what = X509_verify_cert_error_string(v);
    if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
      ms_reasonf(why, sizeof why,
                 "certificate verify failed: %s (the certificate is not for %s)", what,
                 c->name);
    else
      ms_reasonf(why, sizeof why, "certificate verify failed: %s", what);
    fail_as(c, MS_EHANDSHAKE, MS_FAIL_AUTH, why, true);
    return;
  }
  ms_reasonf(why, sizeof why, "handshake failed: %s", ssl_err_text(eb, sizeof eb));
  fail_as(c, MS_EHANDSHAKE, MS_FAIL_DEFAULT, why, true);
}

static int set_meta(ms_stream_t *up, const char *key, const char *value) {
  return value ? ms_stream_set_meta_str(up, key, value) : 0;
}

static void established(tls_conn_t *c) {
  const char *la = ms_stream_address(c->lower);
  size_t n = strlen(la) + sizeof "~tls";
  char *addr = malloc(n);
  ms_stream_t *up = NULL;
  if (addr) {
    snprintf(addr, n, "%s~tls", la);
    up = ms_stream_new(c->ms, &tls_ops, c, addr);
    free(addr);
  }
  if (up == NULL) {
    fail_as(c, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory", false);
    return;
  }
  ms_stream_set_caps(up, ms_stream_caps(c->lower));
  ms_stream_set_server(up, c->role == MS_ROLE_SERVER);
  int rc = set_meta(up, "tls.version", SSL_get_version(c->ssl));
  if (rc == 0) rc = set_meta(up, "tls.cipher", SSL_get_cipher_name(c->ssl));
  if (rc == 0) {
    const char *sn = c->role == MS_ROLE_CLIENT
                         ? (c->name[0] ? c->name : NULL)
                         : SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    rc = set_meta(up, "tls.servername", sn);
  }
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  X509 *peer = SSL_get1_peer_certificate(c->ssl);
#else
  X509 *peer = SSL_get_peer_certificate(c->ssl);
#endif
  if (rc == 0 && peer) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1 && mdlen == 32) {
      char hex[65];
      for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
      rc = ms_stream_set_meta_str(up, "tls.peer_cert_sha256", hex);
      if (rc == 0) rc = ms_stream_set_remote_id(up, "x509-sha256", md, 32);
    } else {
      rc = MS_ENOMEM;
    }
  }
  X509_free(peer);
  c->upper = up;
  c->phase = PH_OPEN;
  stop_timer(c);
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  if (rc != 0) {
    /* up's close closes lower and reports up closed once we are freed. */
    ms_stream_close(up, NULL, NULL);
    ms_pwrap_fail(pw, rc, MS_FAIL_DEFAULT, "out of memory");
    return;
  }
  if (c->lower_end == 0) ms_stream_read_stop(c->lower); /* resumes when the user reads */
  ms_pwrap_done(pw, 0, up, NULL);
}

/* Run the handshake over what input there is. */
static void hs_run(tls_conn_t *c) {
  while (c->phase == PH_HANDSHAKE) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      /* The last flight (a client's Finished, a server's session tickets). */
      if (send_out(c, OUT_HANDSHAKE) != 0) {
        fail_as(c, c->write_error, MS_FAIL_PATH, "cannot write handshake records", false);
        return;
      }
      established(c);
      return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
      handshake_failed(c);
      return;
    }
    int f = feed(c);
    if (f > 0) continue;
    if (f < 0) {
      fail_as(c, MS_ENOMEM, MS_FAIL_DEFAULT, "out of memory", false);
      return;
    }
    if (send_out(c, OUT_HANDSHAKE) != 0) {
      fail_as(c, c->write_error, MS_FAIL_PATH, "cannot write handshake records", false);
      return;
    }
    if (c->lower_end) {
      char why[TLS_REASON_LEN];
      const char *peer = c->role == MS_ROLE_CLIENT ? "server" : "client";
      if (c->lower_end == MS_EOF)
        ms_reasonf(why, sizeof why, "the %s hung up during the handshake", peer);
      else
        ms_reasonf(why, sizeof why, "the %s hung up during the handshake (%s)", peer,
                   ms_strerror(c->lower_end));
      /* A middlebox or a server that is not TLS: another path may work. */
      fail_as(c, c->lower_end == MS_EOF ? MS_EHANDSHAKE : c->lower_end, MS_FAIL_PATH, why,
              false);
    }
    return;
  }
}

static void on_handshake_read(ms_stream_t *lower, int status, const uint8_t *data,
                              size_t len, void *arg) {
  (void)lower;
  tls_conn_t *c = arg;
  if (c->phase != PH_HANDSHAKE) return;
  if (status != 0) {
    c->lower_end = status;
    hs_run(c);
    return;
  }
  c->in = data;
  c->in_len = len;
  hs_run(c);
  /* Session records that came with the handshake's end wait for the
   * reader (a failed handshake drops them). */
  if (c->phase == PH_OPEN && keep_rest(c) != 0) {
    c->lower_end = MS_ENOMEM; /* reported to the reader after what came before */
    ms_stream_read_stop(lower);
  }
  c->in = NULL;
  c->in_len = 0;
}

static void on_timeout(uv_timer_t *t) {
  tls_conn_t *c = t->data;
  fail_as(c, MS_ETIMEDOUT, MS_FAIL_PATH,
          c->role == MS_ROLE_CLIENT ? "handshake timed out (the server did not finish it)"
                                    : "handshake timed out (the client did not finish it)",
          false);
}

/* ---- protocol hooks --------------------------------------------------------- */

static int tls_validate(const ms_section_t *sec, int role, void *pdata, char *reason,
                        size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields != 0) {
    ms_reasonf(reason, reason_len,
               "takes no fields (certificates and names are options: tls.cert, "
               "tls.key, tls.ca, tls.servername, tls.verify)");
    return MS_EADDRESS;
  }
  return 0;
}

/* Fail a wrap that has taken lower but started nothing. */
static int wrap_fail(ms_pwrap_t *pw, ms_stream_t *lower, int rc, const char *reason) {
  ms_stream_close(lower, NULL, NULL);
  ms_pwrap_fail(pw, rc, MS_FAIL_DEFAULT, reason);
  return 0;
}

static int tls_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec, int role,
                    void *pdata) {
  (void)sec;
  tls_inst_t *inst = pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  const ms_options_t *o = ms_options(ms);
  char why[TLS_REASON_LEN];
  const char *cert = ms_pwrap_opt(pw, "cert");
  const char *key = ms_pwrap_opt(pw, "key");
  const char *ca = ms_pwrap_opt(pw, "ca");
  const char *vopt = ms_pwrap_opt(pw, "verify");
  const char *topt = ms_pwrap_opt(pw, "handshake_timeout_ms");
  const char *sname = ms_pwrap_opt(pw, "servername");
  uint64_t timeout = o->handshake_timeout_ms ? o->handshake_timeout_ms : TLS_DEFAULT_TIMEOUT_MS;
  if (topt && (ms_opt_uint(topt, UINT32_MAX, &timeout) != 0 || timeout == 0))
    return wrap_fail(pw, lower, MS_EINVAL,
                     "tls.handshake_timeout_ms must be a positive number of milliseconds");
  bool verify = true;
  if (vopt) {
    if (strcmp(vopt, "0") == 0)
      verify = false;
    else if (strcmp(vopt, "1") != 0)
      return wrap_fail(pw, lower, MS_EINVAL, "tls.verify must be 0 or 1");
  }
  if (role == MS_ROLE_SERVER && (cert == NULL || key == NULL)) {
    ms_reasonf(why, sizeof why,
               "serving needs tls.cert=FILE (PEM certificate chain) and tls.key=FILE "
               "(PEM private key): %s not given",
               cert == NULL && key == NULL ? "neither is" : cert == NULL ? "tls.cert" : "tls.key");
    return wrap_fail(pw, lower, MS_EINVAL, why);
  }
  if ((cert == NULL) != (key == NULL))
    return wrap_fail(pw, lower, MS_EINVAL, "tls.cert and tls.key go together");
  char name[TLS_NAME_MAX] = "";
  if (role == MS_ROLE_CLIENT) {
    size_t hl = 0;
    const char *h = sname;
    if (h) {
      hl = strlen(h);
    } else {
      h = ms_stream_meta(lower, "host", &hl);
    }
    if (h && hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
      h++;
      hl -= 2;
    }
    if (h && (hl == 0 || hl >= sizeof name || memchr(h, '\0', hl)))
      return wrap_fail(pw, lower, MS_EINVAL, "the server name is empty or too long");
    if (h) {
      memcpy(name, h, hl);
      name[hl] = '\0';
    } else if (verify) {
      return wrap_fail(pw, lower, MS_EINVAL,
                       "no server name to verify the certificate against: set "
                       "tls.servername, or dial a host name (tls.verify=0 skips "
                       "verification, for tests only)");
    }
  }
  SSL_CTX *ctx = ctx_get(inst, role, cert, key, ca, why, sizeof why);
  if (ctx == NULL) return wrap_fail(pw, lower, MS_EINVAL, why);

  tls_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return MS_ENOMEM;
  c->ms = ms;
  c->inst = inst;
  c->lower = lower;
  c->pw = pw;
  c->role = role;
  c->phase = PH_HANDSHAKE;
  c->verify = verify;
  memcpy(c->name, name, sizeof name);
  int rc = 0;
  ERR_clear_error();
  c->ssl = SSL_new(ctx);
  if (c->ssl) {
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->rbio && c->wbio) {
      SSL_set_bio(c->ssl, c->rbio, c->wbio);
    } else {
      BIO_free(c->rbio);
      BIO_free(c->wbio);
      rc = MS_ENOMEM;
    }
  } else {
    rc = MS_ENOMEM;
  }
  if (rc == 0 && role == MS_ROLE_CLIENT) {
    SSL_set_connect_state(c->ssl);
    bool ip = name[0] && is_ip_literal(name);
    if (name[0] && !ip && SSL_set_tlsext_host_name(c->ssl, name) != 1) rc = MS_ENOMEM;
    if (rc == 0 && verify) {
      if (ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1) rc = MS_ENOMEM;
      } else {
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set1_host(c->ssl, name) != 1) rc = MS_ENOMEM;
      }
    }
    if (!verify) SSL_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
  } else if (rc == 0) {
    SSL_set_accept_state(c->ssl);
  }
  if (rc == 0) rc = uv_timer_init(ms_loop(ms), &c->timer);
  if (rc != 0) {
    conn_free(c);
    return rc;
  }
  c->timer.data = c;
  ms_pwrap_set_impl(pw, c);
  uv_timer_start(&c->timer, on_timeout, timeout, 0);
  rc = ms_stream_read_start(lower, on_handshake_read, c);
  if (rc != 0) {
    fail_as(c, rc, MS_FAIL_PATH, "cannot read the stream below", false);
    return 0;
  }
  if (role == MS_ROLE_CLIENT) hs_run(c); /* the ClientHello */
  return 0;
}

static void tls_wrap_cancel(ms_pwrap_t *pw) {
  tls_conn_t *c = ms_pwrap_impl(pw);
  if (c) fail_as(c, MS_ECANCELED, MS_FAIL_AUTH, "canceled", false);
}

static int tls_init(ms_t *ms, void *pdata, void **instance) {
  (void)pdata;
  tls_inst_t *inst = calloc(1, sizeof *inst);
  if (inst == NULL) return MS_ENOMEM;
  inst->ms = ms;
  *instance = inst;
  return 0;
}

static void tls_destroy(ms_t *ms, void *instance) {
  (void)ms;
  tls_inst_t *inst = instance;
  while (inst->ctxs) {
    tls_ctx_t *e = inst->ctxs;
    inst->ctxs = e->next;
    ctx_entry_free(e);
  }
  free(inst);
}

static const char *const tls_option_keys[] = {
    "cert", "key", "ca", "servername", "verify", "handshake_timeout_ms", NULL};

const ms_protocol_t ms__proto_tls = {
    .size = sizeof(ms_protocol_t),
    .name = "tls",
    .kind = MS_PROTO_TRANSFORM,
    .validate = tls_validate,
    .wrap = tls_wrap,
    .wrap_cancel = tls_wrap_cancel,
    .init = tls_init,
    .destroy = tls_destroy,
    .option_keys = tls_option_keys,
};
