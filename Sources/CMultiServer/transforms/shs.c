/*
 * shs: the secret-handshake transform. Drives the I/O-free shs1 state
 * machine (shs_core.c) over the stream below, then carries the session in
 * box-stream (boxstream.c).
 *
 * Writes are corked: the writes of one loop turn are merged into full
 * 4096-byte box-stream packets, sealed into the current batch buffer (a
 * fixed 16-packet buffer, pooled) and the flush hook at the end of the turn
 * seals the last partial packet and hands the batch to ONE lower write. A
 * batch that fills is handed on at once, so buffers stay bounded. Upper
 * requests complete, in order, when the lower write carrying their last
 * byte completes. The pool keeps at most SHS_POOL_MAX batches and is
 * emptied whenever no write is queued. Reads are opened in place.
 *
 * Handshake-only state (the shs1 state, message buffers, the timer) lives
 * in its own allocation, released when the session is established.
 *
 *   client  `…~shs:KEY[:SEED]`  dial the server whose ed25519 key is KEY
 *                               (SEED: one-time client key, invite codes)
 *   server  `…~shs`             answer with our own key; advertised as
 *                               `…~shs:<own key>`
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "boxstream.h"
#include "shs_core.h"

#define SHS_B64_LEN 45
#define SHS_REASON_LEN 256
#define SHS_DEFAULT_TIMEOUT_MS 15000
#define SHS_PKT_WIRE (MS_BOX_HEADER_LEN + MS_BOX_MAX_BODY)
#define SHS_BATCH_PACKETS 16
#define SHS_BATCH_CAP (SHS_BATCH_PACKETS * SHS_PKT_WIRE)
#define SHS_POOL_MAX 2

enum { PH_HANDSHAKE, PH_AUTHORIZING, PH_OPEN, PH_FAILED };

/* A batch: the packets sealed for one lower write, and the upper requests
 * that complete with it. */
typedef struct shs_batch_s shs_batch_t;
struct shs_batch_s {
  shs_batch_t *next; /* pool or failed-list link */
  struct shs_conn_s *conn;
  ms_write_req_t *head, *tail;
  size_t len;
  uint8_t data[SHS_BATCH_CAP];
};

/* Handshake state. Outlives its connection's handshake until its timer has
 * closed and its messages were handed on (holding a reference on ms). */
typedef struct shs_hs_s {
  struct shs_conn_s *conn; /* NULL once released */
  ms_t *ms;
  ms_shs_t st;
  uint8_t in[MS_SHS_MSG3_LEN]; /* handshake message being received */
  size_t inlen;
  uint8_t out1[MS_SHS_MSG1_LEN]; /* msg1 or msg2 */
  uint8_t out2[MS_SHS_MSG3_LEN]; /* msg3 or msg4 */
  uv_timer_t timer;
  unsigned writes; /* messages not yet handed on */
  bool timer_closed;
} shs_hs_t;

typedef struct shs_conn_s {
  ms_t *ms;
  ms_stream_t *lower;
  ms_stream_t *upper;
  ms_pwrap_t *pw;
  shs_hs_t *hs; /* during the handshake only */
  uint8_t *early; /* session bytes that came with the handshake */
  size_t early_len;
  int role;
  int phase;
  bool lower_closed;
  bool dec_ended;
  int write_error; /* a lower write failed after sealing: writes are over */
  ms_box_t enc;
  ms_unbox_t dec;
  uint8_t goodbye[MS_BOX_GOODBYE_LEN];
  shs_batch_t *cur;  /* being filled this turn */
  size_t open_len;   /* plaintext staged for cur's next packet */
  shs_batch_t *last; /* the last batch handed on, while in flight */
  size_t inflight;   /* batches handed to the lower stream */
  shs_batch_t *failed, *failed_tail; /* never left: complete after inflight */
  ms_defer_t fail_node;
  shs_batch_t *pool;
  size_t npool;
} shs_conn_t;

/* Per-write state kept in the upper request's scratch space. */
typedef struct {
  ms_write_req_t *next; /* in its batch */
} shs_wstate_t;

_Static_assert(sizeof(shs_wstate_t) <= MS_WRITE_REQ_SCRATCH, "scratch too small");

static int b64_key(const uint8_t key[32], char out[SHS_B64_LEN]) {
  return ms_key_to_base64(key, out, SHS_B64_LEN);
}

/* ---- batches ------------------------------------------------------------ */

static shs_batch_t *batch_get(shs_conn_t *c) {
  shs_batch_t *b = c->pool;
  if (b) {
    c->pool = b->next;
    c->npool--;
  } else if ((b = malloc(sizeof(*b))) == NULL) {
    return NULL;
  }
  b->next = NULL;
  b->conn = c;
  b->head = b->tail = NULL;
  b->len = 0;
  return b;
}

static void batch_put(shs_conn_t *c, shs_batch_t *b) {
  if (c->npool >= SHS_POOL_MAX) {
    free(b);
    return;
  }
  b->next = c->pool;
  c->pool = b;
  c->npool++;
}

/* Nothing queued: an idle connection keeps no write buffers (review M8). */
static void pool_trim(shs_conn_t *c) {
  while (c->pool) {
    shs_batch_t *b = c->pool;
    c->pool = b->next;
    free(b);
  }
  c->npool = 0;
}

static void batch_add(shs_batch_t *b, ms_write_req_t *req) {
  shs_wstate_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  if (b->tail)
    ((shs_wstate_t *)ms_write_req_scratch(b->tail))->next = req;
  else
    b->head = req;
  b->tail = req;
}

/* Complete every request of batch b, in order. */
static void batch_complete(shs_batch_t *b, int status) {
  ms_write_req_t *r = b->head;
  b->head = b->tail = NULL;
  while (r) {
    shs_wstate_t *w = ms_write_req_scratch(r);
    ms_write_req_t *next = w->next;
    ms_write_req_done(r, status);
    r = next;
  }
}

/* Batches that never left complete after every batch handed on before. */
static void drain_failed(shs_conn_t *c) {
  while (c->failed && c->inflight == 0) {
    shs_batch_t *b = c->failed;
    c->failed = b->next;
    if (c->failed == NULL) c->failed_tail = NULL;
    batch_complete(b, c->write_error ? c->write_error : MS_ECANCELED);
    free(b);
  }
}

static void on_fail_deferred(void *arg) { drain_failed(arg); }

/* b never goes out: its requests fail, in order, on a later turn. */
static void batch_fail(shs_conn_t *c, shs_batch_t *b) {
  sodium_memzero(b->data, b->len);
  b->len = 0;
  b->next = NULL;
  if (c->failed_tail)
    c->failed_tail->next = b;
  else
    c->failed = b;
  c->failed_tail = b;
  ms_defer(c->ms, &c->fail_node, on_fail_deferred, c);
}

/* ---- handshake state ---------------------------------------------------- */

static void hs_maybe_free(shs_hs_t *h) {
  if (h->conn || !h->timer_closed || h->writes) return;
  ms_t *ms = h->ms;
  sodium_memzero(h, sizeof(*h));
  free(h);
  ms_unref(ms);
}

static void on_hs_timer_closed(uv_handle_t *t) {
  shs_hs_t *h = t->data;
  h->timer_closed = true;
  hs_maybe_free(h);
}

static void on_hs_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  (void)status; /* a failed write shows as a read error or a timeout */
  shs_hs_t *h = arg;
  h->writes--;
  hs_maybe_free(h);
}

/* Done with the handshake (established or failed): wipe its secrets now,
 * free the rest once the timer closed and the messages left. */
static void hs_release(shs_conn_t *c) {
  shs_hs_t *h = c->hs;
  if (h == NULL) return;
  c->hs = NULL;
  h->conn = NULL;
  ms_shs_wipe(&h->st);
  sodium_memzero(h->in, sizeof h->in);
  if (!uv_is_closing((uv_handle_t *)&h->timer))
    uv_close((uv_handle_t *)&h->timer, on_hs_timer_closed);
}

/* ---- lifetime ---------------------------------------------------------- */

static void conn_free(shs_conn_t *c) {
  hs_release(c);
  ms_defer_cancel(c->ms, &c->fail_node);
  ms_box_wipe(&c->enc);
  ms_unbox_free(&c->dec);
  if (c->early) {
    sodium_memzero(c->early, c->early_len);
    free(c->early);
  }
  if (c->cur) {
    sodium_memzero(c->cur->data, c->cur->len + MS_BOX_HEADER_LEN + c->open_len);
    free(c->cur);
  }
  while (c->failed) {
    shs_batch_t *b = c->failed;
    c->failed = b->next;
    free(b);
  }
  pool_trim(c);
  sodium_memzero(c, sizeof(*c));
  free(c);
}

static void maybe_free(shs_conn_t *c) {
  if (!c->lower_closed) return;
  ms_stream_t *upper = c->upper;
  if (upper) {
    c->upper = NULL;
    conn_free(c);
    ms_stream_closed(upper);
  } else {
    conn_free(c);
  }
}

static void on_lower_closed(ms_stream_t *s, void *arg) {
  (void)s;
  shs_conn_t *c = arg;
  c->lower_closed = true;
  c->lower = NULL;
  /* Every lower write has called back (so every batch handed on has
   * completed): the ones that never left complete last, keeping order. */
  ms_defer_cancel(c->ms, &c->fail_node);
  c->inflight = 0;
  c->last = NULL;
  drain_failed(c);
  if (c->cur) {
    shs_batch_t *b = c->cur;
    sodium_memzero(b->data, b->len + MS_BOX_HEADER_LEN + c->open_len);
    c->cur = NULL;
    c->open_len = 0;
    batch_complete(b, MS_ECANCELED);
    free(b);
  }
  maybe_free(c);
}

/* Handshake failed: hang up at once (send nothing more) and report. A
 * pending authorize request is withdrawn by the wrap's end. fclass says
 * whether another path may do better (MS_FAIL_PATH: a hang-up, a reset, a
 * timeout) or not (MS_FAIL_AUTH: a key or a network that does not match). */
static void fail_as(shs_conn_t *c, int status, int fclass, const char *reason) {
  if (c->phase == PH_FAILED || c->phase == PH_OPEN) return;
  c->phase = PH_FAILED;
  hs_release(c);
  ms_stream_close(c->lower, on_lower_closed, c);
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  ms_pwrap_fail(pw, status, fclass, reason);
}

static void fail(shs_conn_t *c, int status, const char *reason) {
  fail_as(c, status, MS_FAIL_DEFAULT, reason);
}

/* ---- the open session: writes ------------------------------------------ */

static void on_batch_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  shs_batch_t *b = arg;
  /* The conn outlives every lower write callback (it is freed from the
   * lower close callback, which comes after them). */
  shs_conn_t *c = b->conn;
  c->inflight--;
  if (c->last == b) c->last = NULL;
  if (status != 0 && c->write_error == 0) c->write_error = status;
  batch_complete(b, status);
  batch_put(c, b);
  drain_failed(c);
  if (c->inflight == 0 && c->cur == NULL) pool_trim(c);
}

/* Seal the staged plaintext of cur's open packet where it lies. */
static void close_packet(shs_conn_t *c) {
  shs_batch_t *b = c->cur;
  b->len += ms_box_seal_packet_inplace(&c->enc, b->data + b->len, c->open_len);
  c->open_len = 0;
}

/* Hand cur to the lower stream. */
static int batch_submit(shs_conn_t *c) {
  shs_batch_t *b = c->cur;
  c->cur = NULL;
  if (c->write_error) {
    batch_fail(c, b);
    return c->write_error;
  }
  /* A batch of empty writes still goes through the lower stream, so its
   * requests complete in order with the ones before it. */
  ms_buf_t out = {b->len ? b->data : NULL, b->len};
  int rc = ms_stream_write(c->lower, &out, b->len ? 1 : 0, on_batch_written, b);
  if (rc != 0) {
    /* The nonces have advanced past packets that never left: anything
     * sealed later would fail at the peer, so this direction is over. */
    c->write_error = rc;
    batch_fail(c, b);
    return rc;
  }
  c->inflight++;
  c->last = b;
  return 0;
}

static void shs_flush(ms_stream_t *s) {
  shs_conn_t *c = ms_stream_impl(s);
  if (c->cur == NULL) return;
  if (c->open_len) close_packet(c);
  (void)batch_submit(c);
}

static int shs_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                     unsigned nbufs) {
  shs_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  /* Refuse what could not be sealed (its wire size overflows) before
   * sealing anything. */
  size_t need = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t sealed = ms_box_sealed_size(bufs[i].len);
    if (sealed == SIZE_MAX || sealed > SIZE_MAX - need) return MS_EINVAL;
    need += sealed;
  }
  bool sealed = false; /* some of this request's bytes are in a batch */
  for (unsigned i = 0; i < nbufs; i++) {
    const uint8_t *p = bufs[i].base;
    size_t n = bufs[i].len;
    while (n > 0) {
      if (c->cur == NULL && (c->cur = batch_get(c)) == NULL) {
        if (sealed) c->write_error = MS_ENOMEM;
        return MS_ENOMEM;
      }
      shs_batch_t *b = c->cur;
      if (c->open_len == 0 && n >= MS_BOX_MAX_BODY) {
        /* A whole packet straight from the caller's buffer. */
        b->len += ms_box_seal(&c->enc, b->data + b->len, p, MS_BOX_MAX_BODY);
        p += MS_BOX_MAX_BODY;
        n -= MS_BOX_MAX_BODY;
      } else {
        /* Merge into the open packet, sealed when full or at the flush. */
        size_t take = MS_BOX_MAX_BODY - c->open_len;
        if (take > n) take = n;
        memcpy(b->data + b->len + MS_BOX_HEADER_LEN + c->open_len, p, take);
        c->open_len += take;
        p += take;
        n -= take;
        if (c->open_len == MS_BOX_MAX_BODY) close_packet(c);
      }
      sealed = true;
      if (c->open_len == 0 && b->len + SHS_PKT_WIRE > SHS_BATCH_CAP) {
        /* Full: hand it on now (bounded buffers). */
        int rc = batch_submit(c);
        if (rc != 0) return rc;
      }
    }
  }
  /* The request completes with the batch holding its last byte: cur, or
   * the batch just handed on (then the request has no byte in cur). */
  if (c->cur) {
    batch_add(c->cur, req);
    ms_stream_want_flush(s);
  } else if (c->last) {
    batch_add(c->last, req);
  } else {
    /* An empty write with nothing queued: an empty batch keeps it in
     * order through the lower stream. */
    if ((c->cur = batch_get(c)) == NULL) return MS_ENOMEM;
    batch_add(c->cur, req);
    ms_stream_want_flush(s);
  }
  return 0;
}

/* Open as many packets as the reader wants. */
static void pump(shs_conn_t *c, uint8_t *data, size_t len) {
  ms_stream_t *up = c->upper;
  for (;;) {
    size_t used = 0, outlen = 0;
    uint8_t *out = NULL;
    int r = ms_unbox_next(&c->dec, data, len, &used, &out, &outlen);
    data += used;
    len -= used;
    if (r == 1) {
      if (outlen) ms_stream_emit_read(up, 0, out, outlen);
      if (ms_stream_is_closing(up)) return;
      if (!ms_stream_is_reading(up)) {
        if (len && ms_unbox_stash(&c->dec, data, len) != 0)
          ms_stream_emit_read(up, MS_ENOMEM, NULL, 0);
        ms_stream_read_stop(c->lower);
        return;
      }
      continue;
    }
    if (r == 0) return;
    if (r == 2) {
      if (!c->dec_ended) {
        c->dec_ended = true;
        ms_stream_read_stop(c->lower);
        ms_stream_emit_read(up, MS_EOF, NULL, 0);
      }
      return;
    }
    ms_stream_read_stop(c->lower);
    ms_stream_emit_read(up, r, NULL, 0);
    return;
  }
}

static void on_session_read(ms_stream_t *lower, int status, const uint8_t *data,
                            size_t len, void *arg) {
  (void)lower;
  shs_conn_t *c = arg;
  if (status == 0) {
    /* Writable by the emit contract (multiserver_plugin.h): open in place. */
    pump(c, (uint8_t *)data, len);
    return;
  }
  if (c->dec_ended) return;
  c->dec_ended = true;
  int r = status == MS_EOF ? ms_unbox_eof(&c->dec) : status;
  ms_stream_emit_read(c->upper, r == 0 ? MS_EOF : r, NULL, 0);
}

/* Session bytes that arrived with the handshake go first. */
static int drain_early(shs_conn_t *c) {
  if (c->early) {
    uint8_t *e = c->early;
    size_t n = c->early_len;
    c->early = NULL;
    c->early_len = 0;
    int rc = ms_unbox_stash(&c->dec, e, n);
    sodium_memzero(e, n);
    free(e);
    if (rc != 0) return rc;
  }
  if (ms_unbox_stashed(&c->dec)) pump(c, NULL, 0);
  return 0;
}

static int shs_read_start(ms_stream_t *s) {
  shs_conn_t *c = ms_stream_impl(s);
  int rc = drain_early(c);
  if (rc != 0) return rc;
  if (!ms_stream_is_reading(s) || ms_stream_is_closing(s) || c->dec_ended) return 0;
  return ms_stream_read_start(c->lower, on_session_read, c);
}

static int shs_read_stop(ms_stream_t *s) {
  shs_conn_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}

static void on_lower_shutdown(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  shs_conn_t *c = arg;
  if (c->upper) ms_stream_shutdown_done(c->upper, status);
}

static void on_goodbye_written(ms_stream_t *lower, int status, void *arg) {
  shs_conn_t *c = arg;
  if (status != 0) {
    if (c->upper) ms_stream_shutdown_done(c->upper, status);
    return;
  }
  int rc = ms_stream_shutdown(lower, on_lower_shutdown, c);
  if (rc != 0 && c->upper) ms_stream_shutdown_done(c->upper, rc);
}

static int shs_shutdown(ms_stream_t *s) {
  shs_conn_t *c = ms_stream_impl(s);
  if (c->cur) shs_flush(s); /* the goodbye goes after every packet */
  ms_box_goodbye(&c->enc, c->goodbye);
  ms_buf_t b = {c->goodbye, sizeof c->goodbye};
  return ms_stream_write(c->lower, &b, 1, on_goodbye_written, c);
}

static void shs_close(ms_stream_t *s) {
  shs_conn_t *c = ms_stream_impl(s);
  /* Lower write callbacks complete our requests with MS_ECANCELED; the
   * lower close callback then frees us and reports upper closed. */
  ms_stream_close(c->lower, on_lower_closed, c);
}

static const ms_stream_ops_t shs_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = shs_write,
    .read_start = shs_read_start,
    .read_stop = shs_read_stop,
    .shutdown = shs_shutdown,
    .close = shs_close,
    .flush = shs_flush,
};

/* ---- handshake ------------------------------------------------------------ */

static void on_handshake_read(ms_stream_t *lower, int status, const uint8_t *data,
                              size_t len, void *arg);

static void established(shs_conn_t *c) {
  ms_shs_outcome_t o;
  if (ms_shs_outcome(&c->hs->st, &o) != 0) {
    fail(c, MS_EHANDSHAKE, "no outcome");
    return;
  }
  ms_box_init(&c->enc, o.encrypt_key, o.encrypt_nonce);
  ms_unbox_init(&c->dec, o.decrypt_key, o.decrypt_nonce);
  hs_release(c);
  char key[SHS_B64_LEN];
  b64_key(o.remote_pk, key);
  const char *la = ms_stream_address(c->lower);
  size_t n = strlen(la) + sizeof("~shs:") + SHS_B64_LEN;
  char *addr = malloc(n);
  ms_stream_t *up = NULL;
  if (addr) {
    snprintf(addr, n, "%s~shs:%s", la, key);
    up = ms_stream_new(c->ms, &shs_ops, c, addr);
    free(addr);
  }
  if (up == NULL) {
    sodium_memzero(&o, sizeof o);
    fail(c, MS_ENOMEM, "out of memory");
    return;
  }
  ms_stream_set_remote_key(up, o.remote_pk);
  sodium_memzero(&o, sizeof o);
  ms_stream_set_server(up, c->role == MS_ROLE_SERVER);
  c->upper = up; /* the wrap attaches an accepted authorize value */
  c->phase = PH_OPEN;
  ms_stream_read_stop(c->lower); /* resumes when the user reads */
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  ms_pwrap_done(pw, 0, up, NULL);
}

/* msg lies in c->hs, which stays until the write completes. */
static void send_msg(shs_conn_t *c, const uint8_t *msg, size_t len) {
  ms_buf_t b = {msg, len};
  int rc = ms_stream_write(c->lower, &b, 1, on_hs_written, c->hs);
  if (rc != 0)
    fail(c, rc, "cannot write handshake message");
  else
    c->hs->writes++;
}

static void server_accept(shs_conn_t *c) {
  if (ms_shs_server_accept(&c->hs->st, c->hs->out2) != 0) {
    fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
    return;
  }
  send_msg(c, c->hs->out2, MS_SHS_MSG4_LEN);
  if (c->phase == PH_HANDSHAKE || c->phase == PH_AUTHORIZING) established(c);
}

static void on_authorized(ms_pwrap_t *pw, bool accepted, void *arg) {
  (void)pw;
  shs_conn_t *c = arg;
  if (c->phase != PH_AUTHORIZING) return;
  if (!accepted) {
    fail(c, MS_EUNAUTHORIZED, "client key not authorized");
    return;
  }
  c->phase = PH_HANDSHAKE;
  server_accept(c);
  /* Bytes that arrived while authorizing are session data (c->early). */
}

static void authorize(shs_conn_t *c) {
  if (ms_options(c->ms)->authorize == NULL) {
    server_accept(c);
    return;
  }
  c->phase = PH_AUTHORIZING;
  ms_stream_read_stop(c->lower); /* nothing more until we answer */
  /* The service copies the key: the request outlives this handshake state. */
  int rc = ms_pwrap_authorize(c->pw, "ed25519", ms_shs_remote_key(&c->hs->st),
                              MS_PUBLICKEYBYTES, on_authorized, c);
  if (rc != 0) fail(c, rc, "cannot ask the authorize hook");
}

/* One complete handshake message arrived in c->in. */
static void step(shs_conn_t *c) {
  int rc;
  if (c->role == MS_ROLE_CLIENT) {
    if (c->hs->st.stage == MS_SHS_CLIENT_WAIT_HELLO) {
      rc = ms_shs_client_verify_hello(&c->hs->st, c->hs->in);
      if (rc == 0) rc = ms_shs_client_auth(&c->hs->st, c->hs->out2);
      if (rc != 0) {
        fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
        return;
      }
      send_msg(c, c->hs->out2, MS_SHS_MSG3_LEN);
    } else {
      rc = ms_shs_client_verify_accept(&c->hs->st, c->hs->in);
      if (rc != 0) {
        fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
        return;
      }
      established(c);
    }
    return;
  }
  if (c->hs->st.stage == MS_SHS_SERVER_WAIT_HELLO) {
    rc = ms_shs_server_verify_hello(&c->hs->st, c->hs->in);
    if (rc == 0) rc = ms_shs_server_hello(&c->hs->st, c->hs->out1);
    if (rc != 0) {
      fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
      return;
    }
    send_msg(c, c->hs->out1, MS_SHS_MSG2_LEN);
  } else {
    rc = ms_shs_server_verify_auth(&c->hs->st, c->hs->in);
    if (rc != 0) {
      fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
      return;
    }
    authorize(c);
  }
}

static int keep_early(shs_conn_t *c, const uint8_t *data, size_t len) {
  uint8_t *e = realloc(c->early, c->early_len + len);
  if (e == NULL) return MS_ENOMEM;
  memcpy(e + c->early_len, data, len);
  c->early = e;
  c->early_len += len;
  return 0;
}

/* What the handshake waits for, for a timeout's reason. */
static const char *waiting_for(shs_conn_t *c) {
  if (c->phase == PH_AUTHORIZING) return "the authorize hook did not answer";
  if (c->role == MS_ROLE_SERVER)
    return c->hs->st.stage == MS_SHS_SERVER_WAIT_HELLO ? "no msg1 (client hello) from the client"
                                                   : "no msg3 (client auth) from the client";
  return c->hs->st.stage == MS_SHS_CLIENT_WAIT_HELLO ? "no msg2 (server hello) from the server"
                                                 : "no msg4 (server accept) from the server";
}

static const char *hangup_reason(shs_conn_t *c, char *buf, size_t buflen) {
  if (c->hs == NULL) return "peer hung up";
  /* Inside a message: name it and how much of it came. */
  size_t want = ms_shs_expected(&c->hs->st);
  if (c->hs->inlen > 0 && want > 0) {
    const char *msg;
    if (c->role == MS_ROLE_SERVER)
      msg = c->hs->st.stage == MS_SHS_SERVER_WAIT_HELLO ? "msg1 (client hello)" : "msg3 (client auth)";
    else
      msg = c->hs->st.stage == MS_SHS_CLIENT_WAIT_HELLO ? "msg2 (server hello)" : "msg4 (server accept)";
    ms_reasonf(buf, buflen, "%s hung up inside %s (%zu of %zu bytes)",
               c->role == MS_ROLE_SERVER ? "client" : "server", msg, c->hs->inlen, want);
    return buf;
  }
  if (c->role == MS_ROLE_SERVER)
    return c->hs->st.stage == MS_SHS_SERVER_WAIT_HELLO
               ? "client hung up before msg1 (client hello)"
               : "client hung up before msg3 (client auth)";
  return c->hs->st.stage == MS_SHS_CLIENT_WAIT_HELLO
             ? "server hung up after msg1 (client hello): wrong app key, or "
               "not an shs server"
             : "server hung up after msg3 (client auth): wrong server key, or "
               "not authorized";
}

static void on_handshake_read(ms_stream_t *lower, int status, const uint8_t *data,
                              size_t len, void *arg) {
  (void)lower;
  shs_conn_t *c = arg;
  if (status != 0) {
    char why[SHS_REASON_LEN], stage[SHS_REASON_LEN];
    const char *what = hangup_reason(c, stage, sizeof stage);
    if (status == MS_EOF)
      ms_reasonf(why, sizeof why, "%s", what);
    else
      ms_reasonf(why, sizeof why, "%s (%s)", what, ms_strerror(status));
    /* A hang-up may be a wrong key, or a middlebox that accepts and closes:
     * another alternative may work, so it is a path failure. */
    fail_as(c, status == MS_EOF ? MS_EHANDSHAKE : status, MS_FAIL_PATH, why);
    return;
  }
  while (len > 0 && c->phase == PH_HANDSHAKE) {
    shs_hs_t *h = c->hs;
    size_t want = ms_shs_expected(&h->st);
    if (want == 0) break; /* done: the rest is session data */
    size_t take = want - h->inlen < len ? want - h->inlen : len;
    memcpy(h->in + h->inlen, data, take);
    h->inlen += take;
    data += take;
    len -= take;
    if (h->inlen == want) {
      h->inlen = 0;
      step(c);
    }
  }
  if (len > 0 && (c->phase == PH_OPEN || c->phase == PH_AUTHORIZING)) {
    /* The peer already sent session bytes (with msg3 or msg4). */
    if (keep_early(c, data, len) != 0) {
      if (c->phase == PH_OPEN)
        ms_stream_emit_read(c->upper, MS_ENOMEM, NULL, 0);
      else
        fail(c, MS_ENOMEM, "out of memory");
      return;
    }
    /* A reader that started inside the done callback missed them. */
    if (c->phase == PH_OPEN && ms_stream_is_reading(c->upper)) {
      int rc = drain_early(c);
      if (rc != 0) ms_stream_emit_read(c->upper, rc, NULL, 0);
    }
  }
}

static void on_timeout(uv_timer_t *t) {
  shs_hs_t *h = t->data;
  shs_conn_t *c = h->conn;
  if (c == NULL) return;
  char why[SHS_REASON_LEN];
  ms_reasonf(why, sizeof why, "handshake timed out (%s)", waiting_for(c));
  fail_as(c, MS_ETIMEDOUT, MS_FAIL_PATH, why);
}

/* ---- protocol hooks ----------------------------------------------------- */

/* pdata: the ms_t this protocol is registered with (NULL when validating
 * without a multiserver, e.g. ms_address_check). */
static int shs_validate(const ms_section_t *sec, int role, void *pdata,
                        char *reason, size_t reason_len) {
  const ms_t *ms = pdata;
  uint8_t k[32];
  if (role == MS_ROLE_SERVER) {
    if (sec->nfields > 1) {
      ms_reasonf(reason, reason_len, "shs: a listen address takes at most the server key");
      return MS_EADDRESS;
    }
  } else if (sec->nfields < 1 || sec->nfields > 2) {
    ms_reasonf(reason, reason_len,
               "shs: expected shs:KEY or shs:KEY:SEED (KEY = base64 ed25519 public key)");
    return MS_EADDRESS;
  }
  for (size_t i = 0; i < sec->nfields; i++) {
    if (ms_key_from_base64(k, sec->fields[i], sec->field_lens[i]) != 0) {
      ms_reasonf(reason, reason_len, "shs: %s is not base64 of 32 bytes",
                 i == 0 ? "KEY" : "SEED");
      return MS_EKEY;
    }
  }
  /* A listen key must be our own: otherwise every handshake would fail. */
  if (role == MS_ROLE_SERVER && sec->nfields == 1 && ms != NULL &&
      sodium_memcmp(k, ms_keys(ms)->public_key, 32) != 0) {
    ms_reasonf(reason, reason_len,
               "shs: the listen key is not this server's public key");
    return MS_EKEY;
  }
  sodium_memzero(k, sizeof k);
  return 0;
}

static size_t shs_advertise(ms_t *ms, const ms_section_t *sec, void *pdata,
                            char *buf, size_t size) {
  (void)sec;
  (void)pdata;
  char key[SHS_B64_LEN];
  b64_key(ms_keys(ms)->public_key, key);
  return (size_t)snprintf(buf, size, "shs:%s", key);
}

static int shs_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                    int role, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  const ms_options_t *o = ms_options(ms);
  const ms_keypair_t *own = ms_keys(ms);
  uint8_t server_pk[32];
  ms_keypair_t onetime;
  const ms_keypair_t *local = own;
  int rc = 0;
  if (role == MS_ROLE_SERVER && sec->nfields == 1) {
    if (ms_key_from_base64(server_pk, sec->fields[0], sec->field_lens[0]) != 0 ||
        sodium_memcmp(server_pk, own->public_key, 32) != 0)
      return MS_EKEY; /* listen key is not ours */
  }
  if (role == MS_ROLE_CLIENT) {
    if (ms_key_from_base64(server_pk, sec->fields[0], sec->field_lens[0]) != 0)
      return MS_EKEY;
    if (sec->nfields == 2) {
      uint8_t seed[32];
      rc = ms_key_from_base64(seed, sec->fields[1], sec->field_lens[1]);
      if (rc == 0) rc = ms_keypair_from_seed(&onetime, seed);
      sodium_memzero(seed, sizeof seed);
      if (rc != 0) {
        ms_keypair_wipe(&onetime);
        return MS_EKEY;
      }
      local = &onetime;
    }
  }
  /* From here on, every return wipes the one-time key pair first. */
  shs_conn_t *c = calloc(1, sizeof(*c));
  shs_hs_t *h = c ? calloc(1, sizeof(*h)) : NULL;
  if (h == NULL) {
    free(c);
    if (local == &onetime) ms_keypair_wipe(&onetime);
    return MS_ENOMEM;
  }
  c->ms = ms;
  c->lower = lower;
  c->pw = pw;
  c->role = role;
  c->phase = PH_HANDSHAKE;
  c->hs = h;
  h->conn = c;
  h->ms = ms;
  if (role == MS_ROLE_CLIENT)
    rc = ms_shs_client_init(&h->st, o->app_key, local->secret_key, local->public_key,
                            server_pk, NULL);
  else
    rc = ms_shs_server_init(&h->st, o->app_key, local->secret_key, local->public_key,
                            NULL);
  if (local == &onetime) ms_keypair_wipe(&onetime);
  uint64_t timeout = o->handshake_timeout_ms ? o->handshake_timeout_ms : SHS_DEFAULT_TIMEOUT_MS;
  const char *topt = ms_pwrap_opt(pw, "handshake_timeout_ms");
  if (rc == 0 && topt && (ms_opt_uint(topt, UINT32_MAX, &timeout) != 0 || timeout == 0))
    rc = MS_EINVAL;
  if (rc == 0) rc = uv_timer_init(ms_loop(ms), &h->timer);
  if (rc != 0) {
    ms_shs_wipe(&h->st);
    free(h);
    free(c);
    return rc == MS_EKEY ? MS_EKEY : rc;
  }
  h->timer.data = h;
  ms_ref(ms); /* the handshake state may outlive the wrap: see hs_maybe_free */
  ms_pwrap_set_impl(pw, c);
  uv_timer_start(&h->timer, on_timeout, timeout, 0);
  rc = ms_stream_read_start(lower, on_handshake_read, c);
  if (rc != 0) {
    fail(c, rc, "cannot read");
    return 0;
  }
  if (role == MS_ROLE_CLIENT) {
    if (ms_shs_client_hello(&c->hs->st, c->hs->out1) != 0) {
      fail(c, MS_EHANDSHAKE, ms_shs_error(&c->hs->st));
      return 0;
    }
    send_msg(c, c->hs->out1, MS_SHS_MSG1_LEN);
  }
  return 0;
}

static void shs_wrap_cancel(ms_pwrap_t *pw) {
  shs_conn_t *c = ms_pwrap_impl(pw);
  if (c) fail(c, MS_ECANCELED, "canceled");
}

static const char *const shs_option_keys[] = {"handshake_timeout_ms", NULL};

const ms_protocol_t ms__proto_shs = {
    .size = sizeof(ms_protocol_t),
    .name = "shs",
    .option_keys = shs_option_keys,
    .kind = MS_PROTO_TRANSFORM,
    .validate = shs_validate,
    .wrap = shs_wrap,
    .wrap_cancel = shs_wrap_cancel,
    .advertise = shs_advertise,
};
