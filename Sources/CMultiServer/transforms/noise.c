/*
 * noise: the Noise_IK_25519_ChaChaPoly_BLAKE2b transform (spec/noise.md).
 * Drives the I/O-free core (wire/noise_core.c) over the stream below: one
 * round trip (msg1, msg2), the authorize hook between them on the server,
 * then transport messages of up to 65519 bytes.
 *
 *   client  `…~noise:KEY`   dial the server whose ed25519 key is KEY
 *   server  `…~noise`       answer with our own key; advertised as
 *                           `…~noise:<own key>`
 *
 * Writes are corked: each upper write is sealed in one pass into the
 * current batch buffer (pooled), and the flush hook at the end of the loop
 * turn hands the whole batch to ONE lower write. The batch's requests
 * complete, in order, when that lower write completes. Reads are opened in
 * place; a paused reader keeps at most the rest of one read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "multiserver_uv.h"
#include "noise_core.h"

#define NOISE_POOL_MAX 2
/* Batch buffers larger than this are freed rather than pooled. */
#define NOISE_POOL_KEEP_MAX (2u * 1024 * 1024)
#define NOISE_B64_LEN 45
#define NOISE_REASON_LEN 256
#define NOISE_DEFAULT_TIMEOUT_MS 15000

enum { PH_HANDSHAKE, PH_AUTHORIZING, PH_OPEN, PH_FAILED };

/* A batch: the frames sealed in one loop turn and the requests they carry. */
typedef struct noise_buf_s noise_buf_t;
struct noise_buf_s {
  noise_buf_t *next; /* pool link */
  struct noise_conn_s *conn;
  ms_write_req_t *head, *tail;
  size_t len, cap;
  uint8_t data[];
};

typedef struct noise_conn_s {
  ms_t *ms;
  ms_stream_t *lower;
  ms_stream_t *upper;
  ms_pwrap_t *pw;
  int role;
  int phase;
  ms_noise_t hs;
  uint8_t in[MS_NOISE_MSG1_FRAMED_LEN]; /* handshake message being received */
  size_t inlen;
  uint8_t out[MS_NOISE_MSG1_FRAMED_LEN]; /* msg1 or msg2 being sent */
  uv_timer_t timer;
  bool timer_closed;
  bool lower_closed;
  ms_noise_cipher_t enc;
  ms_noise_rx_t dec;
  bool dec_ended;
  int write_error; /* sealing or a lower write failed: writes are over */
  uint8_t goodbye[MS_NOISE_GOODBYE_LEN];
  int goodbye_status;
  noise_buf_t *cur; /* the batch of this turn, not yet flushed */
  noise_buf_t *pool;
  size_t npool;
} noise_conn_t;

/* Per-write state kept in the upper request's scratch space. */
typedef struct {
  ms_write_req_t *next; /* in its batch */
} noise_wstate_t;

_Static_assert(sizeof(noise_wstate_t) <= MS_WRITE_REQ_SCRATCH, "scratch too small");

static int b64_key(const uint8_t key[32], char out[NOISE_B64_LEN]) {
  return ms_key_to_base64(key, out, NOISE_B64_LEN);
}

/* ---- batch buffers ------------------------------------------------------ */

static noise_buf_t *buf_get(noise_conn_t *c, size_t need) {
  for (noise_buf_t **pp = &c->pool; *pp; pp = &(*pp)->next) {
    if ((*pp)->cap >= need) {
      noise_buf_t *b = *pp;
      *pp = b->next;
      c->npool--;
      b->next = NULL;
      b->head = b->tail = NULL;
      b->len = 0;
      return b;
    }
  }
  noise_buf_t *b = malloc(sizeof(*b) + need);
  if (b) {
    memset(b, 0, sizeof(*b));
    b->cap = need;
  }
  return b;
}

static void buf_free(noise_buf_t *b) {
  sodium_memzero(b->data, b->len); /* ciphertext, but cheap to be tidy */
  free(b);
}

static void buf_put(noise_conn_t *c, noise_buf_t *b) {
  if (b->cap > NOISE_POOL_KEEP_MAX) {
    buf_free(b);
    return;
  }
  if (c->npool >= NOISE_POOL_MAX) {
    /* drop the smallest so the pool keeps the useful sizes */
    noise_buf_t **small = &c->pool;
    for (noise_buf_t **pp = &c->pool; *pp; pp = &(*pp)->next)
      if ((*pp)->cap < (*small)->cap) small = pp;
    if ((*small)->cap >= b->cap) {
      buf_free(b);
      return;
    }
    noise_buf_t *drop = *small;
    *small = drop->next;
    free(drop);
    c->npool--;
  }
  b->next = c->pool;
  c->pool = b;
  c->npool++;
}

/* Complete every request of batch b, in order. */
static void batch_complete(noise_buf_t *b, int status) {
  ms_write_req_t *r = b->head;
  b->head = b->tail = NULL;
  while (r) {
    noise_wstate_t *w = ms_write_req_scratch(r);
    ms_write_req_t *next = w->next;
    ms_write_req_done(r, status);
    r = next;
  }
}

/* ---- lifetime ---------------------------------------------------------- */

static void conn_free(noise_conn_t *c) {
  ms_noise_wipe(&c->hs);
  ms_noise_cipher_wipe(&c->enc);
  ms_noise_rx_free(&c->dec);
  if (c->cur) buf_free(c->cur);
  while (c->pool) {
    noise_buf_t *b = c->pool;
    c->pool = b->next;
    free(b);
  }
  sodium_memzero(c, sizeof(*c));
  free(c);
}

static void maybe_free(noise_conn_t *c) {
  if (!c->timer_closed || !c->lower_closed) return;
  ms_stream_t *upper = c->upper;
  if (upper) {
    c->upper = NULL;
    conn_free(c);
    ms_stream_closed(upper);
  } else {
    conn_free(c);
  }
}

static void on_timer_closed(uv_handle_t *h) {
  noise_conn_t *c = h->data;
  c->timer_closed = true;
  maybe_free(c);
}

static void stop_timer(noise_conn_t *c) {
  if (!uv_is_closing((uv_handle_t *)&c->timer))
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_lower_closed(ms_stream_t *s, void *arg) {
  (void)s;
  noise_conn_t *c = arg;
  c->lower_closed = true;
  c->lower = NULL;
  /* Every lower write has called back (so every flushed batch completed):
   * the batch that never left completes last, keeping the order. */
  if (c->cur) {
    noise_buf_t *b = c->cur;
    c->cur = NULL;
    batch_complete(b, MS_ECANCELED);
    buf_free(b);
  }
  maybe_free(c);
}

/* Handshake failed: hang up at once (send nothing more) and report. A
 * pending authorize request is withdrawn by the wrap's end. */
static void fail_as(noise_conn_t *c, int status, int fclass, const char *reason) {
  if (c->phase == PH_FAILED || c->phase == PH_OPEN) return;
  c->phase = PH_FAILED;
  ms_noise_wipe(&c->hs);
  stop_timer(c);
  ms_stream_close(c->lower, on_lower_closed, c);
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  ms_pwrap_fail(pw, status, fclass, reason);
}

static void fail(noise_conn_t *c, int status, const char *reason) {
  fail_as(c, status, MS_FAIL_DEFAULT, reason);
}

/* ---- the open session: writes ------------------------------------------ */

static void on_batch_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  noise_buf_t *b = arg;
  /* The conn outlives every lower write callback (it is freed from the
   * lower close callback, which comes after them). */
  noise_conn_t *c = b->conn;
  if (status != 0 && c->write_error == 0) c->write_error = status;
  batch_complete(b, status);
  buf_put(c, b);
}

static void noise_flush(ms_stream_t *s) {
  noise_conn_t *c = ms_stream_impl(s);
  noise_buf_t *b = c->cur;
  if (b == NULL) return;
  c->cur = NULL;
  if (c->write_error) {
    batch_complete(b, c->write_error);
    buf_put(c, b);
    return;
  }
  b->conn = c;
  /* A batch of empty writes still goes through the lower stream, so its
   * requests complete in order with the ones before it. */
  ms_buf_t out = {b->len ? b->data : NULL, b->len};
  int rc = ms_stream_write(c->lower, &out, b->len ? 1 : 0, on_batch_written, b);
  if (rc != 0) {
    /* The nonces have advanced past frames that never left: anything
     * sealed later would fail at the peer, so this direction is over. */
    c->write_error = rc;
    batch_complete(b, rc);
    buf_put(c, b);
  }
}

static int noise_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                       unsigned nbufs) {
  noise_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  size_t need = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t n = ms_noise_sealed_size(bufs[i].len);
    if (n < bufs[i].len || n > SIZE_MAX / 2 - need) return MS_EINVAL;
    need += n;
  }
  noise_buf_t *b = c->cur;
  if (b == NULL) {
    if ((b = buf_get(c, need ? need : 64)) == NULL) return MS_ENOMEM;
    c->cur = b;
  } else if (b->cap - b->len < need) {
    size_t cap = b->cap * 2;
    if (cap < b->len + need) cap = b->len + need;
    noise_buf_t *nb = realloc(b, sizeof(*b) + cap);
    if (nb == NULL) return MS_ENOMEM;
    nb->cap = cap;
    c->cur = b = nb;
  }
  size_t start = b->len;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t w = 0;
    if (bufs[i].len == 0) continue;
    int rc = ms_noise_seal(&c->enc, b->data + b->len, bufs[i].base, bufs[i].len, &w);
    if (rc != 0) {
      /* Frames sealed for this request's earlier buffers used nonces the
       * peer will never see in order: writes are over. */
      if (b->len != start) c->write_error = rc;
      b->len = start;
      if (rc == MS_ELIMIT) c->write_error = rc;
      return rc;
    }
    b->len += w;
  }
  noise_wstate_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  if (b->tail)
    ((noise_wstate_t *)ms_write_req_scratch(b->tail))->next = req;
  else
    b->head = req;
  b->tail = req;
  ms_stream_want_flush(s);
  return 0;
}

/* ---- the open session: reads ------------------------------------------- */

static void end_read(noise_conn_t *c, int status) {
  c->dec_ended = true;
  ms_stream_read_stop(c->lower);
  ms_stream_emit_read(c->upper, status, NULL, 0);
}

/* Open as many frames as the reader wants. */
static void pump(noise_conn_t *c, uint8_t *data, size_t len) {
  ms_stream_t *up = c->upper;
  for (;;) {
    size_t used = 0, outlen = 0;
    uint8_t *out = NULL;
    int r = ms_noise_rx_next(&c->dec, data, len, &used, &out, &outlen);
    data += used;
    len -= used;
    if (r == 1) {
      ms_stream_emit_read(up, 0, out, outlen);
      if (ms_stream_is_closing(up)) return;
      if (!ms_stream_is_reading(up)) {
        /* Paused: keep the rest of this one read and stop the lower. */
        if (len && ms_noise_rx_stash(&c->dec, data, len) != 0) {
          end_read(c, MS_ENOMEM);
          return;
        }
        ms_stream_read_stop(c->lower);
        return;
      }
      continue;
    }
    if (r == 0) return;
    if (c->dec_ended) return;
    if (r == 2) {
      /* Anything after the goodbye is an error (spec). */
      end_read(c, len ? MS_EFRAME : MS_EOF);
      return;
    }
    end_read(c, r);
    return;
  }
}

static void on_session_read(ms_stream_t *lower, int status, const uint8_t *data,
                            size_t len, void *arg) {
  (void)lower;
  noise_conn_t *c = arg;
  if (c->dec_ended) return;
  if (status == 0) {
    /* Writable by the emit contract (multiserver_plugin.h): open in place. */
    pump(c, (uint8_t *)data, len);
    return;
  }
  int r = status == MS_EOF ? ms_noise_rx_eof(&c->dec) : status;
  c->dec_ended = true;
  ms_stream_emit_read(c->upper, r == 0 ? MS_EOF : r, NULL, 0);
}

static int noise_read_start(ms_stream_t *s) {
  noise_conn_t *c = ms_stream_impl(s);
  if (c->dec_ended) return 0;
  if (ms_noise_rx_stashed(&c->dec)) pump(c, NULL, 0);
  if (!ms_stream_is_reading(s) || ms_stream_is_closing(s) || c->dec_ended) return 0;
  return ms_stream_read_start(c->lower, on_session_read, c);
}

static int noise_read_stop(ms_stream_t *s) {
  noise_conn_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}

/* ---- the open session: goodbye, close ---------------------------------- */

static void on_lower_shutdown(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  noise_conn_t *c = arg;
  if (c->goodbye_status != 0)
    status = c->goodbye_status;
  else if (status == UV_ENOTCONN)
    /* The goodbye was handed on, and the peer has already closed (it may
     * close as soon as it reads our goodbye, and a layer below us still
     * had its own end to send): our side is ended, which is what was
     * asked for. */
    status = 0;
  if (c->upper) ms_stream_shutdown_done(c->upper, status);
}

static void on_goodbye_written(ms_stream_t *lower, int status, void *arg) {
  noise_conn_t *c = arg;
  c->goodbye_status = status;
  if (!(ms_stream_caps(lower) & MS_CAP_HALF_CLOSE) && c->upper)
    ms_stream_shutdown_done(c->upper, status);
}

static int noise_shutdown(ms_stream_t *s) {
  noise_conn_t *c = ms_stream_impl(s);
  if (c->write_error) return c->write_error;
  int rc = ms_noise_goodbye(&c->enc, c->goodbye);
  if (rc != 0) return rc;
  ms_buf_t b = {c->goodbye, sizeof c->goodbye};
  rc = ms_stream_write(c->lower, &b, 1, on_goodbye_written, c);
  if (rc != 0) return rc;
  /* Shut the lower down at once: its base runs the shutdown right after
   * the goodbye is handed on, in the same turn (a peer that closes on our
   * goodbye cannot get in between). */
  if (ms_stream_caps(c->lower) & MS_CAP_HALF_CLOSE) {
    rc = ms_stream_shutdown(c->lower, on_lower_shutdown, c);
    if (rc != 0) return rc;
  }
  return 0;
}

static void noise_close(ms_stream_t *s) {
  noise_conn_t *c = ms_stream_impl(s);
  /* Lower write callbacks complete the flushed batches with MS_ECANCELED;
   * the lower close callback then completes the unflushed one, frees us
   * and reports upper closed. */
  ms_stream_close(c->lower, on_lower_closed, c);
}

static const ms_stream_ops_t noise_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = noise_write,
    .read_start = noise_read_start,
    .read_stop = noise_read_stop,
    .shutdown = noise_shutdown,
    .close = noise_close,
    .flush = noise_flush,
};

/* ---- handshake ------------------------------------------------------------ */

static void established(noise_conn_t *c) {
  ms_noise_outcome_t o;
  if (ms_noise_outcome(&c->hs, &o) != 0) {
    fail(c, MS_EHANDSHAKE, "no outcome");
    return;
  }
  uint8_t remote[MS_PUBLICKEYBYTES];
  memcpy(remote, o.remote_pk, sizeof remote);
  c->enc = o.send;
  ms_noise_rx_init(&c->dec, &o.recv);
  ms_noise_outcome_wipe(&o);
  ms_noise_wipe(&c->hs);
  char key[NOISE_B64_LEN];
  b64_key(remote, key);
  const char *la = ms_stream_address(c->lower);
  size_t n = strlen(la) + sizeof("~noise:") + NOISE_B64_LEN;
  char *addr = malloc(n);
  ms_stream_t *up = NULL;
  if (addr) {
    snprintf(addr, n, "%s~noise:%s", la, key);
    up = ms_stream_new(c->ms, &noise_ops, c, addr);
    free(addr);
  }
  if (up == NULL) {
    fail(c, MS_ENOMEM, "out of memory");
    return;
  }
  ms_stream_set_remote_key(up, remote);
  ms_stream_set_server(up, c->role == MS_ROLE_SERVER);
  c->upper = up; /* the wrap attaches an accepted authorize value */
  c->phase = PH_OPEN;
  stop_timer(c);
  ms_stream_read_stop(c->lower); /* resumes when the user reads */
  ms_pwrap_t *pw = c->pw;
  c->pw = NULL;
  ms_pwrap_done(pw, 0, up, NULL);
}

static void send_msg(noise_conn_t *c, size_t len) {
  ms_buf_t b = {c->out, len};
  int rc = ms_stream_write(c->lower, &b, 1, NULL, NULL);
  if (rc != 0) fail(c, rc, "cannot write handshake message");
}

static void server_accept(noise_conn_t *c) {
  if (ms_noise_server_accept(&c->hs, c->out) != 0) {
    fail(c, MS_EHANDSHAKE, ms_noise_error(&c->hs));
    return;
  }
  send_msg(c, MS_NOISE_MSG2_FRAMED_LEN);
  /* The server's handshake is complete once msg2 is sent. */
  if (c->phase == PH_HANDSHAKE) established(c);
}

static void on_authorized(ms_pwrap_t *pw, bool accepted, void *arg) {
  (void)pw;
  noise_conn_t *c = arg;
  if (c->phase != PH_AUTHORIZING) return;
  if (!accepted) {
    /* No msg2: the client sees the server hang up. */
    fail(c, MS_EUNAUTHORIZED, "client key not authorized");
    return;
  }
  c->phase = PH_HANDSHAKE;
  server_accept(c);
}

static void authorize(noise_conn_t *c) {
  if (ms_options(c->ms)->authorize == NULL) {
    server_accept(c);
    return;
  }
  c->phase = PH_AUTHORIZING;
  /* The service copies the key: the request outlives this handshake state. */
  int rc = ms_pwrap_authorize(c->pw, "ed25519", ms_noise_remote_key(&c->hs),
                              MS_PUBLICKEYBYTES, on_authorized, c);
  if (rc != 0) fail(c, rc, "cannot ask the authorize hook");
}

/* One complete handshake message arrived in c->in: read it. */
static int step(noise_conn_t *c) {
  int rc = c->role == MS_ROLE_CLIENT
               ? ms_noise_client_read_accept(&c->hs, c->in, c->inlen)
               : ms_noise_server_read_hello(&c->hs, c->in, c->inlen);
  if (rc != 0) fail(c, MS_EHANDSHAKE, ms_noise_error(&c->hs));
  return rc;
}

static const char *waiting_for(noise_conn_t *c) {
  if (c->phase == PH_AUTHORIZING) return "the authorize hook did not answer";
  return c->role == MS_ROLE_SERVER ? "no msg1 from the client"
                                   : "no msg2 from the server";
}

static void on_handshake_read(ms_stream_t *lower, int status, const uint8_t *data,
                              size_t len, void *arg) {
  noise_conn_t *c = arg;
  if (status != 0) {
    char why[NOISE_REASON_LEN];
    const char *what;
    if (c->role == MS_ROLE_CLIENT)
      what = c->inlen ? "server hung up inside msg2 (truncated)"
                      : "server hung up after msg1: wrong server key, wrong "
                        "network, or not authorized";
    else
      what = c->inlen ? "client hung up inside msg1 (truncated)"
                      : "client hung up before msg1";
    if (status == MS_EOF)
      ms_reasonf(why, sizeof why, "%s", what);
    else
      ms_reasonf(why, sizeof why, "%s (%s)", what, ms_strerror(status));
    /* A hang-up may be a wrong key, or a middlebox that accepts and closes:
     * another alternative may work, so it is a path failure. */
    fail_as(c, status == MS_EOF ? MS_EHANDSHAKE : status, MS_FAIL_PATH, why);
    return;
  }
  bool done = false;
  while (len > 0 && !done) {
    size_t want = ms_noise_expected(&c->hs);
    if (want == 0) return; /* not reading a handshake message */
    size_t take = want - c->inlen < len ? want - c->inlen : len;
    memcpy(c->in + c->inlen, data, take);
    c->inlen += take;
    data += take;
    len -= take;
    /* A prefix that does not announce the one size this stage takes fails
     * now, not at the timeout (the core names the stage). */
    if (c->inlen - take < MS_NOISE_LENBYTES && c->inlen >= MS_NOISE_LENBYTES &&
        ms_noise_frame_get(c->in) != want - MS_NOISE_LENBYTES) {
      (void)step(c);
      return;
    }
    if (c->inlen < want) return;
    if (step(c) != 0) return;
    done = true;
  }
  if (!done) return;
  /* Nothing more until the authorize hook answers / the user reads: bytes
   * read past the handshake go back to the lower stream, for the session
   * reader. Done before the wrap finishes, so that a reader started from
   * the connection callback is not stopped here. */
  ms_stream_read_stop(lower);
  if (len > 0 && ms_stream_unread(lower, data, len) != 0) {
    fail(c, MS_ENOMEM, "out of memory");
    return;
  }
  if (c->role == MS_ROLE_CLIENT)
    established(c);
  else
    authorize(c);
}

static void on_timeout(uv_timer_t *t) {
  noise_conn_t *c = t->data;
  char why[NOISE_REASON_LEN];
  ms_reasonf(why, sizeof why, "handshake timed out (%s)", waiting_for(c));
  fail_as(c, MS_ETIMEDOUT, MS_FAIL_PATH, why);
}

/* ---- protocol hooks ----------------------------------------------------- */

static int parse_key(const ms_section_t *sec, uint8_t k[32]) {
  return ms_key_from_base64(k, sec->fields[0], sec->field_lens[0]);
}

/* pdata: the ms_t this protocol is registered with (NULL when validating
 * without a multiserver, e.g. ms_address_check). */
static int noise_validate(const ms_section_t *sec, int role, void *pdata,
                          char *reason, size_t reason_len) {
  const ms_t *ms = pdata;
  uint8_t k[32], x[32];
  if (role == MS_ROLE_SERVER) {
    if (sec->nfields > 1) {
      ms_reasonf(reason, reason_len, "noise: a listen address takes at most the server key");
      return MS_EADDRESS;
    }
  } else if (sec->nfields != 1) {
    ms_reasonf(reason, reason_len,
               "noise: expected noise:KEY (KEY = base64 ed25519 public key)");
    return MS_EADDRESS;
  }
  if (sec->nfields == 0) return 0;
  if (parse_key(sec, k) != 0) {
    ms_reasonf(reason, reason_len, "noise: KEY is not base64 of 32 bytes");
    return MS_EKEY;
  }
  if (crypto_sign_ed25519_pk_to_curve25519(x, k) != 0) {
    ms_reasonf(reason, reason_len,
               "noise: KEY is not an ed25519 public key (it has no X25519 form)");
    return MS_EKEY;
  }
  sodium_memzero(x, sizeof x);
  /* A listen key must be our own: otherwise every handshake would fail. */
  if (role == MS_ROLE_SERVER && ms != NULL &&
      sodium_memcmp(k, ms_keys(ms)->public_key, 32) != 0) {
    ms_reasonf(reason, reason_len,
               "noise: the listen key is not this server's public key");
    return MS_EKEY;
  }
  return 0;
}

static size_t noise_advertise(ms_t *ms, const ms_section_t *sec, void *pdata,
                              char *buf, size_t size) {
  (void)sec;
  (void)pdata;
  char key[NOISE_B64_LEN];
  b64_key(ms_keys(ms)->public_key, key);
  return (size_t)snprintf(buf, size, "noise:%s", key);
}

static int noise_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                      int role, void *pdata) {
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  const ms_options_t *o = ms_options(ms);
  const ms_keypair_t *own = ms_keys(ms);
  uint8_t server_pk[32];
  int rc = 0;
  if (sec->nfields == 1 && parse_key(sec, server_pk) != 0) return MS_EKEY;
  if (role == MS_ROLE_SERVER && sec->nfields == 1 &&
      sodium_memcmp(server_pk, own->public_key, 32) != 0)
    return MS_EKEY; /* listen key is not ours */
  if (role == MS_ROLE_CLIENT && sec->nfields != 1) return MS_EADDRESS;
  uint64_t timeout = o->handshake_timeout_ms ? o->handshake_timeout_ms
                                             : NOISE_DEFAULT_TIMEOUT_MS;
  const char *topt = ms_pwrap_opt(pw, "handshake_timeout_ms");
  if (topt && (ms_opt_uint(topt, UINT32_MAX, &timeout) != 0 || timeout == 0))
    return MS_EINVAL;
  noise_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return MS_ENOMEM;
  c->ms = ms;
  c->lower = lower;
  c->pw = pw;
  c->role = role;
  c->phase = PH_HANDSHAKE;
  if (role == MS_ROLE_CLIENT)
    rc = ms_noise_client_init(&c->hs, o->app_key, own->secret_key, own->public_key,
                              server_pk, NULL);
  else
    rc = ms_noise_server_init(&c->hs, o->app_key, own->secret_key, own->public_key,
                              NULL);
  if (rc == 0) rc = uv_timer_init(ms_loop(ms), &c->timer);
  if (rc != 0) {
    ms_noise_wipe(&c->hs);
    free(c);
    return rc;
  }
  c->timer.data = c;
  ms_pwrap_set_impl(pw, c);
  uv_timer_start(&c->timer, on_timeout, timeout, 0);
  rc = ms_stream_read_start(lower, on_handshake_read, c);
  if (rc != 0) {
    fail(c, rc, "cannot read");
    return 0;
  }
  if (role == MS_ROLE_CLIENT) {
    if (ms_noise_client_hello(&c->hs, c->out) != 0) {
      fail(c, MS_EHANDSHAKE, ms_noise_error(&c->hs));
      return 0;
    }
    send_msg(c, MS_NOISE_MSG1_FRAMED_LEN);
  }
  return 0;
}

static void noise_wrap_cancel(ms_pwrap_t *pw) {
  noise_conn_t *c = ms_pwrap_impl(pw);
  if (c) fail(c, MS_ECANCELED, "canceled");
}

static const char *const noise_option_keys[] = {"handshake_timeout_ms", NULL};

const ms_protocol_t ms__proto_noise = {
    .size = sizeof(ms_protocol_t),
    .name = "noise",
    .option_keys = noise_option_keys,
    .kind = MS_PROTO_TRANSFORM,
    .validate = noise_validate,
    .wrap = noise_wrap,
    .wrap_cancel = noise_wrap_cancel,
    .advertise = noise_advertise,
};
