/*
 * gzip: the compression transform (`…~gzip`, no arguments). Each direction
 * is one RFC 1952 gzip member made with zlib (wire/gzip_core.c).
 *
 * Writes: every write of a loop turn is compressed (Z_NO_FLUSH) into the
 * turn's batch; the flush hook (ms_stream_want_flush) sync-flushes the
 * batch and hands it to the lower stream as ONE write, so interactive
 * traffic is never held back and a burst of small writes is one syscall.
 * The upper requests of the batch complete, in order, when that lower write
 * does. Shutdown finishes the member (CRC-32 and length trailer), then
 * shuts the lower stream down when it can half-close.
 *
 * Reads: inflated into a fixed per-connection buffer of GZ_OUT bytes and
 * delivered chunk by chunk, whatever the compression ratio. When the reader
 * stops, the lower stream stops and the unconsumed input (at most one lower
 * read) is stashed; it is decoded when the reader resumes, on a later turn.
 * MS_EOF only after a verified trailer; the lower stream ending before it is
 * MS_EHANGUP, corrupt data (or a bad CRC) MS_EFRAME, and the per-stack
 * limits gzip.max_bytes / gzip.max_ratio MS_ELIMIT. The reason of a failure
 * is left in the stream's "gzip.error" metadata.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "multiserver_plugin.h"
#include "gzip_core.h"

#define GZ_OUT MS_GUNZIP_OUT_RECOMMENDED /* inflate output chunk */
/* max_ratio is only checked once this much was decompressed, so that the
 * first highly compressible messages of a stream cannot trip it. */
#define GZ_RATIO_FLOOR (1024u * 1024u)
#define GZ_POOL_MAX 2
#define GZ_POOL_BUF_MAX (256u * 1024u) /* larger batch buffers are not kept */
#define GZ_REASON_LEN 160

typedef struct gz_conn_s gz_conn_t;

/* The compressed bytes of one loop turn's writes and the upper requests
 * they complete. */
typedef struct gz_batch_s gz_batch_t;
struct gz_batch_s {
  gz_batch_t *next; /* pool link */
  gz_conn_t *conn;
  ms_gzbuf_t buf;
  ms_write_req_t *head, *tail;
};

/* Per-write state in the request's scratch: the link of its batch. */
typedef struct {
  ms_write_req_t *next;
} gz_wstate_t;
_Static_assert(sizeof(gz_wstate_t) <= MS_WRITE_REQ_SCRATCH, "scratch too small");

struct gz_conn_s {
  ms_t *ms;
  ms_stream_t *lower;
  ms_stream_t *upper;
  int level;
  uint64_t max_ratio; /* 0: none */
  /* deflate */
  ms_gzip_t enc;
  bool enc_init;
  int write_error;   /* final: this direction is over */
  gz_batch_t *open;  /* the batch this turn's writes go into */
  gz_batch_t *pool;
  size_t npool;
  ms_gzbuf_t fin;    /* the end of the member (trailer) */
  /* inflate */
  ms_gunzip_t dec;
  uint8_t *out;      /* GZ_OUT bytes, allocated on first data */
  uint64_t in_bytes; /* compressed bytes received */
  bool more;         /* zlib or the stash may hold output: decode on resume */
  bool trailer;      /* the trailer was verified; waiting for the lower end */
  bool rd_done;      /* the read side ended (end_status) */
  bool end_delivered;
  int end_status;
  ms_defer_t resume;
};

/* ---- lifetime ---------------------------------------------------------- */

static void batch_free(gz_batch_t *b) {
  ms_gzbuf_free(&b->buf);
  free(b);
}

static void out_free(gz_conn_t *c) {
  if (c->out) {
    sodium_memzero(c->out, GZ_OUT);
    free(c->out);
    c->out = NULL;
  }
}

static void conn_free(gz_conn_t *c) {
  ms_gzip_free(&c->enc);
  ms_gunzip_free(&c->dec);
  out_free(c);
  ms_gzbuf_free(&c->fin);
  if (c->open) batch_free(c->open);
  while (c->pool) {
    gz_batch_t *b = c->pool;
    c->pool = b->next;
    batch_free(b);
  }
  free(c);
}

static void on_lower_closed(ms_stream_t *s, void *arg) {
  (void)s;
  gz_conn_t *c = arg;
  ms_stream_t *up = c->upper;
  c->lower = NULL;
  c->upper = NULL;
  conn_free(c);
  if (up) ms_stream_closed(up);
}

/* ---- writes ------------------------------------------------------------ */

static int enc_ready(gz_conn_t *c) {
  if (c->write_error) return c->write_error;
  if (!c->enc_init) {
    int rc = ms_gzip_init(&c->enc, c->level);
    if (rc != 0) return rc;
    c->enc_init = true;
  }
  return 0;
}

static gz_batch_t *batch_get(gz_conn_t *c) {
  gz_batch_t *b = c->pool;
  if (b) {
    c->pool = b->next;
    c->npool--;
  } else if ((b = calloc(1, sizeof(*b))) == NULL) {
    return NULL;
  }
  b->next = NULL;
  b->conn = c;
  b->buf.len = 0;
  b->head = b->tail = NULL;
  return b;
}

static void batch_put(gz_conn_t *c, gz_batch_t *b) {
  if (c->npool >= GZ_POOL_MAX || b->buf.cap > GZ_POOL_BUF_MAX) {
    batch_free(b);
    return;
  }
  b->buf.len = 0;
  b->head = b->tail = NULL;
  b->next = c->pool;
  c->pool = b;
  c->npool++;
}

/* Complete the batch's requests in order, then recycle it. */
static void batch_complete(gz_conn_t *c, gz_batch_t *b, int status) {
  ms_write_req_t *r = b->head;
  b->head = b->tail = NULL;
  batch_put(c, b);
  while (r) {
    gz_wstate_t *w = ms_write_req_scratch(r);
    ms_write_req_t *next = w->next;
    ms_write_req_done(r, status);
    r = next;
  }
}

static void on_batch_written(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  gz_batch_t *b = arg;
  gz_conn_t *c = b->conn;
  /* What zlib compressed after these bytes cannot be decoded without them. */
  if (status != 0 && c->write_error == 0) c->write_error = status;
  batch_complete(c, b, status);
}

static int gz_write(ms_stream_t *s, ms_write_req_t *req, const ms_buf_t *bufs,
                    unsigned nbufs) {
  gz_conn_t *c = ms_stream_impl(s);
  int rc = enc_ready(c);
  if (rc != 0) return rc;
  if (c->open == NULL && (c->open = batch_get(c)) == NULL) return MS_ENOMEM;
  gz_batch_t *b = c->open;
  for (unsigned i = 0; i < nbufs; i++) {
    rc = ms_gzip_write(&c->enc, bufs[i].base, bufs[i].len, &b->buf);
    if (rc != 0) {
      /* zlib may have taken part of the input: the stream is broken. */
      c->write_error = rc;
      ms_stream_want_flush(s); /* fails the batch's earlier requests */
      return rc;
    }
  }
  gz_wstate_t *w = ms_write_req_scratch(req);
  w->next = NULL;
  if (b->tail)
    ((gz_wstate_t *)ms_write_req_scratch(b->tail))->next = req;
  else
    b->head = req;
  b->tail = req;
  ms_stream_want_flush(s);
  return 0;
}

/* End of the turn: one sync-flushed lower write for all of its writes. */
static void gz_flush(ms_stream_t *s) {
  gz_conn_t *c = ms_stream_impl(s);
  gz_batch_t *b = c->open;
  if (b == NULL) return;
  c->open = NULL;
  int rc = c->write_error;
  if (rc == 0) rc = ms_gzip_flush(&c->enc, &b->buf);
  if (rc == 0) {
    ms_buf_t out = {b->buf.data, b->buf.len};
    rc = ms_stream_write(c->lower, &out, b->buf.len ? 1 : 0, on_batch_written, b);
  }
  if (rc != 0) {
    if (c->write_error == 0) c->write_error = rc;
    batch_complete(c, b, rc);
  }
}

static void on_lower_shutdown(ms_stream_t *lower, int status, void *arg) {
  (void)lower;
  gz_conn_t *c = arg;
  if (c->upper) ms_stream_shutdown_done(c->upper, status);
}

static void on_trailer_written(ms_stream_t *lower, int status, void *arg) {
  gz_conn_t *c = arg;
  if (c->upper == NULL) return;
  if (status == 0 && (ms_stream_caps(lower) & MS_CAP_HALF_CLOSE)) {
    status = ms_stream_shutdown(lower, on_lower_shutdown, c);
    if (status == 0) return;
  }
  /* Without half-close the trailer alone tells the peer we are done. */
  ms_stream_shutdown_done(c->upper, status);
}

/* The base calls this once every write has completed: no batch is open. */
static int gz_shutdown(ms_stream_t *s) {
  gz_conn_t *c = ms_stream_impl(s);
  int rc = enc_ready(c);
  if (rc == 0) rc = ms_gzip_finish(&c->enc, &c->fin);
  if (rc != 0) return rc;
  ms_gzip_free(&c->enc); /* done with the 256 KiB of deflate state */
  c->enc_init = false;
  c->write_error = MS_ESHUTDOWN;
  ms_buf_t b = {c->fin.data, c->fin.len};
  return ms_stream_write(c->lower, &b, 1, on_trailer_written, c);
}

/* ---- reads ------------------------------------------------------------- */

static void on_lower_read(ms_stream_t *lower, int status, const uint8_t *data,
                          size_t len, void *arg);

static void set_error(gz_conn_t *c, const char *reason) {
  /* Best effort: on ENOMEM the status alone tells what happened. */
  if (reason && reason[0] && c->upper &&
      ms_stream_set_meta_str(c->upper, "gzip.error", reason) != 0)
    return;
}

/* The read side is over: stop the lower stream, drop the inflater, and give
 * the reader status now or, if it is paused, when it resumes. */
static void finish_read(gz_conn_t *c, int status, const char *reason) {
  if (c->rd_done) return;
  c->rd_done = true;
  c->more = false;
  c->end_status = status;
  set_error(c, reason ? reason : ms_gunzip_reason(&c->dec));
  ms_stream_read_stop(c->lower);
  ms_gunzip_free(&c->dec);
  out_free(c);
  if (ms_stream_is_reading(c->upper) && !ms_stream_is_closing(c->upper)) {
    c->end_delivered = true;
    ms_stream_emit_read(c->upper, status, NULL, 0);
  }
}

/* Decode input (after the stash) for as long as the reader reads. */
static void pump(gz_conn_t *c, const uint8_t *data, size_t len) {
  ms_stream_t *up = c->upper;
  if (c->out == NULL && (c->out = malloc(GZ_OUT)) == NULL) {
    finish_read(c, MS_ENOMEM, "gzip: out of memory");
    return;
  }
  for (;;) {
    size_t used = 0, k = 0;
    int r = ms_gunzip_next(&c->dec, data, len, &used, c->out, GZ_OUT, &k);
    data += used;
    len -= used;
    c->more = false;
    if (c->max_ratio && k) {
      uint64_t total = ms_gunzip_total_out(&c->dec);
      if (total > GZ_RATIO_FLOOR && total / c->max_ratio > c->in_bytes) {
        char why[GZ_REASON_LEN];
        ms_reasonf(why, sizeof why,
                   "gzip: decompressed/compressed ratio exceeds the limit of %llu",
                   (unsigned long long)c->max_ratio);
        finish_read(c, MS_ELIMIT, why);
        return;
      }
    }
    if (k) {
      ms_stream_emit_read(up, 0, c->out, k);
      if (ms_stream_is_closing(up) || c->rd_done) return;
    }
    if (r < 0) {
      finish_read(c, r, NULL);
      return;
    }
    if (r == 2) {
      /* The trailer verified. Over a lower stream that half-closes, the
       * end is its end too (anything before it is MS_EFRAME): a reader that
       * closes at MS_EOF then never cuts off what the layers below still
       * send (shs's goodbye under us). */
      if (!(ms_stream_caps(c->lower) & MS_CAP_HALF_CLOSE)) {
        finish_read(c, MS_EOF, "");
      } else if (!c->trailer) {
        c->trailer = true;
        out_free(c);
      }
      return;
    }
    if (r == 0) return; /* wants more input */
    /* r == 1: the buffer filled up; zlib or the input has more. */
    if (!ms_stream_is_reading(up)) {
      c->more = true;
      int rc = ms_gunzip_stash(&c->dec, data, len);
      if (rc != 0) finish_read(c, rc, "gzip: cannot keep the unread input");
      ms_stream_read_stop(c->lower);
      return;
    }
  }
}

static void on_lower_read(ms_stream_t *lower, int status, const uint8_t *data,
                          size_t len, void *arg) {
  (void)lower;
  gz_conn_t *c = arg;
  if (c->rd_done) return;
  if (status == 0) {
    c->in_bytes += len;
    if (!ms_stream_is_reading(c->upper)) {
      /* Not ours to deliver now (a lower stream that emitted after its
       * reader stopped): keep it for the resume. */
      int rc = ms_gunzip_stash(&c->dec, data, len);
      if (rc != 0) finish_read(c, rc, "gzip: cannot keep the unread input");
      ms_stream_read_stop(c->lower);
      return;
    }
    pump(c, data, len);
    return;
  }
  if (status == MS_EOF) {
    int r = ms_gunzip_eof(&c->dec);
    if (r == 0)
      finish_read(c, MS_EOF, "");
    else
      finish_read(c, r, r == MS_EHANGUP ? "gzip: the stream ended before the gzip trailer"
                                       : NULL);
    return;
  }
  char why[GZ_REASON_LEN];
  ms_reasonf(why, sizeof why, "gzip: lower stream: %s", ms_strerror(status));
  finish_read(c, status, why);
}

/* A reader that resumed: what was held back first, then the lower stream.
 * Deferred so that nothing is emitted inside read_start (the base would
 * copy it, unbounded). */
static void resume(void *arg) {
  gz_conn_t *c = arg;
  ms_stream_t *up = c->upper;
  if (up == NULL || ms_stream_is_closing(up) || !ms_stream_is_reading(up)) return;
  if (c->rd_done) {
    if (!c->end_delivered) {
      c->end_delivered = true;
      ms_stream_emit_read(up, c->end_status, NULL, 0);
    }
    return;
  }
  if (c->more || ms_gunzip_stashed(&c->dec)) pump(c, NULL, 0);
  if (c->rd_done || c->more || ms_stream_is_closing(up) || !ms_stream_is_reading(up))
    return;
  int rc = ms_stream_read_start(c->lower, on_lower_read, c);
  if (rc != 0) finish_read(c, rc, "gzip: cannot read the lower stream");
}

static int gz_read_start(ms_stream_t *s) {
  gz_conn_t *c = ms_stream_impl(s);
  if (c->rd_done || c->more || ms_gunzip_stashed(&c->dec)) {
    if (!(c->rd_done && c->end_delivered)) ms_defer(c->ms, &c->resume, resume, c);
    return 0;
  }
  return ms_stream_read_start(c->lower, on_lower_read, c);
}

static int gz_read_stop(ms_stream_t *s) {
  gz_conn_t *c = ms_stream_impl(s);
  return ms_stream_read_stop(c->lower);
}

static void gz_close(ms_stream_t *s) {
  gz_conn_t *c = ms_stream_impl(s);
  ms_defer_cancel(c->ms, &c->resume);
  if (c->open) {
    gz_batch_t *b = c->open;
    c->open = NULL;
    batch_complete(c, b, MS_ECANCELED);
  }
  /* Lower write callbacks complete the flushed batches (MS_ECANCELED); the
   * lower close callback then frees us and reports upper closed. */
  ms_stream_close(c->lower, on_lower_closed, c);
}

static const ms_stream_ops_t gz_ops = {
    .size = sizeof(ms_stream_ops_t),
    .write = gz_write,
    .read_start = gz_read_start,
    .read_stop = gz_read_stop,
    .shutdown = gz_shutdown,
    .close = gz_close,
    .flush = gz_flush,
};

/* ---- protocol hooks ----------------------------------------------------- */

static int gz_validate(const ms_section_t *sec, int role, void *pdata,
                       char *reason, size_t reason_len) {
  (void)role;
  (void)pdata;
  if (sec->nfields != 0) {
    ms_reasonf(reason, reason_len, "gzip: takes no arguments (write ~gzip)");
    return MS_EADDRESS;
  }
  return 0;
}

static int opt(ms_pwrap_t *pw, const char *key, uint64_t max, uint64_t *out) {
  const char *v = ms_pwrap_opt(pw, key);
  if (v == NULL) return 0;
  return ms_opt_uint(v, max, out);
}

static int gz_wrap(ms_pwrap_t *pw, ms_stream_t *lower, const ms_section_t *sec,
                   int role, void *pdata) {
  (void)sec;
  (void)role;
  (void)pdata;
  ms_t *ms = ms_pwrap_ms(pw);
  uint64_t max_bytes = 0, max_ratio = 0, level = 6;
  if (opt(pw, "max_bytes", UINT64_MAX, &max_bytes) != 0 ||
      opt(pw, "max_ratio", UINT32_MAX, &max_ratio) != 0 ||
      opt(pw, "level", 9, &level) != 0)
    return MS_EINVAL;
  gz_conn_t *c = calloc(1, sizeof(*c));
  if (c == NULL) return MS_ENOMEM;
  c->ms = ms;
  c->lower = lower;
  c->level = (int)level;
  c->max_ratio = max_ratio;
  if (ms_gunzip_init(&c->dec, max_bytes) != 0) {
    ms_gunzip_free(&c->dec);
    free(c);
    return MS_ENOMEM;
  }
  const char *la = ms_stream_address(lower);
  size_t n = strlen(la) + sizeof("~gzip");
  char *addr = malloc(n);
  ms_stream_t *up = NULL;
  if (addr) {
    snprintf(addr, n, "%s~gzip", la);
    up = ms_stream_new(ms, &gz_ops, c, addr);
    free(addr);
  }
  if (up == NULL) {
    conn_free(c);
    return MS_ENOMEM;
  }
  /* The trailer ends a direction on its own: gzip can half-close over any
   * reliable, ordered stream. */
  ms_stream_set_caps(up, MS_CAP_HALF_CLOSE |
                             (ms_stream_caps(lower) & (MS_CAP_RELIABLE | MS_CAP_ORDERED)));
  c->upper = up;
  ms_pwrap_done(pw, 0, up, NULL);
  return 0;
}

static const char *const gz_option_keys[] = {"max_bytes", "max_ratio", "level", NULL};

const ms_protocol_t ms__proto_gzip = {
    .size = sizeof(ms_protocol_t),
    .name = "gzip",
    .kind = MS_PROTO_TRANSFORM,
    .validate = gz_validate,
    .wrap = gz_wrap,
    .option_keys = gz_option_keys,
};
