/*
 * The base duplex stream. Implementations (uvstream.c, transforms) move the
 * bytes; this file owns what every stream must get right the same way:
 * write accounting and backpressure, pooled write requests, shutdown only
 * after earlier writes, push-back and the no-callback-inside-read_start
 * rule, end-of-turn flushes, metadata and identity, and the close protocol
 * (write callbacks, then the close callback, then free — never from inside
 * ms_stream_close()).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"

_Static_assert(sizeof(uv_write_t) <= MS_WRITE_REQ_SCRATCH,
               "uv_write_t must fit a write request's scratch space");

/* Pooled requests kept per stream beyond which completed ones are freed. */
#define MS_REQ_POOL_MAX 16

static char *dupstr(const char *s) {
  if (s == NULL) return NULL;
  size_t n = strlen(s);
  char *d = malloc(n + 1);
  if (d) memcpy(d, s, n + 1);
  return d;
}

/* The first published layout: the five hooks write..close, no size. */
#define OPS_V1_SIZE (offsetof(ms_stream_ops_t, flush))

ms_stream_t *ms_stream_new(ms_t *ms, const ms_stream_ops_t *ops, void *impl,
                           const char *address) {
  if (ms == NULL || ops == NULL) return NULL;
  size_t size = ops->size ? ops->size : OPS_V1_SIZE;
  if (size > sizeof(ms_stream_ops_t) || size < offsetof(ms_stream_ops_t, write))
    return NULL;
  ms_stream_t *s = calloc(1, sizeof(*s));
  if (s == NULL) return NULL;
  s->ms = ms;
  memcpy(&s->ops, ops, size); /* hooks past the caller's size stay NULL */
  s->ops.size = sizeof(ms_stream_ops_t);
  s->impl = impl;
  s->caps = MS_CAP_HALF_CLOSE | MS_CAP_RELIABLE | MS_CAP_ORDERED;
  s->high_water = MS_DEFAULT_HIGH_WATER;
  if (address && (s->address = dupstr(address)) == NULL) {
    free(s);
    return NULL;
  }
  ms__live_inc(ms);
  return s;
}

void *ms_stream_impl(const ms_stream_t *s) { return s->impl; }
ms_t *ms_stream_ms(const ms_stream_t *s) { return s->ms; }

int ms_stream_set_address(ms_stream_t *s, const char *address) {
  char *d = dupstr(address);
  if (address && d == NULL) return MS_ENOMEM;
  free(s->address);
  s->address = d;
  return 0;
}

int ms__stream_set_stack(ms_stream_t *s, const char *stack) {
  char *d = dupstr(stack);
  if (stack && d == NULL) return MS_ENOMEM;
  free(s->stack);
  s->stack = d;
  return 0;
}

static void id_clear(ms_stream_t *s) {
  free(s->id_kind);
  free(s->id);
  s->id_kind = NULL;
  s->id = NULL;
  s->id_len = 0;
}

int ms_stream_set_remote_id(ms_stream_t *s, const char *kind, const void *id,
                            size_t len) {
  if (s == NULL) return MS_EINVAL;
  if (id == NULL) {
    id_clear(s);
    return 0;
  }
  if (kind == NULL || kind[0] == '\0' || len == 0 || len > MS_REMOTE_ID_MAX)
    return MS_EINVAL;
  char *k = dupstr(kind);
  uint8_t *v = malloc(len);
  if (k == NULL || v == NULL) {
    free(k);
    free(v);
    return MS_ENOMEM;
  }
  memcpy(v, id, len);
  id_clear(s);
  s->id_kind = k;
  s->id = v;
  s->id_len = len;
  return 0;
}

void ms_stream_set_remote_key(ms_stream_t *s,
                              const uint8_t pk[MS_PUBLICKEYBYTES]) {
  /* On ENOMEM the stream stays unauthenticated: it never claims a key it
   * could not record. */
  if (ms_stream_set_remote_id(s, "ed25519", pk, MS_PUBLICKEYBYTES) != 0)
    id_clear(s);
}

const void *ms_stream_remote_id(const ms_stream_t *s, const char **kind,
                                size_t *len) {
  if (kind) *kind = s->id_kind;
  if (len) *len = s->id_len;
  return s->id;
}

/* ---- metadata -------------------------------------------------------- */

static ms_meta_t **meta_find(ms_stream_t *s, const char *key) {
  ms_meta_t **pp = &s->meta;
  while (*pp && strcmp((*pp)->key, key) != 0) pp = &(*pp)->next;
  return pp;
}

int ms_stream_set_meta(ms_stream_t *s, const char *key, const void *value,
                       size_t len) {
  if (s == NULL || key == NULL || key[0] == '\0' || (value == NULL && len))
    return MS_EINVAL;
  ms_meta_t **pp = meta_find(s, key);
  ms_meta_t *old = *pp;
  if (value == NULL) {
    if (old) {
      *pp = old->next;
      free(old->key);
      free(old);
    }
    return 0;
  }
  if (len > SIZE_MAX - sizeof(ms_meta_t) - 1) return MS_EINVAL;
  ms_meta_t *m = malloc(sizeof(*m) + len + 1);
  char *k = m ? dupstr(key) : NULL;
  if (k == NULL) {
    free(m);
    return MS_ENOMEM;
  }
  m->key = k;
  m->len = len;
  if (len) memcpy(m->value, value, len);
  m->value[len] = '\0';
  if (old) {
    m->next = old->next;
    free(old->key);
    free(old);
  } else {
    m->next = NULL;
  }
  *pp = m; /* entries keep the order they were first set in */
  return 0;
}

int ms_stream_set_meta_str(ms_stream_t *s, const char *key, const char *value) {
  return ms_stream_set_meta(s, key, value, value ? strlen(value) : 0);
}

const void *ms_stream_meta(const ms_stream_t *s, const char *key, size_t *len) {
  if (len) *len = 0;
  if (s == NULL || key == NULL) return NULL;
  for (const ms_meta_t *m = s->meta; m; m = m->next)
    if (strcmp(m->key, key) == 0) {
      if (len) *len = m->len;
      return m->value;
    }
  return NULL;
}

size_t ms_stream_meta_count(const ms_stream_t *s) {
  size_t n = 0;
  for (const ms_meta_t *m = s->meta; m; m = m->next) n++;
  return n;
}

const char *ms_stream_meta_at(const ms_stream_t *s, size_t i,
                              const void **value, size_t *len) {
  const ms_meta_t *m = s->meta;
  while (m && i--) m = m->next;
  if (value) *value = m ? m->value : NULL;
  if (len) *len = m ? m->len : 0;
  return m ? m->key : NULL;
}

static void meta_free(ms_stream_t *s) {
  while (s->meta) {
    ms_meta_t *m = s->meta;
    s->meta = m->next;
    free(m->key);
    free(m);
  }
}

void ms_stream_set_caps(ms_stream_t *s, unsigned caps) { s->caps = caps; }

void ms_stream_bytes(const ms_stream_t *s, uint64_t *in, uint64_t *out) {
  if (in) *in = s ? s->bytes_in : 0;
  if (out) *out = s ? s->bytes_out : 0;
}
unsigned ms_stream_caps(const ms_stream_t *s) { return s->caps; }

void ms_stream_set_auth(ms_stream_t *s, void *auth) {
  if (s->auth_owned && s->auth != auth) {
    ms__auth_free(s->ms, s->auth);
    s->auth_owned = false;
  }
  s->auth = auth;
}

void ms__stream_own_auth(ms_stream_t *s, void *auth) {
  ms_stream_set_auth(s, auth);
  s->auth_owned = auth != NULL;
}

int ms__stream_inherit(ms_stream_t *upper, ms_stream_t *lower) {
  if (upper == lower) return 0;
  if (upper->id == NULL && lower->id != NULL) {
    int rc = ms_stream_set_remote_id(upper, lower->id_kind, lower->id, lower->id_len);
    if (rc != 0) return rc;
  }
  for (const ms_meta_t *m = lower->meta; m; m = m->next) {
    if (*meta_find(upper, m->key)) continue; /* the upper layer's own wins */
    int rc = ms_stream_set_meta(upper, m->key, m->value, m->len);
    if (rc != 0) return rc;
  }
  if (upper->auth == NULL && lower->auth != NULL) {
    upper->auth = lower->auth;
    upper->auth_owned = lower->auth_owned;
    lower->auth_owned = false;
  }
  if (lower->is_server) upper->is_server = true;
  return 0;
}
void ms_stream_set_server(ms_stream_t *s, bool v) { s->is_server = v; }
bool ms_stream_is_reading(const ms_stream_t *s) { return s->reading; }
bool ms_stream_is_closing(const ms_stream_t *s) { return s->closing; }

const char *ms_stream_address(const ms_stream_t *s) {
  return s->address ? s->address : "";
}
const char *ms_stream_stack(const ms_stream_t *s) { return s->stack; }
const uint8_t *ms_stream_remote_key(const ms_stream_t *s) {
  return s->id && s->id_len == MS_PUBLICKEYBYTES && strcmp(s->id_kind, "ed25519") == 0
             ? s->id
             : NULL;
}
void *ms_stream_auth(const ms_stream_t *s) { return s->auth; }
bool ms_stream_is_server(const ms_stream_t *s) { return s->is_server; }
void ms_stream_set_data(ms_stream_t *s, void *data) { s->data = data; }
void *ms_stream_data(const ms_stream_t *s) { return s->data; }

/* ---- writes ---------------------------------------------------------- */

size_t ms_stream_write_queue_size(const ms_stream_t *s) { return s->queued; }
void ms_stream_set_high_water(ms_stream_t *s, size_t bytes) {
  s->high_water = bytes ? bytes : 1;
}
size_t ms_stream_high_water(const ms_stream_t *s) { return s->high_water; }
bool ms_stream_writable(const ms_stream_t *s) {
  return !s->closing && s->shut_state == MS_SHUT_NONE &&
         s->queued < s->high_water;
}
void ms_stream_on_drain(ms_stream_t *s, ms_drain_cb cb, void *arg) {
  s->drain_cb = cb;
  s->drain_arg = arg;
}

size_t ms_write_req_size(const ms_write_req_t *req) { return req->size; }
void *ms_write_req_scratch(ms_write_req_t *req) { return req->impl.bytes; }

static ms_write_req_t *req_get(ms_stream_t *s) {
  ms_write_req_t *r = s->free_reqs;
  if (r) {
    s->free_reqs = r->next;
    s->nfree--;
  } else {
    r = malloc(sizeof(*r));
    if (r == NULL) return NULL;
  }
  memset(r, 0, offsetof(ms_write_req_t, impl));
  r->node.queued = false;
  return r;
}

static void req_put(ms_stream_t *s, ms_write_req_t *r) {
  if (s->pending == 0) {
    /* Nothing queued: an idle stream keeps no pooled requests (a
     * connection that once wrote would otherwise hold them for good). */
    free(r);
    while (s->free_reqs) {
      ms_write_req_t *f = s->free_reqs;
      s->free_reqs = f->next;
      free(f);
    }
    s->nfree = 0;
    return;
  }
  if (s->nfree >= MS_REQ_POOL_MAX) {
    free(r);
    return;
  }
  r->next = s->free_reqs;
  s->free_reqs = r;
  s->nfree++;
}

static void maybe_shutdown(ms_stream_t *s);
static void complete_early(void *arg);
static void maybe_finish(ms_stream_t *s);

int ms_stream_write(ms_stream_t *s, const ms_buf_t *bufs, unsigned nbufs,
                    ms_write_cb cb, void *arg) {
  if (s == NULL || (nbufs && bufs == NULL)) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  if (s->aborted) return s->aborted;
  if (s->shut_state != MS_SHUT_NONE) return MS_ESHUTDOWN;
  size_t size = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len && bufs[i].base == NULL) return MS_EINVAL;
    if (bufs[i].len > SIZE_MAX - size) return MS_EINVAL; /* sum overflows */
    size += bufs[i].len;
  }
  if (size > SIZE_MAX - s->queued) return MS_EINVAL;
  /* A hard cap on what one stream may queue (limits.max_write_queue): a
   * peer that never reads cannot make us hold unbounded memory. */
  if (s->max_queue && s->queued + size > s->max_queue) return MS_ELIMIT;
  if (s->idle_ms) s->last_active = uv_now(s->ms->loop);
  ms_write_req_t *r = req_get(s);
  if (r == NULL) return MS_ENOMEM;
  r->s = s;
  r->cb = cb;
  r->arg = arg;
  r->size = size;
  s->queued += size;
  s->pending++;
  if (s->queued >= s->high_water) s->above_high_water = true;
  r->in_submit = true;
  int rc = s->ops.write(s, r, bufs, nbufs);
  r->in_submit = false;
  if (rc != 0) {
    s->queued -= size;
    s->pending--;
    req_put(s, r);
    return rc;
  }
  /* Completed inside ops->write(): the callback must still come later, or
   * it could run inside the caller's frame and overtake earlier writes. */
  if (r->early) ms_defer(s->ms, &r->node, complete_early, r);
  return 0;
}

static void complete_early(void *arg) {
  ms_write_req_t *r = arg;
  r->early = false;
  ms_write_req_done(r, r->early_status);
}

void ms_write_req_done(ms_write_req_t *r, int status) {
  if (r->in_submit) {
    r->early = true;
    r->early_status = status;
    return;
  }
  ms_stream_t *s = r->s;
  ms_write_cb cb = r->cb;
  void *arg = r->arg;
  s->queued -= r->size;
  s->pending--;
  if (status == 0) s->bytes_out += r->size;
  req_put(s, r);
  if (cb) cb(s, status, arg);
  if (s->above_high_water && s->queued < s->high_water) {
    s->above_high_water = false;
    if (s->drain_cb && !s->closing) s->drain_cb(s, s->drain_arg);
  }
  maybe_shutdown(s);
  maybe_finish(s);
}

/* ---- reads ----------------------------------------------------------- */

static bool held_back(const ms_stream_t *s) {
  return s->pb_len != 0 || s->pb_status != 0;
}

static int impl_start(ms_stream_t *s) {
  if (s->impl_reading) return 0;
  s->impl_reading = true;
  s->in_read_start = true;
  int rc = s->ops.read_start(s);
  s->in_read_start = false;
  if (rc != 0) s->impl_reading = false;
  return rc;
}

/* Deliver what was pushed back or held, then let the implementation go on. */
static void deliver_held(void *arg) {
  ms_stream_t *s = arg;
  while (s->reading && !s->closing && held_back(s)) {
    if (s->pb_len) {
      uint8_t *b = s->pb;
      size_t n = s->pb_len;
      s->pb = NULL;
      s->pb_len = 0;
      s->bytes_in += n;
      s->read_cb(s, 0, b, n, s->read_arg);
      sodium_memzero(b, n);
      free(b);
      continue;
    }
    int st = s->pb_status;
    s->pb_status = 0;
    s->reading = false;
    s->impl_reading = false;
    s->read_cb(s, st, NULL, 0, s->read_arg);
    return;
  }
  if (s->reading && !s->closing && !held_back(s)) {
    int rc = impl_start(s);
    if (rc != 0 && s->reading) {
      s->reading = false;
      s->read_cb(s, rc, NULL, 0, s->read_arg);
    } else if (rc == 0 && held_back(s)) {
      /* Emitted inside ops->read_start: held, so deliver them later (as
       * ms_stream_read_start does), or they would wait for the next emit
       * and then be overtaken by it. */
      ms_defer(s->ms, &s->pb_node, deliver_held, s);
    }
  }
}

int ms_stream_read_start(ms_stream_t *s, ms_read_cb cb, void *arg) {
  if (s == NULL || cb == NULL) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  if (s->aborted && !held_back(s)) return s->aborted;
  s->read_cb = cb;
  s->read_arg = arg;
  if (s->reading) return 0;
  s->reading = true;
  if (held_back(s)) { /* delivered on a later turn, never inside this call */
    ms_defer(s->ms, &s->pb_node, deliver_held, s);
    return 0;
  }
  int rc = impl_start(s);
  if (rc != 0) s->reading = false;
  /* Bytes emitted inside ops->read_start were held: deliver them later. */
  if (rc == 0 && held_back(s)) ms_defer(s->ms, &s->pb_node, deliver_held, s);
  return rc;
}

int ms_stream_read_stop(ms_stream_t *s) {
  if (s == NULL) return MS_EINVAL;
  if (!s->reading) return 0;
  s->reading = false;
  if (s->closing || !s->impl_reading) return 0;
  s->impl_reading = false;
  return s->ops.read_stop(s);
}

/* Append to (front = false) or prepend to (front = true) the held bytes. */
static int hold(ms_stream_t *s, const uint8_t *data, size_t len, bool front) {
  if (len == 0) return 0;
  if (len > SIZE_MAX - s->pb_len) return MS_EINVAL;
  uint8_t *b = malloc(s->pb_len + len);
  if (b == NULL) return MS_ENOMEM;
  if (front) {
    memcpy(b, data, len);
    if (s->pb_len) memcpy(b + len, s->pb, s->pb_len);
  } else {
    if (s->pb_len) memcpy(b, s->pb, s->pb_len);
    memcpy(b + s->pb_len, data, len);
  }
  if (s->pb) {
    sodium_memzero(s->pb, s->pb_len);
    free(s->pb);
  }
  s->pb = b;
  s->pb_len += len;
  return 0;
}

int ms_stream_unread(ms_stream_t *s, const void *data, size_t len) {
  if (s == NULL || (len && data == NULL)) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  int rc = hold(s, data, len, true);
  if (rc != 0) return rc;
  /* A reader that is running gets them on a later turn, first. */
  if (s->reading && len) {
    if (s->impl_reading) {
      s->impl_reading = false;
      s->ops.read_stop(s);
    }
    ms_defer(s->ms, &s->pb_node, deliver_held, s);
  }
  return 0;
}

void ms_stream_emit_read(ms_stream_t *s, int status, uint8_t *data,
                         size_t len) {
  if (s->closing || s->read_cb == NULL) return;
  if (s->in_read_start || (held_back(s) && s->pb_status == 0 && s->pb_node.queued)) {
    /* Inside ops->read_start (or behind bytes still held): keep the order
     * and deliver on a later turn. */
    if (status == 0) {
      if (hold(s, data, len, false) != 0 && s->pb_status == 0) s->pb_status = MS_ENOMEM;
    } else if (s->pb_status == 0) {
      s->pb_status = status;
    }
    if (!s->in_read_start) ms_defer(s->ms, &s->pb_node, deliver_held, s);
    return;
  }
  if (status != 0) {
    s->reading = false;
    s->impl_reading = false;
  } else {
    s->bytes_in += len;
    if (s->idle_ms) s->last_active = uv_now(s->ms->loop);
  }
  s->read_cb(s, status, data, len, s->read_arg);
}

/* ---- flush ----------------------------------------------------------- */

void ms_stream_want_flush(ms_stream_t *s) {
  if (s == NULL || s->ops.flush == NULL || s->flush_queued || s->closing) return;
  ms_t *ms = s->ms;
  s->flush_queued = true;
  s->fnext = ms->fhead;
  ms->fhead = s;
  ms__flush_wanted(ms);
}

void ms__run_flushes(ms_t *ms) {
  while (ms->fhead) {
    ms_stream_t *s = ms->fhead;
    ms->fhead = s->fnext;
    s->fnext = NULL;
    s->flush_queued = false;
    if (!s->closing) s->ops.flush(s);
  }
}

static void flush_unlink(ms_stream_t *s) {
  if (!s->flush_queued) return;
  for (ms_stream_t **pp = &s->ms->fhead; *pp; pp = &(*pp)->fnext)
    if (*pp == s) {
      *pp = s->fnext;
      break;
    }
  s->flush_queued = false;
}

/* ---- shutdown -------------------------------------------------------- */

static void shutdown_early(void *arg) {
  ms_stream_t *s = arg;
  s->shut_early = false;
  s->pending--; /* the hold taken in maybe_shutdown */
  ms_stream_shutdown_done(s, s->shut_status);
  maybe_finish(s);
}

static void maybe_shutdown(ms_stream_t *s) {
  if (s->shut_state != MS_SHUT_WAIT || s->pending != 0 || s->closing) return;
  s->shut_state = MS_SHUT_RUNNING;
  s->in_shutdown = true;
  int rc = s->ops.shutdown(s);
  s->in_shutdown = false;
  if (rc != 0) {
    s->shut_early = true;
    s->shut_status = rc;
  }
  if (s->shut_early) {
    /* Never report from inside the caller's ms_stream_shutdown (or write
     * completion): defer, holding the stream open until then. */
    s->pending++;
    ms_defer(s->ms, &s->shut_node, shutdown_early, s);
  }
}

int ms_stream_shutdown(ms_stream_t *s, ms_shutdown_cb cb, void *arg) {
  if (s == NULL) return MS_EINVAL;
  if (s->closing) return MS_ECLOSED;
  if (s->aborted) return s->aborted;
  if (s->shut_state != MS_SHUT_NONE) return MS_ESHUTDOWN;
  s->shut_state = MS_SHUT_WAIT;
  s->shut_cb = cb;
  s->shut_arg = arg;
  maybe_shutdown(s);
  return 0;
}

void ms_stream_shutdown_done(ms_stream_t *s, int status) {
  if (s->in_shutdown) {
    s->shut_early = true;
    s->shut_status = status;
    return;
  }
  if (s->shut_state == MS_SHUT_DONE) return;
  s->shut_state = MS_SHUT_DONE;
  ms_shutdown_cb cb = s->shut_cb;
  s->shut_cb = NULL;
  if (cb) cb(s, status, s->shut_arg);
}

/* ---- close ----------------------------------------------------------- */

static void finish_close(ms_stream_t *s) {
  ms_t *ms = s->ms;
  ms__idle_untrack(s);
  if (s->counted) ms__conn_uncount(s);
  if (s->shut_state == MS_SHUT_WAIT || s->shut_state == MS_SHUT_RUNNING)
    ms_stream_shutdown_done(s, MS_ECANCELED);
  if (s->close_cb) s->close_cb(s, s->close_arg);
  if (s->auth_owned) ms__auth_free(ms, s->auth);
  ms_defer_cancel(ms, &s->pb_node);
  flush_unlink(s);
  if (s->pb) {
    sodium_memzero(s->pb, s->pb_len);
    free(s->pb);
  }
  id_clear(s);
  meta_free(s);
  while (s->free_reqs) {
    ms_write_req_t *r = s->free_reqs;
    s->free_reqs = r->next;
    free(r);
  }
  free(s->address);
  free(s->stack);
  sodium_memzero(s, sizeof(*s));
  free(s);
  ms__live_dec(ms);
}

/* Free once the implementation is done and no write completion is still
 * owed to the user (a deferred early completion holds the stream). */
static void maybe_finish(ms_stream_t *s) {
  /* An aborted stream (idle timeout) keeps its handle until the owner
   * closes it. */
  if (!s->closing || !s->impl_closed || s->in_close || s->pending != 0 || s->finishing)
    return;
  s->finishing = true;
  finish_close(s);
}

static void finish_deferred(void *arg) {
  ms_stream_t *s = arg;
  s->in_close = false;
  maybe_finish(s);
}

void ms_stream_close(ms_stream_t *s, ms_close_cb cb, void *arg) {
  if (s == NULL || s->closing) return;
  s->closing = true;
  s->reading = false;
  s->close_cb = cb;
  s->close_arg = arg;
  s->in_close = true;
  flush_unlink(s);
  ms_defer_cancel(s->ms, &s->pb_node);
  ms__idle_untrack(s);
  if (!s->impl_close_called) {
    s->impl_close_called = true;
    s->ops.close(s);
  }
  /* The implementation finished synchronously: still never call back from
   * inside ms_stream_close(). in_close stays set until the deferred turn. */
  if (s->impl_closed) {
    ms_defer(s->ms, &s->close_node, finish_deferred, s);
    return;
  }
  s->in_close = false;
}

/* The library ends a stream its owner still holds (idle timeout): the
 * implementation closes now, the reader hears status, writes fail with it;
 * the handle stays valid until the owner calls ms_stream_close. */
void ms__stream_abort(ms_stream_t *s, int status) {
  if (s->closing || s->aborted) return;
  s->aborted = status;
  ms__idle_untrack(s);
  flush_unlink(s);
  ms_defer_cancel(s->ms, &s->pb_node);
  bool was_reading = s->reading;
  s->reading = false;
  s->impl_reading = false;
  s->impl_close_called = true;
  s->ops.close(s); /* pending writes complete with MS_ECANCELED */
  if (s->pb) {
    sodium_memzero(s->pb, s->pb_len);
    free(s->pb);
    s->pb = NULL;
    s->pb_len = 0;
  }
  s->pb_status = status; /* a later read_start hears it */
  if (was_reading && s->read_cb) {
    s->pb_status = 0;
    s->read_cb(s, status, NULL, 0, s->read_arg);
  }
}

void ms_stream_closed(ms_stream_t *s) {
  if (s->impl_closed) return;
  s->impl_closed = true;
  maybe_finish(s);
}
